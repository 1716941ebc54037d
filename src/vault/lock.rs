//! Locks on the vault directory: the writer lock (one writer per host), the readers' lease
//! that restores hold while prune may delete, and prune's own lease. All are `flock`s, which
//! die with their process.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};

use super::{LOCK_FILE, PRUNE_FILE, READERS_FILE, Vault, VaultError, io_err};

/// Held while a process writes to the vault; released on drop or when the process dies.
pub struct WriteLock {
    _file: File,
}

/// Held while reading packs (see `Vault::read_lease`).
pub struct ReadLease {
    _file: File,
}

struct LockHolder {
    pid: String,
    since: String,
    purpose: String,
}

impl Vault {
    /// Takes the writer lock or says who holds it. A prune holds it only for short moments,
    /// so a writer that finds prune holding it waits (up to an hour) instead of failing.
    pub fn lock(&self) -> Result<WriteLock, VaultError> {
        let started = std::time::Instant::now();
        loop {
            match self.try_lock("write")? {
                Ok(lock) => return Ok(lock),
                Err(holder)
                    if holder.purpose == "prune"
                        && started.elapsed() < std::time::Duration::from_secs(3600) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                Err(holder) => {
                    return Err(VaultError::Locked {
                        pid: holder.pid,
                        since: holder.since,
                    });
                }
            }
        }
    }

    /// The writer lock if no other process of this host holds it; never waits (a read
    /// command's catch-up, which skips rather than queue behind a backup).
    pub fn try_writer_lock(&self) -> Result<Option<WriteLock>, VaultError> {
        Ok(self.try_lock("write")?.ok())
    }

    /// Prune's lock: waits up to `max` for a running writer to finish.
    pub fn lock_waiting(&self, max: std::time::Duration) -> Result<WriteLock, VaultError> {
        let started = std::time::Instant::now();
        loop {
            match self.try_lock("prune")? {
                Ok(lock) => return Ok(lock),
                Err(_) if started.elapsed() < max => {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                Err(holder) => {
                    return Err(VaultError::Locked {
                        pid: holder.pid,
                        since: holder.since,
                    });
                }
            }
        }
    }

    fn try_lock(&self, purpose: &str) -> Result<Result<WriteLock, LockHolder>, VaultError> {
        let path = self.dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(format!("opening {}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let mut holder = LockHolder {
                    pid: "?".into(),
                    since: "?".into(),
                    purpose: String::new(),
                };
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("pid ") {
                        holder.pid = v.to_string();
                    } else if let Some(v) = line.strip_prefix("since ") {
                        holder.since = v.to_string();
                    } else if let Some(v) = line.strip_prefix("purpose ") {
                        holder.purpose = v.to_string();
                    }
                }
                return Ok(Err(holder));
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(io_err(format!("locking {}", path.display()))(e));
            }
        }
        let info = format!(
            "pid {}\nsince {}\npurpose {purpose}\n",
            std::process::id(),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        file.set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(info.as_bytes()))
            .and_then(|_| file.flush())
            .map_err(io_err(format!("writing {}", path.display())))?;
        Ok(Ok(WriteLock { _file: file }))
    }

    /// A read lease: restores hold it while they read packs, so that prune never deletes a
    /// pack under a running restore. Shared: readers never wait for each other.
    pub fn read_lease(&self) -> Result<ReadLease, VaultError> {
        let file = self.readers_file()?;
        file.lock_shared()
            .map_err(io_err(format!("locking {READERS_FILE}")))?;
        Ok(ReadLease { _file: file })
    }

    /// Prune's side of the read lease: waits for running restores, keeps new ones out.
    pub fn readers_exclusive(&self) -> Result<ReadLease, VaultError> {
        let file = self.readers_file()?;
        file.lock()
            .map_err(io_err(format!("locking {READERS_FILE}")))?;
        Ok(ReadLease { _file: file })
    }

    /// Held for a whole prune: two prunes judging the same packs at once could each count on
    /// rows the other deletes.
    pub fn prune_lease(&self) -> Result<ReadLease, VaultError> {
        let file = self.lease_file(PRUNE_FILE)?;
        match file.try_lock() {
            Ok(()) => Ok(ReadLease { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(VaultError::PruneRunning),
            Err(fs::TryLockError::Error(e)) => Err(io_err(format!("locking {PRUNE_FILE}"))(e)),
        }
    }

    fn readers_file(&self) -> Result<File, VaultError> {
        self.lease_file(READERS_FILE)
    }

    fn lease_file(&self, name: &str) -> Result<File, VaultError> {
        let path = self.dir.join(name);
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(format!("opening {}", path.display())))
    }

    /// True when some process holds the writer lock right now.
    pub fn writer_active(&self) -> bool {
        let path = self.dir.join(LOCK_FILE);
        match File::open(&path) {
            Ok(f) => match f.try_lock_shared() {
                Ok(()) => false,
                Err(fs::TryLockError::WouldBlock) => true,
                Err(_) => false,
            },
            Err(_) => false,
        }
    }
}
