// {{NAME}}: scaffolded challenge (ABI v1, AssemblyScript). Build: validator-node challenge build .
//
// "challenge" is the SDK (challenges/sdk/assemblyscript/challenge.ts): `alloc` and `abi_version`
// are re-exported from it; this file exports `describe` and `evaluate`.
import { SCORE_ONE, packUtf8 } from "challenge";
export { alloc, abi_version } from "challenge";

export function describe(): i64 {
  return packUtf8('{"name":"{{NAME}}","abi":1}');
}

// Share of positions where the submission repeats the task byte; -1 for an empty submission.
export function evaluate(tp: usize, tl: u32, sp: usize, sl: u32): i64 {
  if (sl == 0) return -1;
  const n = min(tl, sl);
  let same: i64 = 0;
  for (let i: u32 = 0; i < n; i++) {
    if (load<u8>(tp + i) == load<u8>(sp + i)) same++;
  }
  return (SCORE_ONE * same) / <i64>max(tl, sl);
}
