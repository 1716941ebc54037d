//! Locks on the targets, so that hosts sharing a target know of each other (issue 17,
//! docs/FORMAT.md "locks/"). The local `flock` (lock.rs) only orders processes of one host.
//!
//! As in restic, a lock is an object `locks/<time>-<random>` written create-only: backups take
//! shared locks, prune the exclusive one. A taker writes its lock first and then lists the
//! others, so of two hosts racing for the exclusive lock each sees the other and both back off
//! (and retry after a random pause): neither can believe it is alone. A lock expires
//! `ttl` after it was written; a thread writes a fresh object every `refresh` and deletes the
//! old one, so a live holder's lock never expires while a killed one's does.
//!
//! Every lock carries a MAC under the vault's auth key. A target (or anyone who can write to
//! it) can still delete locks or replay a live one, which only stops or delays work; it cannot
//! forge a lock that blocks a vault whose key it does not hold.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::crypto::{AuthKey, VaultKeys};
use crate::target::{Body, Target, TargetError};

use super::Vault;

/// Where locks live on a target.
pub const LOCKS_PREFIX: &str = "locks/";
/// A lock object is a few hundred bytes; larger ones are not read.
const MAX_LOCK_BYTES: u64 = 4096;
const MAC_DOMAIN: &str = "gitvault target lock v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    /// Backups, sync: any number at once, but not with an exclusive lock.
    Shared,
    /// Prune: alone.
    Exclusive,
}

/// How long a lock lives without a refresh, and how often it is refreshed.
#[derive(Debug, Clone, Copy)]
pub struct LockTiming {
    pub ttl: Duration,
    pub refresh: Duration,
    /// How long a taker waits for conflicting locks to go away before it gives up.
    pub wait: Duration,
}

impl Default for LockTiming {
    fn default() -> Self {
        LockTiming {
            ttl: Duration::from_secs(30 * 60),
            refresh: Duration::from_secs(5 * 60),
            wait: Duration::from_secs(60 * 60),
        }
    }
}

impl LockTiming {
    /// The defaults, with `GITVAULT_LOCK_TTL` (seconds) for tests and for hosts whose runs
    /// must survive longer outages of a target: the refresh comes at a sixth of it.
    pub fn from_environment() -> LockTiming {
        let mut timing = LockTiming::default();
        if let Some(secs) = std::env::var("GITVAULT_LOCK_TTL")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|s| *s > 0)
        {
            timing.ttl = Duration::from_secs(secs);
            timing.refresh = Duration::from_millis(secs * 1000 / 6).max(Duration::from_millis(100));
        }
        timing
    }
}

/// What a lock object says (the MAC'd part).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub vault_id: String,
    pub kind: LockKind,
    pub host: String,
    pub pid: u32,
    /// What holds it (`backup`, `prune`, …), for messages.
    pub purpose: String,
    /// Unix seconds when this object was written, and when it stops counting.
    pub written: u64,
    pub expires: u64,
    /// A repository lease (a shared lock held while one repository's new objects are
    /// stored): a keyed hash of the repository's name, which the target cannot read. Two
    /// leases with the same value are never live at once. Absent in plain locks (and in
    /// locks of older versions, which read a lease as a plain shared lock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct LockObject {
    lock: String,
    mac: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetLockError {
    #[error(
        "target {target} is locked ({:?}) by {} on host {} (pid {}) until {} unless refreshed; \
         wait for it, or run `gitvault unlock` if that process is gone",
        holder.kind, holder.purpose, holder.host, holder.pid, rfc3339(holder.expires)
    )]
    Held {
        target: String,
        holder: Box<LockInfo>,
    },
    #[error("the lock on target {target} could not be written: {source}")]
    Write {
        target: String,
        #[source]
        source: TargetError,
    },
    #[error("the locks on target {target} could not be listed: {source}")]
    List {
        target: String,
        #[source]
        source: TargetError,
    },
}

/// One lock object found on a target, judged.
#[derive(Debug, Clone, Serialize)]
pub struct FoundLock {
    pub target: String,
    pub key: String,
    /// `None` when the object is not an authentic lock of this vault (forged, damaged, another
    /// vault's): it is never obeyed, and `unlock` leaves it for the operator.
    pub info: Option<LockInfo>,
    pub state: LockState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockState {
    Live,
    /// Past its expiry: its holder stopped refreshing it.
    Expired,
    /// Written on this host by a process that no longer runs.
    ProcessGone,
    /// Not an authentic lock of this vault.
    NotOurs,
}

fn rfc3339(secs: u64) -> String {
    chrono::DateTime::from_timestamp(secs as i64, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| secs.to_string())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// This machine's name, as locks record it: `GITVAULT_HOST` when set (containers that share
/// one host name, or give each run a new one), else the kernel's. A lock whose host name is
/// this one and whose process is gone counts as stale at once; any other waits for its expiry.
pub fn host_name() -> String {
    if let Some(name) = std::env::var("GITVAULT_HOST")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
    {
        return name;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".to_string())
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // Signal 0 checks existence; EPERM means it exists under another user.
    // SAFETY: kill with signal 0 sends nothing; it only reports whether the pid exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn encode(auth: &AuthKey, info: &LockInfo) -> Vec<u8> {
    let lock = serde_json::to_string(info).unwrap_or_default();
    let mac = hex::encode(auth.mac(MAC_DOMAIN, &[lock.as_bytes()]));
    serde_json::to_vec(&LockObject { lock, mac }).unwrap_or_default()
}

fn decode(auth: &AuthKey, vault_id: &str, bytes: &[u8]) -> Option<LockInfo> {
    let object: LockObject = serde_json::from_slice(bytes).ok()?;
    let tag = hex::decode(&object.mac).ok()?;
    if tag.len() != 32 || !auth.verify(MAC_DOMAIN, &[object.lock.as_bytes()], &tag) {
        return None;
    }
    let info: LockInfo = serde_json::from_str(&object.lock).ok()?;
    (info.vault_id == vault_id).then_some(info)
}

fn judge(info: &Option<LockInfo>, here: &str, now: u64) -> LockState {
    match info {
        None => LockState::NotOurs,
        Some(i) if i.expires < now => LockState::Expired,
        Some(i) if i.host == here && !process_alive(i.pid) => LockState::ProcessGone,
        Some(_) => LockState::Live,
    }
}

fn random_u64() -> u64 {
    crate::crypto::random_hex(8)
        .ok()
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        // Only if the OS refuses randomness: still different per process and moment.
        .unwrap_or_else(|| u64::from(std::process::id()) ^ now_secs().rotate_left(20))
}

fn new_key(written: u64) -> String {
    format!("{LOCKS_PREFIX}{written:012}-{:016x}", random_u64())
}

/// Every lock object on `target`, judged.
fn scan(
    target: &dyn Target,
    auth: &AuthKey,
    vault_id: &str,
) -> Result<Vec<FoundLock>, TargetLockError> {
    let listed = target
        .list(LOCKS_PREFIX)
        .map_err(|source| TargetLockError::List {
            target: target.name().to_string(),
            source,
        })?;
    let here = host_name();
    let now = now_secs();
    let mut found = Vec::new();
    for item in listed {
        let info = if item.size > MAX_LOCK_BYTES {
            None
        } else {
            match target.get(&item.key) {
                Ok(bytes) => decode(auth, vault_id, &bytes),
                // Deleted between the listing and the read: its holder let go.
                Err(TargetError::NotFound { .. }) => continue,
                Err(e) => {
                    tracing::warn!(target = target.name(), key = %item.key, error = %e, "a lock could not be read");
                    None
                }
            }
        };
        let state = judge(&info, &here, now);
        if state == LockState::NotOurs {
            tracing::warn!(target = target.name(), key = %item.key, "ignoring a lock object that is not this vault's (forged, damaged or foreign)");
        }
        found.push(FoundLock {
            target: target.name().to_string(),
            key: item.key,
            info,
            state,
        });
    }
    Ok(found)
}

/// The live lock of `found` that forbids taking a lock of `kind` (with `lease`), if any.
/// The live lock in `found` that keeps this attempt (`own`) from holding. `keys` are the
/// names this attempt wrote its lock under, on this target and the ones before: a target
/// that stores in the same place as an earlier one (two configured names for one bucket or
/// directory) shows the earlier one's lock too, which is no holder to wait for (the attempt
/// would wait for itself forever).
fn conflict<'a>(found: &'a [FoundLock], keys: &[&str], own: &LockInfo) -> Option<&'a LockInfo> {
    found
        .iter()
        .filter(|f| !keys.contains(&f.key.as_str()) && f.state == LockState::Live)
        .filter_map(|f| f.info.as_ref())
        .find(|i| {
            own.kind == LockKind::Exclusive
                || i.kind == LockKind::Exclusive
                || (own.lease.is_some() && i.lease == own.lease)
        })
}

const LEASE_DOMAIN: &str = "gitvault repository lease v1";

/// A repository lease, held while one repository's new objects are stored (`lease`).
pub struct RepoLease {
    _lock: TargetLock,
    /// Another host held the lease when this one asked: it stored this repository meanwhile,
    /// and the index should catch up before deciding what is new.
    pub waited: bool,
}

/// Locks held on every target of a vault; refreshed by a thread until dropped.
pub struct TargetLock {
    held: Arc<Mutex<Vec<(usize, String)>>>,
    lost: Arc<Mutex<Option<String>>>,
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

impl TargetLock {
    /// `Some(reason)` once a refresh failed for so long that the lock may have expired: a
    /// holder should stop before it commits anything that relies on it.
    pub fn lost(&self) -> Option<String> {
        self.lost.lock().ok().and_then(|l| l.clone())
    }

    /// The lock objects held, as (target position, object name).
    pub fn objects(&self) -> Vec<(usize, String)> {
        self.held.lock().map(|h| h.clone()).unwrap_or_default()
    }
}

impl Drop for TargetLock {
    fn drop(&mut self) {
        // The refresher deletes the objects it holds when told to stop.
        drop(self.stop.take());
        if let Some(handle) = self.refresher.take() {
            let _ = handle.join();
        }
    }
}

struct Refresher {
    targets: Vec<Box<dyn Target>>,
    auth: AuthKey,
    info: LockInfo,
    timing: LockTiming,
    held: Arc<Mutex<Vec<(usize, String)>>>,
    lost: Arc<Mutex<Option<String>>>,
}

impl Refresher {
    fn run(mut self, stop: mpsc::Receiver<()>) {
        let mut last_ok = std::time::Instant::now();
        // Anything but a timeout means the holder let go (or is gone).
        while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(self.timing.refresh) {
            match self.refresh() {
                Ok(()) => last_ok = std::time::Instant::now(),
                Err(e) => {
                    tracing::warn!(error = %e, "a target lock could not be refreshed");
                    if last_ok.elapsed() + self.timing.refresh >= self.timing.ttl
                        && let Ok(mut lost) = self.lost.lock()
                    {
                        *lost = Some(e.to_string());
                    }
                }
            }
        }
        self.release();
    }

    /// Writes a fresh object on every target, then deletes the old one: at every moment at
    /// least one unexpired object stands for this holder.
    fn refresh(&mut self) -> Result<(), TargetLockError> {
        let written = now_secs();
        self.info.written = written;
        self.info.expires = written + self.timing.ttl.as_secs().max(1);
        let body = encode(&self.auth, &self.info);
        let held = self.held.lock().map(|h| h.clone()).unwrap_or_default();
        for (n, (i, old)) in held.iter().enumerate() {
            let target = &self.targets[*i];
            let fresh = new_key(written);
            target
                .put_if_absent(&fresh, Body::Bytes(&body))
                .map_err(|source| TargetLockError::Write {
                    target: target.name().to_string(),
                    source,
                })?;
            if let Err(e) = target.delete(old) {
                tracing::warn!(target = target.name(), error = %e, "an old lock object could not be deleted; it expires on its own");
            }
            // Kept current after each target, so a failure half-way still releases the
            // objects that exist.
            if let Ok(mut shared) = self.held.lock()
                && let Some(slot) = shared.get_mut(n)
            {
                slot.1 = fresh;
            }
        }
        Ok(())
    }

    fn release(&self) {
        let held = self.held.lock().map(|h| h.clone()).unwrap_or_default();
        for (i, key) in held {
            if let Err(e) = self.targets[i].delete(&key) {
                tracing::warn!(target = self.targets[i].name(), error = %e, "a lock could not be removed; it expires on its own");
            }
        }
        if let Ok(mut h) = self.held.lock() {
            h.clear();
        }
    }
}

impl Vault {
    /// Takes a lock of `kind` on every target, waiting (up to `timing.wait`) while another
    /// host holds a conflicting one. Dropping the result releases it.
    pub fn lock_targets(
        &self,
        keys: &VaultKeys,
        kind: LockKind,
        purpose: &str,
        timing: LockTiming,
    ) -> Result<TargetLock, super::VaultError> {
        Ok(self
            .lock_targets_leased(keys, (kind, None), purpose, timing)?
            .0)
    }

    /// Leases repository `repo` on the targets: while one host stores a repository's new
    /// objects, another host backing up the same repository waits (up to `timing.wait`),
    /// then catches up and finds them stored. Without it, two hosts on one repository at
    /// one moment would each store all of it.
    pub fn lease_repository(
        &self,
        keys: &VaultKeys,
        repo: &str,
        timing: LockTiming,
    ) -> Result<RepoLease, super::VaultError> {
        let lease = hex::encode(&keys.auth_key().mac(LEASE_DOMAIN, &[repo.as_bytes()])[..16]);
        let (lock, waited) = self.lock_targets_leased(
            keys,
            (LockKind::Shared, Some(&lease)),
            "backup of one repository",
            timing,
        )?;
        Ok(RepoLease {
            _lock: lock,
            waited,
        })
    }

    /// A lock, and whether taking it had to wait for another holder.
    fn lock_targets_leased(
        &self,
        keys: &VaultKeys,
        (kind, lease): (LockKind, Option<&str>),
        purpose: &str,
        timing: LockTiming,
    ) -> Result<(TargetLock, bool), super::VaultError> {
        let auth = keys.auth_key();
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(200);
        let mut waited = false;
        loop {
            match self.try_lock_targets(&auth, (kind, lease), purpose, timing)? {
                Ok(lock) => return Ok((lock, waited)),
                Err(held) if started.elapsed() + pause < timing.wait => {
                    waited = true;
                    tracing::info!(reason = %held, "waiting for a lock on the targets");
                    // Two exclusive takers that saw each other must not retry in step.
                    let jitter = random_u64() % (pause.as_millis() as u64 + 1);
                    std::thread::sleep(pause + Duration::from_millis(jitter));
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
                Err(held) => return Err(held.into()),
            }
        }
    }

    /// One attempt: `Ok(Err(_))` when another holder is in the way (own objects removed again).
    fn try_lock_targets(
        &self,
        auth: &AuthKey,
        (kind, lease): (LockKind, Option<&str>),
        purpose: &str,
        timing: LockTiming,
    ) -> Result<Result<TargetLock, TargetLockError>, super::VaultError> {
        let written = now_secs();
        let info = LockInfo {
            vault_id: self.config().vault_id.clone(),
            kind,
            host: host_name(),
            pid: std::process::id(),
            purpose: purpose.to_string(),
            written,
            expires: written + timing.ttl.as_secs().max(1),
            lease: lease.map(str::to_string),
        };
        let body = encode(auth, &info);
        let mut held: Vec<(usize, String)> = Vec::new();
        let give_back = |held: &[(usize, String)]| {
            for (i, key) in held {
                let _ = self.targets()[*i].delete(key);
            }
        };
        for (i, target) in self.targets().iter().enumerate() {
            let key = new_key(written);
            let found = target
                .put_if_absent(&key, Body::Bytes(&body))
                .map_err(|source| TargetLockError::Write {
                    target: target.name().to_string(),
                    source,
                })
                .and_then(|_| {
                    scan(target.as_ref(), auth, &info.vault_id).inspect_err(|_| {
                        let _ = target.delete(&key);
                    })
                });
            let found = match found {
                Ok(found) => found,
                // A writer goes on without a target it cannot reach (the store's replication
                // policy decides whether the run can count on the others); prune cannot.
                Err(e) if kind == LockKind::Shared => {
                    tracing::warn!(target = target.name(), error = %e, "no shared lock on this target");
                    continue;
                }
                Err(e) => {
                    give_back(&held);
                    return Err(e.into());
                }
            };
            held.push((i, key.clone()));
            // Expired locks are removed by whoever meets them (restic does the same).
            for f in found.iter().filter(|f| f.state == LockState::Expired) {
                let _ = target.delete(&f.key);
            }
            let own_keys: Vec<&str> = held.iter().map(|(_, k)| k.as_str()).collect();
            if let Some(other) = conflict(&found, &own_keys, &info) {
                give_back(&held);
                return Ok(Err(TargetLockError::Held {
                    target: target.name().to_string(),
                    holder: Box::new(other.clone()),
                }));
            }
        }
        let held = Arc::new(Mutex::new(held));
        let lost = Arc::new(Mutex::new(None));
        // The refresher gets targets of its own (opening one does no I/O), so it needs no
        // borrow of the vault.
        let targets = self
            .config()
            .targets
            .iter()
            .map(|t| t.open())
            .collect::<Result<Vec<_>, _>>()?;
        let refresher = Refresher {
            targets,
            auth: auth.clone(),
            info,
            timing,
            held: held.clone(),
            lost: lost.clone(),
        };
        let (stop, stopped) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("gitvault-lock-refresh".into())
            .spawn(move || refresher.run(stopped))
            .map_err(|e| super::io_err("starting the lock refresher")(e))?;
        Ok(Ok(TargetLock {
            held,
            lost,
            stop: Some(stop),
            refresher: Some(handle),
        }))
    }

    /// Every lock object on every target, judged (`gitvault unlock --list`).
    pub fn target_locks(&self, keys: &VaultKeys) -> Result<Vec<FoundLock>, TargetLockError> {
        let auth = keys.auth_key();
        let mut all = Vec::new();
        for target in self.targets() {
            all.extend(scan(target.as_ref(), &auth, &self.config().vault_id)?);
        }
        Ok(all)
    }

    /// Removes stale locks (expired, or of a process gone from this host), or every lock of
    /// this vault with `all`. Objects that are not this vault's locks are left in place.
    pub fn unlock_targets(
        &self,
        keys: &VaultKeys,
        all: bool,
    ) -> Result<Vec<FoundLock>, super::VaultError> {
        let mut removed = Vec::new();
        for found in self.target_locks(keys)? {
            let stale = matches!(found.state, LockState::Expired | LockState::ProcessGone);
            if (stale || (all && found.state == LockState::Live))
                && let Some(target) = self.targets().iter().find(|t| t.name() == found.target)
            {
                target.delete(&found.key)?;
                removed.push(found);
            }
        }
        Ok(removed)
    }
}
