//! Replication across targets, verify, sync, and recover from one target with only the key
//! (file:// targets here; tests/s3_target.rs covers the S3 servers).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::git_server::{file_url, run_fixture};
use common::{TestVault, ok, pack_files, refs_and_head, stderr, stdout};

/// A vault with a second file target and one backed-up repository.
fn setup() -> (TestVault, PathBuf, PathBuf) {
    let tv = TestVault::new();
    let second = tv.tmp.path().join("second");
    ok(&tv.run(&["target", "add", "second", &file_url(&second)]));
    let repo = tv.tmp.path().join("rich.git");
    run_fixture("rich.sh", &[repo.to_str().unwrap()]);
    ok(&tv.run(&["backup", &file_url(&repo), "--name", "rich"]));
    (tv, second, repo)
}

fn restore_and_check(tv: &TestVault, repo: &Path, to_name: &str) {
    let to = tv.tmp.path().join(to_name);
    ok(&tv.run(&["restore", "rich", "--to", to.to_str().unwrap()]));
    let fsck = Command::new("git")
        .arg("-C")
        .arg(&to)
        .args(["fsck", "--full"])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stderr)
    );
    assert_eq!(refs_and_head(&to), refs_and_head(repo));
}

#[test]
fn verify_names_a_missing_and_a_corrupt_replica_and_sync_repairs_them() {
    let (tv, second, repo) = setup();
    // More than one pack, so that the two faults hit different packs.
    ok(&tv.run(&["backup", &file_url(&repo), "--name", "rich-copy"]));
    let file = tv.tmp.path().join("blob");
    std::fs::write(&file, common::noise(3, 200_000)).unwrap();
    ok(&tv.run(&["chunk", "put", file.to_str().unwrap()]));
    let local_packs = pack_files(&tv.data_dir());
    assert!(local_packs.len() >= 2);
    let deleted = local_packs[0].clone();
    std::fs::remove_file(&deleted).unwrap();
    let flipped = pack_files(&second)[1].clone();
    let mut bytes = std::fs::read(&flipped).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&flipped, bytes).unwrap();
    let name = |p: &PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();

    let out = tv.run(&["verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains(&name(&deleted)), "{}", stdout(&out));

    let out = tv.run(&["verify", "--full"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let report = stdout(&out);
    assert!(
        report.contains(&format!("missing: pack {}", name(&deleted))),
        "{report}"
    );
    assert!(
        report.contains(&format!("corrupt: pack {}", name(&flipped))),
        "{report}"
    );

    // Reads avoid the bad replicas meanwhile.
    restore_and_check(&tv, &repo, "before-sync");

    let out = tv.run(&["--json", "sync"]);
    let doc: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(doc["ok"], true, "{doc}");
    let out = tv.run(&["verify", "--full"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(deleted.exists());
    restore_and_check(&tv, &repo, "after-sync");
}

#[test]
fn a_target_down_during_backup_lags_and_sync_brings_it_level() {
    let (tv, second, repo) = setup();
    // The second target becomes unusable: its directory is replaced by a file.
    let parked = tv.tmp.path().join("second-parked");
    std::fs::rename(&second, &parked).unwrap();
    std::fs::write(&second, b"not a directory").unwrap();
    run_fixture("evolve.sh", &[repo.to_str().unwrap(), "add-commit"]);

    // The default policy (all targets) refuses, and says why.
    let out = tv.run(&["backup", &file_url(&repo), "--name", "rich"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("reached 1 of the 2 targets"),
        "{}",
        stderr(&out)
    );

    // With one replica required, the backup succeeds and reports the lagging target.
    let out = tv
        .command(&[
            "--json",
            "backup",
            &file_url(&repo),
            "--name",
            "rich",
            "--min-replicas",
            "1",
        ])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    let lagging = doc["lagging_replicas"].as_array().unwrap();
    assert!(!lagging.is_empty() && lagging[0][1] == "second", "{doc}");

    std::fs::remove_file(&second).unwrap();
    std::fs::rename(&parked, &second).unwrap();
    let out = tv.run(&["verify"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the lagging target must show: {}",
        stdout(&out)
    );
    ok(&tv.run(&["sync"]));
    let out = tv.run(&["verify", "--full"]);
    assert!(out.status.success(), "{}", stdout(&out));
    // Every pack on the healthy target is now on the repaired one too, the refused backup's
    // among them: the next run (one replica required) caught up with it, and sync copied it.
    let names = |dir: &Path| -> std::collections::BTreeSet<_> {
        pack_files(dir)
            .iter()
            .map(|p| p.file_name().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&second), names(&tv.data_dir()));
    restore_and_check(&tv, &repo, "restored");
}

fn recover_from(tv: &TestVault, url: &str, extra: &[&str], into: &Path) -> serde_json::Value {
    let mut args = vec!["--json", "recover", "--from", url];
    args.extend_from_slice(extra);
    let out = Command::new(env!("CARGO_BIN_EXE_gitvault"))
        .arg("--vault")
        .arg(into)
        .args(&args)
        .env("GITVAULT_IDENTITY_FILE", &tv.identity_file)
        .output()
        .unwrap();
    serde_json::from_str(&ok(&out)).unwrap()
}

#[test]
fn recover_from_each_target_with_and_without_index_backups() {
    let (tv, second, repo) = setup();
    run_fixture("evolve.sh", &[repo.to_str().unwrap(), "add-commit"]);
    ok(&tv.run(&["backup", &file_url(&repo), "--name", "rich"]));
    let expected = refs_and_head(&repo);
    let snapshots_before = stdout(&tv.run(&["snapshots"]));
    // The backup host is lost; the local target directory with it. Keep a copy of the
    // local target elsewhere to recover from it as a target of its own.
    let local_copy = tv.tmp.path().join("local-copy");
    assert!(
        Command::new("cp")
            .arg("-a")
            .arg(tv.data_dir())
            .arg(&local_copy)
            .status()
            .unwrap()
            .success()
    );
    std::fs::remove_dir_all(&tv.dir).unwrap();

    for (i, (target, extra)) in [
        (&local_copy, vec![]),
        (&second, vec![]),
        (&second, vec!["--footers-only"]),
    ]
    .into_iter()
    .enumerate()
    {
        let into = tv.tmp.path().join(format!("recovered-{i}"));
        let doc = recover_from(&tv, &file_url(target), &extra, &into);
        assert_eq!(doc["snapshots_total"], 2, "{doc}");
        if extra.is_empty() {
            assert!(doc["index_backup"].is_string(), "{doc}");
        } else {
            assert!(
                doc["index_backup"].is_null() && doc["snapshots_recovered"] == 2,
                "{doc}"
            );
        }
        let recovered = TestVault {
            tmp: tempfile::tempdir().unwrap(),
            dir: into.clone(),
            identity_file: tv.identity_file.clone(),
            identity: tv.identity.clone(),
        };
        let listing = stdout(&recovered.run(&["snapshots"]));
        assert_eq!(listing, snapshots_before);
        let to = tv.tmp.path().join(format!("restored-{i}"));
        ok(&recovered.run(&["restore", "rich", "--to", to.to_str().unwrap()]));
        let fsck = Command::new("git")
            .arg("-C")
            .arg(&to)
            .args(["fsck", "--full"])
            .output()
            .unwrap();
        assert!(fsck.status.success());
        assert_eq!(refs_and_head(&to), expected);
        if i == 2 {
            // And carry on: back up again into the recovered vault.
            run_fixture("evolve.sh", &[repo.to_str().unwrap(), "add-branch"]);
            let out = ok(&recovered.run(&["--json", "backup", &file_url(&repo), "--name", "rich"]));
            assert!(out.contains("\"changed\""), "{out}");
            assert_eq!(stdout(&recovered.run(&["snapshots"])).lines().count(), 4);
        }
    }

    // Index backups removed from the target: footers alone suffice.
    std::fs::remove_dir_all(local_copy.join("index")).unwrap();
    let into = tv.tmp.path().join("recovered-footers");
    let doc = recover_from(&tv, &file_url(&local_copy), &[], &into);
    assert!(doc["index_backup"].is_null(), "{doc}");
    assert_eq!(doc["snapshots_total"], 2, "{doc}");

    // The wrong key is refused clearly, and nothing is created.
    let other = tv.tmp.path().join("other-identity.txt");
    let id = age::x25519::Identity::generate();
    std::fs::write(
        &other,
        age::secrecy::ExposeSecret::expose_secret(&id.to_string()),
    )
    .unwrap();
    let into = tv.tmp.path().join("recovered-wrong");
    let out = Command::new(env!("CARGO_BIN_EXE_gitvault"))
        .arg("--vault")
        .arg(&into)
        .args(["recover", "--from", &file_url(&second)])
        .env("GITVAULT_IDENTITY_FILE", &other)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("wrong passphrase or wrong identity"),
        "{}",
        stderr(&out)
    );
    assert!(!into.exists());
}
