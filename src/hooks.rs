//! Test hooks: named points in the write path where a test can make the process stall, so that
//! it can be killed at an exact moment (crash-safety and concurrency tests). Set
//! `GITVAULT_TEST_HOOK_STALL=<point>`; the process prints `gitvault-test-hook: <point>` to
//! stderr and sleeps until killed. `GITVAULT_TEST_HOOK_PAUSE=<point>:<file>` pauses there
//! instead until `<file>` exists, then goes on (forcing an interleaving of two processes).
//! Without the variables a point costs one cached lookup.

use std::sync::OnceLock;

pub const STALL_ENV: &str = "GITVAULT_TEST_HOOK_STALL";
pub const PAUSE_ENV: &str = "GITVAULT_TEST_HOOK_PAUSE";

pub fn point(name: &str) {
    static STALL_AT: OnceLock<Option<String>> = OnceLock::new();
    let stall = STALL_AT.get_or_init(|| std::env::var(STALL_ENV).ok());
    if stall.as_deref() == Some(name) {
        eprintln!("gitvault-test-hook: {name}");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    static PAUSE_AT: OnceLock<Option<(String, String)>> = OnceLock::new();
    let pause = PAUSE_AT.get_or_init(|| {
        let text = std::env::var(PAUSE_ENV).ok()?;
        let (point, file) = text.split_once(':')?;
        Some((point.to_string(), file.to_string()))
    });
    if let Some((point, file)) = pause
        && point == name
    {
        eprintln!("gitvault-test-hook: {name}");
        while !std::path::Path::new(file).exists() {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}
