//! Challenge ABI v1 for Zig (wasm32-freestanding). See docs/challenge-abi.md.
//!
//! Build (module name `challenge`):
//!   python -m ziglang build-exe --dep challenge -Mroot=main.zig -Mchallenge=challenges/sdk/zig/challenge.zig \
//!       -target wasm32-freestanding -fno-entry -rdynamic -O ReleaseSmall -fstrip -femit-bin=challenge.wasm
//!
//! In main.zig: `const ch = @import("challenge");` then export `alloc` and `evaluate` (see `exportAbi`).
const std = @import("std");

pub const ABI_VERSION: i32 = 1;
/// Scores are fixed point: SCORE_ONE is 1.0. Negative values are error codes (invalid submission).
pub const SCORE_ONE: i64 = 1_000_000_000;

/// Host functions; each costs fuel. Import only what the challenge manifest allows: an extern that is
/// never called is not imported.
pub const platform = struct {
    pub extern "platform" fn log(ptr: [*]const u8, len: u32) void;
    pub extern "platform" fn seed(out: *[32]u8) void;
    pub extern "platform" fn block_height() i64;
};

/// The allocator behind `alloc`: the host gives every evaluation a fresh instance, so nothing is freed.
pub const allocator = std.heap.wasm_allocator;

/// ABI `alloc(len) -> ptr`: null (0) when the memory cap refuses growth; the host reports memory_limit.
pub fn alloc(len: u32) ?[*]u8 {
    const buf = allocator.alloc(u8, if (len == 0) 1 else len) catch return null;
    return buf.ptr;
}

pub fn readU32(bytes: []const u8, at: usize) u32 {
    return std.mem.readInt(u32, bytes[at..][0..4], .little);
}

pub fn readU16(bytes: []const u8, at: usize) u16 {
    return std.mem.readInt(u16, bytes[at..][0..2], .little);
}

/// Pack (ptr, len) for `describe()` / `aggregate()`.
pub fn pack(bytes: []const u8) i64 {
    return @bitCast((@as(u64, @intFromPtr(bytes.ptr)) << 32) | bytes.len);
}

pub fn log(msg: []const u8) void {
    platform.log(msg.ptr, @intCast(msg.len));
}
