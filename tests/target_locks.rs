//! Locks on the targets (issue 17): hosts sharing a target see each other's locks. Shared
//! locks coexist, the exclusive one is alone, a holder's lock stays alive while it refreshes
//! it and dies with it, and a hostile target cannot block a vault with planted locks.
//! Each case runs on file:// and, where the target's own semantics matter, on moto (S3).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::s3_server::S3Server;
use common::{TestVault, ok, stderr};
use gitvault::Vault;
use gitvault::target::Body;
use gitvault::vault::target_lock::{LOCKS_PREFIX, LockKind, LockState, LockTiming};

fn timing(ttl_ms: u64, wait_ms: u64) -> LockTiming {
    LockTiming {
        ttl: Duration::from_millis(ttl_ms),
        refresh: Duration::from_millis(ttl_ms / 6),
        wait: Duration::from_millis(wait_ms),
    }
}

/// Long enough never to expire during a test, no waiting on conflicts.
fn quick() -> LockTiming {
    timing(600_000, 0)
}

/// A vault whose only lock-bearing targets are its local one and, with `s3`, a moto bucket.
fn vault(s3: bool) -> (TestVault, Option<S3Server>) {
    let tv = TestVault::new();
    let server = s3.then(|| {
        let server = S3Server::moto();
        server.create_bucket("locks");
        server.set_env();
        ok(&tv.run(&["target", "add", "shared", &server.url("locks", "vault")]));
        server
    });
    (tv, server)
}

/// A child process that a failing assertion must not leave running (stalled at a test hook).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn lock_objects(vault: &Vault) -> usize {
    vault
        .targets()
        .iter()
        .map(|t| t.list(LOCKS_PREFIX).unwrap().len())
        .sum()
}

fn shared_and_exclusive(s3: bool) {
    let (tv, _server) = vault(s3);
    let vault = tv.open();
    let keys = tv.keys(&vault);
    let a = vault
        .lock_targets(&keys, LockKind::Shared, "backup", quick())
        .unwrap();
    let b = vault
        .lock_targets(&keys, LockKind::Shared, "backup", quick())
        .unwrap();
    assert_eq!(lock_objects(&vault), 2 * vault.targets().len());
    let refused = vault
        .lock_targets(&keys, LockKind::Exclusive, "prune", timing(600_000, 500))
        .err()
        .expect("an exclusive lock while shared ones are held");
    assert!(refused.to_string().contains("backup"), "{refused}");
    // The refused taker left nothing behind.
    assert_eq!(lock_objects(&vault), 2 * vault.targets().len());
    drop(a);
    drop(b);
    assert_eq!(lock_objects(&vault), 0, "dropped locks are removed");
    let x = vault
        .lock_targets(&keys, LockKind::Exclusive, "prune", quick())
        .unwrap();
    let refused = vault
        .lock_targets(&keys, LockKind::Shared, "backup", quick())
        .err()
        .expect("a shared lock while the exclusive one is held");
    assert!(refused.to_string().contains("prune"), "{refused}");
    assert!(
        vault
            .lock_targets(&keys, LockKind::Exclusive, "prune", quick())
            .is_err()
    );
    drop(x);
    assert_eq!(lock_objects(&vault), 0);
}

#[test]
fn shared_locks_coexist_and_the_exclusive_one_is_alone_file() {
    shared_and_exclusive(false);
}

#[test]
fn shared_locks_coexist_and_the_exclusive_one_is_alone_s3() {
    shared_and_exclusive(true);
}

/// Threads racing for the exclusive lock (each writes, then lists): never two holders at once.
fn exclusive_race(s3: bool) {
    let (tv, _server) = vault(s3);
    let holders = Arc::new(AtomicUsize::new(0));
    let taken = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|scope| {
        for _ in 0..3 {
            let (tv, holders, taken) = (&tv, holders.clone(), taken.clone());
            scope.spawn(move || {
                let vault = tv.open();
                let keys = tv.keys(&vault);
                for _ in 0..3 {
                    let lock = vault
                        .lock_targets(&keys, LockKind::Exclusive, "prune", timing(600_000, 60_000))
                        .unwrap();
                    assert_eq!(
                        holders.fetch_add(1, Ordering::SeqCst),
                        0,
                        "two exclusive holders"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                    holders.fetch_sub(1, Ordering::SeqCst);
                    taken.fetch_add(1, Ordering::SeqCst);
                    drop(lock);
                }
            });
        }
    });
    assert_eq!(taken.load(Ordering::SeqCst), 9);
    assert_eq!(lock_objects(&tv.open()), 0);
}

#[test]
fn racing_exclusive_takers_never_overlap_file() {
    exclusive_race(false);
}

#[test]
fn racing_exclusive_takers_never_overlap_s3() {
    exclusive_race(true);
}

/// A refreshed lock outlives its ttl; a copy of it that nobody refreshes (a replay, or the
/// lock of a killed holder) stops counting at its expiry and is removed by the next taker.
#[test]
fn refreshed_locks_live_and_abandoned_ones_expire() {
    let (tv, _server) = vault(false);
    let vault = tv.open();
    let keys = tv.keys(&vault);
    let target = &vault.targets()[0];
    let held = vault
        .lock_targets(&keys, LockKind::Exclusive, "prune", timing(2_000, 0))
        .unwrap();
    let first = held.objects();
    std::thread::sleep(Duration::from_millis(3_500));
    assert_ne!(held.objects(), first, "the refresher wrote new objects");
    assert!(held.lost().is_none());
    assert!(
        vault
            .lock_targets(&keys, LockKind::Shared, "backup", quick())
            .is_err(),
        "a refreshed lock still counts past its first expiry"
    );
    // Keep a copy of the live object, release, and put the copy back: a lock no one refreshes.
    let (_, key) = held.objects()[0].clone();
    let bytes = target.get(&key).unwrap();
    drop(held);
    target.put_if_absent(&key, Body::Bytes(&bytes)).unwrap();
    // The copy expires at most a ttl (plus a second of rounding) after it was written; past
    // that, a taker that does not wait at all must get through. No timing is asserted.
    std::thread::sleep(Duration::from_millis(3_500));
    let lock = vault
        .lock_targets(&keys, LockKind::Shared, "backup", quick())
        .expect("an abandoned lock past its expiry blocks nothing");
    assert!(
        target.get(&key).is_err(),
        "the expired lock was removed by the taker that met it"
    );
    drop(lock);
}

/// Objects under locks/ that are not authentic locks of this vault (garbage, a forged MAC, an
/// oversized object, another vault's genuine lock) block nothing and are left for the operator.
fn planted_locks_do_not_block(s3: bool) {
    let (tv, _server) = vault(s3);
    let vault = tv.open();
    let keys = tv.keys(&vault);
    let target = vault.targets().last().unwrap();

    let other = TestVault::new();
    let other_vault = other.open();
    let other_keys = other.keys(&other_vault);
    let foreign = other_vault
        .lock_targets(&other_keys, LockKind::Exclusive, "prune", quick())
        .unwrap();
    let (_, foreign_key) = foreign.objects()[0].clone();
    let foreign_bytes = other_vault.targets()[0].get(&foreign_key).unwrap();

    // A genuine lock of ours with its text changed (the MAC no longer matches).
    let genuine = vault
        .lock_targets(&keys, LockKind::Shared, "backup", quick())
        .unwrap();
    let (_, genuine_key) = genuine.objects().last().unwrap().clone();
    let forged = String::from_utf8(target.get(&genuine_key).unwrap())
        .unwrap()
        .replace("shared", "exclusive");
    drop(genuine);

    let planted: Vec<(&str, Vec<u8>)> = vec![
        ("locks/000000000001-garbage", b"not json at all".to_vec()),
        ("locks/000000000002-forged", forged.into_bytes()),
        ("locks/000000000003-huge", vec![b'{'; 1 << 20]),
        ("locks/000000000004-foreign", foreign_bytes),
        ("locks/000000000005-empty", Vec::new()),
    ];
    for (key, bytes) in &planted {
        target.put(key, Body::Bytes(bytes)).unwrap();
    }
    let lock = vault
        .lock_targets(&keys, LockKind::Exclusive, "prune", quick())
        .expect("planted locks must not block");
    drop(lock);
    let found = vault.target_locks(&keys).unwrap();
    assert_eq!(found.len(), planted.len(), "{found:?}");
    assert!(
        found.iter().all(|f| f.state == LockState::NotOurs),
        "{found:?}"
    );
    let removed = vault.unlock_targets(&keys, true).unwrap();
    assert!(removed.is_empty(), "unlock removes only this vault's locks");
    assert_eq!(target.list(LOCKS_PREFIX).unwrap().len(), planted.len());
    drop(foreign);
}

#[test]
fn planted_locks_do_not_block_file() {
    planted_locks_do_not_block(false);
}

#[test]
fn planted_locks_do_not_block_s3() {
    planted_locks_do_not_block(true);
}

fn unlock_list(tv: &TestVault) -> Vec<serde_json::Value> {
    let out = tv.run(&["--json", "unlock", "--list"]);
    ok(&out);
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
}

/// A writer SIGKILLed while it holds its shared lock: the lock says whose it was, blocks no one
/// (its process is gone from this host), and `gitvault unlock` removes it.
#[test]
fn a_killed_holders_lock_is_seen_as_gone_and_unlocked() {
    let (tv, _server) = vault(false);
    let input = tv.tmp.path().join("input");
    std::fs::write(&input, common::noise(3, 3 << 20)).unwrap();
    let mut child = stalled_at(
        tv.command(&["chunk", "put", input.to_str().unwrap()]),
        "pack-written",
    );
    let locks = unlock_list(&tv);
    assert_eq!(locks.len(), 1, "{locks:?}");
    assert_eq!(locks[0]["state"], "live");
    assert_eq!(locks[0]["info"]["pid"], child.0.id());
    assert_eq!(locks[0]["info"]["kind"], "shared");
    child.0.kill().unwrap();
    child.0.wait().unwrap();

    let locks = unlock_list(&tv);
    assert_eq!(locks[0]["state"], "process-gone", "{locks:?}");
    // It blocks nobody, not even the exclusive lock.
    let vault = tv.open();
    let keys = tv.keys(&vault);
    drop(
        vault
            .lock_targets(&keys, LockKind::Exclusive, "prune", quick())
            .unwrap(),
    );
    let out = tv.run(&["--json", "unlock"]);
    ok(&out);
    let removed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(removed.len(), 1);
    assert!(unlock_list(&tv).is_empty());
}

/// `unlock` leaves a live holder's lock; `--remove-all` takes it too.
#[test]
fn unlock_leaves_live_locks_unless_told() {
    let (tv, _server) = vault(false);
    let vault = tv.open();
    let keys = tv.keys(&vault);
    let held = vault
        .lock_targets(&keys, LockKind::Exclusive, "prune", quick())
        .unwrap();
    ok(&tv.run(&["unlock"]));
    assert_eq!(unlock_list(&tv).len(), 1);
    ok(&tv.run(&["unlock", "--remove-all"]));
    assert!(unlock_list(&tv).is_empty());
    drop(held);
}

/// Two hosts on one S3 target: host B (the vault recovered into another directory) holds a
/// shared lock while it writes; host A's prune waits for it, gives up naming it, and runs once
/// B's process is gone.
#[test]
fn prune_waits_for_another_hosts_writer() {
    use gitvault::retention::prune::{PruneOptions, prune};
    let (tv, server) = vault(true);
    let url = server.as_ref().unwrap().url("locks", "vault");
    let input = tv.tmp.path().join("input");
    std::fs::write(&input, common::noise(4, 1 << 20)).unwrap();
    ok(&tv.run(&["chunk", "put", input.to_str().unwrap()]));

    let host_b = tv.tmp.path().join("host-b");
    let gitvault_b = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gitvault"));
        cmd.arg("--vault")
            .arg(&host_b)
            .args(args)
            .env("GITVAULT_IDENTITY_FILE", &tv.identity_file);
        cmd
    };
    ok(&gitvault_b(&["recover", "--from", &url]).output().unwrap());
    // New data, so that B writes a pack (and stalls after it, holding its lock).
    let other = tv.tmp.path().join("other");
    std::fs::write(&other, common::noise(5, 1 << 20)).unwrap();
    let mut writer = stalled_at(
        gitvault_b(&["chunk", "put", other.to_str().unwrap()]),
        "pack-written",
    );

    let vault = tv.open();
    let keys = tv.keys(&vault);
    let options = PruneOptions {
        lock_wait: Duration::from_secs(2),
        ..PruneOptions::default()
    };
    let refused =
        prune(&vault, &keys, &options).expect_err("prune must wait for the other host's writer");
    assert!(refused.to_string().contains("chunk put"), "{refused}");
    writer.0.kill().unwrap();
    writer.0.wait().unwrap();
    prune(&vault, &keys, &options).unwrap();
    assert_eq!(lock_objects(&vault), 1, "only B's abandoned lock is left");
}

/// `init --join URL` makes a second host's directory for an existing vault: same vault, same
/// snapshots, its fingerprint checked when given.
#[test]
fn a_second_host_joins_with_init() {
    let (tv, server) = vault(true);
    let url = server.as_ref().unwrap().url("locks", "vault");
    let input = tv.tmp.path().join("input");
    std::fs::write(&input, common::noise(6, 1 << 20)).unwrap();
    let put = ok(&tv.run(&["chunk", "put", input.to_str().unwrap()]));
    let id = put.split_whitespace().next().unwrap().to_string();
    let vault = tv.open();
    let fingerprint = tv.keys(&vault).fingerprint(&vault.config().vault_id);

    let join = |dir: &std::path::Path, extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gitvault"))
            .arg("--vault")
            .arg(dir)
            .args(["--json", "init", "--join", &url])
            .args(extra)
            .env("GITVAULT_IDENTITY_FILE", &tv.identity_file)
            .output()
            .unwrap()
    };
    let refused = tv.tmp.path().join("host-x");
    let out = join(&refused, &["--expect-vault", "0000-0000"]);
    assert!(!out.status.success());
    assert!(!refused.join("config.toml").exists(), "nothing written");

    let host_b = tv.tmp.path().join("host-b");
    let out = join(&host_b, &["--expect-vault", &fingerprint]);
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
    assert_eq!(doc["vault_id"], vault.config().vault_id.as_str(), "{doc}");
    let cat = std::process::Command::new(env!("CARGO_BIN_EXE_gitvault"))
        .arg("--vault")
        .arg(&host_b)
        .args(["chunk", "cat", &id])
        .env("GITVAULT_IDENTITY_FILE", &tv.identity_file)
        .output()
        .unwrap();
    assert!(cat.status.success(), "{}", stderr(&cat));
    assert_eq!(cat.stdout, std::fs::read(&input).unwrap());
    // --join takes no keys of its own.
    let out = tv.run(&["init", "--join", &url, "--passphrase"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Starts `cmd` and returns it once it printed the test hook line for `point` (stalled there
/// by `GITVAULT_TEST_HOOK_STALL`, holding its locks).
fn stalled_at(mut cmd: std::process::Command, point: &str) -> KillOnDrop {
    use std::io::{BufRead, BufReader};
    let child = cmd
        .env("GITVAULT_TEST_HOOK_STALL", point)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains(&format!("gitvault-test-hook: {point}")) => break,
            Some(Ok(_)) => continue,
            _ => panic!("the process ended before {point}: {:?}", child.0.wait()),
        }
    }
    child
}

/// A writer on another host (another host name) SIGKILLed while it holds its shared lock:
/// this host cannot tell that its process is gone, so the lock counts until its expiry, and
/// not past it: an exclusive taker willing to wait gets the lock and removes the dead one.
/// Shared takers are never held up by it.
fn killed_shared_holder_on_another_host(s3: bool) {
    let (tv, _server) = vault(s3);
    let input = tv.tmp.path().join("input");
    std::fs::write(&input, common::noise(8, 3 << 20)).unwrap();
    let mut cmd = tv.command(&["chunk", "put", input.to_str().unwrap()]);
    cmd.env("GITVAULT_HOST", "host-b")
        .env("GITVAULT_LOCK_TTL", "2");
    let mut child = stalled_at(cmd, "pack-written");
    child.0.kill().unwrap();
    child.0.wait().unwrap();

    let vault = tv.open();
    let keys = tv.keys(&vault);
    let locks = vault.target_locks(&keys).unwrap();
    assert!(!locks.is_empty());
    for l in &locks {
        assert_eq!(l.info.as_ref().unwrap().host, "host-b");
        assert_ne!(
            l.state,
            LockState::ProcessGone,
            "another host's process is not judged here"
        );
    }
    drop(
        vault
            .lock_targets(&keys, LockKind::Shared, "backup", quick())
            .expect("shared locks never wait for shared ones"),
    );
    // Past the expiry (a ttl of 2 s; the taker may wait a minute), prune's lock is free.
    let exclusive = vault
        .lock_targets(&keys, LockKind::Exclusive, "prune", timing(600_000, 60_000))
        .expect("a killed holder's lock blocks no one past its expiry");
    assert_eq!(
        lock_objects(&vault),
        exclusive.objects().len(),
        "the expired lock was removed by the taker that met it"
    );
}

#[test]
fn a_killed_shared_holder_on_another_host_blocks_only_until_expiry_file() {
    killed_shared_holder_on_another_host(false);
}

#[test]
fn a_killed_shared_holder_on_another_host_blocks_only_until_expiry_s3() {
    killed_shared_holder_on_another_host(true);
}

/// A prune SIGKILLed while it holds the exclusive lock: on its own host `gitvault unlock`
/// removes the lock at once (its process is gone); from another host it is live until its
/// expiry (30 minutes by default), `unlock` leaves it, and `unlock --remove-all` recovers.
/// Either way, writers then get their lock and a new prune runs.
#[test]
fn a_killed_prune_is_recovered_with_unlock() {
    let (tv, _server) = vault(false);
    let input = tv.tmp.path().join("input");
    std::fs::write(&input, common::noise(9, 1 << 20)).unwrap();
    ok(&tv.run(&["chunk", "put", input.to_str().unwrap()]));
    let vault = tv.open();
    let keys = tv.keys(&vault);
    for other_host in [false, true] {
        let mut cmd = tv.command(&["prune"]);
        if other_host {
            cmd.env("GITVAULT_HOST", "host-b");
        }
        let mut prune = stalled_at(cmd, "prune-locked");
        prune.0.kill().unwrap();
        prune.0.wait().unwrap();
        let held = vault
            .lock_targets(&keys, LockKind::Shared, "backup", quick())
            .err()
            .map(|e| e.to_string());
        let listed = unlock_list(&tv);
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0]["info"]["kind"], "exclusive");
        if other_host {
            assert!(held.unwrap().contains("prune on host host-b"));
            ok(&tv.run(&["unlock"]));
            assert_eq!(
                unlock_list(&tv).len(),
                1,
                "a live lock of another host stays"
            );
            ok(&tv.run(&["unlock", "--remove-all"]));
        } else {
            assert_eq!(listed[0]["state"], "process-gone");
            ok(&tv.run(&["unlock"]));
        }
        assert!(unlock_list(&tv).is_empty());
        drop(
            vault
                .lock_targets(&keys, LockKind::Shared, "backup", quick())
                .unwrap(),
        );
    }
    ok(&tv.run(&["prune"]));
    ok(&tv.run(&["verify", "--full"]));
}
