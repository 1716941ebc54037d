//! Git LFS through the binary, against real servers: giftless (tests/common/lfs_server.rs) next
//! to the real git HTTP server, fixtures made with the real git-lfs client.

mod common;

use std::path::Path;

use common::git_server::{HttpGitServer, run_fixture};
use common::lfs_server::{LFS_FILTERS, LfsServer, git_in};
use common::{TestVault, ok, stderr, tree_size};
use serde_json::Value;
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

fn backup_json(tv: &TestVault, url: &str) -> (Option<i32>, Value) {
    let out = tv
        .command(&["--json", "backup", url, "--name", "repo"])
        .output()
        .unwrap();
    let doc: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("no JSON: {}", stderr(&out)));
    (out.status.code(), doc["repositories"][0].clone())
}

/// `(sha256 named by the file, sha256 of its content, size)` of every object in `lfs/objects`.
fn lfs_objects(git_dir: &Path) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    for path in common::files_under(&git_dir.join("lfs/objects")) {
        let bytes = std::fs::read(&path).unwrap();
        out.push((
            path.file_name().unwrap().to_string_lossy().into_owned(),
            hex::encode(Sha256::digest(&bytes)),
            bytes.len() as u64,
        ));
    }
    out.sort();
    out
}

struct World {
    tmp: tempfile::TempDir,
    lfs: Option<LfsServer>,
    http: HttpGitServer,
    url: String,
    bare: std::path::PathBuf,
}

impl World {
    /// A new empty bare repository beside the server's, to push a restore to.
    fn empty_bare(&self, name: &str) -> std::path::PathBuf {
        let path = self.tmp.path().join(name);
        ok(&git_in(
            self.tmp.path(),
            self.tmp.path(),
            &["init", "-q", "--bare", path.to_str().unwrap()],
        ));
        path
    }
}

fn world(extra: &[&str]) -> World {
    let tmp = tempfile::tempdir().unwrap();
    let lfs = LfsServer::start(&tmp.path().join("lfs-storage"));
    let root = tmp.path().join("git");
    let bare = root.join("org/repo.git");
    let endpoint = lfs.endpoint("org", "repo");
    let mut args = vec![bare.to_str().unwrap(), endpoint.as_str()];
    args.extend_from_slice(extra);
    run_fixture("lfs.sh", &args);
    let http = HttpGitServer::start(&root, None);
    let url = http.url("org/repo");
    World {
        tmp,
        lfs: Some(lfs),
        http,
        url,
        bare,
    }
}

#[test]
fn lfs_objects_of_every_branch_and_tag_round_trip() {
    let tv = TestVault::new();
    let mut w = world(&[]);
    let (code, line) = backup_json(&tv, &w.url);
    assert_eq!(code, Some(0), "{line}");
    assert_eq!(line["status"], "changed", "{line}");
    // large, small v1, small v2, third, and old.bin that only history reaches.
    assert_eq!(line["lfs_objects_stored"], 5, "{line}");
    let downloads = w.lfs.as_ref().unwrap().downloads();

    // Unchanged: nothing asked of the LFS server.
    let (code, line) = backup_json(&tv, &w.url);
    assert_eq!(code, Some(0), "{line}");
    assert_eq!(line["status"], "unchanged", "{line}");
    assert_eq!(line["lfs_objects_stored"], 0, "{line}");
    assert_eq!(w.lfs.as_ref().unwrap().downloads(), downloads);

    let restored = tv.tmp.path().join("restored.git");
    let out = tv.run(&[
        "--json",
        "restore",
        "repo",
        "--to",
        restored.to_str().unwrap(),
    ]);
    let report: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(report["lfs_objects"], 5, "{report}");
    let objects = lfs_objects(&restored);
    assert_eq!(objects.len(), 5);
    for (name, hash, _) in &objects {
        assert_eq!(name, hash, "an LFS object does not match its name");
    }
    assert!(objects.iter().any(|(_, _, size)| *size == MIB));
    ok(&git_in(w.tmp.path(), &restored, &["fsck", "--full"]));

    // Restored and pushed to a new home: git to a bare repository, LFS to its own endpoint.
    let lfs = w.lfs.as_ref().unwrap();
    let pushed = w.empty_bare("pushed.git");
    let again = tv.tmp.path().join("again.git");
    let out = tv.run(&[
        "--json",
        "restore",
        "repo",
        "--to",
        again.to_str().unwrap(),
        "--push",
        pushed.to_str().unwrap(),
        "--push-lfs-url",
        &lfs.endpoint("org", "pushed"),
    ]);
    let report: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(report["lfs_uploaded"], 5, "{report}");
    let uploaded: Vec<_> = lfs
        .objects()
        .into_iter()
        .filter(|p| p.starts_with(lfs.root().join("org/pushed")))
        .collect();
    assert_eq!(uploaded.len(), 5, "{uploaded:?}");
    for path in uploaded {
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            path.file_name().unwrap().to_string_lossy()
        );
    }

    // Without the LFS server, a clone of the restored repository gets its files from the
    // restored repository's own lfs/objects.
    w.lfs = None;
    let home = w.tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let work = w.tmp.path().join("work");
    let lfs_url = format!("lfs.url=file://{}", restored.display());
    let mut args = vec!["clone", "-q", "--config", lfs_url.as_str()];
    args.extend_from_slice(LFS_FILTERS);
    let from = restored.to_str().unwrap().to_string();
    args.extend([from.as_str(), work.to_str().unwrap()]);
    let out = git_in(&home, w.tmp.path(), &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let large = std::fs::read(work.join("large.bin")).unwrap();
    assert_eq!(large.len() as u64, MIB, "large.bin is still a pointer");
    for branch in ["main", "assets"] {
        let out = git_in(&home, &work, &["checkout", "-q", branch]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = git_in(&home, &work, &["-c", &lfs_url, "lfs", "fsck"]);
        assert!(
            out.status.success(),
            "git lfs fsck on {branch}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let third = std::fs::read(work.join("data/third.bin")).unwrap();
    assert_eq!(third.len(), 64 << 10);

    let verify: Value = serde_json::from_str(&ok(&tv.run(&["--json", "verify"]))).unwrap();
    assert_eq!(verify["lfs_missing"], serde_json::json!([]), "{verify}");
    drop(w.http);
    let _ = w.bare;
}

#[test]
fn missing_and_wrong_objects_are_reported_and_fetched_once_the_server_has_them() {
    let tv = TestVault::new();
    let w = world(&[]);
    let lfs = w.lfs.as_ref().unwrap();
    // old.bin: gone from the server. large.bin: the right size, wrong bytes.
    let objects = lfs.objects();
    let sizes: Vec<(std::path::PathBuf, u64)> = objects
        .iter()
        .map(|p| (p.clone(), std::fs::metadata(p).unwrap().len()))
        .collect();
    let (large, _) = sizes.iter().find(|(_, s)| *s == MIB).unwrap().clone();
    let (old, _) = sizes.iter().find(|(_, s)| *s == 4096).unwrap().clone();
    let saved = w.tmp.path().join("saved");
    std::fs::create_dir_all(&saved).unwrap();
    std::fs::copy(&large, saved.join("large")).unwrap();
    std::fs::rename(&old, saved.join("old")).unwrap();
    let mut bytes = std::fs::read(&large).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&large, &bytes).unwrap();
    let large_oid = large.file_name().unwrap().to_string_lossy().into_owned();
    let old_oid = old.file_name().unwrap().to_string_lossy().into_owned();

    let (code, line) = backup_json(&tv, &w.url);
    assert_eq!(code, Some(3), "{line}");
    assert_eq!(line["status"], "partial", "{line}");
    assert_eq!(line["lfs_objects_stored"], 3, "{line}");
    let missing: Vec<String> = line["lfs_missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    assert_eq!(missing.len(), 2, "{line}");
    assert!(
        missing
            .iter()
            .any(|m| m.contains(&large_oid) && m.contains("SHA-256")),
        "{missing:?}"
    );
    assert!(missing.iter().any(|m| m.contains(&old_oid)), "{missing:?}");
    // verify says so too; the git data restores all the same.
    let out = tv.run(&["--json", "verify"]);
    assert!(!out.status.success());
    let verify: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        verify["lfs_missing"].as_array().unwrap().len(),
        2,
        "{verify}"
    );
    let restored = tv.tmp.path().join("partial.git");
    let out = tv.run(&[
        "--json",
        "restore",
        "repo",
        "--to",
        restored.to_str().unwrap(),
    ]);
    let report: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(report["lfs_objects"], 3, "{report}");

    // The server is repaired: the next run (git unchanged) fetches exactly the two.
    std::fs::copy(saved.join("large"), &large).unwrap();
    std::fs::rename(saved.join("old"), &old).unwrap();
    let (code, line) = backup_json(&tv, &w.url);
    assert_eq!(code, Some(0), "{line}");
    assert_eq!(line["status"], "unchanged", "{line}");
    assert_eq!(line["lfs_objects_stored"], 2, "{line}");
    ok(&tv.run(&["verify"]));
    let restored = tv.tmp.path().join("whole.git");
    let out = tv.run(&[
        "--json",
        "restore",
        "repo",
        "--to",
        restored.to_str().unwrap(),
    ]);
    let report: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(report["lfs_objects"], 5, "{report}");
}

#[test]
fn an_endpoint_that_does_not_serve_lfs_is_reported() {
    let tv = TestVault::new();
    // No .lfsconfig: the default endpoint is the git server's `…/info/lfs`, which serves no
    // LFS API.
    let w = world(&["--no-lfsconfig"]);
    let (code, line) = backup_json(&tv, &w.url);
    assert_eq!(code, Some(3), "{line}");
    assert_eq!(line["status"], "partial", "{line}");
    assert_eq!(line["lfs_missing"].as_array().unwrap().len(), 5, "{line}");
    assert!(line["error"].as_str().unwrap().contains("LFS"), "{line}");
    // The git data is there.
    let restored = tv.tmp.path().join("r.git");
    ok(&tv.run(&["restore", "repo", "--to", restored.to_str().unwrap()]));
}

#[test]
fn a_one_mib_edit_in_a_200_mib_file_adds_a_few_mib() {
    let tv = TestVault::new();
    let tmp = tempfile::tempdir().unwrap();
    let lfs = LfsServer::start(&tmp.path().join("lfs-storage"));
    let root = tmp.path().join("git");
    let bare = root.join("org/big.git");
    let endpoint = lfs.endpoint("org", "big");
    run_fixture("lfs.sh", &["big", bare.to_str().unwrap(), &endpoint, "200"]);
    let http = HttpGitServer::start(&root, None);
    let url = http.url("org/big");
    let (code, line) = backup_json(&tv, &url);
    assert_eq!(code, Some(0), "{line}");
    assert_eq!(line["lfs_objects_stored"], 1, "{line}");
    let before = tree_size(&tv.data_dir());
    assert!(
        before > 190 * MIB,
        "the 200 MiB object is not stored: {before}"
    );

    run_fixture("lfs.sh", &["big-edit", bare.to_str().unwrap(), &endpoint]);
    let (code, line) = backup_json(&tv, &url);
    assert_eq!(code, Some(0), "{line}");
    assert_eq!(line["lfs_objects_stored"], 1, "{line}");
    let grown = tree_size(&tv.data_dir()) - before;
    assert!(
        grown < 12 * MIB,
        "a 1 MiB edit grew the vault by {} MiB",
        grown / MIB
    );
    let restored = tmp.path().join("restored.git");
    let out = tv.run(&[
        "--json",
        "restore",
        "repo",
        "--to",
        restored.to_str().unwrap(),
    ]);
    let report: Value = serde_json::from_str(&ok(&out)).unwrap();
    // Both versions: the first is in main's history.
    assert_eq!(report["lfs_objects"], 2, "{report}");
    for (name, hash, size) in lfs_objects(&restored) {
        assert_eq!(name, hash);
        assert_eq!(size, 200 * MIB);
    }
}

/// On a terminal, LFS downloads (backup) and uploads (restore --push) show their objects and
/// bytes; each run is held at the start of its transfers until that is drawn.
#[test]
fn lfs_transfers_show_objects_and_bytes_on_a_terminal() {
    let tv = TestVault::new();
    let w = world(&[]);
    let shows = |phase: &'static str| {
        move |drawn: &str| {
            // The phase with its object count, then its byte counts (`0 B/1.02 MiB`).
            drawn
                .split(phase)
                .skip(1)
                .any(|rest| rest.starts_with(" (5 objects)") && rest.contains("MiB"))
        }
    };
    let download = shows("repo lfs download");
    common::on_a_terminal(
        &tv,
        &["backup", &w.url, "--name", "repo"],
        &[],
        Some(("lfs-download-started", &download)),
    );
    let lfs = w.lfs.as_ref().unwrap();
    let pushed = w.empty_bare("pushed.git");
    let restored = tv.tmp.path().join("restored.git");
    let upload = shows("repo lfs upload");
    common::on_a_terminal(
        &tv,
        &[
            "restore",
            "repo",
            "--to",
            restored.to_str().unwrap(),
            "--push",
            pushed.to_str().unwrap(),
            "--push-lfs-url",
            &lfs.endpoint("org", "pushed"),
        ],
        &[],
        Some(("lfs-upload-started", &upload)),
    );
    let uploaded = lfs
        .objects()
        .into_iter()
        .filter(|p| p.starts_with(lfs.root().join("org/pushed")))
        .count();
    assert_eq!(uploaded, 5);
}
