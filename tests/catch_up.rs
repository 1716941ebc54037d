//! Several hosts on one vault (issue 17): each host's index catches up with what the others
//! wrote (their packs and snapshots) and with what their prunes deleted, and a prune on one
//! host keeps what every host's snapshots need. Hosts are vault directories sharing a moto
//! (S3) target and a file:// target, driven through the real binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::s3_server::S3Server;
use common::{TestVault, git, noise, ok, refs_and_head, stderr};
use gitvault::crypto::IdKey;
use gitvault::target::Body;
use serde_json::Value;

/// Host A (made by `init`, its targets the shared ones only) and the shared targets.
struct Hosts {
    a: TestVault,
    s3_url: String,
    files_url: String,
    files_dir: PathBuf,
    _server: S3Server,
}

impl Hosts {
    fn new() -> Hosts {
        Hosts::with_local_target(false)
    }

    /// With `keep_local`, A keeps the private target `init` made (DIR/data), which no other
    /// host sees: the hosts' target sets differ.
    fn with_local_target(keep_local: bool) -> Hosts {
        let a = TestVault::new();
        let server = S3Server::moto();
        server.create_bucket("shared");
        server.set_env();
        let s3_url = server.url("shared", "vault");
        let files_dir = a.tmp.path().join("shared-files");
        let files_url = format!("file://{}", files_dir.display());
        ok(&a.run(&["target", "add", "s3", &s3_url]));
        ok(&a.run(&["target", "add", "files", &files_url]));
        if !keep_local {
            ok(&a.run(&["target", "remove", "local"]));
        }
        Hosts {
            a,
            s3_url,
            files_url,
            files_dir,
            _server: server,
        }
    }

    /// Another host joins with `init --join` and adds the file:// target too.
    fn join(&self) -> TestVault {
        let tmp = tempfile::tempdir().unwrap();
        let host = TestVault {
            dir: tmp.path().join("vault"),
            tmp,
            identity_file: self.a.identity_file.clone(),
            identity: self.a.identity.clone(),
        };
        ok(&host.run(&["init", "--join", &self.s3_url]));
        ok(&host.run(&["target", "add", "files", &self.files_url]));
        host
    }
}

/// A repository the tests commit to.
struct Upstream {
    dir: PathBuf,
}

impl Upstream {
    fn new(root: &Path, name: &str) -> Upstream {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        git(&dir, &["init", "-q", "-b", "main"]);
        git(&dir, &["config", "user.email", "t@example.com"]);
        git(&dir, &["config", "user.name", "T"]);
        Upstream { dir }
    }

    fn commit(&self, file: &str, bytes: &[u8]) {
        std::fs::write(self.dir.join(file), bytes).unwrap();
        git(&self.dir, &["add", file]);
        git(&self.dir, &["commit", "-q", "-m", file]);
    }

    fn path(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    fn refs(&self) -> String {
        refs_and_head(&self.dir.join(".git"))
    }

    /// A copy of this repository as it is now (a fork another host backs up).
    fn fork(&self, root: &Path, name: &str) -> Upstream {
        let dir = root.join(name);
        let mirror = dir.join(".git");
        git(
            root,
            &[
                "clone",
                "-q",
                "--mirror",
                self.path(),
                mirror.to_str().unwrap(),
            ],
        );
        git(&dir, &["config", "--bool", "core.bare", "false"]);
        Upstream { dir }
    }
}

fn backup(host: &TestVault, up: &Upstream, name: &str, day: u32) -> Value {
    let out = host
        .command(&["--json", "backup", up.path(), "--name", name])
        .env("GITVAULT_NOW", format!("2026-11-{day:02}T12:00:00Z"))
        .output()
        .unwrap();
    serde_json::from_str(&ok(&out)).unwrap()
}

fn json(host: &TestVault, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(&host.run(&all))).unwrap()
}

fn snapshot_repos(host: &TestVault) -> Vec<String> {
    repos_listed(host, &["snapshots"])
}

/// `snapshots` as this host's index has them, without catching up first.
fn snapshot_repos_local(host: &TestVault) -> Vec<String> {
    repos_listed(host, &["--no-catch-up", "snapshots"])
}

fn repos_listed(host: &TestVault, args: &[&str]) -> Vec<String> {
    let mut repos: Vec<String> = json(host, args)
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["repo"].as_str().unwrap().to_string())
        .collect();
    repos.sort();
    repos
}

fn restore(host: &TestVault, repo: &str) -> Output {
    let to = host.tmp.path().join(format!("restored-{repo}"));
    let _ = std::fs::remove_dir_all(&to);
    host.run(&["restore", repo, "--to", to.to_str().unwrap()])
}

/// The newest snapshot of `repo` restores with exactly `want`'s refs and passes fsck.
fn assert_restores(host: &TestVault, repo: &str, want: &str) {
    ok(&restore(host, repo));
    let to = host.tmp.path().join(format!("restored-{repo}"));
    git(&to, &["fsck", "--full", "--strict"]);
    assert_eq!(refs_and_head(&to), want, "{repo}");
}

/// Day 1: `main` and a branch `tmp` with a 1 MiB blob; day 2: `tmp` deleted, `main` grows.
/// Returns the refs of day 1 (with `tmp`).
fn two_days(host: &TestVault, up: &Upstream) -> Upstream {
    up.commit("a.txt", b"first\n");
    git(&up.dir, &["checkout", "-q", "-b", "tmp"]);
    up.commit("tmp.bin", &noise(7, 1 << 20));
    git(&up.dir, &["checkout", "-q", "main"]);
    backup(host, up, "repo", 1);
    let fork = up.fork(host.tmp.path(), "fork-of-day-1");
    git(&up.dir, &["branch", "-q", "-D", "tmp"]);
    up.commit("c.txt", b"third\n");
    backup(host, up, "repo", 2);
    fork
}

#[test]
fn hosts_see_each_others_snapshots_and_restore_them() {
    // A also has a private target: B's packs are short of A's policy (every target) but read.
    let hosts = Hosts::with_local_target(true);
    let a = &hosts.a;
    let alpha = Upstream::new(a.tmp.path(), "alpha");
    alpha.commit("a.txt", b"alpha\n");
    backup(a, &alpha, "alpha", 1);

    let b = hosts.join();
    assert_eq!(
        snapshot_repos(&b),
        ["alpha"],
        "joining brings A's snapshots"
    );
    let beta = Upstream::new(b.tmp.path(), "beta");
    beta.commit("b.bin", &noise(3, 300_000));
    backup(&b, &beta, "beta", 2);

    // Nothing of B's is known to A until it catches up; then B's snapshot restores exactly.
    assert_eq!(snapshot_repos_local(a), ["alpha"]);
    let caught = json(a, &["catch-up"]);
    assert_eq!(caught["snapshots_added"], 1, "{caught}");
    assert!(caught["packs_scanned"].as_u64().unwrap() >= 1, "{caught}");
    // Every pack B wrote is on two of A's three targets, and read all the same.
    let short = caught["packs_short_of_replicas"].as_array().unwrap().len() as u64;
    assert_eq!(short, caught["packs_scanned"].as_u64().unwrap(), "{caught}");
    assert_eq!(snapshot_repos(a), ["alpha", "beta"]);
    assert_restores(a, "beta", &beta.refs());
    // Nothing new: quiet, and no footer read.
    let again = a.run(&["catch-up"]);
    assert_eq!(ok(&again), "", "{}", stderr(&again));
    assert_eq!(json(a, &["catch-up"])["packs_scanned"], 0);

    // A's next backup makes B see it too (B catches up at its own next backup or command).
    alpha.commit("a2.txt", b"more\n");
    backup(a, &alpha, "alpha", 3);
    assert_eq!(json(&b, &["catch-up"])["snapshots_added"], 1);
    assert_restores(&b, "alpha", &alpha.refs());
    // B's packs reach A's private target with `sync`.
    assert_eq!(a.run(&["verify"]).status.code(), Some(1));
    ok(&a.run(&["sync"]));
    ok(&a.run(&["verify", "--full"]));
    ok(&b.run(&["verify", "--full"]));
}

/// B's snapshot of a fork deduplicates against A's chunks; A forgets its own snapshot that
/// added them and prunes: the prune's catch-up makes its mark keep what B's snapshot needs.
#[test]
fn prune_on_one_host_keeps_what_another_hosts_snapshots_need() {
    let hosts = Hosts::new();
    let a = &hosts.a;
    let b = hosts.join();
    let up = Upstream::new(a.tmp.path(), "upstream");
    let fork = two_days(a, &up);
    let before = common::tree_size(&hosts.files_dir);
    let run = backup(&b, &fork, "fork", 3);
    let grown = common::tree_size(&hosts.files_dir) - before;
    assert!(
        grown < 200_000,
        "B stored {grown} bytes: it did not dedup against A ({run})"
    );

    // A forgets the day-1 snapshot (the only one of its own reaching `tmp.bin`) and prunes;
    // the forget does not catch up, so that it is the prune's own catch-up under test.
    let forgot = json(
        a,
        &[
            "--no-catch-up",
            "forget",
            "--keep-last",
            "1",
            "--repo",
            "repo",
        ],
    );
    assert_eq!(forgot["removed"], 1, "{forgot}");
    let pruned = json(a, &["prune"]);

    // B still restores its fork exactly, and both hosts' vaults check out in full.
    ok(&b.run(&["catch-up"]));
    assert_restores(&b, "fork", &fork.refs());
    assert_restores(a, "fork", &fork.refs());
    assert_restores(a, "repo", &up.refs());
    ok(&a.run(&["verify", "--full"]));
    ok(&b.run(&["verify", "--full"]));
    // It was the prune's catch-up that told A of B's snapshot.
    assert_eq!(pruned["caught_up"]["snapshots_added"], 1, "{pruned}");
}

/// After A's prune deleted the packs holding a forgotten snapshot's objects, B (which knew
/// them) stores them again when it backs them up, instead of deduplicating against nothing.
#[test]
fn a_backup_after_another_hosts_prune_stores_deleted_objects_again() {
    let hosts = Hosts::new();
    let a = &hosts.a;
    let up = Upstream::new(a.tmp.path(), "upstream");
    let fork = two_days(a, &up);
    let b = hosts.join();
    assert_eq!(snapshot_repos(&b), ["repo", "repo"]);

    ok(&a.run(&["forget", "--keep-last", "1"]));
    let pruned = json(a, &["prune"]);
    assert!(pruned["packs_deleted"].as_u64().unwrap() >= 1, "{pruned}");

    let before = common::tree_size(&hosts.files_dir);
    backup(&b, &fork, "fork", 3);
    let grown = common::tree_size(&hosts.files_dir) - before;
    assert!(
        grown > 1_000_000,
        "B stored only {grown} bytes: tmp.bin was deduplicated away"
    );
    assert_eq!(
        snapshot_repos(&b),
        ["fork", "repo"],
        "the forgotten snapshot left B too"
    );
    assert_restores(&b, "fork", &fork.refs());
    assert_restores(&b, "repo", &up.refs());
    ok(&b.run(&["verify", "--full"]));
    // B's git object rows are what a host joining now rebuilds from the packs: no row of an
    // object A's prune judged dead is left to cut a later walk short.
    assert_eq!(object_rows(&b), object_rows(&hosts.join()));
}

fn object_rows(host: &TestVault) -> u64 {
    host.open().index().count_dead_objects(&|_| false).unwrap()
}

/// A backup on B runs between A's mark and A's decision (A holds no target lock yet) and
/// refers to objects A's mark found dead: A's second catch-up, under its exclusive lock,
/// brings B's snapshot in and marks it, so the pack holding them is spared.
#[test]
fn a_backup_on_another_host_between_mark_and_decision_is_kept() {
    let hosts = Hosts::new();
    let a = &hosts.a;
    let up = Upstream::new(a.tmp.path(), "upstream");
    let fork = two_days(a, &up);
    let b = hosts.join();
    ok(&a.run(&["forget", "--keep-last", "1"]));
    let release = a.tmp.path().join("release-marked");
    let prune = common::spawn_paused(a.command(&["--json", "prune"]), "prune-marked", &release);
    backup(&b, &fork, "fork", 3);
    std::fs::write(&release, b"").unwrap();
    let out = prune.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    ok(&b.run(&["catch-up"]));
    assert_restores(&b, "fork", &fork.refs());
    assert_restores(a, "fork", &fork.refs());
    ok(&a.run(&["verify", "--full"]));
    ok(&b.run(&["verify", "--full"]));
    assert!(report["packs_spared"].as_u64().unwrap() >= 1, "{report}");
}

/// B reads A's compaction copy while its source still waits out prune's grace period; when
/// the source is deleted, B's rows move to the copy it already knew (its footer is read again).
#[test]
fn rows_move_to_a_copy_read_before_its_source_went() {
    let hosts = Hosts::new();
    let a = &hosts.a;
    let up = Upstream::new(a.tmp.path(), "upstream");
    two_days(a, &up);
    let b = hosts.join();
    ok(&a.run(&["forget", "--keep-last", "1"]));
    let pruned = json(a, &["prune", "--grace", "1d"]);
    assert!(pruned["packs_compacted"].as_u64().unwrap() >= 1, "{pruned}");
    assert_eq!(pruned["packs_deleted"], 0, "{pruned}");
    let early = json(&b, &["catch-up"]);
    assert!(early["packs_scanned"].as_u64().unwrap() >= 1, "{early}");
    assert_eq!(
        early["packs_vanished"].as_array().unwrap().len(),
        0,
        "{early}"
    );

    // What the next prune does once the grace period is over: it writes its prune record and
    // deletes the condemned packs (a real prune now would regroup again and give B a new copy
    // to read: not the case under test).
    let vault = a.open();
    let condemned = vault.index().condemned_packs().unwrap();
    assert!(!condemned.is_empty());
    {
        let keys = a.keys(&vault);
        let lock = vault.lock().unwrap();
        let mut store = vault.store(&keys, &lock);
        let (_, mut record) = gitvault::snapshot::newest_prune_record(vault.index(), &store)
            .unwrap()
            .unwrap();
        record.time = chrono::Utc::now();
        let bytes = serde_json::to_vec(&record).unwrap();
        store
            .put_chunk(gitvault::ChunkKind::PruneRecord, &bytes)
            .unwrap();
        store.flush().unwrap();
    }
    for (name, _) in &condemned {
        for target in vault.targets() {
            target.delete(&gitvault::store::pack_key(name)).unwrap();
        }
    }
    let late = json(&b, &["catch-up"]);
    assert!(
        !late["packs_vanished"].as_array().unwrap().is_empty(),
        "{late}"
    );
    assert_restores(&b, "repo", &up.refs());
    ok(&b.run(&["verify", "--full"]));
    assert!(late["chunks_moved"].as_u64().unwrap() > 0, "{late}");
    assert_eq!(object_rows(&b), object_rows(&hosts.join()));
}

/// A hostile target: a pack not sealed with the vault's key is ignored and reported; an old
/// pack replayed after a prune forgot its snapshot does not bring the snapshot back.
#[test]
fn forged_packs_and_replayed_manifests_are_ignored() {
    let hosts = Hosts::new();
    let a = &hosts.a;
    let b = hosts.join();
    let up = Upstream::new(a.tmp.path(), "upstream");
    two_days(a, &up);
    let vault = a.open();
    let keys = a.keys(&vault);
    let s3 = &vault.targets()[0];
    let old: Vec<(String, Vec<u8>)> = s3
        .list("packs/")
        .unwrap()
        .into_iter()
        .map(|l| (l.key.clone(), s3.get(&l.key).unwrap()))
        .collect();
    ok(&a.run(&["forget", "--keep-last", "1"]));
    ok(&a.run(&["prune"]));

    // Replay every old pack (authentic footers, the day-1 manifest among them) on both targets.
    for target in vault.targets() {
        for (key, bytes) in &old {
            let path = a.tmp.path().join("replay");
            std::fs::write(&path, bytes).unwrap();
            target.put(key, Body::File(&path)).unwrap();
        }
    }
    // A forger with the public key but not the vault's authentication key.
    let forger = IdKey::generate().unwrap();
    let forged = common::write_pack(
        a.tmp.path(),
        &keys,
        &forger.auth_key(),
        &[(gitvault::ChunkId([9; 32]), 0, b"forged")],
    );
    for target in vault.targets() {
        let key = gitvault::store::pack_key(&forged.name);
        target.put(&key, Body::File(&forged.path)).unwrap();
    }

    for host in [a, &b] {
        let caught = json(host, &["catch-up"]);
        let forged_list = caught["packs_forged"].as_array().unwrap();
        assert_eq!(forged_list.len(), 1, "{caught}");
        assert_eq!(forged_list[0], forged.name.as_str());
        let snaps = json(host, &["snapshots"]);
        assert_eq!(
            snaps.as_array().unwrap().len(),
            1,
            "a forgotten manifest came back: {snaps}"
        );
        assert_restores(host, "repo", &up.refs());
    }
}

/// A pack gone from every target with no prune record to explain it is damage, not another
/// host's prune: catch-up (by itself and at the next backup) keeps it in the index and says
/// so, and `verify` goes on reporting it, instead of the snapshots that need it silently
/// leaving the index.
#[test]
fn a_pack_deleted_without_a_prune_stays_reported() {
    let tv = TestVault::new();
    let up = Upstream::new(tv.tmp.path(), "upstream");
    up.commit("a.txt", b"first\n");
    backup(&tv, &up, "repo", 1);
    let before = common::pack_files(&tv.data_dir());
    up.commit("b.bin", &noise(5, 200_000));
    backup(&tv, &up, "repo", 2);
    let added: Vec<PathBuf> = common::pack_files(&tv.data_dir())
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    let gone = added
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    std::fs::remove_file(gone).unwrap();
    let name = gone.file_name().unwrap().to_string_lossy().to_string();

    let out = tv.run(&["--json", "catch-up"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["packs_missing"][0], name.as_str(), "{report}");
    assert_eq!(report["packs_vanished"].as_array().unwrap().len(), 0);
    assert_eq!(snapshot_repos(&tv), ["repo", "repo"], "no snapshot left");

    up.commit("c.txt", b"third\n");
    backup(&tv, &up, "repo", 3);
    assert_eq!(snapshot_repos(&tv), ["repo", "repo", "repo"]);
    let verify = tv.run(&["verify"]);
    assert_eq!(
        verify.status.code(),
        Some(1),
        "verify still sees the damage"
    );
    assert!(
        String::from_utf8_lossy(&verify.stdout).contains(&name[..16])
            || stderr(&verify).contains(&name[..16]),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

/// Read commands catch up by themselves: B sees and restores A's new snapshots through
/// `snapshots`, `ls` and `restore` alone. While another process of B's host holds its writer
/// lock (a local backup), they skip the catch-up and show B's index as it is, and say why.
#[test]
fn read_commands_catch_up_by_themselves() {
    let hosts = Hosts::new();
    let a = &hosts.a;
    let b = hosts.join();
    let alpha = Upstream::new(a.tmp.path(), "alpha");
    alpha.commit("a.txt", b"alpha\n");
    backup(a, &alpha, "alpha", 1);

    assert!(
        snapshot_repos_local(&b).is_empty(),
        "--no-catch-up reads the index only"
    );
    assert_eq!(snapshot_repos(&b), ["alpha"], "`snapshots` caught up");

    alpha.commit("b.bin", &noise(11, 200_000));
    let day2 = backup(a, &alpha, "alpha", 2);
    let id = day2["repositories"][0]["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    // B's writer lock is busy: the local picture, and an info-level word on why.
    let vault = b.open();
    let held = vault.lock().unwrap();
    let busy = b.run(&["-v", "--json", "snapshots"]);
    let listed: Value = serde_json::from_slice(&busy.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert!(
        stderr(&busy).contains("not catching up"),
        "{}",
        stderr(&busy)
    );
    drop(held);

    let ls = json(&b, &["ls", "alpha"]);
    assert_eq!(ls["snapshot"].as_str(), Some(id.as_str()), "{ls}");
    assert_restores(&b, "alpha", &alpha.refs());
    // Caught up: an unchanged target costs a listing and reads no footer.
    assert_eq!(json(&b, &["catch-up"])["packs_scanned"], 0);
    ok(&b.run(&["verify"]));
}

/// A pack deleted behind the hosts' backs, with no prune record: the catch-up `verify` and
/// `snapshots` make by themselves keeps it in the index, so `verify` fails naming it, every
/// time, and the snapshots needing it stay listed.
#[test]
fn verify_keeps_failing_on_a_pack_missing_after_an_automatic_catch_up() {
    let hosts = Hosts::new();
    let a = &hosts.a;
    let b = hosts.join();
    let up = Upstream::new(a.tmp.path(), "upstream");
    up.commit("a.txt", b"first\n");
    backup(a, &up, "repo", 1);
    assert_eq!(snapshot_repos(&b), ["repo"]);
    let packs = a.open().index().packs().unwrap();
    let gone = &packs.iter().max_by_key(|p| p.size).unwrap().name;
    delete_everywhere(a, &[gone]);
    for host in [a, &b] {
        for _ in 0..2 {
            let verify = host.run(&["verify"]);
            assert_eq!(verify.status.code(), Some(1), "{}", stderr(&verify));
            let text = String::from_utf8_lossy(&verify.stdout);
            assert!(text.contains(&gone[..16]), "{text}");
            assert_eq!(snapshot_repos(host), ["repo"]);
        }
    }
}

/// A backup after a pack went missing (no prune record) does not count on it: day 2's commit,
/// tree and blob lived only there, so day 3's backup walks past the known commit, stores them
/// again, and stores day 3's version of the blob whole rather than as a delta against day 2's.
/// Day 3's snapshot restores exactly; the missing pack is still reported.
#[test]
fn a_backup_stores_again_what_only_a_missing_pack_held() {
    let tv = TestVault::new();
    let up = Upstream::new(tv.tmp.path(), "upstream");
    up.commit("a.txt", b"first\n");
    backup(&tv, &up, "repo", 1);
    let before = common::pack_files(&tv.data_dir());
    let mut blob = noise(5, 200_000);
    up.commit("b.bin", &blob);
    backup(&tv, &up, "repo", 2);
    for pack in common::pack_files(&tv.data_dir()) {
        if !before.contains(&pack) {
            std::fs::remove_file(pack).unwrap();
        }
    }
    blob.extend_from_slice(b"one more line\n");
    up.commit("b.bin", &blob);
    let run = backup(&tv, &up, "repo", 3);
    assert_restores(&tv, "repo", &up.refs());
    // Day 3's three objects and day 2's three again.
    assert_eq!(run["repositories"][0]["objects_added"], 6, "{run}");
    let verify = tv.run(&["verify"]);
    assert_eq!(
        verify.status.code(),
        Some(1),
        "the missing pack is still reported"
    );
    // The next backup is back to incremental: what it needs is in the new packs.
    up.commit("d.txt", b"fourth\n");
    let run = backup(&tv, &up, "repo", 4);
    assert!(
        run["repositories"][0]["objects_added"].as_u64().unwrap() <= 3,
        "{run}"
    );
    assert_restores(&tv, "repo", &up.refs());
}

fn backup_command(host: &TestVault, up: &Upstream, name: &str, day: u32) -> std::process::Command {
    let mut cmd = host.command(&["--json", "backup", up.path(), "--name", name]);
    cmd.env("GITVAULT_NOW", format!("2026-11-{day:02}T12:00:00Z"));
    cmd
}

fn succeeded(child: std::process::Child) -> Value {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A prune on host A while hosts B and C are backing up forks whose objects A's own snapshots
/// no longer need: B and C started (and caught up) before A's mark and commit after it, while
/// A waits for their shared locks; A's catch-up under its exclusive lock brings their
/// snapshots into the mark. No snapshot of any host is lost. (With prune's catch-ups disabled,
/// the pack holding `tmp.bin` is deleted and B's and C's restores fail.)
#[test]
fn a_prune_while_two_other_hosts_back_up_loses_no_snapshot() {
    let hosts = Hosts::new();
    let a = &hosts.a;
    let up = Upstream::new(a.tmp.path(), "upstream");
    let fork_b = two_days(a, &up);
    let fork_c = fork_b.fork(a.tmp.path(), "fork-c");
    fork_c.commit("c.txt", b"C's own\n");
    let b = hosts.join();
    let c = hosts.join();
    let forgot = json(a, &["forget", "--keep-last", "1"]);
    assert_eq!(forgot["removed"], 1, "{forgot}");

    // B and C stop after writing their first pack, before uploading it and committing.
    let release_writers = a.tmp.path().join("release-writers");
    let writer_b = common::spawn_paused(
        backup_command(&b, &fork_b, "fork-b", 3),
        "pack-written",
        &release_writers,
    );
    let writer_c = common::spawn_paused(
        backup_command(&c, &fork_c, "fork-c", 3),
        "pack-written",
        &release_writers,
    );
    let release_prune = a.tmp.path().join("release-prune");
    let prune = common::spawn_paused(
        a.command(&["--json", "prune"]),
        "prune-marked",
        &release_prune,
    );
    // A goes on to wait for the exclusive lock while B and C hold shared ones; whether it got
    // there before they go on does not matter to the outcome.
    std::fs::write(&release_prune, b"").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    std::fs::write(&release_writers, b"").unwrap();
    let ran_b = succeeded(writer_b);
    let ran_c = succeeded(writer_c);
    let pruned = succeeded(prune);

    assert_restores(&b, "fork-b", &fork_b.refs());
    assert_restores(&c, "fork-c", &fork_c.refs());
    for host in [a, &b, &c] {
        assert_eq!(snapshot_repos(host), ["fork-b", "fork-c", "repo"]);
        assert_restores(host, "repo", &up.refs());
        assert_restores(host, "fork-b", &fork_b.refs());
        assert_restores(host, "fork-c", &fork_c.refs());
        ok(&host.run(&["verify", "--full"]));
    }
    let ids = |run: &Value| {
        run["repositories"][0]["snapshot"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let listed = json(a, &["snapshots"]).to_string();
    assert!(
        listed.contains(&ids(&ran_b)) && listed.contains(&ids(&ran_c)),
        "{listed}"
    );
    // The pack holding what only B's and C's snapshots need was spared, not deleted.
    assert!(pruned["packs_spared"].as_u64().unwrap() >= 1, "{pruned}");
}

/// Two hosts back up the same repository at the same moment (A is held after writing its
/// first pack, with B started meanwhile): B waits for A's lease on the repository, catches up
/// and stores none of what A stored. Both snapshots exist and restore, and the shared target
/// grew by the repository's size plus less than one pack, not twice it. (Without the lease,
/// B stores every object again.)
#[test]
fn two_hosts_backing_up_one_repository_at_once_store_it_once() {
    let hosts = Hosts::new();
    let a = &hosts.a;
    let b = hosts.join();
    let pack = 1u64 << 20;
    for host in [a, &b] {
        host.set_store_option("pack_size", pack);
    }
    let up = Upstream::new(a.tmp.path(), "upstream");
    for i in 0..6 {
        up.commit(&format!("f{i}.bin"), &noise(20 + i, 1 << 20));
    }
    let before = common::tree_size(&hosts.files_dir);
    let release = a.tmp.path().join("release-a");
    let first = common::spawn_paused(backup_command(a, &up, "repo", 1), "pack-written", &release);
    let second = backup_command(&b, &up, "repo", 2)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // B meets A's lease (or, without leases, stores everything) while A is held; how far it
    // got before A goes on does not change what must hold.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    std::fs::write(&release, b"").unwrap();
    let ran_a = succeeded(first);
    let ran_b = succeeded(second);
    let grown = common::tree_size(&hosts.files_dir) - before;
    assert!(
        grown < 6 * (1 << 20) + pack,
        "the target grew by {grown} bytes for 6 MiB of incompressible data: stored twice"
    );
    let id = |run: &Value| {
        run["repositories"][0]["snapshot"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for host in [a, &b] {
        let listed = json(host, &["snapshots", "repo"]).to_string();
        assert!(
            listed.contains(&id(&ran_a)) && listed.contains(&id(&ran_b)),
            "{listed}"
        );
        assert_restores(host, "repo", &up.refs());
        ok(&host.run(&["verify", "--full"]));
    }
}

/// The same on two hosts: a pack goes missing from both shared targets; A's next backup stores
/// again what only it held, and B, catching up (its `restore` does), restores A's snapshot
/// exactly from the new copies while both hosts go on reporting the missing pack.
#[test]
fn another_host_restores_what_a_backup_stored_again_after_a_pack_went_missing() {
    let hosts = Hosts::new();
    let a = &hosts.a;
    let b = hosts.join();
    let up = Upstream::new(a.tmp.path(), "upstream");
    up.commit("a.txt", b"first\n");
    backup(a, &up, "repo", 1);
    let known = a.open().index().packs().unwrap();
    up.commit("b.bin", &noise(6, 200_000));
    backup(a, &up, "repo", 2);
    assert_eq!(snapshot_repos(&b), ["repo", "repo"]);
    let names: Vec<String> = a
        .open()
        .index()
        .packs()
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    let added: Vec<&String> = names
        .iter()
        .filter(|n| known.iter().all(|k| &k.name != *n))
        .collect();
    delete_everywhere(a, &added);
    up.commit("c.txt", b"third\n");
    backup(a, &up, "repo", 3);
    assert_restores(&b, "repo", &up.refs());
    for host in [a, &b] {
        assert_eq!(host.run(&["verify"]).status.code(), Some(1));
    }
}

/// Deletes packs from every target of `host` (behind every host's back: no prune record).
fn delete_everywhere(host: &TestVault, names: &[&String]) {
    let vault = host.open();
    for name in names {
        for target in vault.targets() {
            target.delete(&gitvault::store::pack_key(name)).unwrap();
        }
    }
}
