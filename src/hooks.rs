//! Test hooks: named points in the write path where a test can make the process stall, so that
//! it can be killed at an exact moment (crash-safety and concurrency tests). Set
//! `GITVAULT_TEST_HOOK_STALL=<point>`; the process prints `gitvault-test-hook: <point>` to
//! stderr and sleeps until killed. Without the variable a point costs one cached lookup.

use std::sync::OnceLock;

pub const STALL_ENV: &str = "GITVAULT_TEST_HOOK_STALL";

pub fn point(name: &str) {
    static STALL_AT: OnceLock<Option<String>> = OnceLock::new();
    let stall = STALL_AT.get_or_init(|| std::env::var(STALL_ENV).ok());
    if stall.as_deref() == Some(name) {
        eprintln!("gitvault-test-hook: {name}");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}
