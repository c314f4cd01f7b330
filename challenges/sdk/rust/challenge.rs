//! Challenge ABI v1 for Rust (`wasm32-unknown-unknown`, no external crates). See docs/challenge-abi.md.
//!
//! This file is the crate `challenge`: it exports `alloc` and `abi_version`. Your crate (a cdylib,
//! `lib.rs`) uses it as `challenge::...` and defines `evaluate` with
//! `challenge::export_evaluate!(my_fn)` where `fn my_fn(task: &[u8], sub: &[u8]) -> i64`.
//!
//! `validator-node challenge build` runs Debian bookworm's rustc 1.63 (`/usr/bin/rustc`, packages
//! rustc + libstd-rust-dev-wasm32 + lld-14, never a rustup toolchain), twice (C = common flags):
//!   C="--edition 2021 --target wasm32-unknown-unknown -C opt-level=3 -C panic=abort -C codegen-units=1
//!      -C debuginfo=0 --remap-path-prefix=<sdk dir>=sdk --remap-path-prefix=<scratch>=build"
//!   /usr/bin/rustc $C --crate-type rlib --crate-name challenge -o <scratch>/libchallenge.rlib challenge.rs
//!   /usr/bin/rustc $C --crate-type cdylib --crate-name challenge_module -C lto -C strip=symbols \
//!       -C linker=/usr/bin/rust-lld --extern challenge=<scratch>/libchallenge.rlib -L <scratch> \
//!       --remap-path-prefix=<source dir>=src -o module.wasm lib.rs
//! (the remaps keep directories out of panic messages, so the bytes do not depend on where you build).
//! With cargo instead: a path dependency `challenge` with `[lib] path = ".../challenge.rs"`, and
//! `[lib] crate-type = ["cdylib"]`, `[profile.release] panic = "abort", lto = true, strip = true`
//! (a different compiler gives different bytes: the network pins the module hash).
//! A panic becomes a wasm trap (error kind `trap`); return a negative code instead for invalid input.

#![allow(dead_code)]

pub const ABI_VERSION: i32 = 1;
/// Scores are fixed point: SCORE_ONE is 1.0. Negative values are error codes (invalid submission).
pub const SCORE_ONE: i64 = 1_000_000_000;

/// Host functions; each costs fuel. Import only what the manifest allows (unused ones are not imported).
pub mod platform {
    #[link(wasm_import_module = "platform")]
    extern "C" {
        pub fn log(ptr: *const u8, len: u32);
        pub fn seed(out: *mut u8);
        pub fn block_height() -> i64;
    }

    pub fn log_bytes(msg: &[u8]) {
        unsafe { log(msg.as_ptr(), msg.len() as u32) }
    }

    pub fn seed32() -> [u8; 32] {
        let mut s = [0u8; 32];
        unsafe { seed(s.as_mut_ptr()) };
        s
    }
}

/// ABI `alloc(len) -> ptr`. Leaks on purpose: every evaluation gets a fresh instance.
#[no_mangle]
pub extern "C" fn alloc(len: u32) -> *mut u8 {
    let mut v: Vec<u8> = Vec::with_capacity(if len == 0 { 1 } else { len as usize });
    let p = v.as_mut_ptr();
    core::mem::forget(v);
    p
}

#[no_mangle]
pub extern "C" fn abi_version() -> i32 {
    ABI_VERSION
}

/// Pack (ptr, len) for `describe()` / `aggregate()`.
pub fn pack(bytes: &'static [u8]) -> i64 {
    (((bytes.as_ptr() as u64) << 32) | bytes.len() as u64) as i64
}

pub fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Defines the `evaluate` export from a safe `fn(&[u8], &[u8]) -> i64`.
#[macro_export]
macro_rules! export_evaluate {
    ($f:path) => {
        #[no_mangle]
        pub unsafe extern "C" fn evaluate(tp: *const u8, tl: u32, sp: *const u8, sl: u32) -> i64 {
            let task = core::slice::from_raw_parts(tp, tl as usize);
            let sub = core::slice::from_raw_parts(sp, sl as usize);
            $f(task, sub)
        }
    };
}
