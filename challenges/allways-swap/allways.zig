//! allways-swap: Allways (SN7, seed era, entrius/allways@2698acc) swap-market scoring (ABI v1, Zig).
//!
//! `aggregate(bundle)`: evidence bundle (canonical CBOR) in, per-UID weights + per-miner trace out.
//! `evaluate(bundle, uid)`: the weight of one UID in 1e9 fixed point (so the bundle also runs through
//! the per-submission path and the toolkit's vectors). The rules, bundle and output formats are
//! documented once, in reference.py (the Python reference this module must match byte for byte).
//! Errors: -1 malformed input, -2 invalid evidence, -3 bad submission.
const std = @import("std");
const ch = @import("challenge");

const WEIGHT_ONE: u128 = 1_000_000_000_000_000_000;
const CROWN_UNITS: u64 = 720_720;
const MAX_UIDS: usize = 4096;
const MAX_EVENTS: usize = 65536;
const MAX_HOTKEY: usize = 64;
const MAX_BLOCK: u64 = 1 << 40;
const MAX_AMOUNT: u64 = 1 << 48;
const MAX_IDX: u64 = 1 << 32;
const MAX_EXP: i64 = 15;
const MAX_DEPTH: u32 = 32;

const Err = error{ Malformed, Invalid };

export fn alloc(len: u32) ?[*]u8 {
    return ch.alloc(len);
}

export fn abi_version() i32 {
    return ch.ABI_VERSION;
}

const DESCRIBE = "{\"name\":\"allways-swap\",\"abi\":1,\"version\":1,\"origin\":\"entrius/allways@2698acc\"," ++
    "\"aggregate\":\"evidence bundle (CBOR) -> [1,weights(1e18),B,halted,recycle_uid,pools,miners]\"," ++
    "\"evaluate\":\"task=bundle, submission=CBOR uid -> weight(1e9)\"," ++
    "\"errors\":{\"-1\":\"malformed\",\"-2\":\"invalid evidence\",\"-3\":\"bad submission\"}}";

export fn describe() i64 {
    return ch.pack(DESCRIBE);
}

// ------------------------------------------------------------------------------------------------
// Canonical CBOR decoding (arrays, ints, text, bools: what the bundle uses; anything else is kept as
// `other` so that it fails the schema check, exactly where the Python reference fails it)

const Kind = enum { uint, nint, text, array, boolean, other };

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
            2 => {
                _ = try self.take(try self.arg(ai));
                return .{ .kind = .other };
            },
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
                if (ai == 22) return .{ .kind = .other }; // null
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
// Schema (checks in the same order as reference.parse, so both report the same first error)

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

fn int(v: Val) Err!i128 {
    return switch (v.kind) {
        .uint => v.n,
        .nint => -1 - @as(i128, v.n),
        else => error.Malformed,
    };
}

fn text(v: Val) Err![]const u8 {
    if (v.kind != .text) return error.Malformed;
    if (v.s.len > MAX_HOTKEY) return error.Invalid;
    return v.s;
}

/// A quote m * 10^e held exactly as m * 10^(e + 15): with m < 10^5 and |e| <= 15 that is below 10^35,
/// inside u128, so comparing two quotes is comparing two integers (m = 0, opted out, is v = 0).
const Rate = struct { v: u128 = 0 };

fn rate(v: Val) Err!Rate {
    const it = try arr(v, 2);
    const m = try uint(it[0], 100_000);
    const e = try int(it[1]);
    if (e < -MAX_EXP or e > MAX_EXP) return error.Invalid;
    var x: u128 = m;
    var k: i128 = 0;
    while (k < e + MAX_EXP) : (k += 1) x *= 10;
    return .{ .v = x };
}

fn rateCmp(a: Rate, b: Rate) i32 {
    if (a.v > b.v) return 1;
    if (a.v < b.v) return -1;
    return 0;
}

const Coll = struct { hk: []const u8, amount: u64, id: u32 = 0 };
const RateEv = struct { block: u64, hk: []const u8, fwd: Rate, rev: Rate, id: u32 = 0 };
const Event = struct { block: u64, idx: u64, kind: u8, hk: []const u8, amount: u64, id: u32 = 0 };

const Bundle = struct {
    block: u64,
    hotkeys: [][]const u8,
    halted: bool,
    max_swap: u64,
    coll: []Coll,
    rates: []RateEv,
    events: []Event,
    window: u64,
    cred: u64,
    ramp: u64,
    an: u64,
    ad: u64,
    recycle: u64,
};

fn bytesLess(_: void, a: []const u8, b: []const u8) bool {
    return std.mem.lessThan(u8, a, b);
}

// Sorting works on u32 index arrays: moving the records themselves costs a byte-wise copy per swap in
// wasm32 without bulk memory, which made sorting dominate the fuel bill. Ties break on the index.

fn indices(n: usize) Err![]u32 {
    const out = try mk(u32, n);
    for (out, 0..) |*x, i| x.* = @intCast(i);
    return out;
}

fn rateKeyLess(rs: []const RateEv, i: u32, j: u32) bool {
    const a = &rs[i];
    const b = &rs[j];
    if (a.block != b.block) return a.block < b.block;
    return switch (std.mem.order(u8, a.hk, b.hk)) {
        .lt => true,
        .gt => false,
        .eq => i < j,
    };
}

fn eventKeyLess(es: []const Event, i: u32, j: u32) bool {
    const a = &es[i];
    const b = &es[j];
    if (a.block != b.block) return a.block < b.block;
    if (a.idx != b.idx) return a.idx < b.idx;
    return i < j;
}

fn mk(comptime T: type, n: usize) Err![]T {
    return ch.allocator.alloc(T, n) catch error.Malformed;
}

fn parse(buf: []const u8) Err!Bundle {
    const doc = try decode(buf);
    const d = try arr(doc, 9);
    if ((try int(d[0])) != 1) return error.Invalid;
    const block = try uint(d[1], MAX_BLOCK);
    const hk_raw = try arr(d[2], null);
    const hotkeys = try mk([]const u8, hk_raw.len);
    for (hk_raw, 0..) |h, i| hotkeys[i] = try text(h);
    if (d[3].kind != .boolean) return error.Malformed;
    const halted = d[3].n == 1;
    const max_swap = try uint(d[4], 1 << 64);
    const coll_raw = try arr(d[5], null);
    const rates_raw = try arr(d[6], null);
    const events_raw = try arr(d[7], null);
    const pr = try arr(d[8], 6);
    var params: [6]u64 = undefined;
    for (pr, 0..) |p, i| params[i] = try uint(p, 1 << 64);
    if (hotkeys.len == 0 or hotkeys.len > MAX_UIDS) return error.Invalid;
    {
        const sorted = try mk([]const u8, hotkeys.len);
        @memcpy(sorted, hotkeys);
        std.sort.pdq([]const u8, sorted, {}, bytesLess);
        for (1..@max(sorted.len, 1)) |i| if (std.mem.eql(u8, sorted[i - 1], sorted[i])) return error.Invalid;
    }
    if (@max(coll_raw.len, @max(rates_raw.len, events_raw.len)) > MAX_EVENTS) return error.Invalid;
    const window = params[0];
    const cred = params[1];
    const ramp = params[2];
    const an = params[3];
    const ad = params[4];
    const recycle = params[5];
    if (!(window >= 1 and window <= 1 << 20 and cred >= 1 and cred <= 1 << 32 and ramp >= 1 and ramp <= 1 << 16))
        return error.Invalid;
    if (!(ad >= 1 and ad <= 1 << 20 and an <= ad and recycle < 1 << 16)) return error.Invalid;

    const coll = try mk(Coll, coll_raw.len);
    for (coll_raw, 0..) |row, i| {
        const it = try arr(row, 2);
        const hk = try text(it[0]);
        const amount = try uint(it[1], 1 << 64);
        for (coll[0..i]) |c| if (std.mem.eql(u8, c.hk, hk)) return error.Invalid;
        coll[i] = .{ .hk = hk, .amount = amount };
    }
    const rates = try mk(RateEv, rates_raw.len);
    for (rates_raw, 0..) |row, i| {
        const it = try arr(row, 4);
        const b = try uint(it[0], MAX_BLOCK);
        const hk = try text(it[1]);
        const fwd = try rate(it[2]);
        const rev = try rate(it[3]);
        if (b > block) return error.Invalid;
        rates[i] = .{ .block = b, .hk = hk, .fwd = fwd, .rev = rev };
    }
    {
        const order = try indices(rates.len);
        std.sort.pdq(u32, order, rates, rateKeyLess);
        for (1..@max(order.len, 1)) |i| {
            const a = &rates[order[i - 1]];
            const c = &rates[order[i]];
            if (a.block == c.block and std.mem.eql(u8, a.hk, c.hk)) return error.Invalid;
        }
    }
    const events = try mk(Event, events_raw.len);
    for (events_raw, 0..) |row, i| {
        const it = try arr(row, 5);
        const b = try uint(it[0], MAX_BLOCK);
        const idx = try uint(it[1], MAX_IDX);
        const kind = try uint(it[2], 5);
        const hk = try text(it[3]);
        const amount = try uint(it[4], MAX_AMOUNT);
        if (b > block) return error.Invalid;
        events[i] = .{ .block = b, .idx = idx, .kind = @intCast(kind), .hk = hk, .amount = amount };
    }
    {
        const order = try indices(events.len);
        std.sort.pdq(u32, order, events, eventKeyLess);
        for (1..@max(order.len, 1)) |i| {
            const a = &events[order[i - 1]];
            const c = &events[order[i]];
            if (a.block == c.block and a.idx == c.idx) return error.Invalid;
        }
    }
    return .{
        .block = block,
        .hotkeys = hotkeys,
        .halted = halted,
        .max_swap = max_swap,
        .coll = coll,
        .rates = rates,
        .events = events,
        .window = window,
        .cred = cred,
        .ramp = ramp,
        .an = an,
        .ad = ad,
        .recycle = recycle,
    };
}

// ------------------------------------------------------------------------------------------------
// Hotkey interning: ids in byte order of the hotkeys, so comparing ids compares hotkeys

const Table = struct {
    keys: [][]const u8,

    fn id(self: Table, hk: []const u8) u32 {
        var lo: usize = 0;
        var hi: usize = self.keys.len;
        while (lo < hi) {
            const mid = (lo + hi) / 2;
            switch (std.mem.order(u8, self.keys[mid], hk)) {
                .lt => lo = mid + 1,
                .gt => hi = mid,
                .eq => return @intCast(mid),
            }
        }
        unreachable;
    }
};

fn intern(b: *Bundle) Err!Table {
    const all = try mk([]const u8, b.hotkeys.len + b.coll.len + b.rates.len + b.events.len);
    var n: usize = 0;
    for (b.hotkeys) |h| {
        all[n] = h;
        n += 1;
    }
    for (b.coll) |c| {
        all[n] = c.hk;
        n += 1;
    }
    for (b.rates) |r| {
        all[n] = r.hk;
        n += 1;
    }
    for (b.events) |e| {
        all[n] = e.hk;
        n += 1;
    }
    std.sort.pdq([]const u8, all, {}, bytesLess);
    var u: usize = 0;
    for (all) |h| {
        if (u == 0 or !std.mem.eql(u8, all[u - 1], h)) {
            all[u] = h;
            u += 1;
        }
    }
    const t = Table{ .keys = all[0..u] };
    for (b.coll) |*c| c.id = t.id(c.hk);
    for (b.rates) |*r| r.id = t.id(r.hk);
    for (b.events) |*e| e.id = t.id(e.hk);
    return t;
}

// ------------------------------------------------------------------------------------------------
// Crown-time replay

const Step = struct { block: u64, cls: u8, idx: u64, id: u32, kind: u8, fwd: Rate, rev: Rate };

fn stepLess(st: []const Step, i: u32, j: u32) bool {
    const a = &st[i];
    const b = &st[j];
    if (a.block != b.block) return a.block < b.block;
    if (a.cls != b.cls) return a.cls < b.cls;
    if (a.idx != b.idx) return a.idx < b.idx;
    if (a.id != b.id) return a.id < b.id;
    return i < j;
}

const RATE_KIND: u8 = 5;

const Replay = struct {
    nk: usize,
    ws: u64,
    registered: []bool,
    active: []bool,
    busy: []u64,
    rates: [][2]Rate,
    crown: [][2]u64,
    pools: [2][2]u64 = .{ .{ 0, 0 }, .{ 0, 0 } },

    fn qualified(self: *Replay, i: usize) bool {
        return self.active[i] and self.registered[i] and self.busy[i] == 0;
    }

    fn credit(self: *Replay, a0: u64, b: u64) void {
        const a = @max(a0, self.ws);
        if (b <= a) return;
        const dur = (b - a) * CROWN_UNITS;
        for (0..2) |d| {
            var best: ?Rate = null;
            var k: u64 = 0;
            for (0..self.nk) |i| {
                if (!self.qualified(i)) continue;
                const r = self.rates[i][d];
                if (r.v == 0) continue;
                if (best) |br| {
                    var c = rateCmp(r, br);
                    if (d == 1) c = -c;
                    if (c > 0) {
                        best = r;
                        k = 1;
                    } else if (c == 0) {
                        k += 1;
                    }
                } else {
                    best = r;
                    k = 1;
                }
            }
            if (best) |br| {
                const share = dur / k;
                for (0..self.nk) |i| {
                    if (!self.qualified(i)) continue;
                    const r = self.rates[i][d];
                    if (r.v != br.v) continue;
                    self.crown[i][d] += share;
                    self.pools[d][0] += share;
                }
            } else {
                self.pools[d][1] += dur;
            }
        }
    }
};

// ------------------------------------------------------------------------------------------------
// CBOR output

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

fn mulOne(a: u128, b: u128) u128 {
    return a * b / WEIGHT_ONE;
}

const Row = struct {
    uid: u64,
    hk: []const u8,
    c0: u64,
    c1: u64,
    done: u64,
    failed: u64,
    sr3: u64,
    cap: u64,
    vol: u64,
    vf: u64,
    w: u64,
};

/// Score a parsed bundle; returns the output document and fills `weights`.
fn score(b: *Bundle, weights: []u64) Err![]const u8 {
    const n = b.hotkeys.len;
    const recycle_uid: usize = if (b.recycle < n) @intCast(b.recycle) else 0;
    for (weights) |*w| w.* = 0;
    var out = Out{ .buf = try mk(u8, 128 + 9 * n + 200 * n) };
    if (b.halted) {
        weights[recycle_uid] = @intCast(WEIGHT_ONE);
        out.array(7);
        out.uint(1);
        out.array(n);
        for (weights) |w| out.uint(w);
        out.uint(b.block);
        out.boolean(true);
        out.uint(recycle_uid);
        out.array(2);
        for (0..2) |_| {
            out.array(2);
            out.uint(0);
            out.uint(0);
        }
        out.array(0);
        return out.buf[0..out.len];
    }
    const t = try intern(b);
    const nk = t.keys.len;
    const ws: u64 = if (b.block > b.window) b.block - b.window else 0;
    var rp = Replay{
        .nk = nk,
        .ws = ws,
        .registered = try mk(bool, nk),
        .active = try mk(bool, nk),
        .busy = try mk(u64, nk),
        .rates = try mk([2]Rate, nk),
        .crown = try mk([2]u64, nk),
    };
    for (0..nk) |i| {
        rp.registered[i] = false;
        rp.active[i] = false;
        rp.busy[i] = 0;
        rp.rates[i] = .{ .{}, .{} };
        rp.crown[i] = .{ 0, 0 };
    }
    const uid_id = try mk(u32, n);
    for (b.hotkeys, 0..) |h, u| {
        uid_id[u] = t.id(h);
        rp.registered[uid_id[u]] = true;
    }
    const steps = try mk(Step, b.events.len + b.rates.len);
    for (b.events, 0..) |e, i| {
        const cls: u8 = if (e.kind <= 1) 0 else 1;
        steps[i] = .{ .block = e.block, .cls = cls, .idx = e.idx, .id = e.id, .kind = e.kind, .fwd = .{}, .rev = .{} };
    }
    for (b.rates, 0..) |r, i| {
        steps[b.events.len + i] = .{ .block = r.block, .cls = 2, .idx = 0, .id = r.id, .kind = RATE_KIND, .fwd = r.fwd, .rev = r.rev };
    }
    const order = try indices(steps.len);
    std.sort.pdq(u32, order, steps, stepLess);
    var prev: u64 = 0;
    for (order) |k| {
        const s = &steps[k];
        rp.credit(prev, s.block);
        prev = @max(prev, s.block);
        const i = s.id;
        switch (s.kind) {
            0 => rp.active[i] = true,
            1 => rp.active[i] = false,
            2 => rp.busy[i] += 1,
            3, 4 => {
                if (rp.busy[i] > 0) rp.busy[i] -= 1;
            },
            else => rp.rates[i] = .{ s.fwd, s.rev },
        }
    }
    rp.credit(prev, b.block);

    // outcomes over the credibility window, volume since the window start
    const since: u64 = if (b.block > b.cred) b.block - b.cred else 0;
    const done = try mk(u64, nk);
    const failed = try mk(u64, nk);
    const vol = try mk(u128, nk);
    const coll = try mk(u64, nk);
    for (0..nk) |i| {
        done[i] = 0;
        failed[i] = 0;
        vol[i] = 0;
        coll[i] = 0;
    }
    var total_volume: u128 = 0;
    for (b.events) |e| {
        if ((e.kind == 3 or e.kind == 4) and e.block >= since) {
            if (e.kind == 3) done[e.id] += 1 else failed[e.id] += 1;
        }
        if (e.kind == 3 and e.block >= ws) {
            vol[e.id] += e.amount;
            total_volume += e.amount;
        }
    }
    for (b.coll) |c| coll[c.id] = c.amount;
    const total_crown: u128 = @as(u128, rp.pools[0][0]) + rp.pools[1][0];

    const rows = try mk(Row, n);
    var nrows: usize = 0;
    var sum: u128 = 0;
    for (0..n) |uid| {
        const i = uid_id[uid];
        const c = rp.crown[i];
        const seen = done[i] + failed[i];
        if (c[0] == 0 and c[1] == 0 and seen == 0 and vol[i] == 0) continue;
        const m: u128 = @max(seen, b.ramp);
        const sr3: u128 = if (seen > 0)
            @as(u128, done[i]) * done[i] * done[i] * WEIGHT_ONE / (m * m * m)
        else
            0;
        const cap: u128 = if (b.max_swap == 0)
            WEIGHT_ONE
        else
            @as(u128, @min(coll[i], b.max_swap)) * WEIGHT_ONE / b.max_swap;
        var reward: u128 = 0;
        for (0..2) |d| {
            if (rp.pools[d][0] == 0 or c[d] == 0) continue;
            const share = @as(u128, c[d]) * WEIGHT_ONE / rp.pools[d][0];
            reward += mulOne(mulOne(share / 2, sr3), cap);
        }
        var vf: u128 = WEIGHT_ONE;
        const mine: u128 = @as(u128, c[0]) + c[1];
        if (reward > 0 and total_volume > 0 and mine > 0) {
            const vs = vol[i] * WEIGHT_ONE / total_volume;
            const cs = mine * WEIGHT_ONE / total_crown;
            const q = @min(WEIGHT_ONE, vs * WEIGHT_ONE / cs);
            vf = (@as(u128, b.ad - b.an) * WEIGHT_ONE + @as(u128, b.an) * q) / b.ad;
        }
        const w = mulOne(reward, vf);
        weights[uid] += @intCast(w);
        sum += w;
        rows[nrows] = .{
            .uid = uid,
            .hk = b.hotkeys[uid],
            .c0 = c[0],
            .c1 = c[1],
            .done = done[i],
            .failed = failed[i],
            .sr3 = @intCast(sr3),
            .cap = @intCast(cap),
            .vol = @intCast(vol[i]),
            .vf = @intCast(vf),
            .w = @intCast(w),
        };
        nrows += 1;
    }
    weights[recycle_uid] += @intCast(WEIGHT_ONE - sum);

    // output convention v1 (docs/challenge-abi.md 3.1): [version, weights[n], ...trace]
    out.array(7);
    out.uint(1);
    out.array(n);
    for (weights) |w| out.uint(w);
    out.uint(b.block);
    out.boolean(false);
    out.uint(recycle_uid);
    out.array(2);
    for (0..2) |d| {
        out.array(2);
        out.uint(rp.pools[d][0]);
        out.uint(rp.pools[d][1]);
    }
    out.array(nrows);
    for (rows[0..nrows]) |r| {
        out.array(11);
        out.uint(r.uid);
        out.text(r.hk);
        out.uint(r.c0);
        out.uint(r.c1);
        out.uint(r.done);
        out.uint(r.failed);
        out.uint(r.sr3);
        out.uint(r.cap);
        out.uint(r.vol);
        out.uint(r.vf);
        out.uint(r.w);
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
    var b = parse(p[0..len]) catch |e| return code(e);
    const weights = mk(u64, b.hotkeys.len) catch return -1;
    const doc = score(&b, weights) catch |e| return code(e);
    return ch.pack(doc);
}

export fn evaluate(tp: [*]const u8, tl: u32, sp: [*]const u8, sl: u32) i64 {
    var b = parse(tp[0..tl]) catch |e| return code(e);
    if (sl > 16) return -3;
    const v = decode(sp[0..sl]) catch return -3;
    if (v.kind != .uint or v.n >= b.hotkeys.len) return -3;
    const weights = mk(u64, b.hotkeys.len) catch return -1;
    _ = score(&b, weights) catch |e| return code(e);
    return @intCast(weights[@intCast(v.n)] / 1_000_000_000);
}
