//! S3 Object Lock on a target (docs/OBJECT-LOCK.md), against moto's Object Lock: what the
//! backup host's own credentials cannot delete, prune leaving locked packs pending and deleting
//! them once their locks run out, renewal of what kept snapshots need, `verify --locks`, and
//! every earlier guarantee on a locked target. Locks last seconds here (`GITVAULT_LOCK_SECONDS`).

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use common::s3_server::{RawS3, S3Server};
use common::{TestVault, git, ok, pack_files, refs_and_head, stderr};
use serde_json::Value;

/// The lock period of these tests: long enough for a few commands on a slow, loaded machine
/// (the renewal test needs eight commands to finish within half of it), short enough to wait
/// out.
const LOCK_SECONDS: u64 = 30;

fn command(tv: &TestVault, args: &[&str]) -> Command {
    let mut cmd = tv.command(args);
    cmd.env("GITVAULT_LOCK_SECONDS", LOCK_SECONDS.to_string());
    cmd
}

fn run(tv: &TestVault, args: &[&str]) -> Output {
    command(tv, args).output().unwrap()
}

fn json(tv: &TestVault, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(&run(tv, &all))).unwrap()
}

/// A repository whose every day is an unrelated history, so that forgetting a day leaves its
/// whole pack dead.
fn new_day(repo: &Path, day: u32) {
    if !repo.exists() {
        std::fs::create_dir_all(repo).unwrap();
        git(repo, &["init", "-q", "-b", "main"]);
        git(repo, &["config", "user.email", "t@example.com"]);
        git(repo, &["config", "user.name", "T"]);
    } else {
        git(repo, &["checkout", "-q", "--orphan", &format!("day{day}")]);
        git(repo, &["rm", "-rqf", "."]);
    }
    std::fs::write(
        repo.join(format!("day{day}.bin")),
        common::noise(u64::from(day), 300_000),
    )
    .unwrap();
    git(repo, &["add", "."]);
    git(repo, &["commit", "-qm", &format!("day {day}")]);
    if day > 1 {
        git(repo, &["branch", "-qD", "main"]);
        git(repo, &["branch", "-qm", "main"]);
    }
}

fn backup(tv: &TestVault, repo: &Path, day: u32) {
    let out = command(tv, &["backup", repo.to_str().unwrap(), "--name", "repo"])
        .env("GITVAULT_NOW", format!("2026-01-{day:02}T12:00:00Z"))
        .output()
        .unwrap();
    ok(&out);
}

/// Pack keys (`packs/xx/name`) on the vault's local target.
fn local_packs(tv: &TestVault) -> Vec<String> {
    let data = tv.data_dir();
    pack_files(&data)
        .into_iter()
        .map(|p| p.strip_prefix(&data).unwrap().to_str().unwrap().to_string())
        .collect()
}

/// A moto server with a bucket that has Object Lock, added to the vault as target `s3` with
/// `--lock-days 1`; the raw client and the target's URL.
fn add_locked_target(tv: &TestVault, bucket: &str, prefix: &str) -> (S3Server, RawS3, String) {
    let moto = S3Server::moto();
    moto.create_locked_bucket(bucket);
    moto.set_env();
    let url = moto.url(bucket, prefix);
    ok(&run(tv, &["target", "add", "s3", &url, "--lock-days", "1"]));
    let raw = moto.raw_client();
    (moto, raw, url)
}

fn until(raw: &RawS3, bucket: &str, key: &str) -> SystemTime {
    let lock = raw
        .head_lock(bucket, key)
        .unwrap_or_else(|| panic!("{key} missing"));
    assert_eq!(lock.mode.as_deref(), Some("COMPLIANCE"), "{key}");
    lock.until.unwrap_or_else(|| panic!("{key} has no lock"))
}

fn sleep_until(t: SystemTime) {
    if let Ok(wait) = t.duration_since(SystemTime::now()) {
        std::thread::sleep(wait);
    }
}

/// The binary on another vault directory (a recovered one), with the test identity.
fn in_vault(tv: &TestVault, dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gitvault"))
        .arg("--vault")
        .arg(dir)
        .args(args)
        .env("GITVAULT_IDENTITY_FILE", &tv.identity_file)
        .env("GITVAULT_LOCK_SECONDS", LOCK_SECONDS.to_string())
        .output()
        .unwrap()
}

fn ok_output(out: &Output) -> &Output {
    ok(out);
    out
}

fn restore_matches(tv: &TestVault, to: &Path, want: &str) {
    ok(&run(tv, &["restore", "repo", "--to", to.to_str().unwrap()]));
    git(to, &["fsck", "--full", "--strict"]);
    assert_eq!(refs_and_head(to), want);
}

#[test]
fn locked_packs_stay_until_their_locks_run_out_and_live_ones_are_renewed() {
    let tv = TestVault::new();
    let (_moto, raw, _) = add_locked_target(&tv, "locked-vault", "gv");
    let repo = tv.tmp.path().join("upstream");
    new_day(&repo, 1);
    backup(&tv, &repo, 1);
    let old = local_packs(&tv);
    new_day(&repo, 2);
    backup(&tv, &repo, 2);
    let want = refs_and_head(&repo.join(".git"));
    let kept: Vec<String> = local_packs(&tv)
        .into_iter()
        .filter(|p| !old.contains(p))
        .collect();
    assert_eq!(old.len(), 1, "{old:?}");
    let (doomed, kept) = (format!("gv/{}", old[0]), format!("gv/{}", kept[0]));

    // Everything gitvault wrote is locked; the leases under locks/ are gone for good.
    let doomed_until = until(&raw, "locked-vault", &doomed);
    let kept_until = until(&raw, "locked-vault", &kept);
    until(&raw, "locked-vault", "gv/gitvault.json");
    assert!(raw.versions("locked-vault", "gv/locks/").is_empty());
    // The host's own credentials cannot destroy a pack.
    assert!(raw.destroy("locked-vault", &doomed).is_err());
    assert_eq!(raw.versions("locked-vault", &doomed).len(), 1);

    // Forgotten, condemned, but locked: pending, nothing deleted, nothing failed.
    ok(&run(&tv, &["forget", "--keep-last", "1"]));
    let dry = json(&tv, &["prune", "--dry-run"]);
    assert!(dry["packs_emptied"].as_u64().unwrap() >= 1, "{dry}");
    assert_eq!(dry["packs_locked"], dry["packs_emptied"], "{dry}");
    assert_eq!(dry["bytes_freed"], 0, "{dry}");
    let first = json(&tv, &["prune"]);
    assert_eq!(first["packs_deleted"], 0, "{first}");
    assert!(first["packs_locked"].as_u64().unwrap() >= 1, "{first}");
    assert!(raw.head_lock("locked-vault", &doomed).is_some());
    assert!(tv.data_dir().join(&old[0]).exists(), "deleted nowhere");
    let stats = json(&tv, &["stats"]);
    assert!(
        stats["pending_deletion_packs"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    assert!(
        stats["pending_deletion_bytes"].as_u64().unwrap() > 250_000,
        "{stats}"
    );
    assert!(
        stats["object_lock"]["earliest_live_until"].is_string(),
        "{stats}"
    );
    // status: the first live lock is known and far enough; under a policy of 1,000 s the
    // same date is within a quarter period: renewals are overdue, exit 1.
    let status = json(&tv, &["status"]);
    assert_eq!(status["targets"][1]["lock_expiring"], false, "{status}");
    assert!(status["targets"][1]["lock_expires"].is_string(), "{status}");
    let out = command(&tv, &["--json", "status"])
        .env("GITVAULT_LOCK_SECONDS", "1000")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["targets"][1]["lock_expiring"], true, "{status}");
    let metrics = tv.tmp.path().join("gitvault.prom");
    ok(&run(
        &tv,
        &["--metrics-file", metrics.to_str().unwrap(), "stats"],
    ));
    let samples = common::metrics_samples(&metrics).unwrap();
    let expiry = samples["gitvault_object_lock_earliest_live_expiry_timestamp_seconds{}"];
    let kept_secs = kept_until
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((expiry - kept_secs).abs() <= 1.0, "{expiry} vs {kept_secs}");
    assert!(samples["gitvault_pending_deletion_bytes{}"] > 250_000.0);

    // Past half the period, a prune renews the kept pack's lock and not the doomed one's.
    sleep_until(kept_until - Duration::from_secs(LOCK_SECONDS / 2) + Duration::from_millis(300));
    assert!(SystemTime::now() < doomed_until, "the test ran too slowly");
    let second = json(&tv, &["prune"]);
    assert!(second["packs_locked"].as_u64().unwrap() >= 1, "{second}");
    assert!(until(&raw, "locked-vault", &kept) > kept_until, "renewed");
    assert_eq!(until(&raw, "locked-vault", &doomed), doomed_until);

    // Once its lock has run out, a prune deletes it: every version, on every target.
    sleep_until(doomed_until + Duration::from_millis(1200));
    let third = json(&tv, &["prune"]);
    assert!(third["packs_deleted"].as_u64().unwrap() >= 1, "{third}");
    assert!(raw.versions("locked-vault", &doomed).is_empty());
    assert!(!tv.data_dir().join(&old[0]).exists());
    assert!(raw.head_lock("locked-vault", &kept).is_some());
    // Only the small prune records that later prunes replaced are still pending.
    let stats = json(&tv, &["stats"]);
    assert!(
        stats["pending_deletion_bytes"].as_u64().unwrap() < 10_000,
        "{stats}"
    );

    let report = json(&tv, &["verify", "--full", "--locks"]);
    assert_eq!(report["ok"], true, "{report}");
    restore_matches(&tv, &tv.tmp.path().join("restored"), &want);
}

#[test]
fn target_add_with_a_lock_needs_a_bucket_with_object_lock() {
    let tv = TestVault::new();
    let moto = S3Server::moto();
    moto.create_bucket("plain-bucket");
    moto.set_env();
    let url = moto.url("plain-bucket", "");
    let out = run(&tv, &["target", "add", "s3", &url, "--lock-days", "7"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("bucket plain-bucket has no Object Lock configuration"),
        "{err}"
    );
    assert!(err.contains("without --lock-days"), "{err}");
    assert!(!err.contains(moto.secret_key()), "{err}");
    let file = format!("file://{}", tv.tmp.path().join("t").display());
    let out = run(&tv, &["target", "add", "f", &file, "--lock-days", "7"]);
    assert!(stderr(&out).contains("Object Lock needs an s3:// target"));
    let list = json(&tv, &["target", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "nothing added: {list}");
    // Nothing was written to the plain bucket either.
    assert!(moto.raw_client().versions("plain-bucket", "").is_empty());
}

/// sync onto a locked target, verify --full and --locks, recover from it and an exact restore;
/// then objects whose lock a hostile hand removed or changed are named by `verify --locks`.
#[test]
fn a_locked_target_keeps_every_guarantee_and_verify_names_bad_locks() {
    let tv = TestVault::new();
    let repo = tv.tmp.path().join("upstream");
    new_day(&repo, 1);
    backup(&tv, &repo, 1);
    let want = refs_and_head(&repo.join(".git"));
    let (_moto, raw, url) = add_locked_target(&tv, "locked-sync", "");
    ok(&run(&tv, &["sync"]));
    let packs = local_packs(&tv);
    for key in &packs {
        until(&raw, "locked-sync", key);
    }
    new_day(&repo, 2);
    backup(&tv, &repo, 2);
    let want2 = refs_and_head(&repo.join(".git"));
    assert_ne!(want, want2);
    let report = json(&tv, &["verify", "--full", "--locks"]);
    assert_eq!(report["ok"], true, "{report}");
    assert!(
        report["locks"]["objects_checked"].as_u64().unwrap() >= 4,
        "{report}"
    );

    // recover without the policy warns (the target's files are locked); with it, the new
    // vault's own writes are locked too.
    let into = tv.tmp.path().join("recovered");
    let out = in_vault(&tv, &into, &["recover", "--from", &url]);
    assert!(stderr(ok_output(&out)).contains("no --lock-days was given"));
    let into = tv.tmp.path().join("recovered-locked");
    let out = in_vault(&tv, &into, &["recover", "--from", &url, "--lock-days", "1"]);
    assert!(!stderr(ok_output(&out)).contains("no --lock-days"));
    let restored = tv.tmp.path().join("from-recovered");
    let to = restored.to_str().unwrap();
    ok(&in_vault(&tv, &into, &["restore", "repo", "--to", to]));
    git(&restored, &["fsck", "--full", "--strict"]);
    assert_eq!(refs_and_head(&restored), want2);
    new_day(&repo, 3);
    let path = repo.to_str().unwrap();
    ok(&in_vault(&tv, &into, &["backup", path, "--name", "repo"]));
    let out = in_vault(&tv, &into, &["--json", "verify", "--locks"]);
    let report: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(
        report["locks"]["findings"],
        serde_json::json!([]),
        "{report}"
    );

    // A hostile hand (or a server ignoring the lock headers) leaves a current version
    // unlocked, or locked in the wrong mode.
    let unlocked = packs[0].clone();
    let bytes = std::fs::read(tv.data_dir().join(&unlocked)).unwrap();
    raw.put("locked-sync", &unlocked, bytes, None);
    let public = std::fs::read(tv.data_dir().join("gitvault.json")).unwrap();
    raw.put("locked-sync", "gitvault.json", public, Some("GOVERNANCE"));
    let out = run(&tv, &["--json", "verify", "--locks"]);
    assert!(!out.status.success());
    let report: Value = serde_json::from_str(&common::stdout(&out)).unwrap();
    let findings = report["locks"]["findings"].as_array().unwrap();
    let problem = |key: &str| {
        findings
            .iter()
            .find(|f| f["key"] == key)
            .map(|f| f["problem"].as_str().unwrap().to_string())
    };
    assert_eq!(
        problem(&unlocked).as_deref(),
        Some("no Object Lock retention"),
        "{report}"
    );
    assert_eq!(
        problem("gitvault.json").as_deref(),
        Some("locked in governance mode"),
        "{report}"
    );
    assert_eq!(findings.len(), 2, "{report}");

    // A plain delete with the host's credentials only hides a pack behind a delete marker:
    // verify sees it missing, sync puts it back, and the locked version was there all along.
    let hidden = local_packs(&tv)
        .into_iter()
        .find(|p| *p != unlocked)
        .unwrap();
    raw.hide("locked-sync", &hidden);
    let out = run(&tv, &["--json", "verify"]);
    assert!(!out.status.success(), "a hidden pack is missing");
    assert_eq!(raw.versions("locked-sync", &hidden).len(), 1);
    ok(&run(&tv, &["sync"]));
    assert_eq!(raw.versions("locked-sync", &hidden).len(), 2);
    until(&raw, "locked-sync", &hidden);
    ok(&run(&tv, &["verify", "--full"]));
}

/// A server without Object Lock (s3s-fs) cannot take a locked target.
#[test]
fn target_add_with_a_lock_is_refused_by_a_server_without_object_lock() {
    let tv = TestVault::new();
    let server = S3Server::s3s_fs();
    server.create_bucket("no-lock-here");
    server.set_env();
    let url = server.url("no-lock-here", "");
    let out = run(&tv, &["target", "add", "s3", &url, "--lock-days", "7"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("cannot hold locked objects"), "{err}");
    assert!(err.contains("does not support Object Lock"), "{err}");
    assert!(!err.contains(server.secret_key()), "{err}");
    assert!(
        std::fs::read_dir(server.data_dir().join("no-lock-here"))
            .unwrap()
            .next()
            .is_none()
    );
}

/// The target itself: single and multipart uploads carry the lock, a lease under `locks/` does
/// not, a delete is refused while the lock holds and removes every version afterwards.
#[test]
fn the_s3_target_locks_uploads_and_refuses_early_deletes() {
    use gitvault::target::{Body, LockMode, LockPolicy, TargetError, open_locked_target};
    let moto = S3Server::moto();
    moto.create_locked_bucket("locked-target");
    moto.set_env();
    let raw = moto.raw_client();
    let policy = LockPolicy {
        mode: LockMode::Compliance,
        period: Duration::from_secs(3),
    };
    let t = open_locked_target("s3", &moto.url("locked-target", ""), Some(policy)).unwrap();
    t.put_if_absent("packs/aa/small", Body::Bytes(b"small"))
        .unwrap();
    // Refused at once, before anything slow (the multipart upload below) eats the 3 s.
    let refused = t.delete("packs/aa/small").unwrap_err();
    assert!(
        matches!(refused, TargetError::Locked { until: Some(_), .. }),
        "{refused}"
    );
    assert_eq!(raw.versions("locked-target", "packs/aa/small").len(), 1);
    let big = common::noise(3, 17 * 1024 * 1024 + 5);
    let file = moto.data_dir().parent().unwrap().join("big");
    std::fs::write(&file, &big).unwrap();
    t.put_if_absent("packs/bb/big", Body::File(&file)).unwrap();
    t.put_if_absent("locks/lease", Body::Bytes(b"lease"))
        .unwrap();
    let small_until = until(&raw, "locked-target", "packs/aa/small");
    until(&raw, "locked-target", "packs/bb/big");
    assert!(
        t.get("packs/bb/big").unwrap() == big,
        "multipart round trip"
    );
    assert_eq!(
        raw.head_lock("locked-target", "locks/lease").unwrap().until,
        None
    );
    t.delete("locks/lease").unwrap();
    assert!(raw.versions("locked-target", "locks/lease").is_empty());

    // Governance mode is written as asked, and gitvault never bypasses it.
    let governance = LockPolicy {
        mode: LockMode::Governance,
        ..policy
    };
    let g = open_locked_target("g", &moto.url("locked-target", "g"), Some(governance)).unwrap();
    g.put_if_absent("keys/k.age", Body::Bytes(b"k")).unwrap();
    let lock = raw.head_lock("locked-target", "g/keys/k.age").unwrap();
    assert_eq!(lock.mode.as_deref(), Some("GOVERNANCE"));
    assert!(matches!(
        g.delete("keys/k.age"),
        Err(TargetError::Locked { .. })
    ));

    sleep_until(small_until + Duration::from_millis(1200));
    t.delete("packs/aa/small").unwrap();
    assert!(raw.versions("locked-target", "packs/aa/small").is_empty());
    assert_eq!(t.head("packs/aa/small").unwrap(), None);
}

/// Compaction would keep the packs it replaces locked (and paid for) for the whole period:
/// off on a locked target, unless its entry allows it.
#[test]
fn compaction_is_off_on_a_locked_target_unless_allowed() {
    let tv = TestVault::new();
    let _moto = add_locked_target(&tv, "locked-compact", "");
    let repo = tv.tmp.path().join("upstream");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["config", "user.email", "t@example.com"]);
    git(&repo, &["config", "user.name", "T"]);
    for day in 1..=4 {
        std::fs::write(
            repo.join("log.txt"),
            format!("day {day}\n").repeat(day as usize),
        )
        .unwrap();
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-qm", &format!("day {day}")]);
        backup(&tv, &repo, day);
    }
    let want = refs_and_head(&repo.join(".git"));
    let refused = json(&tv, &["prune"]);
    assert_eq!(refused["compaction_skipped_for_locks"], true, "{refused}");
    assert_eq!(refused["packs_written"], 0, "{refused}");
    assert_eq!(refused["packs_compacted"], 0, "{refused}");

    let config = tv.dir.join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let allowed = text.replace(
        "lock_mode = \"compliance\"",
        "lock_mode = \"compliance\"\nallow_compaction = true",
    );
    assert_ne!(text, allowed);
    std::fs::write(&config, allowed).unwrap();
    let done = json(&tv, &["prune"]);
    assert_eq!(done["compaction_skipped_for_locks"], false, "{done}");
    assert!(done["packs_compacted"].as_u64().unwrap() >= 4, "{done}");
    // The replaced packs are condemned but locked: pending, and the vault still restores.
    assert!(done["packs_locked"].as_u64().unwrap() >= 4, "{done}");
    restore_matches(&tv, &tv.tmp.path().join("restored"), &want);
}
