//! {{NAME}}: scaffolded challenge (ABI v1, Zig). Build: validator-node challenge build .
const ch = @import("challenge");

export fn alloc(len: u32) ?[*]u8 {
    return ch.alloc(len);
}

export fn abi_version() i32 {
    return ch.ABI_VERSION;
}

const DESCRIBE = "{\"name\":\"{{NAME}}\",\"abi\":1}";

export fn describe() i64 {
    return ch.pack(DESCRIBE);
}

/// Share of positions where the submission repeats the task byte; -1 for an empty submission.
export fn evaluate(tp: [*]const u8, tl: u32, sp: [*]const u8, sl: u32) i64 {
    if (sl == 0) return -1;
    const n = @min(tl, sl);
    var same: i64 = 0;
    for (tp[0..n], sp[0..n]) |a, b| {
        if (a == b) same += 1;
    }
    return @divTrunc(ch.SCORE_ONE * same, @as(i64, @max(tl, sl)));
}
