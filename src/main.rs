//! The `gitvault` command: parses arguments and hands them to the library (see src/cli/).

mod cli;

fn main() {
    // Everything gitvault creates (the vault directory, its index, config, run reports, mirror
    // caches and temporary packs, restored repositories) is readable by its owner only: the
    // vault reveals repository names, ref names and plaintext git data.
    // SAFETY: umask(2) cannot fail and only changes this process's file creation mask; no
    // other thread exists yet.
    unsafe {
        libc::umask(0o077);
    }
    std::process::exit(cli::main());
}
