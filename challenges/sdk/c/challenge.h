/* Challenge ABI v1 for C (freestanding wasm32; clang >= 14 or `zig cc`).
 *
 * Build:  python -m ziglang cc --target=wasm32-freestanding -O2 -s -nostdlib -mbulk-memory \
 *           -Wl,--no-entry -I challenges/sdk/c -o challenge.wasm challenge.c
 *    or:  clang --target=wasm32 -O2 -nostdlib -mbulk-memory -Wl,--no-entry -Wl,--strip-all ...
 *
 * Write `CHALLENGE_EVALUATE(task, task_len, sub, sub_len) { ... return score; }` once, and include
 * this header in exactly one .c file. The host gives every evaluation a fresh instance, so the bump
 * allocator below never needs to free. See docs/challenge-abi.md for the full contract.
 */
#ifndef PLATFORM_CHALLENGE_H
#define PLATFORM_CHALLENGE_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef int i32;
typedef long long i64;
typedef unsigned long long u64;

#define CHALLENGE_ABI_VERSION 1
/* Scores are fixed point: SCORE_ONE is 1.0. Negative values are error codes (the submission is invalid). */
#define SCORE_ONE 1000000000LL

#define CHALLENGE_EXPORT(name) __attribute__((export_name(name)))
#define PLATFORM_IMPORT(name) __attribute__((import_module("platform"), import_name(name)))

/* Host functions: each costs fuel; import only what the challenge manifest allows. */
PLATFORM_IMPORT("log") void platform_log(const u8 *ptr, u32 len);
PLATFORM_IMPORT("seed") void platform_seed(u8 out[32]);
PLATFORM_IMPORT("block_height") i64 platform_block_height(void);

extern u8 __heap_base; /* provided by wasm-ld */
static unsigned long challenge_top_ = 0;

/* alloc(len) -> ptr: bump allocator, grows memory; traps if the host's memory cap refuses the growth. */
CHALLENGE_EXPORT("alloc") void *alloc(u32 len) {
    if (!challenge_top_) challenge_top_ = (unsigned long)&__heap_base;
    unsigned long start = (challenge_top_ + 7) & ~7UL, end = start + len;
    unsigned long have = __builtin_wasm_memory_size(0) * 65536UL;
    if (end > have && __builtin_wasm_memory_grow(0, (end - have + 65535) / 65536) == (unsigned long)-1)
        __builtin_trap();
    challenge_top_ = end;
    return (void *)start;
}

CHALLENGE_EXPORT("abi_version") i32 abi_version(void) { return CHALLENGE_ABI_VERSION; }

/* little-endian readers (wasm is little-endian; unaligned loads are allowed) */
static inline u32 rd_u32(const u8 *p) { return (u32)p[0] | (u32)p[1] << 8 | (u32)p[2] << 16 | (u32)p[3] << 24; }
static inline u16 rd_u16(const u8 *p) { return (u16)(p[0] | p[1] << 8); }

/* pack a (ptr, len) pair for describe()/aggregate() */
static inline i64 pack_output(const void *ptr, u32 len) { return (i64)(((u64)(unsigned long)ptr << 32) | len); }

#define CHALLENGE_EVALUATE(t, tl, s, sl) \
    CHALLENGE_EXPORT("evaluate") i64 evaluate(const u8 *t, u32 tl, const u8 *s, u32 sl)

#endif
