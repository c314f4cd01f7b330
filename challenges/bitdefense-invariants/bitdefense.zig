//! bitdefense-invariants: BitDefense (SN31, BitDefense/subnet@8901938) miner scoring (ABI v1, Zig).
//!
//! `aggregate(bundle)`: rounds of transactions with invariants and the miners' verdicts in, per-UID
//! weights + per-round ground truth + per-miner N, agreements, tasks, L99 and S out (canonical CBOR).
//! `evaluate(bundle, uid)`: that UID's weight in 1e9. Formats and rules: reference.py (the Python
//! reference this module matches byte for byte). Errors: -1 malformed, -2 invalid, -3 bad submission.
const std = @import("std");
const ch = @import("challenge");

const SCORE_ONE: u128 = 1_000_000_000;
const WEIGHT_ONE: u128 = 1_000_000_000_000_000_000;
const MAX_UIDS: usize = 4096;
const MAX_ROUNDS: usize = 65536;
const MAX_INVARIANTS: usize = 256;
const MAX_ROWS: usize = 65536;
const MAX_TEXT: usize = 128;
const MAX_DEPTH: u32 = 32;
const NONE: u8 = 2;

const Err = error{ Malformed, Invalid };

export fn alloc(len: u32) ?[*]u8 {
    return ch.alloc(len);
}

export fn abi_version() i32 {
    return ch.ABI_VERSION;
}

const DESCRIBE = "{\"name\":\"bitdefense-invariants\",\"abi\":1,\"version\":1,\"origin\":\"BitDefense/subnet@8901938\"," ++
    "\"aggregate\":\"rounds (CBOR) -> [1,weights(1e18),truth per round,miners [uid,N,agree,tasks,L99 cms,S 1e9]]\"," ++
    "\"evaluate\":\"task=bundle, submission=CBOR uid -> weight(1e9)\"," ++
    "\"errors\":{\"-1\":\"malformed\",\"-2\":\"invalid\",\"-3\":\"bad submission\"}}";

export fn describe() i64 {
    return ch.pack(DESCRIBE);
}

fn mk(comptime T: type, n: usize) Err![]T {
    return ch.allocator.alloc(T, n) catch error.Malformed;
}

// Canonical CBOR decoding (arrays, ints, text, bools: what the bundle uses; anything else is kept as
// `other` so that it fails the schema check, exactly where the Python reference fails it)

const Kind = enum { uint, nint, text, bytes, array, boolean, nil, other };

const Val = struct {
    kind: Kind,
    n: u64 = 0, // uint value, nint argument (value = -1 - n), bool, array length
    s: []const u8 = &.{},
    items: []Val = &.{},
};

const Decoder = struct {
    buf: []const u8,
    pos: usize = 0,

    fn byte(self: *Decoder) Err!u8 {
        if (self.pos >= self.buf.len) return error.Malformed;
        const b = self.buf[self.pos];
        self.pos += 1;
        return b;
    }

    fn arg(self: *Decoder, ai: u8) Err!u64 {
        if (ai < 24) return ai;
        const size: usize = switch (ai) {
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            else => return error.Malformed,
        };
        var v: u64 = 0;
        for (0..size) |_| v = (v << 8) | try self.byte();
        const min: u64 = switch (ai) {
            24 => 24,
            25 => 256,
            26 => 65536,
            else => 1 << 32,
        };
        if (v < min) return error.Malformed; // not the shortest form: not canonical
        return v;
    }

    fn take(self: *Decoder, len: u64) Err![]const u8 {
        if (len > self.buf.len - self.pos) return error.Malformed;
        const s = self.buf[self.pos .. self.pos + @as(usize, @intCast(len))];
        self.pos += @intCast(len);
        return s;
    }

    fn value(self: *Decoder, depth: u32) Err!Val {
        if (depth > MAX_DEPTH) return error.Malformed;
        const ib = try self.byte();
        const major = ib >> 5;
        const ai = ib & 31;
        switch (major) {
            0 => return .{ .kind = .uint, .n = try self.arg(ai) },
            1 => return .{ .kind = .nint, .n = try self.arg(ai) },
            2 => return .{ .kind = .bytes, .s = try self.take(try self.arg(ai)) },
            3 => {
                const s = try self.take(try self.arg(ai));
                if (!std.unicode.utf8ValidateSlice(s)) return error.Malformed;
                return .{ .kind = .text, .s = s };
            },
            4 => {
                const len = try self.arg(ai);
                if (len > self.buf.len - self.pos) return error.Malformed; // each item takes >= 1 byte
                const items = ch.allocator.alloc(Val, @intCast(len)) catch return error.Malformed;
                for (items) |*it| it.* = try self.value(depth + 1);
                return .{ .kind = .array, .n = len, .items = items };
            },
            7 => {
                if (ai == 20 or ai == 21) return .{ .kind = .boolean, .n = ai - 20 };
                if (ai == 22) return .{ .kind = .nil };
                return error.Malformed; // floats, undefined, simple values: not plain
            },
            else => return error.Malformed, // maps and tags are refused by the platform's codec
        }
    }
};

fn decode(buf: []const u8) Err!Val {
    var d = Decoder{ .buf = buf };
    const v = try d.value(0);
    if (d.pos != buf.len) return error.Malformed;
    return v;
}

// ------------------------------------------------------------------------------------------------
// ------------------------------------------------------------------------------------------------
// Schema (same order of checks as reference.parse)

fn arr(v: Val, n: ?usize) Err![]Val {
    if (v.kind != .array) return error.Malformed;
    if (n) |want| if (v.items.len != want) return error.Malformed;
    return v.items;
}

fn uint(v: Val, cap: u128) Err!u64 {
    if (v.kind != .uint) return error.Malformed;
    if (v.n >= cap) return error.Invalid;
    return v.n;
}

fn text(v: Val) Err![]const u8 {
    if (v.kind != .text) return error.Malformed;
    if (v.s.len > MAX_TEXT) return error.Invalid;
    return v.s;
}

fn word(v: Val) Err![]const u8 {
    if (v.kind != .bytes) return error.Malformed;
    if (v.s.len != 32) return error.Invalid;
    return v.s;
}

const Inv = struct { contract: []const u8, op: []const u8, target: []const u8, slot: []const u8 };
const Write = struct { contract: []const u8, slot: []const u8, value: []const u8 };
const Resp = struct { uid: u32, out: ?[]const Val, lat: u64 };
const Round = struct { tx: []const u8, invs: []Inv, writes: ?[]Write, resps: []Resp };

const Bundle = struct { n: usize, num: u64, den: u64, target: u64, rounds: []Round };

fn parse(buf: []const u8) Err!Bundle {
    const doc = try decode(buf);
    const d = try arr(doc, 4);
    if (d[0].kind != .uint and d[0].kind != .nint) return error.Malformed;
    if (d[0].kind != .uint or d[0].n != 1) return error.Invalid;
    const hk = try arr(d[1], null);
    for (hk) |h| _ = try text(h);
    if (hk.len < 1 or hk.len > MAX_UIDS) return error.Invalid;
    const pr = try arr(d[2], 3);
    const num = try uint(pr[0], 1 << 64);
    const den = try uint(pr[1], 1 << 64);
    const target = try uint(pr[2], 1 << 64);
    if (!(den >= 1 and den <= 1000 and num <= den and target >= 1 and target <= 65536)) return error.Invalid;
    const rr = try arr(d[3], null);
    if (rr.len > MAX_ROUNDS) return error.Invalid;
    const rounds = try mk(Round, rr.len);
    for (rr, 0..) |rv, ri| {
        const r = try arr(rv, 4);
        const tx = try text(r[0]);
        const iv = try arr(r[1], null);
        const invs = try mk(Inv, iv.len);
        for (iv, 0..) |x, i| {
            const it = try arr(x, 4);
            const c = try text(it[0]);
            const op = try text(it[1]);
            const tgt = try word(it[2]);
            const slot = try word(it[3]);
            invs[i] = .{ .contract = c, .op = op, .target = tgt, .slot = slot };
        }
        if (invs.len > MAX_INVARIANTS) return error.Invalid;
        var writes: ?[]Write = null;
        if (r[2].kind != .nil) {
            const wv = try arr(r[2], null);
            const ws = try mk(Write, wv.len);
            for (wv, 0..) |x, i| {
                const it = try arr(x, 3);
                const c = try text(it[0]);
                const slot = try word(it[1]);
                const val = try word(it[2]);
                ws[i] = .{ .contract = c, .slot = slot, .value = val };
            }
            if (ws.len > MAX_ROWS) return error.Invalid;
            writes = ws;
        }
        const rsv = try arr(r[3], null);
        const resps = try mk(Resp, rsv.len);
        for (rsv, 0..) |x, i| {
            const it = try arr(x, 3);
            const uid = try uint(it[0], hk.len);
            const lat = try uint(it[2], 1 << 32);
            var out: ?[]const Val = null;
            // the first k verdicts count, as upstream reads only resp[i] for i < k (reference.py)
            if (it[1].kind == .array and it[1].items.len >= invs.len) {
                var ok = true;
                for (it[1].items[0..invs.len]) |v| {
                    if (v.kind != .uint or v.n > 1) ok = false;
                }
                if (ok) out = it[1].items[0..invs.len];
            }
            resps[i] = .{ .uid = @intCast(uid), .out = out, .lat = lat };
        }
        if (resps.len > MAX_ROWS) return error.Invalid;
        rounds[ri] = .{ .tx = tx, .invs = invs, .writes = writes, .resps = resps };
    }
    return .{ .n = hk.len, .num = num, .den = den, .target = target, .rounds = rounds };
}

// ------------------------------------------------------------------------------------------------
// Ground truth

fn violates(op: []const u8, new: []const u8, target: []const u8) bool {
    const o = std.mem.order(u8, new, target); // equal-length big-endian words: byte order = numeric order
    if (std.mem.eql(u8, op, "==")) return o != .eq;
    if (std.mem.eql(u8, op, ">=")) return o == .lt;
    if (std.mem.eql(u8, op, "<=")) return o == .gt;
    if (std.mem.eql(u8, op, ">")) return o != .gt;
    if (std.mem.eql(u8, op, "<")) return o != .lt;
    return false;
}

/// Addresses compare ASCII case-insensitively, as upstream's `common.Address` / `.lower()` do.
fn sameContract(a: []const u8, b: []const u8) bool {
    return std.ascii.eqlIgnoreCase(a, b);
}

fn oracle(invs: []const Inv, writes: []const Write, truth: []u8) void {
    for (invs, 0..) |inv, i| {
        truth[i] = 1;
        var replaced = false;
        for (invs[i + 1 ..]) |later| {
            if (sameContract(later.contract, inv.contract) and std.mem.eql(u8, later.slot, inv.slot)) replaced = true;
        }
        if (replaced) continue;
        for (writes) |w| {
            if (sameContract(w.contract, inv.contract) and std.mem.eql(u8, w.slot, inv.slot) and
                violates(inv.op, w.value, inv.target)) truth[i] = 0;
        }
    }
}

fn majority(resps: []const Resp, num: u64, den: u64, truth: []u8) void {
    for (truth, 0..) |*t, i| {
        var total: u64 = 0;
        var zeros: u64 = 0;
        for (resps) |r| {
            if (r.out) |o| {
                total += 1;
                if (o[i].n == 0) zeros += 1;
            }
        }
        if (total > 0 and zeros * den >= num * total) {
            t.* = 0;
        } else if (total > 0 and (total - zeros) * den >= num * total) {
            t.* = 1;
        } else {
            t.* = NONE;
        }
    }
}

fn textLess(keys: []const []const u8, i: u32, j: u32) bool {
    return switch (std.mem.order(u8, keys[i], keys[j])) {
        .lt => true,
        .gt => false,
        .eq => i < j,
    };
}

fn u64Less(_: void, a: u64, b: u64) bool {
    return a < b;
}

const Out = struct {
    buf: []u8,
    len: usize = 0,

    fn put(self: *Out, b: u8) void {
        self.buf[self.len] = b;
        self.len += 1;
    }

    fn head(self: *Out, major: u8, v: u64) void {
        const m = major << 5;
        if (v < 24) {
            self.put(m | @as(u8, @intCast(v)));
        } else if (v < 256) {
            self.put(m | 24);
            self.put(@intCast(v));
        } else if (v < 65536) {
            self.put(m | 25);
            self.be(v, 2);
        } else if (v < (1 << 32)) {
            self.put(m | 26);
            self.be(v, 4);
        } else {
            self.put(m | 27);
            self.be(v, 8);
        }
    }

    fn be(self: *Out, v: u64, size: u6) void {
        var i: u6 = size;
        while (i > 0) {
            i -= 1;
            self.put(@truncate(v >> (@as(u6, i) * 8)));
        }
    }

    fn uint(self: *Out, v: u64) void {
        self.head(0, v);
    }

    fn array(self: *Out, n: u64) void {
        self.head(4, n);
    }

    fn text(self: *Out, s: []const u8) void {
        self.head(3, s.len);
        @memcpy(self.buf[self.len .. self.len + s.len], s);
        self.len += s.len;
    }

    fn boolean(self: *Out, b: bool) void {
        self.put(if (b) 0xf5 else 0xf4);
    }
};

fn score(b: *const Bundle, weights: []u128) Err![]const u8 {
    const n = b.n;
    // tx ids: equal hashes share an id (a miner answering one tx twice counts once in N)
    const nr = b.rounds.len;
    const keys = try mk([]const u8, nr);
    const order = try mk(u32, nr);
    for (b.rounds, 0..) |r, i| {
        keys[i] = r.tx;
        order[i] = @intCast(i);
    }
    std.sort.pdq(u32, order, keys, textLess);
    const txid = try mk(u32, nr);
    var next: u32 = 0;
    for (order, 0..) |k, j| {
        if (j > 0 and !std.mem.eql(u8, keys[order[j - 1]], keys[k])) next += 1;
        txid[k] = next;
    }
    var answers: usize = 0;
    var truth_len: usize = 0;
    for (b.rounds) |r| {
        truth_len += r.invs.len;
        for (r.resps) |x| if (x.out != null) {
            answers += 1;
        };
    }
    const pairs = try mk(u64, answers); // uid << 32 | tx id
    const lats = try mk(u64, answers); // uid << 32 | latency
    const agree = try mk(u64, n);
    const tasks = try mk(u64, n);
    const answered = try mk(bool, n);
    for (0..n) |u| {
        agree[u] = 0;
        tasks[u] = 0;
        answered[u] = false;
    }
    const truths = try mk(u8, truth_len);
    var a: usize = 0;
    var t0: usize = 0;
    for (b.rounds, 0..) |r, ri| {
        const truth = truths[t0 .. t0 + r.invs.len];
        t0 += r.invs.len;
        if (r.writes) |w| oracle(r.invs, w, truth) else majority(r.resps, b.num, b.den, truth);
        for (r.resps) |x| {
            const o = x.out orelse continue;
            answered[x.uid] = true;
            pairs[a] = (@as(u64, x.uid) << 32) | txid[ri];
            lats[a] = (@as(u64, x.uid) << 32) | x.lat;
            a += 1;
            for (truth, 0..) |t, i| {
                if (t == NONE) continue;
                tasks[x.uid] += 1;
                if (o[i].n == t) agree[x.uid] += 1;
            }
        }
    }
    std.sort.pdq(u64, pairs, {}, u64Less);
    std.sort.pdq(u64, lats, {}, u64Less);
    const big_n = try mk(u64, n);
    for (0..n) |u| big_n[u] = 0;
    for (pairs, 0..) |p, j| {
        if (j == 0 or pairs[j - 1] != p) big_n[@intCast(p >> 32)] += 1;
    }
    const l99 = try mk(u64, n);
    const s = try mk(u128, n);
    var j: usize = 0;
    var total: u128 = 0;
    for (0..n) |u| {
        const lo = j;
        while (j < lats.len and (lats[j] >> 32) == u) j += 1;
        const xs = lats[lo..j];
        if (xs.len == 0) {
            l99[u] = 100 * b.target;
        } else {
            const h = 99 * (xs.len - 1);
            const f = h / 100;
            const r = h % 100;
            const xf = xs[f] & 0xFFFFFFFF;
            const hi = xs[@min(f + 1, xs.len - 1)] & 0xFFFFFFFF;
            const v = 100 * xf + r * (hi - xf);
            l99[u] = if (v > 0) v else 100;
        }
        s[u] = 0;
        if (answered[u] and tasks[u] > 0) {
            s[u] = @as(u128, big_n[u]) * agree[u] * b.target * 100 * SCORE_ONE / (@as(u128, tasks[u]) * l99[u]);
        }
        total += s[u];
    }
    for (0..n) |u| weights[u] = if (total > 0) s[u] * WEIGHT_ONE / total else 0;

    var out = Out{ .buf = try mk(u8, 64 + 17 * n + 9 * b.rounds.len + 2 * truth_len + 64 * n) };
    out.array(4);
    out.uint(1);
    out.array(n);
    for (weights) |w| out.uint(@intCast(w));
    out.array(b.rounds.len);
    t0 = 0;
    for (b.rounds) |r| {
        out.array(r.invs.len);
        for (truths[t0 .. t0 + r.invs.len]) |t| out.uint(t);
        t0 += r.invs.len;
    }
    var rows: usize = 0;
    for (answered) |x| {
        if (x) rows += 1;
    }
    out.array(rows);
    for (0..n) |u| {
        if (!answered[u]) continue;
        out.array(6);
        out.uint(u);
        out.uint(big_n[u]);
        out.uint(agree[u]);
        out.uint(tasks[u]);
        out.uint(l99[u]);
        out.uint(@intCast(s[u]));
    }
    return out.buf[0..out.len];
}

fn code(e: Err) i64 {
    return switch (e) {
        error.Malformed => -1,
        error.Invalid => -2,
    };
}

export fn aggregate(p: [*]const u8, len: u32) i64 {
    const b = parse(p[0..len]) catch |e| return code(e);
    const weights = mk(u128, b.n) catch return -1;
    const doc = score(&b, weights) catch |e| return code(e);
    return ch.pack(doc);
}

export fn evaluate(tp: [*]const u8, tl: u32, sp: [*]const u8, sl: u32) i64 {
    const b = parse(tp[0..tl]) catch |e| return code(e);
    if (sl > 16) return -3;
    const v = decode(sp[0..sl]) catch return -3;
    if (v.kind != .uint or v.n >= b.n) return -3;
    const weights = mk(u128, b.n) catch return -1;
    _ = score(&b, weights) catch |e| return code(e);
    return @intCast(weights[@intCast(v.n)] / (WEIGHT_ONE / SCORE_ONE));
}
