/* CPU-bound kernels for bench_runtime.py, compiled twice from this one file: to wasm32 with `zig cc`
 * (ABI v1, run in the sandbox) and natively with `gcc -O2 -DNATIVE` (timed in-process). */
#ifndef NATIVE
#include "challenge.h"
#else
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
typedef unsigned char u8;
typedef unsigned int u32;
typedef long long i64;
typedef unsigned long long u64;
static void *alloc(u32 len) { return malloc(len); }
#endif

/* Levenshtein distance, one row of u32 */
static u32 lev(const u8 *a, u32 al, const u8 *b, u32 bl) {
    u32 *row = alloc(4 * (bl + 1));
    for (u32 j = 0; j <= bl; j++) row[j] = j;
    for (u32 i = 0; i < al; i++) {
        u32 prev = row[0];
        row[0] = i + 1;
        for (u32 j = 0; j < bl; j++) {
            u32 cur = row[j + 1], v = prev + (a[i] != b[j]);
            if (row[j] + 1 < v) v = row[j] + 1;
            if (cur + 1 < v) v = cur + 1;
            row[j + 1] = v;
            prev = cur;
        }
    }
    return row[bl];
}

/* total Collatz steps for 1..n: branchy 64-bit integer code */
static i64 collatz(u32 n) {
    i64 total = 0;
    for (u64 i = 1; i <= n; i++) {
        u64 x = i;
        while (x != 1) {
            x = (x & 1) ? 3 * x + 1 : x >> 1;
            total++;
        }
    }
    return total;
}

#ifndef NATIVE
/* task[0] selects the kernel: 'L' = Levenshtein(task[1..], submission), 'C' = collatz(u32 at task[1]) */
CHALLENGE_EVALUATE(t, tl, s, sl) {
    if (tl >= 1 && t[0] == 'L') return lev(t + 1, tl - 1, s, sl);
    if (tl >= 5 && t[0] == 'C') return collatz(rd_u32(t + 1)) % SCORE_ONE;
    return -1;
}
#else
static void fill(u8 *p, u32 n, u32 seed) {
    for (u32 i = 0; i < n; i++) { seed = seed * 1103515245u + 12345u; p[i] = 'a' + (seed >> 16) % 4; }
}
static double now(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + ts.tv_nsec / 1e9; }
int main(int argc, char **argv) {
    u32 n = (u32)atoi(argv[1]), cn = (u32)atoi(argv[2]), reps = (u32)atoi(argv[3]);
    u8 *a = malloc(n), *b = malloc(n);
    fill(a, n, 1); fill(b, n, 2);
    double best_l = 1e9, best_c = 1e9; u32 d = 0; i64 c = 0;
    for (u32 r = 0; r < reps; r++) {
        double t0 = now(); d = lev(a, n, b, n); double t1 = now(); c = collatz(cn); double t2 = now();
        if (t1 - t0 < best_l) best_l = t1 - t0;
        if (t2 - t1 < best_c) best_c = t2 - t1;
    }
    printf("%u %lld %.9f %.9f\n", d, c % 1000000000LL, best_l, best_c);
    return 0;
}
#endif
