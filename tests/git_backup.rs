//! Backing up and restoring real repositories served by real git servers on loopback: smart
//! HTTP (nginx + git http-backend, Basic auth), git daemon, and file://.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::git_server::{
    Fault, FaultyHttpServer, GitDaemon, HttpGitServer, file_url, run_fixture,
};
use common::{TestVault, git, ok, refs_and_head, stderr, stdout, tree_size};

const USER: &str = "backup-bot";
const TOKEN: &str = "tok-3f9a1c7e5b2d4680";

fn fsck(repo: &Path) {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["fsck", "--full", "--strict"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git fsck --full failed on {}: {}",
        repo.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_repo(root: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = root.join(format!("{name}.git"));
    let mut all = vec![path.to_str().unwrap()];
    all.extend_from_slice(args);
    run_fixture("rich.sh", &all);
    path
}

fn evolve(repo: &Path, step: &str) {
    run_fixture("evolve.sh", &[repo.to_str().unwrap(), step]);
}

fn backup(tv: &TestVault, url: &str, name: &str, now: Option<&str>) -> serde_json::Value {
    let mut cmd = tv.command(&["--json", "backup", url, "--name", name]);
    if let Some(now) = now {
        cmd.env("GITVAULT_NOW", now);
    }
    cmd.env("GITVAULT_USERNAME", USER)
        .env("GITVAULT_TOKEN", TOKEN);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "backup of {url} failed: {}",
        stderr(&out)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ok"], true, "{doc}");
    doc
}

fn restore(tv: &TestVault, name: &str, extra: &[&str], to: &Path) {
    let mut args = vec!["restore", name, "--to", to.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = tv.run(&args);
    assert!(
        out.status.success(),
        "restore {extra:?} failed: {}",
        stderr(&out)
    );
}

#[test]
fn round_trip_over_http_with_auth_git_daemon_and_file() {
    let tv = TestVault::new();
    let root = tv.tmp.path().join("served");
    std::fs::create_dir_all(&root).unwrap();
    let rich = make_repo(&root, "rich", &["--many-refs", "10000"]);
    let http = HttpGitServer::start(&root, Some((USER, TOKEN)));
    let daemon = GitDaemon::start(&root);
    let expected = refs_and_head(&rich);
    assert!(expected.lines().count() > 10_000);

    for (name, url) in [
        ("http/rich", http.url("rich")),
        ("daemon/rich", daemon.url("rich")),
        ("file/rich", file_url(&rich)),
    ] {
        let doc = backup(&tv, &url, name, None);
        assert_eq!(doc["repositories"][0]["status"], "changed", "{doc}");
        let to = tv
            .tmp
            .path()
            .join(format!("restored-{}", name.replace('/', "-")));
        restore(&tv, name, &[], &to);
        fsck(&to);
        assert_eq!(
            refs_and_head(&to),
            expected,
            "refs of {name} differ after restore"
        );
    }
    // The three copies share every object: the second and third backups stored no new chunks
    // beyond their manifests.
    let listing = stdout(&tv.run(&["--json", "snapshots"]));
    let snaps: serde_json::Value = serde_json::from_str(&listing).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 3);
    // The credentials reached no file of the vault.
    for path in common::files_under(&tv.dir) {
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "{}",
            path.display()
        );
    }
    let out = tv.run(&["verify", "--restore-sample", "3"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}

#[test]
fn point_in_time_restore_brings_back_force_pushed_and_deleted_history() {
    let tv = TestVault::new();
    let root = tv.tmp.path().join("served");
    std::fs::create_dir_all(&root).unwrap();
    let rich = make_repo(&root, "rich", &[]);
    let url = file_url(&rich);
    let day1 = refs_and_head(&rich);
    backup(&tv, &url, "rich", Some("2026-01-01T12:00:00Z"));
    evolve(&rich, "force-push");
    evolve(&rich, "delete-branch");
    let day2 = refs_and_head(&rich);
    assert_ne!(day1, day2);
    assert!(day1.contains("refs/heads/dev") && !day2.contains("refs/heads/dev"));
    backup(&tv, &url, "rich", Some("2026-01-02T12:00:00Z"));
    // Upstream history is gone for good.
    git(&rich, &["gc", "--prune=now", "--quiet"]);

    let at1 = tv.tmp.path().join("at-day1");
    restore(&tv, "rich", &["--at", "2026-01-01"], &at1);
    fsck(&at1);
    assert_eq!(refs_and_head(&at1), day1);

    let at2 = tv.tmp.path().join("at-day2");
    restore(&tv, "rich", &["--at", "2026-01-02"], &at2);
    fsck(&at2);
    assert_eq!(refs_and_head(&at2), day2);

    // Before the first snapshot there is nothing, and the error says so.
    let out = tv.run(&[
        "restore",
        "rich",
        "--at",
        "2025-12-31",
        "--to",
        tv.tmp.path().join("none").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no snapshot of `rich` at or before"),
        "{}",
        stderr(&out)
    );

    let ls = stdout(&tv.run(&["ls", "rich", "--at", "2026-01-01"]));
    assert!(
        ls.contains("refs/heads/dev") && ls.contains("HEAD -> refs/heads/main"),
        "{ls}"
    );
    let ls = stdout(&tv.run(&["ls", "rich"]));
    assert!(!ls.contains("refs/heads/dev"), "{ls}");
}

#[test]
fn unchanged_repository_transfers_no_pack_and_costs_a_few_kib() {
    let tv = TestVault::new();
    let root = tv.tmp.path().join("served");
    std::fs::create_dir_all(&root).unwrap();
    make_repo(&root, "rich", &[]);
    let http = HttpGitServer::start(&root, Some((USER, TOKEN)));
    let url = http.url("rich");
    backup(&tv, &url, "rich", None);
    assert!(
        http.pack_fetches() >= 1,
        "the first backup must fetch a pack:\n{}",
        http.access_log()
    );
    let before = tree_size(&tv.data_dir());
    http.clear_access_log();

    let doc = backup(&tv, &url, "rich", None);
    assert_eq!(doc["repositories"][0]["status"], "unchanged", "{doc}");
    assert_eq!(
        http.pack_fetches(),
        0,
        "no pack may be transferred:\n{}",
        http.access_log()
    );
    let growth = tree_size(&tv.data_dir()) - before;
    assert!(
        growth < 4096,
        "an unchanged backup grew the vault by {growth} bytes"
    );
    // Deleting the mirror cache loses nothing: the next run fetches again and is still exact.
    std::fs::remove_dir_all(tv.dir.join("cache")).unwrap();
    backup(&tv, &url, "rich", None);
    let to = tv.tmp.path().join("restored");
    restore(&tv, "rich", &[], &to);
    fsck(&to);
}

#[test]
fn incremental_backup_adds_about_the_new_commit() {
    let tv = TestVault::new();
    let (rich, _daemon, url, _) = served_and_backed_up(&tv);
    let before = tree_size(&tv.data_dir());
    assert!(
        before > 1_000_000,
        "the repository should weigh over 1 MB in the vault ({before})"
    );
    evolve(&rich, "add-commit"); // 100 KiB of incompressible data
    let doc = backup(&tv, &url, "rich", None);
    let growth = tree_size(&tv.data_dir()) - before;
    assert!(
        (100_000..200_000).contains(&growth),
        "one 100 KiB commit grew the vault by {growth} bytes: {doc}"
    );
    let added = doc["repositories"][0]["objects_added"].as_u64().unwrap();
    assert!((3..=6).contains(&added), "{doc}");
    // The mirror cache's refs (written by gitvault, not by gix's ref update) are what the
    // fetch offers as haves: without them the server sends the whole history again.
    let received = doc["repositories"][0]["objects_received"].as_u64().unwrap();
    assert!((3..=6).contains(&received), "{doc}");
}

#[test]
fn empty_repository_snapshots_and_restores() {
    let tv = TestVault::new();
    let empty = tv.tmp.path().join("empty.git");
    run_fixture("empty.sh", &[empty.to_str().unwrap()]);
    backup(&tv, &file_url(&empty), "empty", None);
    let to = tv.tmp.path().join("restored");
    restore(&tv, "empty", &[], &to);
    fsck(&to);
    assert_eq!(git(&to, &["for-each-ref"]), "");
}

#[test]
fn restore_refuses_a_non_empty_destination_and_pushes_a_mirror() {
    let tv = TestVault::new();
    let root = tv.tmp.path().join("served");
    std::fs::create_dir_all(&root).unwrap();
    let rich = make_repo(&root, "rich", &[]);
    backup(&tv, &file_url(&rich), "rich", None);
    let busy = tv.tmp.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("keep.txt"), b"precious").unwrap();
    let out = tv.run(&["restore", "rich", "--to", busy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    assert_eq!(std::fs::read(busy.join("keep.txt")).unwrap(), b"precious");

    let remote = tv.tmp.path().join("remote.git");
    git(
        tv.tmp.path(),
        &["init", "-q", "--bare", remote.to_str().unwrap()],
    );
    let to = tv.tmp.path().join("restored");
    restore(&tv, "rich", &["--push", &file_url(&remote)], &to);
    fsck(&remote);
    let pushed = git(
        &remote,
        &["for-each-ref", "--format=%(objectname) %(refname)"],
    );
    let source = git(
        &rich,
        &["for-each-ref", "--format=%(objectname) %(refname)"],
    );
    assert_eq!(pushed, source);
}

fn failed_backup(tv: &TestVault, url: &str, name: &str, token: Option<&str>) -> String {
    let mut cmd = tv.command(&["backup", url, "--name", name]);
    cmd.env("GITVAULT_USERNAME", USER);
    if let Some(t) = token {
        cmd.env("GITVAULT_TOKEN", t);
    }
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "backup of {url} should fail: {}",
        stderr(&out)
    );
    let err = stderr(&out);
    eprintln!("[{name}] {err}");
    assert!(
        err.contains(name),
        "the error must name the repository: {err}"
    );
    if let Some(t) = token {
        assert!(
            !err.contains(t) && !stdout(&out).contains(t),
            "the token leaked: {err}"
        );
    }
    let snaps = stdout(&tv.run(&["snapshots", name]));
    assert_eq!(
        snaps.lines().count(),
        1,
        "a failed backup must not record a snapshot: {snaps}"
    );
    err
}

#[test]
fn bad_inputs_fail_cleanly_name_the_repository_and_hide_the_token() {
    let tv = TestVault::new();
    let root = tv.tmp.path().join("served");
    std::fs::create_dir_all(&root).unwrap();
    let rich = make_repo(&root, "rich", &[]);
    let http = HttpGitServer::start(&root, Some((USER, TOKEN)));

    failed_backup(
        &tv,
        "http://127.0.0.1:1/nothing.git",
        "unreachable",
        Some(TOKEN),
    );
    failed_backup(
        &tv,
        &http.url("rich"),
        "wrong-token",
        Some("tok-wrong-but-secret-77"),
    );
    failed_backup(&tv, &http.url("rich"), "no-token", None);
    failed_backup(
        &tv,
        &http.url("does-not-exist"),
        "missing-repo",
        Some(TOKEN),
    );
    failed_backup(&tv, &file_url(&root.join("nope.git")), "missing-path", None);
    for (fault, name) in [
        (Fault::Status(403), "forbidden"),
        (Fault::Status(500), "server-error"),
        (Fault::TruncatePack, "truncated-pack"),
        (Fault::FlipByteInPack, "corrupt-pack"),
        (Fault::ClosePackEarly, "closed-early"),
    ] {
        let proxy = FaultyHttpServer::start(&http, fault);
        failed_backup(&tv, &proxy.url("rich"), name, Some(TOKEN));
    }

    // Hostile names never escape: refused before anything is written.
    let out = tv.run(&["backup", &file_url(&rich), "--name", "../../etc"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not allowed"), "{}", stderr(&out));

    // One failure among several repositories: exit 3, the good one is backed up.
    let out = tv
        .command(&[
            "--json",
            "backup",
            &file_url(&rich),
            "http://127.0.0.1:1/x.git",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["repositories"][0]["status"], "changed");
    assert_eq!(doc["repositories"][1]["status"], "failed");

    // After all these failures the vault is consistent and the good snapshot restores.
    let name = doc["repositories"][0]["repo"].as_str().unwrap().to_string();
    let to = tv.tmp.path().join("restored");
    restore(&tv, &name, &[], &to);
    fsck(&to);
    assert_eq!(refs_and_head(&to), refs_and_head(&rich));
}

#[test]
fn parallel_urls_back_up_each_repository_once() {
    let tv = TestVault::new();
    let root = tv.tmp.path().join("served");
    let a = make_repo(&root, "a", &[]);
    let b = make_repo(&root, "b", &[]);
    let (a, b) = (file_url(&a), file_url(&b));
    // `a` twice, under the same name: the repeat must not race the first on one mirror cache.
    let out = tv
        .command(&["--json", "backup", "--jobs", "3", &a, &b, &a])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let statuses: Vec<&str> = doc["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["changed", "changed", "skipped"], "{doc}");
    let reasons: Vec<&serde_json::Value> = doc["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["reason"])
        .collect();
    assert_eq!(
        reasons,
        [
            &serde_json::Value::Null,
            &serde_json::Value::Null,
            &"repeated".into()
        ],
        "{doc}"
    );
    let snapshots = stdout(&tv.run(&["--json", "snapshots"]));
    let snapshots: serde_json::Value = serde_json::from_str(&snapshots).unwrap();
    assert_eq!(snapshots.as_array().unwrap().len(), 2, "{snapshots}");
}

/// Rewrites a vault's index into the layout of schema version 4 (before the footprint
/// work): git objects naming their chunks by whole ids, each chunk row with its frame's
/// lengths, chunks indexed by kind and by pack.
fn downgrade_index_to_v4(tv: &TestVault) {
    let conn = rusqlite::Connection::open(tv.dir.join("index.sqlite")).unwrap();
    conn.execute_batch(
        "CREATE TABLE chunks_v4 (
             id BLOB PRIMARY KEY,
             kind INTEGER NOT NULL,
             pack_id INTEGER NOT NULL REFERENCES packs(id),
             frame_offset INTEGER NOT NULL,
             frame_clen INTEGER NOT NULL,
             frame_rawlen INTEGER NOT NULL,
             offset INTEGER NOT NULL,
             length INTEGER NOT NULL
         ) WITHOUT ROWID;
         INSERT INTO chunks_v4 SELECT c.id, c.kind, c.pack_id, c.frame_offset, f.clen, f.rawlen,
             c.offset, c.length
             FROM chunks c JOIN frames f ON f.pack_id = c.pack_id AND f.offset = c.frame_offset;
         DROP TABLE chunks;
         ALTER TABLE chunks_v4 RENAME TO chunks;
         DROP TABLE frames;
         CREATE INDEX chunks_by_kind ON chunks(kind);
         DROP TABLE pack_chunks;
         CREATE INDEX chunks_by_pack ON chunks(pack_id);
         CREATE TABLE git_objects_v4 (
             oid BLOB PRIMARY KEY,
             kind INTEGER NOT NULL,
             chunk BLOB NOT NULL
         ) WITHOUT ROWID;
         INSERT INTO git_objects_v4 SELECT g.oid, g.kind,
             (SELECT c.id FROM chunks c WHERE c.id BETWEEN g.chunk
                 AND CAST(g.chunk || X'FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF' AS BLOB))
             FROM git_objects g;
         DROP TABLE git_objects;
         ALTER TABLE git_objects_v4 RENAME TO git_objects;
         PRAGMA user_version = 4;",
    )
    .unwrap();
}

/// How many git object rows name their chunk by how many bytes.
fn chunk_ref_widths(tv: &TestVault) -> Vec<(i64, i64)> {
    let conn = rusqlite::Connection::open(tv.dir.join("index.sqlite")).unwrap();
    let mut stmt = conn
        .prepare("SELECT length(chunk), count(*) FROM git_objects GROUP BY 1 ORDER BY 1")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The restore's walk reads commits and trees without hashing them (their chunks are
/// authenticated by keyed ids); an index row naming another object's chunk must still fail
/// the restore, at the writing pass's check, and leave nothing at the destination.
#[test]
fn an_index_row_naming_another_objects_chunk_fails_the_restore() {
    let tv = TestVault::new();
    let rich = make_repo(tv.tmp.path(), "rich", &[]);
    backup(&tv, &file_url(&rich), "rich", None);
    let index = tv.dir.join("index.sqlite");
    let pristine = std::fs::read(&index).unwrap();
    // git's type numbers: 1 commit, 2 tree, 3 blob.
    for (kind, what) in [(1, "commit"), (2, "tree"), (3, "blob")] {
        std::fs::write(&index, &pristine).unwrap();
        let conn = rusqlite::Connection::open(&index).unwrap();
        let changed = conn
            .execute(
                "UPDATE git_objects SET chunk =
                     (SELECT chunk FROM git_objects WHERE kind = ?1 ORDER BY oid LIMIT 1 OFFSET 1)
                 WHERE oid = (SELECT oid FROM git_objects WHERE kind = ?1 ORDER BY oid LIMIT 1)",
                [kind],
            )
            .unwrap();
        assert_eq!(changed, 1, "{what}");
        drop(conn);
        let to = tv.tmp.path().join(format!("restored-{what}"));
        let out = tv.run(&["restore", "rich", "--to", to.to_str().unwrap()]);
        assert!(
            !out.status.success(),
            "a {what} row pointing elsewhere restored"
        );
        assert!(
            stderr(&out).contains("does not hash to its id"),
            "{what}: {}",
            stderr(&out)
        );
        assert!(
            !to.exists(),
            "{what}: something was left at the destination"
        );
    }
    std::fs::write(&index, &pristine).unwrap();
    let to = tv.tmp.path().join("restored");
    restore(&tv, "rich", &[], &to);
    fsck(&to);
    assert_eq!(refs_and_head(&to), refs_and_head(&rich));
}

#[test]
fn an_index_of_the_previous_schema_is_migrated_and_restores_exactly() {
    let tv = TestVault::new();
    let rich = make_repo(tv.tmp.path(), "rich", &[]);
    let url = file_url(&rich);
    let first = backup(&tv, &url, "rich", None);
    let objects = first["repositories"][0]["objects_added"].as_u64().unwrap() as i64;
    assert!(objects > 10, "{first}");
    downgrade_index_to_v4(&tv);
    assert_eq!(chunk_ref_widths(&tv), [(32, objects)]);

    // Restore opens (and migrates) the index, then finds every object through it.
    let to = tv.tmp.path().join("restored");
    restore(&tv, "rich", &[], &to);
    fsck(&to);
    assert_eq!(refs_and_head(&to), refs_and_head(&rich));
    assert_eq!(chunk_ref_widths(&tv), [(8, objects)]);
    let conn = rusqlite::Connection::open(tv.dir.join("index.sqlite")).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 5);

    // The migrated index still knows what the vault has: the next backup adds the new
    // commit only, and the result restores exactly.
    evolve(&rich, "add-commit");
    let doc = backup(&tv, &url, "rich", None);
    let added = doc["repositories"][0]["objects_added"].as_u64().unwrap();
    assert!((3..=6).contains(&added), "{doc}");
    let again = tv.tmp.path().join("restored-again");
    restore(&tv, "rich", &[], &again);
    fsck(&again);
    assert_eq!(refs_and_head(&again), refs_and_head(&rich));

    // Prune judges the migrated pack by the chunk rows the migration listed for it.
    ok(&tv.run(&["forget", "--keep-last", "1"]));
    ok(&tv.run(&["prune"]));
    ok(&tv.run(&["verify", "--full"]));
    let pruned = tv.tmp.path().join("restored-after-prune");
    restore(&tv, "rich", &[], &pruned);
    fsck(&pruned);
    assert_eq!(refs_and_head(&pruned), refs_and_head(&rich));
}

/// The mirror caches `gitvault cache --json` lists: (repository, path, bytes).
fn caches(tv: &TestVault) -> Vec<(Option<String>, PathBuf, u64)> {
    let doc: serde_json::Value = serde_json::from_str(&ok(&tv.run(&["--json", "cache"]))).unwrap();
    doc["caches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["repo"].as_str().map(str::to_string),
                PathBuf::from(c["path"].as_str().unwrap()),
                c["bytes"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn received(doc: &serde_json::Value) -> u64 {
    doc["repositories"][0]["objects_received"].as_u64().unwrap()
}

/// A repository of 11 commits of 100 KiB each, served by git daemon, backed up once.
fn served_and_backed_up(tv: &TestVault) -> (PathBuf, GitDaemon, String, String) {
    let root = tv.tmp.path().join("served");
    std::fs::create_dir_all(&root).unwrap();
    let rich = make_repo(&root, "rich", &[]);
    for _ in 0..10 {
        evolve(&rich, "add-commit");
    }
    let daemon = GitDaemon::start(&root);
    let url = daemon.url("rich");
    let first = backup(tv, &url, "rich", Some("2026-01-01T12:00:00Z"));
    assert!(received(&first) > 50, "{first}");
    (rich, daemon, url, refs_and_head(&root.join("rich.git")))
}

/// Restores the snapshot of `at` and checks it against the server's refs of that day.
fn restores_exactly(tv: &TestVault, at: &str, expected: &str) {
    let to = tv.tmp.path().join(format!("restored-{at}"));
    restore(tv, "rich", &["--at", at], &to);
    fsck(&to);
    assert_eq!(refs_and_head(&to), expected);
}

#[test]
fn a_dropped_cache_is_rebuilt_from_the_vault_and_the_fetch_stays_incremental() {
    let tv = TestVault::new();
    let (rich, _daemon, url, day1) = served_and_backed_up(&tv);
    let listed = caches(&tv);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].0.as_deref(), Some("rich"));
    assert!(listed[0].2 > 1_000_000, "{listed:?}");
    let dropped: serde_json::Value =
        serde_json::from_str(&ok(&tv.run(&["--json", "cache", "drop", "rich"]))).unwrap();
    assert_eq!(dropped["dropped"].as_array().unwrap().len(), 1, "{dropped}");
    assert!(!listed[0].1.exists());
    assert!(caches(&tv).is_empty());
    // Unchanged: nothing fetched, nothing rebuilt; the empty cache this leaves is rebuilt
    // by the next backup that fetches.
    let doc = backup(&tv, &url, "rich", Some("2026-01-01T18:00:00Z"));
    assert_eq!(received(&doc), 0, "{doc}");

    evolve(&rich, "add-commit");
    let day2 = refs_and_head(&rich);
    let doc = backup(&tv, &url, "rich", Some("2026-01-02T12:00:00Z"));
    // The rebuilt cache's refs are the first snapshot's: only the new commit is sent.
    assert!((3..=6).contains(&received(&doc)), "{doc}");
    let added = doc["repositories"][0]["objects_added"].as_u64().unwrap();
    assert!((3..=6).contains(&added), "{doc}");
    assert!(
        listed[0].1.join("HEAD").is_file(),
        "the cache is kept by default"
    );
    restores_exactly(&tv, "2026-01-01", &day1);
    restores_exactly(&tv, "2026-01-02", &day2);
}

#[test]
fn with_keep_off_no_cache_remains_and_the_next_backup_is_incremental() {
    let tv = TestVault::new();
    let config = tv.dir.join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[cache]\nkeep = false\n");
    std::fs::write(&config, text).unwrap();
    let (rich, _daemon, url, day1) = served_and_backed_up(&tv);
    assert!(caches(&tv).is_empty(), "{:?}", caches(&tv));
    evolve(&rich, "add-commit");
    let day2 = refs_and_head(&rich);
    let doc = backup(&tv, &url, "rich", Some("2026-01-02T12:00:00Z"));
    assert!((3..=6).contains(&received(&doc)), "{doc}");
    assert!(caches(&tv).is_empty(), "{:?}", caches(&tv));
    // Unchanged: nothing to fetch, so nothing is rebuilt either.
    let doc = backup(&tv, &url, "rich", Some("2026-01-03T12:00:00Z"));
    assert_eq!(received(&doc), 0, "{doc}");
    restores_exactly(&tv, "2026-01-01", &day1);
    restores_exactly(&tv, "2026-01-02", &day2);
}

/// Backs up, drops the cache, does `damage` to the vault's largest pack (the git objects),
/// adds a commit and backs up again: the rebuild must fail, warn, and fetch everything.
fn rebuild_from_a_damaged_vault(damage: impl Fn(&Path)) -> (TestVault, String) {
    let tv = TestVault::new();
    let (rich, _daemon, url, _) = served_and_backed_up(&tv);
    ok(&tv.run(&["cache", "drop", "--all"]));
    let largest = common::pack_files(&tv.data_dir())
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    damage(&largest);
    evolve(&rich, "add-commit");
    let day2 = refs_and_head(&rich);
    let mut cmd = tv.command(&["--json", "backup", &url, "--name", "rich"]);
    cmd.env("GITVAULT_NOW", "2026-01-02T12:00:00Z");
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        stderr(&out).contains("could not rebuild the mirror cache"),
        "{}",
        stderr(&out)
    );
    assert!(received(&doc) > 50, "a full fetch: {doc}");
    (tv, day2)
}

#[test]
fn a_rebuild_from_a_vault_missing_a_pack_falls_back_to_a_full_fetch() {
    let (tv, day2) = rebuild_from_a_damaged_vault(|pack| std::fs::remove_file(pack).unwrap());
    // The pack is missing from every target: the backup stored its objects again.
    restores_exactly(&tv, "2026-01-02", &day2);
}

#[test]
fn a_rebuild_from_a_tampered_pack_falls_back_to_a_full_fetch() {
    // A flipped byte fails the pack's authentication: nothing of it reaches the cache. (The
    // vault itself is then damaged: `verify` reports it, `sync` repairs it from a replica.)
    rebuild_from_a_damaged_vault(|pack| {
        let mut bytes = std::fs::read(pack).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(pack, bytes).unwrap();
    });
}

#[test]
fn a_cache_replaced_by_a_symlink_or_garbage_is_not_followed_nor_trusted() {
    let tv = TestVault::new();
    let (rich, _daemon, url, _) = served_and_backed_up(&tv);
    let cache = caches(&tv)[0].1.clone();
    // A symlink to a directory of someone else's: never written into, never removed.
    let elsewhere = tv.tmp.path().join("elsewhere");
    std::fs::create_dir_all(elsewhere.join("objects")).unwrap();
    std::fs::write(elsewhere.join("HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::write(elsewhere.join("precious"), "keep me").unwrap();
    std::fs::remove_dir_all(&cache).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &cache).unwrap();
    evolve(&rich, "add-commit");
    let doc = backup(&tv, &url, "rich", Some("2026-01-02T12:00:00Z"));
    assert!((3..=6).contains(&received(&doc)), "{doc}");
    let meta = std::fs::symlink_metadata(&cache).unwrap();
    assert!(meta.is_dir() && !meta.file_type().is_symlink());
    let mut left: Vec<_> = std::fs::read_dir(&elsewhere)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["HEAD", "objects", "precious"]);
    assert_eq!(
        std::fs::read_dir(elsewhere.join("objects"))
            .unwrap()
            .count(),
        0
    );

    // Garbage in its place: not a repository, so removed and rebuilt from the vault.
    std::fs::remove_dir_all(&cache).unwrap();
    std::fs::create_dir_all(cache.join("junk")).unwrap();
    std::fs::write(cache.join("junk/file"), common::noise(7, 4096)).unwrap();
    evolve(&rich, "add-commit");
    let day3 = refs_and_head(&rich);
    let doc = backup(&tv, &url, "rich", Some("2026-01-03T12:00:00Z"));
    assert!((3..=6).contains(&received(&doc)), "{doc}");
    assert!(!cache.join("junk").exists());
    restores_exactly(&tv, "2026-01-03", &day3);
}
