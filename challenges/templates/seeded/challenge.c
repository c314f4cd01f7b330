/* seeded-sort: fresh task instances from platform.seed (ABI v1, C). Build: validator-node challenge build .
 *
 * The manifest's task does not hold the instances, only how to draw them: byte 0 = n (2..16 values
 * per instance), byte 1 = trials (1..255 instances). Every evaluation draws its own instances from
 * platform.seed, which is fixed per submission, the same on every validator, and unknown to the
 * miner before the block admitting the submission is decided. So nobody can precompute answers:
 * the submission must be a general method. Here it is a sorting network for n values: pairs
 * (i, j) with i < j < n, applied in order as compare-and-swap. Score: the share of the drawn
 * instances it sorts. reference.py draws the same instances (same generator, same order).
 *
 * Needs "seed" in the policy's host_functions (challenge.toml). Error codes: -1 empty or odd-length
 * submission or more than 128 comparators, -2 a comparator out of range, -3 a malformed task.
 */
#include "challenge.h"

#define MAX_COMPARATORS 128

static const char DESCRIBE[] =
    "{\"name\":\"seeded-sort\",\"abi\":1,\"task\":\"[n, trials]\",\"submission\":\"(i, j) byte pairs\","
    "\"errors\":{\"-1\":\"bad length\",\"-2\":\"comparator out of range\",\"-3\":\"bad task\"}}";

CHALLENGE_EXPORT("describe") i64 describe(void) { return pack_output(DESCRIBE, sizeof(DESCRIBE) - 1); }

/* splitmix64: a tiny generator that is easy to reproduce exactly in any language */
static u64 rng;
static u64 next_u64(void) {
    u64 z = (rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

CHALLENGE_EVALUATE(task, tl, sub, sl) {
    if (tl != 2 || task[0] < 2 || task[0] > 16 || task[1] == 0) return -3;
    if (sl == 0 || sl % 2 != 0 || sl > 2 * MAX_COMPARATORS) return -1;
    u32 n = task[0], trials = task[1];
    for (u32 k = 0; k < sl; k += 2)
        if (sub[k] >= sub[k + 1] || sub[k + 1] >= n) return -2;

    /* the evaluation's seed -> the generator's state: absorb its four little-endian words */
    u8 seed[32];
    platform_seed(seed);
    rng = 0;
    for (u32 w = 0; w < 32; w += 8) {
        rng ^= (u64)rd_u32(seed + w) | (u64)rd_u32(seed + w + 4) << 32;
        rng = next_u64();
    }

    u32 sorted = 0;
    for (u32 t = 0; t < trials; t++) {
        u8 v[16];
        for (u32 k = 0; k < n; k++) v[k] = (u8)next_u64(); /* one fresh instance */
        for (u32 k = 0; k < sl; k += 2) {
            u8 a = v[sub[k]], b = v[sub[k + 1]];
            if (a > b) { v[sub[k]] = b; v[sub[k + 1]] = a; }
        }
        u32 ok = 1;
        for (u32 k = 1; k < n; k++) ok &= v[k - 1] <= v[k];
        sorted += ok;
    }
    return SCORE_ONE * (i64)sorted / (i64)trials;
}
