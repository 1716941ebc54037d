//! One backup replicated to two different S3 implementations (moto and s3s-fs, started here on
//! loopback) and a file:// target, driven through the real binary: a target down during a
//! backup, a deleted and a corrupted replica, wrong credentials, and recovery of the whole vault
//! from each S3 target with nothing but the key.

mod common;

use std::path::Path;
use std::process::Command;

use common::git_server::{file_url, run_fixture};
use common::s3_server::S3Server;
use common::{TestVault, git, ok, refs_and_head, stderr, stdout};

fn restored_matches(vault_dir: &Path, tv: &TestVault, repo: &Path, name: &str) {
    let to = tv.tmp.path().join(name);
    let out = Command::new(env!("CARGO_BIN_EXE_gitvault"))
        .arg("--vault")
        .arg(vault_dir)
        .args(["restore", "rich", "--to", to.to_str().unwrap()])
        .env("GITVAULT_IDENTITY_FILE", &tv.identity_file)
        .output()
        .unwrap();
    ok(&out);
    git(&to, &["fsck", "--full"]);
    assert_eq!(refs_and_head(&to), refs_and_head(repo));
}

#[test]
fn replicated_to_moto_and_s3s_fs_with_faults_repairs_and_recovery() {
    let tv = TestVault::new();
    let moto = S3Server::moto();
    let mut s3s = S3Server::s3s_fs();
    moto.create_bucket("vault-a");
    s3s.create_bucket("vault-b");
    moto.set_env();
    s3s.set_env();
    let moto_url = moto.url("vault-a", "gv");
    let s3s_url = s3s.url_with("vault-b", "", "&max_attempts=2");
    ok(&tv.run(&["target", "add", "moto", &moto_url]));
    ok(&tv.run(&["target", "add", "s3s", &s3s_url]));
    let listed = ok(&tv.run(&["target", "list"]));
    assert!(!listed.contains(moto.secret_key()) && !listed.contains(s3s.secret_key()));

    let repo = tv.tmp.path().join("rich.git");
    run_fixture("rich.sh", &[repo.to_str().unwrap(), "--many-refs", "200"]);
    ok(&tv.run(&["backup", &file_url(&repo), "--name", "rich"]));
    let out = tv.run(&["--json", "verify"]);
    let doc: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(doc["targets"].as_array().unwrap().len(), 3, "{doc}");

    // s3s-fs goes down: with two replicas required the backup succeeds and reports the lag.
    s3s.stop();
    run_fixture("evolve.sh", &[repo.to_str().unwrap(), "add-commit"]);
    let out = tv
        .command(&[
            "--json",
            "backup",
            &file_url(&repo),
            "--name",
            "rich",
            "--min-replicas",
            "2",
        ])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    let lagging = doc["lagging_replicas"].as_array().unwrap();
    assert!(
        !lagging.is_empty() && lagging.iter().all(|l| l[1] == "s3s"),
        "{doc}"
    );
    s3s.start_again();
    assert_eq!(tv.run(&["verify"]).status.code(), Some(1));
    ok(&tv.run(&["sync"]));
    ok(&tv.run(&["verify", "--full"]));

    // A pack deleted on moto, another corrupted on s3s-fs.
    let local_packs = common::pack_files(&tv.data_dir());
    let name = |p: &std::path::PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
    let deleted = name(&local_packs[0]);
    let corrupted = name(&local_packs[1]);
    let moto_target = gitvault::target::open_target("moto", &moto_url).unwrap();
    moto_target
        .delete(&gitvault::store::pack_key(&deleted))
        .unwrap();
    let s3s_file = s3s
        .data_dir()
        .join("vault-b")
        .join(gitvault::store::pack_key(&corrupted));
    let mut bytes = std::fs::read(&s3s_file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&s3s_file, bytes).unwrap();
    let out = tv.run(&["verify", "--full"]);
    assert_eq!(out.status.code(), Some(1));
    let report = stdout(&out);
    assert!(
        report.contains(&format!("missing: pack {deleted}")),
        "{report}"
    );
    assert!(
        report.contains(&format!("corrupt: pack {corrupted}")),
        "{report}"
    );
    ok(&tv.run(&["sync"]));
    ok(&tv.run(&["verify", "--full"]));
    restored_matches(&tv.dir, &tv, &repo, "after-repair");

    // Wrong credentials: a clear error, no secret in it.
    let wrong = s3s.url_with_wrong_secret("vault-b", "wrong-secret-value-1234");
    let out = tv.run(&["target", "add", "bad", &wrong]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("access denied"), "{err}");
    assert!(
        !err.contains("wrong-secret-value-1234") && !err.contains(s3s.secret_key()),
        "{err}"
    );

    // Disaster: the backup host is gone. Recover from each S3 target with only the key.
    let snapshots = ok(&tv.run(&["snapshots"]));
    std::fs::remove_dir_all(&tv.dir).unwrap();
    for (i, (url, extra)) in [
        (&moto_url, vec![]),
        (&s3s_url, vec![]),
        (&moto_url, vec!["--footers-only"]),
    ]
    .into_iter()
    .enumerate()
    {
        let into = tv.tmp.path().join(format!("recovered-{i}"));
        let mut args = vec!["--json", "recover", "--from", url.as_str()];
        args.extend_from_slice(&extra);
        let out = Command::new(env!("CARGO_BIN_EXE_gitvault"))
            .arg("--vault")
            .arg(&into)
            .args(&args)
            .env("GITVAULT_IDENTITY_FILE", &tv.identity_file)
            .output()
            .unwrap();
        let doc: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
        assert_eq!(doc["snapshots_total"], 2, "{doc}");
        let listed = Command::new(env!("CARGO_BIN_EXE_gitvault"))
            .arg("--vault")
            .arg(&into)
            .arg("snapshots")
            .output()
            .unwrap();
        assert_eq!(ok(&listed), snapshots);
        restored_matches(&into, &tv, &repo, &format!("restored-{i}"));
    }
}
