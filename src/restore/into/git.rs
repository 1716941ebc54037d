//! The git side of a restore into an account: the snapshot written as a bare repository in a
//! work directory under the vault, read-only namespaces moved under `refs/gitvault/`, every
//! ref pushed (nothing deleted on the remote), then the LFS objects uploaded.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::git::Credentials;
use crate::snapshot::RefSet;

use super::super::{RestoreError, io_err, push};

/// Namespaces hosting providers keep for themselves and refuse pushes to.
const READ_ONLY: [&str; 5] = [
    "refs/pull/",
    "refs/merge-requests/",
    "refs/pipelines/",
    "refs/environments/",
    "refs/keep-around/",
];

/// The name a ref is pushed under: read-only namespaces go below `refs/gitvault/`.
pub fn pushed_name(name: &str) -> String {
    if READ_ONLY.iter().any(|ns| name.starts_with(ns)) {
        format!("refs/gitvault/{}", &name["refs/".len()..])
    } else {
        name.to_string()
    }
}

/// Counts of refs by what happens to them: (branches, tags, moved under refs/gitvault, other).
pub fn ref_counts(refs: &RefSet) -> (usize, usize, usize, usize) {
    let mut counts = (0, 0, 0, 0);
    for name in refs.refs.keys() {
        if name.starts_with("refs/heads/") {
            counts.0 += 1;
        } else if name.starts_with("refs/tags/") {
            counts.1 += 1;
        } else if pushed_name(name) != *name {
            counts.2 += 1;
        } else {
            counts.3 += 1;
        }
    }
    counts
}

/// Renames the read-only refs of the restored repository at `repo` in one transaction.
pub fn move_read_only_refs(repo: &Path, refs: &RefSet) -> Result<(), RestoreError> {
    let mut script = String::new();
    for (name, oid) in &refs.refs {
        let to = pushed_name(name);
        if to != *name {
            script.push_str(&format!("create {to} {oid}\ndelete {name} {oid}\n"));
        }
    }
    if script.is_empty() {
        return Ok(());
    }
    let mut child = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["update-ref", "--stdin"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err("running git update-ref"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(io_err("writing to git update-ref"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(io_err("running git update-ref"))?;
    if !out.status.success() {
        return Err(RestoreError::Push(format!(
            "moving read-only refs under refs/gitvault/ failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Pushes every ref, then uploads the LFS objects; returns how many LFS objects the server
/// did not have.
pub fn push_repository(
    repo: &Path,
    clone_url: &str,
    credentials: Option<&Credentials>,
) -> Result<u64, RestoreError> {
    push::push_all_refs(repo, clone_url, credentials)?;
    push::push_lfs(
        repo,
        clone_url,
        None,
        credentials,
        ("", &crate::progress::Silent),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn read_only_namespaces_move_under_gitvault() {
        assert_eq!(
            super::pushed_name("refs/pull/3/head"),
            "refs/gitvault/pull/3/head"
        );
        assert_eq!(
            super::pushed_name("refs/merge-requests/1/head"),
            "refs/gitvault/merge-requests/1/head"
        );
        assert_eq!(super::pushed_name("refs/heads/main"), "refs/heads/main");
        assert_eq!(super::pushed_name("refs/pullx"), "refs/pullx");
    }
}
