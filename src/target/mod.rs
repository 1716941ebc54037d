//! Storage targets: places that hold a copy of the vault's files (`gitvault.json`, `keys/`,
//! `packs/`, `index/`, `locks/`). A target knows nothing of git, chunks or keys: it stores opaque,
//! immutable objects by name.
//!
//! The trait is blocking on purpose: the pipeline that feeds it (git fetch, chunking,
//! compression) is blocking, and an S3 target runs its async client on its own runtime.

mod file;
mod lock;
mod s3;

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

pub use file::FileTarget;
pub use lock::{
    LOCK_SECONDS_ENV, LockMode, LockPolicy, LockProblem, Retention, lock_applies, rfc3339,
};
pub use s3::S3Target;

use crate::crypto::ReadSeek;

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{key} is missing on target {target}")]
    NotFound { target: String, key: String },
    #[error("target {target}: {op} {key} failed: {source}")]
    Io {
        target: String,
        op: &'static str,
        key: String,
        #[source]
        source: io::Error,
    },
    #[error("target URL `{url}` is not supported: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("target {target}: {key} is not a valid object name")]
    BadKey { target: String, key: String },
    /// Object Lock refused a delete: the object stays until its retention date (when known).
    #[error("target {target}: {key} is under Object Lock {}", until.map_or_else(|| "(a version is still locked, or these credentials lack s3:DeleteObjectVersion)".to_string(), |u| format!("until {}", rfc3339(u))))]
    Locked {
        target: String,
        key: String,
        until: Option<std::time::SystemTime>,
    },
    #[error("target {target} cannot hold locked objects: {reason}")]
    LockUnsupported { target: String, reason: String },
}

/// What a create-only upload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    /// An object of that name was there already; since names are content hashes, it is the same.
    AlreadyPresent,
}

/// The bytes of an upload: small documents in memory, packs from their temporary file.
#[derive(Clone, Copy)]
pub enum Body<'a> {
    Bytes(&'a [u8]),
    File(&'a Path),
}

/// One object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
}

pub trait Target: Send + Sync {
    /// The name the user gave this target (used in messages and in the index).
    fn name(&self) -> &str;
    /// The target's URL, free of credentials.
    fn url(&self) -> &str;
    /// Stores `body` under `key` unless an object of that name exists; durable on return.
    fn put_if_absent(&self, key: &str, body: Body<'_>) -> Result<PutOutcome, TargetError>;
    /// Stores `body` under `key`, replacing what is there (only for mutable files such as
    /// `gitvault.json`; packs are never replaced).
    fn put(&self, key: &str, body: Body<'_>) -> Result<(), TargetError>;
    fn get(&self, key: &str) -> Result<Vec<u8>, TargetError>;
    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, TargetError>;
    /// The object's size, or `None` when it does not exist.
    fn head(&self, key: &str) -> Result<Option<u64>, TargetError>;
    /// Every object whose key starts with `prefix`.
    fn list(&self, prefix: &str) -> Result<Vec<Listed>, TargetError>;
    /// Deletes an object; deleting a missing object is not an error.
    fn delete(&self, key: &str) -> Result<(), TargetError>;

    /// When the object was last written, where the target can say (`None`: unknown, or
    /// missing). Prune uses it to leave alone what a running writer may still need.
    fn modified(&self, _key: &str) -> Result<Option<std::time::SystemTime>, TargetError> {
        Ok(None)
    }

    /// Removes partial uploads (temporary files a killed writer left) last written more than
    /// `older_than` ago; returns how many. Targets whose uploads are atomic have none.
    fn remove_stale_temporaries(
        &self,
        _older_than: std::time::Duration,
    ) -> Result<u64, TargetError> {
        Ok(0)
    }

    /// The Object Lock policy every object this target writes gets (`None`: no locks).
    fn lock_policy(&self) -> Option<LockPolicy> {
        None
    }

    /// Checks that objects written here can be locked (`target add --lock-days`).
    fn check_lock_support(&self) -> Result<(), TargetError> {
        Err(TargetError::LockUnsupported {
            target: self.name().to_string(),
            reason: "Object Lock needs an s3:// target".into(),
        })
    }

    /// The lock each object carries (`None`: the object is missing), one answer per key.
    fn retentions(&self, keys: &[String]) -> Vec<Result<Option<Retention>, TargetError>> {
        keys.iter()
            .map(|_| Ok(Some(Retention::default())))
            .collect()
    }

    /// Extends the lock of each object that [`LockPolicy::needs_renewal`], never shortening
    /// one; answers with the date each object is now kept until (`None`: missing or unlocked).
    fn renew_locks(
        &self,
        keys: &[String],
    ) -> Vec<Result<Option<std::time::SystemTime>, TargetError>> {
        keys.iter().map(|_| Ok(None)).collect()
    }

    /// A seekable reader over one object. The default reads through `get_range` in blocks;
    /// local targets return the file itself.
    fn open(&self, key: &str) -> Result<Box<dyn ReadSeek + '_>, TargetError> {
        let size = self.head(key)?.ok_or_else(|| TargetError::NotFound {
            target: self.name().to_string(),
            key: key.to_string(),
        })?;
        Ok(Box::new(RangeReader {
            target: self,
            key: key.to_string(),
            size,
            pos: 0,
            block: Vec::new(),
            block_start: 0,
        }))
    }
}

/// Opens the target a URL names. `name` is the user's label for it.
pub fn open_target(name: &str, url: &str) -> Result<Box<dyn Target>, TargetError> {
    open_locked_target(name, url, None)
}

/// Opens a target that writes every object (but the leases under `locks/`) with `lock`.
pub fn open_locked_target(
    name: &str,
    url: &str,
    lock: Option<LockPolicy>,
) -> Result<Box<dyn Target>, TargetError> {
    let bad = |reason: &str| TargetError::BadUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    match parsed.scheme() {
        "file" => {
            let path = parsed
                .to_file_path()
                .map_err(|_| bad("a file:// URL needs an absolute local path"))?;
            if lock.is_some() {
                return Err(bad("Object Lock needs an s3:// target"));
            }
            Ok(Box::new(FileTarget::new(name, path)))
        }
        "s3" => Ok(Box::new(S3Target::open(name, url)?.with_lock(lock))),
        other => Err(bad(&format!(
            "unknown scheme `{other}` (use file:// or s3://)"
        ))),
    }
}

/// Object names are fixed by the format; refusing anything else keeps a hostile or corrupted
/// name from escaping the target's root.
pub(crate) fn check_key(target: &str, key: &str) -> Result<(), TargetError> {
    let ok = !key.is_empty()
        && !key.starts_with('/')
        && key.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(TargetError::BadKey {
            target: target.to_string(),
            key: key.to_string(),
        })
    }
}

const RANGE_BLOCK: u64 = 1 << 20;

/// Read + Seek over `Target::get_range`, fetching 1 MiB blocks.
struct RangeReader<'t, T: Target + ?Sized> {
    target: &'t T,
    key: String,
    size: u64,
    pos: u64,
    block: Vec<u8>,
    block_start: u64,
}

impl<T: Target + ?Sized> Read for RangeReader<'_, T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let in_block =
            self.pos >= self.block_start && self.pos < self.block_start + self.block.len() as u64;
        if !in_block {
            let len = RANGE_BLOCK.min(self.size - self.pos);
            self.block = self
                .target
                .get_range(&self.key, self.pos, len)
                .map_err(io::Error::other)?;
            self.block_start = self.pos;
            if self.block.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "short range read",
                ));
            }
        }
        let off = (self.pos - self.block_start) as usize;
        let n = buf.len().min(self.block.len() - off);
        buf[..n].copy_from_slice(&self.block[off..off + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl<T: Target + ?Sized> Seek for RangeReader<'_, T> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos =
            new.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before start"))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_keys_are_refused() {
        for key in ["../x", "packs/../../etc", "/abs", "a//b", "packs/a b", ""] {
            assert!(check_key("t", key).is_err(), "{key}");
        }
        check_key("t", "packs/ab/abcdef").unwrap();
        check_key("t", "keys/0123.age").unwrap();
    }

    #[test]
    fn range_reader_reads_like_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let t = FileTarget::new("t", dir.path().to_path_buf());
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        t.put_if_absent("packs/aa/x", Body::Bytes(&data)).unwrap();
        let mut r = RangeReader {
            target: &t,
            key: "packs/aa/x".into(),
            size: data.len() as u64,
            pos: 0,
            block: Vec::new(),
            block_start: 0,
        };
        r.seek(SeekFrom::Start(1_500_000)).unwrap();
        let mut buf = vec![0; 1_000_000];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(buf, data[1_500_000..2_500_000]);
        r.seek(SeekFrom::End(-10)).unwrap();
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, data[data.len() - 10..]);
    }
}
