//! The real `gitvault` binary: init, the writer lock, passphrases, and crash safety under
//! SIGKILL.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::{TestVault, noise, pack_files, stderr, stdout};

fn put_file(tv: &TestVault, name: &str, data: &[u8]) -> String {
    let path = tv.tmp.path().join(name);
    std::fs::write(&path, data).unwrap();
    let out = tv.run(&["chunk", "put", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).split_whitespace().next().unwrap().to_string()
}

fn cat(tv: &TestVault, id: &str) -> Vec<u8> {
    let out = tv.run(&["chunk", "cat", id]);
    assert!(out.status.success(), "{}", stderr(&out));
    out.stdout
}

/// Starts `chunk put` stalled at a test hook and waits until it reaches it.
fn stalled_put(tv: &TestVault, path: &std::path::Path, point: &str) -> Child {
    let mut child = tv
        .command(&["chunk", "put", path.to_str().unwrap()])
        .env("GITVAULT_TEST_HOOK_STALL", point)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let expected = format!("gitvault-test-hook: {point}");
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains(&expected) => break,
            Some(Ok(_)) => continue,
            _ => panic!("writer exited before reaching {point}: {:?}", child.wait()),
        }
    }
    child
}

/// `stats` of the index as it is: a catch-up would adopt an interrupted run's uploaded pack
/// (its footer is authentic, as the next backup's catch-up does) and no garbage would show.
fn stats_json(tv: &TestVault) -> serde_json::Value {
    let out = tv.run(&["--json", "--no-catch-up", "stats"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn init_refuses_a_non_empty_directory_and_needs_a_key() {
    let tv = TestVault::new();
    let out = Command::new(env!("CARGO_BIN_EXE_gitvault"))
        .arg("--vault")
        .arg(&tv.dir)
        .args(["init", "--recipient", &tv.identity.to_public().to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));

    let fresh = tv.tmp.path().join("fresh");
    let out = Command::new(env!("CARGO_BIN_EXE_gitvault"))
        .arg("--vault")
        .arg(&fresh)
        .arg("init")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--recipient or --passphrase"),
        "{}",
        stderr(&out)
    );

    let out = Command::new(env!("CARGO_BIN_EXE_gitvault"))
        .arg("--vault")
        .arg(&fresh)
        .args(["init", "--recipient", "age1notarecipient"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not an age X25519 recipient"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn passphrase_vault_opens_with_the_right_passphrase_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let run = |pass: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_gitvault"))
            .arg("--vault")
            .arg(&dir)
            .args(args)
            .env("GITVAULT_PASSPHRASE", pass)
            .env_remove("GITVAULT_IDENTITY_FILE")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run("correct horse battery staple", &["init", "--passphrase"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let file = tmp.path().join("f");
    std::fs::write(&file, b"hello passphrase").unwrap();
    let out = run(
        "correct horse battery staple",
        &["chunk", "put", file.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).split_whitespace().next().unwrap().to_string();

    let out = run("wrong passphrase", &["chunk", "cat", &id]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("wrong passphrase"), "{err}");
    assert!(!err.contains("wrong passphrase\n") || !err.contains("correct horse"));

    let out = run("correct horse battery staple", &["chunk", "cat", &id]);
    assert_eq!(out.stdout, b"hello passphrase");
    // The passphrase is nowhere in the vault.
    for path in common::files_under(&dir) {
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(11).any(|w| w == b"horse batte"),
            "{}",
            path.display()
        );
    }
}

#[test]
fn a_second_writer_is_refused_while_the_first_holds_the_lock() {
    let tv = TestVault::new();
    let big = tv.tmp.path().join("big");
    std::fs::write(&big, noise(1, 2 << 20)).unwrap();
    let mut first = stalled_put(&tv, &big, "pack-written");

    let small = tv.tmp.path().join("small");
    std::fs::write(&small, b"x").unwrap();
    let out = tv.run(&["chunk", "put", small.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("vault is locked by pid {} since", first.id())),
        "{err}"
    );
    // Readers are not blocked by the writer.
    assert!(tv.run(&["stats"]).status.success());
    first.kill().unwrap();
    first.wait().unwrap();
    // The lock dies with its holder.
    let out = tv.run(&["chunk", "put", small.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A writer killed after uploading a pack but before indexing it, and another killed at a
/// random moment, leave earlier content intact; the leftovers show up as garbage and a rerun
/// completes.
#[test]
fn killed_writer_leaves_earlier_content_readable_and_garbage_reported() {
    let tv = TestVault::new();
    tv.set_store_option("pack_size", 1 << 20);
    tv.set_store_option("frame_size", 1 << 20);
    let early = noise(5, 3 << 20);
    let early_id = put_file(&tv, "early", &early);
    let packs_before = pack_files(&tv.data_dir()).len();

    let big = tv.tmp.path().join("big");
    std::fs::write(&big, noise(6, 8 << 20)).unwrap();
    let mut child = stalled_put(&tv, &big, "pack-uploaded");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    assert_eq!(cat(&tv, &early_id), early);
    let stats = stats_json(&tv);
    let local = &stats["targets"][0];
    assert!(local["garbage_files"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(local["missing_packs"].as_u64().unwrap(), 0, "{stats}");
    assert!(
        stats["local_garbage_files"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    assert!(pack_files(&tv.data_dir()).len() > packs_before);

    // Killed at an arbitrary point of a long write.
    let huge = tv.tmp.path().join("huge");
    std::fs::write(&huge, noise(7, 40 << 20)).unwrap();
    let mut child = tv
        .command(&["chunk", "put", huge.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(cat(&tv, &early_id), early);

    // A rerun completes over the leftovers.
    let big_id = {
        let out = tv.run(&["chunk", "put", big.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).split_whitespace().next().unwrap().to_string()
    };
    assert_eq!(cat(&tv, &big_id), std::fs::read(&big).unwrap());
    assert_eq!(cat(&tv, &early_id), early);
}

#[test]
fn json_errors_and_missing_vault() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gitvault"))
        .arg("--vault")
        .arg(tmp.path().join("nothing"))
        .args(["--json", "stats"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ok"], false);
    assert!(doc["error"].as_str().unwrap().contains("gitvault init"));
}

#[test]
fn targets_can_be_added_listed_and_removed() {
    let tv = TestVault::new();
    let second = tv.tmp.path().join("second");
    let url = format!("file://{}", second.display());
    let out = tv.run(&["target", "add", "second", &url]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(second.join("gitvault.json").exists());
    assert!(common::files_under(&second.join("keys")).len() == 1);
    let id = put_file(&tv, "f", b"replicated");
    assert_eq!(pack_files(&second).len(), 1, "new packs go to every target");
    let list = stdout(&tv.run(&["target", "list"]));
    assert!(list.contains("local") && list.contains("second"), "{list}");
    let out = tv.run(&["target", "add", "bad/name", &url]);
    assert_eq!(out.status.code(), Some(1));
    let out = tv.run(&["target", "add", "s3x", "ftp://example/x"]);
    assert!(stderr(&out).contains("unknown scheme"), "{}", stderr(&out));
    // The local copy lost: reads fall back to the other target.
    for p in pack_files(&tv.data_dir()) {
        std::fs::remove_file(p).unwrap();
    }
    assert_eq!(cat(&tv, &id), b"replicated");
    let out = tv.run(&["target", "remove", "second"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = tv.run(&["chunk", "cat", &id]);
    assert!(stderr(&out).contains("missing"), "{}", stderr(&out));
}

/// `--since DAY` starts at the beginning of that day and `--until DAY` ends at its end, so a
/// snapshot taken on DAY is in both ranges.
#[test]
fn since_and_until_days_include_the_day() {
    let tv = TestVault::new();
    let repo = tv.tmp.path().join("repo.git");
    common::git_server::run_fixture("rich.sh", &[repo.to_str().unwrap()]);
    let url = common::git_server::file_url(&repo);
    for (i, when) in ["2026-01-04T10:00:00Z", "2026-01-05T10:00:00Z"]
        .iter()
        .enumerate()
    {
        if i == 1 {
            common::git_server::run_fixture("evolve.sh", &[repo.to_str().unwrap(), "add-commit"]);
        }
        let out = tv
            .command(&["backup", &url, "--name", "r"])
            .env("GITVAULT_NOW", when)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let count = |args: &[&str]| {
        let mut all = vec!["--json", "snapshots"];
        all.extend_from_slice(args);
        let out = tv.run(&all);
        assert!(out.status.success(), "{}", stderr(&out));
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        rows.as_array().unwrap().len()
    };
    assert_eq!(count(&[]), 2);
    assert_eq!(count(&["--since", "2026-01-05"]), 1);
    assert_eq!(count(&["--since", "2026-01-04"]), 2);
    assert_eq!(count(&["--until", "2026-01-04"]), 1);
    assert_eq!(
        count(&["--since", "2026-01-05", "--until", "2026-01-05"]),
        1
    );
    assert_eq!(count(&["--since", "2026-01-06"]), 0);
}

/// A reader that goes away (`gitvault … | head`) ends the program quietly with status 0, like
/// other Unix tools, not with a panic.
#[test]
fn a_closed_stdout_ends_quietly() {
    let tv = TestVault::new();
    for args in [&["target", "list"][..], &["--json", "target", "list"][..]] {
        let mut child = tv
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Closed before the program writes anything.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
}

/// SIGTERM (systemd's stop) during `gitvault backup` of several repositories: the repository
/// in progress finishes and is committed, the rest are reported as not attempted, and the vault
/// verifies.
#[test]
fn sigterm_finishes_the_repository_in_progress_and_commits() {
    use std::os::unix::process::ExitStatusExt;
    let tv = TestVault::new();
    let mut urls = Vec::new();
    for name in ["one", "two", "three"] {
        let repo = tv.tmp.path().join(format!("{name}.git"));
        common::git_server::run_fixture("rich.sh", &[repo.to_str().unwrap()]);
        urls.push(common::git_server::file_url(&repo));
    }
    let release = tv.tmp.path().join("release");
    let mut args = vec!["--json", "backup", "--jobs", "1"];
    args.extend(urls.iter().map(String::as_str));
    let mut child = tv
        .command(&args)
        .env(
            "GITVAULT_TEST_HOOK_PAUSE",
            format!("backup-repository-started:{}", release.display()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("backup-repository-started") => break,
            Some(Ok(_)) => continue,
            _ => panic!("the backup ended early: {:?}", child.wait()),
        }
    }
    // SIGTERM while the first repository is held at its start, then let it go on.
    let ok_kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok_kill.success());
    std::thread::sleep(std::time::Duration::from_millis(200));
    std::fs::write(&release, b"").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.signal(),
        None,
        "ended by the signal, not by itself"
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lines = doc["repositories"].as_array().unwrap();
    assert_eq!(lines[0]["status"], "changed", "{doc}");
    for line in &lines[1..] {
        assert_eq!(line["reason"], "not-attempted", "{doc}");
    }
    assert_eq!(out.status.code(), Some(3), "partly done");
    let verify = tv.run(&["verify"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    let snapshots = tv.run(&["--json", "snapshots"]);
    let rows: serde_json::Value = serde_json::from_slice(&snapshots.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
}
