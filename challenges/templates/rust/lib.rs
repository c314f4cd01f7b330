//! {{NAME}}: scaffolded challenge (ABI v1, Rust). Build: validator-node challenge build .
//!
//! `challenge` is the SDK (challenges/sdk/rust/challenge.rs), compiled by the build as its own crate:
//! it exports `alloc` and `abi_version`; this file exports `describe` and `evaluate`.
use challenge::{pack, SCORE_ONE};

const DESCRIBE: &[u8] = b"{\"name\":\"{{NAME}}\",\"abi\":1}";

#[no_mangle]
pub extern "C" fn describe() -> i64 {
    pack(DESCRIBE)
}

/// Share of positions where the submission repeats the task byte; -1 for an empty submission.
fn score(task: &[u8], sub: &[u8]) -> i64 {
    if sub.is_empty() {
        return -1;
    }
    let same = task.iter().zip(sub).filter(|(a, b)| a == b).count() as i64;
    SCORE_ONE * same / task.len().max(sub.len()) as i64
}

challenge::export_evaluate!(score);
