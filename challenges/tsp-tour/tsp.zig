//! tsp-tour: Euclidean travelling-salesman tours (ABI v1, Zig).
//!
//! Task:       u32 LE n (2..4096), then n points as (u32 LE x, u32 LE y), coordinates < 2^20.
//! Submission: n u16 LE city indices, a permutation of 0..n-1 (the closed tour).
//! Length:     sum of isqrt(dx^2 + dy^2) over the tour's edges (integer: identical on every validator).
//! Baseline:   the greedy nearest-neighbour tour from city 0 (ties: lowest index), computed here.
//! Score:      min(SCORE_ONE, SCORE_ONE/2 * baseline / length): the NN tour scores 0.5, a tour half
//!             as long scores 1.0.
//! Errors:     -1 submission of the wrong size, -2 not a permutation, -3 malformed task.
const std = @import("std");
const ch = @import("challenge");

const MAX_N: u32 = 4096;
const MAX_COORD: u32 = 1 << 20;

export fn alloc(len: u32) ?[*]u8 {
    return ch.alloc(len);
}

export fn abi_version() i32 {
    return ch.ABI_VERSION;
}

const DESCRIBE = "{\"name\":\"tsp-tour\",\"abi\":1,\"version\":1,\"task\":\"u32 n + n*(u32 x,u32 y)\"," ++
    "\"submission\":\"n*u16 permutation\",\"score\":\"min(1e9, 5e8*nn_len/len)\"}";

export fn describe() i64 {
    return ch.pack(DESCRIBE);
}

fn isqrt(x: u64) u64 {
    var op = x;
    var res: u64 = 0;
    var one: u64 = 1 << 62;
    while (one > op) one >>= 2;
    while (one != 0) {
        if (op >= res + one) {
            op -= res + one;
            res = (res >> 1) + one;
        } else {
            res >>= 1;
        }
        one >>= 2;
    }
    return res;
}

fn dist(xs: []const u32, ys: []const u32, a: usize, b: usize) u64 {
    const dx: i64 = @as(i64, xs[a]) - @as(i64, xs[b]);
    const dy: i64 = @as(i64, ys[a]) - @as(i64, ys[b]);
    return isqrt(@intCast(dx * dx + dy * dy));
}

export fn evaluate(tp: [*]const u8, tl: u32, sp: [*]const u8, sl: u32) i64 {
    const task = tp[0..tl];
    const sub = sp[0..sl];
    if (tl < 4) return -3;
    const n = ch.readU32(task, 0);
    if (n < 2 or n > MAX_N or tl != 4 + 8 * n) return -3;
    if (sl != 2 * n) return -1;
    const xs = ch.allocator.alloc(u32, n) catch return -3;
    const ys = ch.allocator.alloc(u32, n) catch return -3;
    const seen = ch.allocator.alloc(bool, n) catch return -3;
    for (0..n) |i| {
        xs[i] = ch.readU32(task, 4 + 8 * i);
        ys[i] = ch.readU32(task, 8 + 8 * i);
        if (xs[i] >= MAX_COORD or ys[i] >= MAX_COORD) return -3;
        seen[i] = false;
    }
    // submitted tour
    var length: u64 = 0;
    var prev: usize = ch.readU16(sub, 2 * (n - 1));
    for (0..n) |i| {
        const c: usize = ch.readU16(sub, 2 * i);
        if (c >= n or seen[c]) return -2;
        seen[c] = true;
        length += dist(xs, ys, prev, c);
        prev = c;
    }
    if (seen[prev] == false) return -2;
    // baseline: nearest neighbour from city 0
    for (seen) |*s| s.* = false;
    var cur: usize = 0;
    seen[0] = true;
    var base: u64 = 0;
    for (1..n) |_| {
        var best: usize = n;
        var best_d: u64 = std.math.maxInt(u64);
        for (0..n) |j| {
            if (seen[j]) continue;
            const d = dist(xs, ys, cur, j);
            if (d < best_d) {
                best_d = d;
                best = j;
            }
        }
        seen[best] = true;
        base += best_d;
        cur = best;
    }
    base += dist(xs, ys, cur, 0);
    if (length == 0) return ch.SCORE_ONE;
    const s: u64 = @divTrunc(@as(u64, @intCast(ch.SCORE_ONE / 2)) * base, length);
    return @intCast(@min(s, @as(u64, @intCast(ch.SCORE_ONE))));
}
