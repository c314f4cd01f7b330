// Challenge ABI v1 for AssemblyScript (asc 0.28.20, Node.js >= 18). See docs/challenge-abi.md.
//
// In index.ts:
//   export { alloc, abi_version } from "challenge";
//   import { SCORE_ONE } from "challenge";
//   export function evaluate(tp: usize, tl: u32, sp: usize, sl: u32): i64 { ... }
//
// `validator-node challenge build` installs asc once (npm install --prefix
// ~/.cache/platform-validator/assemblyscript/0.28.20 assemblyscript@0.28.20 long@5.3.2), copies this
// file to <scratch>/lib/challenge/index.ts so that `"challenge"` resolves, and runs
//   node asc.js index.ts --baseDir <source dir> --config <scratch>/asconfig.json ({}) --path <scratch>/lib \
//       -O3 --runtime stub --use abort= --noColors -o module.wasm
//   --runtime stub: bump allocator, no GC (every evaluation gets a fresh instance, nothing is freed)
//   --use abort=  : without it the module imports env.abort, which the platform refuses (forbidden_import)

export const ABI_VERSION: i32 = 1;
// Scores are fixed point: SCORE_ONE is 1.0. Negative values are error codes (invalid submission).
export const SCORE_ONE: i64 = 1_000_000_000;

// Host functions; each costs fuel. Import only what the manifest allows (unused ones are not imported).
@external("platform", "log")
export declare function platform_log(ptr: usize, len: u32): void;
@external("platform", "seed")
export declare function platform_seed(out: usize): void;
@external("platform", "block_height")
export declare function platform_block_height(): i64;

// ABI alloc(len) -> ptr
export function alloc(len: u32): usize {
  return heap.alloc(len == 0 ? 1 : <usize>len);
}

export function abi_version(): i32 {
  return ABI_VERSION;
}

// Pack (ptr, len) for describe() / aggregate(). AS strings are UTF-16: encode to UTF-8 first.
export function packUtf8(s: string): i64 {
  const buf = String.UTF8.encode(s);
  return <i64>((<u64>changetype<usize>(buf) << 32) | <u64>buf.byteLength);
}

export function readU32(p: usize): u32 {
  return load<u32>(p);
}
