//! Daily increments stored as deltas against the previous version of each path (delta chunks,
//! docs/FORMAT.md): an edit of a large file costs about the edit, every day restores exactly,
//! chains longer than the writer's limit stay readable, prune keeps the bases a kept snapshot
//! reads through (even when the snapshots that added them are forgotten), and a damaged base
//! makes a restore fail loudly instead of writing a wrong repository.

mod common;

use std::path::{Path, PathBuf};

use common::{TestVault, git, noise, ok, pack_files, refs_and_head, stderr};
use gitvault::ChunkKind;
use gitvault::store::DeltaBase;
use gitvault::store::delta::MAX_DEPTH;
use serde_json::Value;

/// A working repository and the bare one the backups read over `file://`.
struct Upstream {
    work: PathBuf,
    bare: PathBuf,
}

impl Upstream {
    fn new(root: &Path) -> Upstream {
        let work = root.join("work");
        let bare = root.join("served.git");
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        git(root, &["init", "-q", "--bare", bare.to_str().unwrap()]);
        Upstream { work, bare }
    }

    fn commit(&self, files: &[(&str, &[u8])], date: &str) {
        for (path, content) in files {
            let p = self.work.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        git(&self.work, &["add", "-A"]);
        let status = std::process::Command::new("git")
            .current_dir(&self.work)
            .args(["-c", "user.name=T", "-c", "user.email=t@x", "commit", "-qm"])
            .arg(format!("edit {date}"))
            .env("GIT_AUTHOR_DATE", date)
            .env("GIT_COMMITTER_DATE", date)
            .status()
            .unwrap();
        assert!(status.success());
        git(
            &self.work,
            &["push", "-q", "--mirror", self.bare.to_str().unwrap()],
        );
    }

    fn url(&self) -> String {
        format!("file://{}", self.bare.display())
    }
}

/// Text that zstd alone cannot shrink much (hex of noise: about 2:1), one line per 64 bytes.
fn text(seed: u64, lines: usize) -> Vec<String> {
    noise(seed, lines * 32)
        .chunks(32)
        .map(|l| l.iter().map(|b| format!("{b:02x}")).collect())
        .collect()
}

fn join(lines: &[String]) -> Vec<u8> {
    let mut out = lines.join("\n").into_bytes();
    out.push(b'\n');
    out
}

fn json(tv: &TestVault, args: &[&str], now: Option<&str>) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let mut cmd = tv.command(&all);
    if let Some(now) = now {
        cmd.env("GITVAULT_NOW", now);
    }
    let out = cmd.output().unwrap();
    serde_json::from_slice(ok(&out).as_bytes()).unwrap()
}

fn day(n: usize) -> String {
    format!("2026-01-{n:02}T12:00:00Z")
}

/// Backs up day `n`; returns the new unique bytes the run added (before compression).
fn backup_day(tv: &TestVault, up: &Upstream, n: usize) -> u64 {
    let doc = json(tv, &["backup", &up.url(), "--name", "repo"], Some(&day(n)));
    assert_eq!(doc["ok"], true, "{doc}");
    doc["repositories"][0]["bytes_added"].as_u64().unwrap()
}

fn restore_at(tv: &TestVault, n: usize) -> Result<PathBuf, String> {
    let to = tv
        .tmp
        .path()
        .join(format!("restored-{n}-{}", pack_files(&tv.data_dir()).len()));
    let out = tv.run(&[
        "restore",
        "repo",
        "--at",
        &day(n),
        "--to",
        to.to_str().unwrap(),
    ]);
    if !out.status.success() {
        return Err(stderr(&out));
    }
    git(&to, &["fsck", "--full", "--strict"]);
    Ok(to)
}

/// 22 days of small edits to a 256 KiB file and a deep small one: more days than a delta
/// chain may be long, so the writer must start new chains and the reader follow old ones.
fn history(tv: &TestVault, up: &Upstream) -> (Vec<String>, Vec<Vec<u8>>) {
    let mut big = text(1, 4000);
    let mut refs = Vec::new();
    let mut contents = Vec::new();
    let mut added = Vec::new();
    for n in 1..=22 {
        if n > 1 {
            for k in 0..3 {
                let line = (n * 131 + k * 977) % big.len();
                big[line] = format!("day {n} edit {k} {}", text(100 + n as u64, 1)[0]);
            }
        }
        let deep = format!("config for day {n}\n{}\n", text(7, 20).join("\n"));
        up.commit(
            &[
                ("big.txt", &join(&big)),
                ("a/b/c/deep.txt", deep.as_bytes()),
            ],
            &day(n),
        );
        added.push(backup_day(tv, up, n));
        refs.push(refs_and_head(&up.bare));
        contents.push(join(&big));
    }
    let whole = join(&big).len() as u64;
    assert!(added[0] > whole, "day 1 stores the file: {added:?}");
    for (i, bytes) in added.iter().enumerate().skip(1) {
        // Without deltas each day adds the whole file (256 KiB) and its trees again.
        assert!(
            *bytes < whole / 20,
            "day {} added {bytes} bytes for a 3-line edit of a {whole}-byte file: {added:?}",
            i + 1
        );
    }
    (refs, contents)
}

fn check_day(tv: &TestVault, n: usize, refs: &[String], contents: &[Vec<u8>]) {
    let to = restore_at(tv, n).unwrap_or_else(|e| panic!("day {n}: {e}"));
    assert_eq!(refs_and_head(&to), refs[n - 1], "day {n}");
    let shown = std::process::Command::new("git")
        .arg("-C")
        .arg(&to)
        .args(["show", "main:big.txt"])
        .output()
        .unwrap();
    assert!(shown.stdout == contents[n - 1], "day {n}: big.txt differs");
}

#[test]
fn daily_edits_cost_their_size_and_every_day_restores_exactly() {
    let tv = TestVault::new();
    let up = Upstream::new(tv.tmp.path());
    let (refs, contents) = history(&tv, &up);
    for n in [1, 2, 9, 17, 18, 22] {
        check_day(&tv, n, &refs, &contents);
    }
    let verify = json(&tv, &["verify", "--full"], None);
    assert_eq!(verify["ok"], true, "{verify}");

    // A vault recovered from the target alone reads the chains the same way.
    let recovered = TestVault {
        tmp: tempfile::tempdir().unwrap(),
        dir: tv.tmp.path().join("recovered"),
        identity_file: tv.identity_file.clone(),
        identity: tv.identity.clone(),
    };
    let from = format!("file://{}", tv.data_dir().display());
    ok(&recovered.run(&["recover", "--from", &from]));
    for n in [2, 18, 22] {
        check_day(&recovered, n, &refs, &contents);
    }

    // Forget every day but the last: the versions its deltas are stored against belong to
    // forgotten snapshots only, and must stay. Then compaction regroups what is left.
    json(&tv, &["forget", "--keep-last", "1"], None);
    let pruned = json(&tv, &["prune"], None);
    assert!(
        pruned["packs_deleted"].as_u64().unwrap() + pruned["packs_compacted"].as_u64().unwrap() > 0,
        "{pruned}"
    );
    check_day(&tv, 22, &refs, &contents);
    let verify = json(&tv, &["verify", "--full"], None);
    assert_eq!(verify["ok"], true, "{verify}");
    let again = json(&tv, &["prune"], None);
    assert_eq!(again["packs_deleted"], 0, "{again}");
    check_day(&tv, 22, &refs, &contents);
}

/// A flipped byte in the pack that holds day 1 (the base of every later version) makes later
/// days fail to restore, naming that pack, and leaves no repository behind.
#[test]
fn a_damaged_base_fails_the_restore_of_later_days() {
    let tv = TestVault::new();
    let up = Upstream::new(tv.tmp.path());
    let mut big = text(3, 3000);
    up.commit(&[("big.txt", &join(&big))], &day(1));
    backup_day(&tv, &up, 1);
    let first: Vec<PathBuf> = pack_files(&tv.data_dir());
    big[10] = "changed".into();
    up.commit(&[("big.txt", &join(&big))], &day(2));
    let added = backup_day(&tv, &up, 2);
    assert!(added < 20_000, "day 2 added {added} bytes");
    restore_at(&tv, 2).expect("day 2 restores before the damage");

    let largest = first
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(largest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(largest, &bytes).unwrap();

    let to = tv.tmp.path().join("after-damage");
    let out = tv.run(&[
        "restore",
        "repo",
        "--at",
        &day(2),
        "--to",
        to.to_str().unwrap(),
    ]);
    assert!(
        !out.status.success(),
        "a restore through a damaged base succeeded"
    );
    let name = largest.file_name().unwrap().to_string_lossy().to_string();
    assert!(stderr(&out).contains(&name[..16]), "{}", stderr(&out));
}

/// A version stored as a delta can outlive every snapshot that reaches its base: here main is
/// force-pushed to a new root commit holding the same file content. Once the older days are
/// forgotten, nothing reaches the base but the delta; prune must keep it, and the last day
/// must restore exactly after the prune and its compaction.
#[test]
fn prune_keeps_a_base_that_only_forgotten_snapshots_reach() {
    let tv = TestVault::new();
    let up = Upstream::new(tv.tmp.path());
    let mut big = text(5, 3000);
    up.commit(&[("big.txt", &join(&big))], &day(1));
    backup_day(&tv, &up, 1);
    big[42] = "edited on day two".into();
    up.commit(&[("big.txt", &join(&big))], &day(2));
    assert!(backup_day(&tv, &up, 2) < 20_000, "day 2 is a delta");

    git(&up.work, &["checkout", "-q", "--orphan", "rewritten"]);
    up.commit(&[("big.txt", &join(&big))], &day(3));
    git(&up.work, &["branch", "-q", "-M", "main"]);
    git(
        &up.work,
        &[
            "push",
            "-q",
            "--force",
            "--mirror",
            up.bare.to_str().unwrap(),
        ],
    );
    backup_day(&tv, &up, 3);
    let want = refs_and_head(&up.bare);

    json(&tv, &["forget", "--keep-last", "1"], None);
    let pruned = json(&tv, &["prune"], None);
    assert!(pruned["dead_objects"].as_u64().unwrap() >= 2, "{pruned}");
    let to = restore_at(&tv, 3).unwrap_or_else(|e| panic!("{e}\n{pruned}"));
    assert_eq!(refs_and_head(&to), want);
    let verify = json(&tv, &["verify", "--full"], None);
    assert_eq!(verify["ok"], true, "{verify}");
}

/// The store alone: forty versions each stored against the one before read back byte for
/// byte; chains stay within the writer's limit; versions that gain nothing from a delta (too
/// small, unrelated, already stored whole) are stored whole.
#[test]
fn delta_chains_round_trip_and_stay_short() {
    let tv = TestVault::new();
    let vault = tv.open();
    let keys = tv.keys(&vault);
    let lock = vault.lock().unwrap();
    let mut store = vault.store(&keys, &lock);
    let mut lines = text(9, 1500);
    let first = join(&lines);
    let mut ids = vec![store.put(ChunkKind::GitBlob, &first).unwrap()];
    let mut versions = vec![first];
    for n in 1..40 {
        let at = (n * 37) % lines.len();
        lines[at] = format!("version {n}");
        let data = join(&lines);
        store.flush().unwrap();
        let prev = *ids.last().unwrap();
        let depth = store.delta_depth(&prev).unwrap().unwrap();
        let base = DeltaBase {
            id: prev,
            depth,
            content: versions.last().unwrap(),
        };
        ids.push(store.put_against(ChunkKind::GitBlob, &data, &base).unwrap());
        versions.push(data);
    }
    store.flush().unwrap();
    let reader = vault.reader(&keys);
    for (id, want) in ids.iter().zip(&versions) {
        assert!(reader.get(id).unwrap() == *want);
        let depth = reader.delta_depth(id).unwrap().unwrap();
        assert!(depth <= MAX_DEPTH, "depth {depth}");
    }
    assert!(
        ids.iter()
            .skip(1)
            .all(|id| reader.delta_depth(id).unwrap() != Some(0))
    );

    let last = DeltaBase {
        id: *ids.last().unwrap(),
        depth: reader.delta_depth(ids.last().unwrap()).unwrap().unwrap(),
        content: versions.last().unwrap(),
    };
    let unrelated = join(&text(10, 1500));
    let tiny = b"tiny".to_vec();
    for data in [&unrelated, &tiny, &versions[0]] {
        let id = store.put_against(ChunkKind::GitBlob, data, &last).unwrap();
        store.flush().unwrap();
        assert_eq!(store.delta_depth(&id).unwrap(), Some(0), "stored whole");
        assert!(store.get(&id).unwrap() == *data);
    }
    assert_eq!(
        store
            .put_against(ChunkKind::GitBlob, &versions[0], &last)
            .unwrap(),
        ids[0]
    );
}

/// Delta chunks as FORMAT.md describes them, written by hand: one whose delta does not fit its
/// base, a truncated one, one whose base is not in the vault, one that misstates its depth and
/// a chain longer than a reader follows are refused with the chunk named; a chain just short of the limit reads.
#[test]
fn broken_delta_chunks_are_refused() {
    let tv = TestVault::new();
    let vault = tv.open();
    let keys = tv.keys(&vault);
    let lock = vault.lock().unwrap();
    let mut store = vault.store(&keys, &lock);
    let content = noise(4, 100);
    let base = store.put(ChunkKind::GitBlob, &content).unwrap();
    let doc = |depth: u8, base: &gitvault::crypto::ChunkId, delta: &[u8]| {
        let mut d = vec![1u8, depth];
        d.extend_from_slice(&base.0);
        d.extend_from_slice(delta);
        d
    };
    // Base size 100, result 100, COPY offset 0 size 100.
    let copy_all = [100u8, 100, 0x90, 100];
    let mut chain = vec![base];
    for depth in 1..=70 {
        let next = store
            .put_chunk(
                ChunkKind::Delta,
                &doc(depth, chain.last().unwrap(), &copy_all),
            )
            .unwrap();
        chain.push(next);
    }
    let wrong_size = store
        .put_chunk(ChunkKind::Delta, &doc(1, &base, &[99u8, 99, 0x90, 99]))
        .unwrap();
    let truncated = store.put_chunk(ChunkKind::Delta, &[1u8, 1, 2, 3]).unwrap();
    let orphan = store
        .put_chunk(
            ChunkKind::Delta,
            &doc(1, &gitvault::crypto::ChunkId([9; 32]), &copy_all),
        )
        .unwrap();
    let misdeclared = store
        .put_chunk(ChunkKind::Delta, &doc(1, &chain[5], &copy_all))
        .unwrap();
    store.flush().unwrap();

    let reader = vault.reader(&keys);
    assert!(reader.get(&chain[60]).unwrap() == content);
    let refused = |id, what: &str| {
        let err = reader.get(id).unwrap_err().to_string();
        assert!(err.contains(what), "{err}");
    };
    refused(&chain[70], "longer than 64");
    refused(&wrong_size, "does not apply");
    refused(&truncated, "truncated");
    refused(&orphan, "not in the vault");
    refused(&misdeclared, "depth 1 over a base of depth 5");
}
