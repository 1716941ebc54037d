//! forget + prune through the binary: kept snapshots restore exactly and pass fsck, the vault
//! shrinks by what only forgotten snapshots used, a backup running during prune keeps what it
//! needs, prune killed anywhere loses nothing, and recover does not bring forgotten snapshots
//! back.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{TestVault, git, noise, ok, refs_and_head, stderr, tree_size};
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// An upstream repository the tests change day by day, backed up by path.
struct Upstream {
    dir: PathBuf,
}

impl Upstream {
    fn new(root: &Path) -> Upstream {
        let dir = root.join("upstream");
        std::fs::create_dir_all(&dir).unwrap();
        git(&dir, &["init", "-q", "-b", "main"]);
        git(&dir, &["config", "user.email", "t@example.com"]);
        git(&dir, &["config", "user.name", "T"]);
        Upstream { dir }
    }

    fn commit(&self, file: &str, bytes: &[u8], when: &str) {
        std::fs::write(self.dir.join(file), bytes).unwrap();
        git(&self.dir, &["add", file]);
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.dir)
            .args(["commit", "-q", "-m", file])
            .env("GIT_AUTHOR_DATE", when)
            .env("GIT_COMMITTER_DATE", when)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn path(&self) -> &str {
        self.dir.to_str().unwrap()
    }
}

fn backup(tv: &TestVault, up: &Upstream, day: u32) {
    let out = tv
        .command(&["backup", up.path(), "--name", "repo"])
        .env("GITVAULT_NOW", format!("2026-01-{day:02}T12:00:00Z"))
        .output()
        .unwrap();
    ok(&out);
}

fn json(tv: &TestVault, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = tv.run(&all);
    serde_json::from_slice(ok(&out).as_bytes()).unwrap()
}

/// Restores the snapshot of `day` and checks it against the refs recorded then.
fn assert_restores(tv: &TestVault, day: u32, want: &str) {
    let to = tv
        .tmp
        .path()
        .join(format!("restored-{day}-{}", rand_suffix()));
    let out = tv.run(&[
        "restore",
        "repo",
        "--at",
        &format!("2026-01-{day:02}T12:00:00Z"),
        "--to",
        to.to_str().unwrap(),
    ]);
    ok(&out);
    git(&to, &["fsck", "--full", "--strict"]);
    assert_eq!(refs_and_head(&to), want, "day {day}");
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// Four days: day 1 has a 2 MiB blob on branch `tmp`, day 2 drops `tmp` and has a 3 MiB blob
/// on branch `big`, days 3 and 4 only grow `main`. Returns the refs of days 3 and 4.
fn four_days(tv: &TestVault, up: &Upstream) -> (String, String) {
    up.commit("a.txt", b"first\n", "2026-01-01T10:00:00Z");
    git(&up.dir, &["checkout", "-q", "-b", "tmp"]);
    up.commit(
        "tmp.bin",
        &noise(1, 2 * MIB as usize),
        "2026-01-01T11:00:00Z",
    );
    git(&up.dir, &["checkout", "-q", "main"]);
    backup(tv, up, 1);

    git(&up.dir, &["branch", "-q", "-D", "tmp"]);
    git(&up.dir, &["checkout", "-q", "-b", "big"]);
    up.commit(
        "big.bin",
        &noise(2, 3 * MIB as usize),
        "2026-01-02T11:00:00Z",
    );
    git(&up.dir, &["checkout", "-q", "main"]);
    backup(tv, up, 2);

    git(&up.dir, &["branch", "-q", "-D", "big"]);
    up.commit("c.txt", b"third\n", "2026-01-03T10:00:00Z");
    backup(tv, up, 3);
    let day3 = refs_and_head(&up.dir.join(".git"));

    up.commit("d.txt", b"fourth\n", "2026-01-04T10:00:00Z");
    backup(tv, up, 4);
    let day4 = refs_and_head(&up.dir.join(".git"));
    (day3, day4)
}

fn forget_all_but_two(tv: &TestVault) {
    let plan = json(tv, &["forget", "--keep-last", "2", "--dry-run"]);
    assert_eq!(plan["would_remove"], 2, "{plan}");
    assert_eq!(json(tv, &["snapshots"]).as_array().unwrap().len(), 4);
    let done = json(tv, &["forget", "--keep-last", "2"]);
    assert_eq!(done["removed"], 2, "{done}");
    let left = json(tv, &["snapshots"]);
    assert_eq!(left.as_array().unwrap().len(), 2, "{left}");
}

#[test]
fn forget_then_prune_frees_what_only_forgotten_snapshots_used() {
    let tv = TestVault::new();
    let up = Upstream::new(tv.tmp.path());
    let (day3, day4) = four_days(&tv, &up);
    forget_all_but_two(&tv);

    let before = tree_size(&tv.data_dir());
    let dry = json(&tv, &["prune", "--dry-run"]);
    assert!(
        dry["bytes_freed"].as_i64().unwrap() > 4 * MIB as i64,
        "{dry}"
    );
    assert_eq!(
        tree_size(&tv.data_dir()),
        before,
        "a dry run changed the vault"
    );

    let report = json(&tv, &["prune"]);
    let after = tree_size(&tv.data_dir());
    // The 2 MiB and 3 MiB noise blobs were only in the forgotten snapshots.
    assert!(
        before - after >= 5 * MIB - MIB / 4,
        "freed {} bytes: {report}",
        before - after
    );
    assert!(report["packs_deleted"].as_u64().unwrap() >= 2, "{report}");
    assert!(report["packs_compacted"].as_u64().unwrap() >= 1, "{report}");
    assert_restores(&tv, 3, &day3);
    assert_restores(&tv, 4, &day4);

    // Nothing more to free; everything still there.
    let again = json(&tv, &["prune"]);
    assert_eq!(again["packs_deleted"], 0, "{again}");
    assert_eq!(again["dead_objects"], 0, "{again}");
    // Only the first prune's record, superseded by the second's.
    assert_eq!(again["dead_chunks"], 1, "{again}");
    assert_restores(&tv, 4, &day4);
    let verify = tv.run(&["verify", "--full"]);
    ok(&verify);

    // From the packs alone: the forgotten snapshots stay forgotten, the kept ones restore.
    let dir = tv.tmp.path().join("recovered");
    let out = Command::new(env!("CARGO_BIN_EXE_gitvault"))
        .arg("--vault")
        .arg(&dir)
        .args(["recover", "--footers-only", "--from"])
        .arg(common::git_server::file_url(&tv.data_dir()))
        .env("GITVAULT_IDENTITY_FILE", &tv.identity_file)
        .output()
        .unwrap();
    ok(&out);
    let rv = TestVault {
        tmp: tempfile::tempdir().unwrap(),
        dir: dir.clone(),
        identity_file: tv.identity_file.clone(),
        identity: tv.identity.clone(),
    };
    let snaps = json(&rv, &["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 2, "{snaps}");
    assert_restores(&rv, 3, &day3);
    assert_restores(&rv, 4, &day4);
    // And the recovered vault backs up again, unchanged.
    backup(&rv, &up, 5);
    assert_eq!(json(&rv, &["snapshots"]).as_array().unwrap().len(), 3);
}

/// Starts `gitvault prune` paused at `point`; returns it once it has reached the point.
fn paused_prune(tv: &TestVault, point: &str, release: &Path) -> Child {
    common::spawn_paused(tv.command(&["--json", "prune"]), point, release)
}

#[test]
fn a_backup_during_prune_keeps_what_it_needs() {
    let tv = TestVault::new();
    let up = Upstream::new(tv.tmp.path());
    let (_, day4) = four_days(&tv, &up);
    forget_all_but_two(&tv);
    // The commit of the forgotten branch `big` is still in the upstream repository.
    let big = git(
        &up.dir,
        &["rev-list", "-n1", "--all", "--reflog", "--", "big.bin"],
    );
    let big = big.trim().to_string();
    assert_eq!(big.len(), 40);

    // Prune has marked (the 3 MiB blob is dead to it) when a backup brings `big` back: the
    // vault still knows its objects, so the backup stores nothing new and refers to them.
    let release = tv.tmp.path().join("release-marked");
    let prune = paused_prune(&tv, "prune-marked", &release);
    git(&up.dir, &["branch", "big", &big]);
    backup(&tv, &up, 5);
    let day5 = refs_and_head(&up.dir.join(".git"));
    std::fs::write(&release, b"").unwrap();
    let out = prune.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["packs_spared"].as_u64().unwrap() >= 1, "{report}");
    assert_restores(&tv, 5, &day5);
    assert_restores(&tv, 4, &day4);

    // A backup that starts while prune holds the lock waits for it instead of failing.
    let release = tv.tmp.path().join("release-locked");
    let prune = paused_prune(&tv, "prune-locked", &release);
    up.commit("e.txt", b"fifth\n", "2026-01-06T10:00:00Z");
    let waiting = tv
        .command(&["backup", up.path(), "--name", "repo"])
        .env("GITVAULT_NOW", "2026-01-06T12:00:00Z")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    std::fs::write(&release, b"").unwrap();
    let out = prune.wait_with_output().unwrap();
    assert!(out.status.success());
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let day6 = refs_and_head(&up.dir.join(".git"));
    assert_restores(&tv, 6, &day6);
    assert_restores(&tv, 5, &day5);
}

#[test]
fn prune_killed_anywhere_loses_nothing_and_a_rerun_finishes() {
    for point in [
        "prune-marked",
        "prune-compacted",
        "prune-locked",
        "prune-recorded",
        "prune-condemned",
        "prune-deleting",
    ] {
        let tv = TestVault::new();
        let up = Upstream::new(tv.tmp.path());
        let (day3, day4) = four_days(&tv, &up);
        forget_all_but_two(&tv);
        let before = tree_size(&tv.data_dir());

        let mut child = tv
            .command(&["prune"])
            .env("GITVAULT_TEST_HOOK_STALL", point)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while err.read_line(&mut line).unwrap() > 0 && !line.contains("gitvault-test-hook") {
            line.clear();
        }
        assert!(line.contains(point), "prune never reached {point}");
        child.kill().unwrap();
        child.wait().unwrap();

        assert_restores(&tv, 3, &day3);
        assert_restores(&tv, 4, &day4);
        let report = json(&tv, &["prune"]);
        assert_restores(&tv, 3, &day3);
        assert_restores(&tv, 4, &day4);
        let after = tree_size(&tv.data_dir());
        assert!(
            before - after >= 5 * MIB - MIB / 4,
            "{point}: freed only {} bytes: {report}",
            before.saturating_sub(after)
        );
        ok(&tv.run(&["verify"]));
    }
}

#[test]
fn prune_covers_every_target_including_s3() {
    use common::s3_server::S3Server;
    let tv = TestVault::new();
    let moto = S3Server::moto();
    let s3s = S3Server::s3s_fs();
    moto.create_bucket("prune-a");
    s3s.create_bucket("prune-b");
    moto.set_env();
    s3s.set_env();
    ok(&tv.run(&["target", "add", "moto", &moto.url("prune-a", "gv")]));
    ok(&tv.run(&["target", "add", "s3s", &s3s.url("prune-b", "")]));
    let up = Upstream::new(tv.tmp.path());
    let (day3, day4) = four_days(&tv, &up);
    forget_all_but_two(&tv);
    let before = json(&tv, &["stats"]);
    let report = json(&tv, &["prune"]);
    assert!(report["packs_deleted"].as_u64().unwrap() >= 2, "{report}");
    let after = json(&tv, &["stats"]);
    let targets = after["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 3, "{after}");
    for (b, a) in before["targets"].as_array().unwrap().iter().zip(targets) {
        // Every target lost the same packs, and holds exactly what the index lists.
        assert_eq!(a["missing_packs"], 0, "{a}");
        assert_eq!(a["garbage_files"], 0, "{a}");
        assert_eq!(a["packs"], after["packs"], "{a}");
        let freed = b["pack_bytes"].as_u64().unwrap() - a["pack_bytes"].as_u64().unwrap();
        assert!(freed >= 5 * MIB - MIB / 4, "{} freed {freed}", a["name"]);
    }
    ok(&tv.run(&["verify", "--full"]));
    assert_restores(&tv, 3, &day3);
    assert_restores(&tv, 4, &day4);
}

#[test]
fn forget_uses_the_configured_policy_and_refuses_to_guess() {
    let tv = TestVault::new();
    let up = Upstream::new(tv.tmp.path());
    let (_, day4) = four_days(&tv, &up);
    // No flags and no configured policy: a clear refusal, nothing forgotten.
    let out = tv.run(&["forget"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no retention policy"),
        "{}",
        stderr(&out)
    );
    assert_eq!(json(&tv, &["snapshots"]).as_array().unwrap().len(), 4);

    let config = tv.dir.join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[retention]\nkeep_last = 1\nkeep_within = \"1d\"\n");
    std::fs::write(&config, text).unwrap();
    let plan = json(&tv, &["forget", "--dry-run"]);
    let repo = &plan["repositories"][0];
    assert_eq!(repo["policy"], "config", "{plan}");
    let kept: Vec<_> = repo["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["keep"] == true)
        .collect();
    // Day 4 (last, within 1d) and day 3 (within 1d of day 4's noon: day 3 noon is exactly
    // 24 h earlier, so not after the bound; restic's "newer than" is strict).
    assert_eq!(kept.len(), 1, "{plan}");
    assert_eq!(
        kept[0]["reasons"],
        serde_json::json!(["within 1d", "last"]),
        "{plan}"
    );
    ok(&tv.run(&["forget"]));
    assert_eq!(json(&tv, &["snapshots"]).as_array().unwrap().len(), 1);
    ok(&tv.run(&["prune"]));
    assert_restores(&tv, 4, &day4);
}

/// Text that changes a little each day: each day's version alone compresses poorly (the
/// words are random), but next to the other versions zstd finds almost all of it.
fn drifting_text(day: u32) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::new();
    for line in 0..4000u32 {
        let mut words = Vec::new();
        for _ in 0..8 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            words.push(format!("{:x}", state & 0xffff_ffff));
        }
        // One line in 200 differs from day to day.
        if line % 200 == day % 200 {
            words.push(format!("day{day}"));
        }
        out.extend_from_slice(words.join(" ").as_bytes());
        out.push(b'\n');
    }
    out
}

#[test]
fn prune_regroups_daily_increments_so_versions_compress_together() {
    let tv = TestVault::new();
    let up = Upstream::new(tv.tmp.path());
    let days = 8;
    let mut refs = Vec::new();
    for day in 1..=days {
        up.commit(
            "notes.txt",
            &drifting_text(day),
            &format!("2026-01-{day:02}T10:00:00Z"),
        );
        backup(&tv, &up, day);
        refs.push(refs_and_head(&up.dir.join(".git")));
    }
    let before = json(&tv, &["stats"]);
    let size_before = tree_size(&tv.data_dir());
    let report = json(&tv, &["prune"]);
    assert_eq!(report["dead_chunks"], 0, "{report}");
    assert!(
        report["packs_compacted"].as_u64().unwrap() >= days as u64,
        "{report}"
    );
    let size_after = tree_size(&tv.data_dir());
    // Eight versions of ~300 KB stored each on its own cost about eight times one version;
    // side by side in one frame they cost little more than one.
    assert!(
        size_after * 3 < size_before,
        "regrouping saved too little: {size_before} -> {size_after} bytes; {report}; stats before {before}"
    );
    for day in [1, days / 2, days] {
        assert_restores(&tv, day, &refs[day as usize - 1]);
    }
    ok(&tv.run(&["verify", "--full"]));
    // Nothing changed since: a second prune rewrites nothing.
    let again = json(&tv, &["prune"]);
    assert_eq!(again["packs_compacted"], 0, "{again}");
}

/// What a killed run left (a temporary pack in the vault's tmp directory, a partial upload on a
/// file target) is removed by prune once it is a day old; younger files may belong to a run
/// still going and stay.
#[test]
fn prune_collects_what_killed_runs_left() {
    let tv = TestVault::new();
    let file = tv.tmp.path().join("blob");
    std::fs::write(&file, common::noise(5, 10_000)).unwrap();
    ok(&tv.run(&["chunk", "put", file.to_str().unwrap()]));
    let tmp = tv.dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let partial_dir = tv.data_dir().join("packs").join("ab");
    std::fs::create_dir_all(&partial_dir).unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 24 * 3600);
    let mut made = Vec::new();
    for (path, age) in [
        (tmp.join("pack-0123.tmp"), Some(old)),
        (tmp.join("pack-4567.tmp"), None),
        (partial_dir.join(".tmp-abcd-0001"), Some(old)),
        (partial_dir.join(".tmp-abcd-0002"), None),
    ] {
        let f = std::fs::File::create(&path).unwrap();
        if let Some(t) = age {
            f.set_modified(t).unwrap();
        }
        made.push((path, age.is_some()));
    }
    let doc: serde_json::Value = serde_json::from_str(&ok(&tv.run(&["--json", "prune"]))).unwrap();
    assert_eq!(doc["garbage_files_removed"], 2, "{doc}");
    for (path, stale) in made {
        assert_eq!(path.exists(), !stale, "{}", path.display());
    }
}
