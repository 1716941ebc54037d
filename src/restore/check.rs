//! Proof that a restore is right, for `verify --restore-sample`: git's own full check, and the
//! refs and HEAD compared with the snapshot's.

use std::path::Path;
use std::process::Command;

use crate::snapshot::{self, RefSet};

/// Runs `git fsck --full` on a restored repository and compares its refs and HEAD with the
/// snapshot's; returns the problems found (empty when all is well).
pub fn check_restored(repo: &Path, refs: &RefSet) -> Vec<String> {
    let mut problems = Vec::new();
    match Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["fsck", "--full", "--no-dangling"])
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => problems.push(format!(
            "git fsck --full failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => problems.push(format!("cannot run git fsck: {e}")),
    }
    match Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["for-each-ref", "--format=%(objectname) %(refname)"])
        .output()
    {
        Ok(out) if out.status.success() => {
            let actual: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            let expected: Vec<String> = refs.refs.iter().map(|(n, o)| format!("{o} {n}")).collect();
            if actual != expected {
                problems.push(format!(
                    "refs differ from the snapshot: {} restored, {} expected",
                    actual.len(),
                    expected.len()
                ));
            }
        }
        Ok(out) => problems.push(format!(
            "git for-each-ref failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => problems.push(format!("cannot run git for-each-ref: {e}")),
    }
    if let Some(snapshot::Head::Symbolic(target)) = &refs.head {
        let head = std::fs::read_to_string(repo.join("HEAD")).unwrap_or_default();
        if head.trim() != format!("ref: {target}") {
            problems.push(format!(
                "HEAD is `{}`, the snapshot says `ref: {target}`",
                head.trim()
            ));
        }
    }
    problems
}
