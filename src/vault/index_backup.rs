//! Index backups: the part of the SQLite index the packs cannot give back (HTTP cache,
//! repository sources, a counter), zstd-compressed, age-encrypted to the vault key and
//! authenticated with a MAC under the auth key, under `index/` on every target
//! (docs/FORMAT.md, "Index backups"). Written after backup runs, sync and prune; read by
//! `recover`.

use crate::crypto::{self, VaultKeys};
use crate::target::Body;
use crate::vault::{Vault, VaultError, WriteLock};

/// Name of an index backup: sortable by time, unique.
fn index_backup_key() -> Result<String, VaultError> {
    Ok(format!(
        "index/{:020}-{}.age",
        chrono::Utc::now().timestamp_millis().max(0),
        crypto::random_hex(4)?
    ))
}

/// Whether a run should upload an index backup: always after new data, otherwise once a day,
/// so that unchanged runs write nothing but their manifests (recover reads the manifests of
/// packs newer than the backup from their footers anyway).
pub fn index_backup_due(vault: &Vault, changed: bool) -> bool {
    if changed {
        return true;
    }
    let now = chrono::Utc::now().timestamp_millis();
    let millis = |key: &str| {
        key.trim_start_matches("index/")
            .split('-')
            .next()
            .and_then(|m| m.parse::<i64>().ok())
            .unwrap_or(0)
    };
    // A name dated in the future is not ours (see `upload_index_backup`).
    let newest = vault
        .targets()
        .first()
        .and_then(|t| t.list("index/").ok())
        .and_then(|list| {
            list.into_iter()
                .map(|l| millis(&l.key))
                .filter(|m| *m <= now + 60_000)
                .max()
        });
    let Some(newest) = newest else { return true };
    now - newest > 24 * 3600 * 1000
}

/// How many index backups each target keeps. One: recover falls back to pack footers when it
/// is unusable, and an older backup could name packs a prune has deleted since.
const INDEX_BACKUPS_KEPT: usize = 1;

/// Uploads the index, zstd-compressed and age-encrypted to the vault key, to every target, and
/// trims old ones. A target that fails is reported in the log, not fatal: the packs alone can
/// rebuild the index.
pub fn upload_index_backup(
    vault: &Vault,
    keys: &VaultKeys,
    _lock: &WriteLock,
) -> Result<Vec<String>, VaultError> {
    let tmp = vault.tmp_dir();
    std::fs::create_dir_all(&tmp).map_err(|e| VaultError::Io {
        context: format!("creating {}", tmp.display()),
        source: e,
    })?;
    let copy = tmp.join(format!("index-backup-{}.sqlite", std::process::id()));
    let sealed_path = tmp.join(format!("index-backup-{}.age", std::process::id()));
    vault.index().backup_to(&copy)?;
    let key = index_backup_key()?;
    // Streamed file to file: at 10 M objects the index is gigabytes, which must not be held in
    // memory (this runs after every backup).
    let sealed = seal_file(
        &copy,
        &sealed_path,
        &keys.identity().to_public(),
        &IndexBackupSeal {
            auth: &keys.auth_key(),
            vault_id: &vault.config().vault_id,
            key: &key,
        },
    );
    let _ = std::fs::remove_file(&copy);
    if let Err(e) = sealed {
        let _ = std::fs::remove_file(&sealed_path);
        return Err(e);
    }
    let mut failed = Vec::new();
    for target in vault.targets() {
        if let Err(e) = target.put_if_absent(&key, Body::File(&sealed_path)) {
            tracing::warn!(target = target.name(), error = %e, "index backup not uploaded");
            failed.push(target.name().to_string());
            continue;
        }
        // Only backups older than this one go: a name that sorts newer was not written by
        // this vault's clock (a planted file, or another host's) and is left for recover to
        // authenticate or ignore, not trusted to be the newest.
        if let Ok(mut old) = target.list("index/") {
            old.retain(|l| l.key < key);
            old.sort_by(|a, b| b.key.cmp(&a.key));
            for stale in old.iter().skip(INDEX_BACKUPS_KEPT - 1) {
                let _ = target.delete(&stale.key);
            }
        }
    }
    let _ = std::fs::remove_file(&sealed_path);
    Ok(failed)
}

/// The plaintext of an index backup (format 2) starts with this; format 1 backups (before
/// 2026-12-04) are a bare zstd frame and cannot be authenticated, so readers ignore them.
const INDEX_BACKUP_MAGIC: &[u8; 8] = b"GVIDXB02";
const INDEX_BACKUP_MAC_DOMAIN: &str = "index backup v2";

/// What an index backup's MAC binds it to: the vault, and the name it was written under, so
/// that a backup renamed to sort newest no longer authenticates.
pub struct IndexBackupSeal<'a> {
    pub auth: &'a crypto::AuthKey,
    pub vault_id: &'a str,
    pub key: &'a str,
}

impl IndexBackupSeal<'_> {
    fn hasher(&self) -> blake3::Hasher {
        let mut h = self.auth.hasher(INDEX_BACKUP_MAC_DOMAIN);
        for part in [self.vault_id.as_bytes(), self.key.as_bytes()] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h
    }
}

/// Passes bytes through to `inner`, MACing them on the way.
struct MacWriter<W: std::io::Write> {
    inner: W,
    mac: blake3::Hasher,
}

impl<W: std::io::Write> std::io::Write for MacWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.mac.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// zstd-compresses and age-encrypts `plain` into `sealed`, streaming, followed by a MAC over
/// the compressed bytes (docs/FORMAT.md, "Index backups").
fn seal_file(
    plain: &std::path::Path,
    sealed: &std::path::Path,
    recipient: &age::x25519::Recipient,
    seal: &IndexBackupSeal<'_>,
) -> Result<(), VaultError> {
    use std::io::Write;
    let io = |what: &str, path: &std::path::Path| {
        let context = format!("{what} {}", path.display());
        move |source: std::io::Error| VaultError::Io { context, source }
    };
    let mut input = std::fs::File::open(plain).map_err(io("reading", plain))?;
    let output = std::fs::File::create(sealed).map_err(io("writing", sealed))?;
    let mut encrypted = crypto::encrypting_writer(recipient, std::io::BufWriter::new(output))?;
    encrypted
        .write_all(INDEX_BACKUP_MAGIC)
        .map_err(io("encrypting", sealed))?;
    let maced = MacWriter {
        inner: encrypted,
        mac: seal.hasher(),
    };
    let mut compressor =
        zstd::stream::write::Encoder::new(maced, 3).map_err(io("compressing", plain))?;
    std::io::copy(&mut input, &mut compressor).map_err(io("compressing", plain))?;
    let maced = compressor.finish().map_err(io("compressing", plain))?;
    let mut encrypted = maced.inner;
    encrypted
        .write_all(maced.mac.finalize().as_bytes())
        .map_err(io("encrypting", sealed))?;
    let mut out = encrypted.finish().map_err(io("encrypting", sealed))?;
    out.flush().map_err(io("writing", sealed))?;
    out.into_inner()
        .map_err(|e| io("writing", sealed)(e.into_error()))?
        .sync_all()
        .map_err(io("writing", sealed))?;
    Ok(())
}

/// Why an index backup was not used.
#[derive(Debug, thiserror::Error)]
pub enum IndexBackupError {
    #[error("written before index backups were authenticated (format 1); ignored")]
    Legacy,
    #[error("does not authenticate with this vault's key (forged, renamed or truncated)")]
    Forged,
    #[error("unreadable: {0}")]
    Unreadable(String),
}

/// Holds back the last 32 bytes of a stream (the MAC) and MACs everything before them.
struct TailReader<R: std::io::Read> {
    inner: R,
    mac: blake3::Hasher,
    tail: Vec<u8>,
    eof: bool,
}

impl<R: std::io::Read> std::io::Read for TailReader<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while !self.eof && self.tail.len() <= 32 {
            let mut buf = [0u8; 64 * 1024];
            let n = self.inner.read(&mut buf)?;
            if n == 0 {
                self.eof = true;
            }
            self.tail.extend_from_slice(&buf[..n]);
        }
        let available = self.tail.len().saturating_sub(32);
        let n = available.min(out.len());
        out[..n].copy_from_slice(&self.tail[..n]);
        self.mac.update(&self.tail[..n]);
        self.tail.drain(..n);
        Ok(n)
    }
}

/// Decrypts, checks and decompresses an index backup into `dest` (a SQLite file), streaming.
/// `dest` is removed again unless the backup authenticates.
pub fn open_index_backup(
    sealed: impl std::io::Read,
    identity: &age::x25519::Identity,
    seal: &IndexBackupSeal<'_>,
    dest: &std::path::Path,
) -> Result<(), IndexBackupError> {
    use std::io::Read;
    let unreadable = |e: &dyn std::fmt::Display| IndexBackupError::Unreadable(e.to_string());
    let mut decrypted = crypto::decrypting_reader(identity, sealed).map_err(|e| unreadable(&e))?;
    let mut magic = [0u8; 8];
    decrypted
        .read_exact(&mut magic)
        .map_err(|e| unreadable(&e))?;
    if &magic != INDEX_BACKUP_MAGIC {
        return Err(IndexBackupError::Legacy);
    }
    let mut tail = TailReader {
        inner: decrypted,
        mac: seal.hasher(),
        tail: Vec::new(),
        eof: false,
    };
    let result = (|| {
        let mut out = std::fs::File::create(dest).map_err(|e| unreadable(&e))?;
        let mut plain = zstd::stream::read::Decoder::new(&mut tail)
            .map_err(|e| unreadable(&e))?
            .single_frame();
        std::io::copy(&mut plain, &mut out).map_err(|e| unreadable(&e))?;
        drop(plain);
        // Whatever zstd left unread still counts towards the MAC.
        std::io::copy(&mut tail, &mut std::io::sink()).map_err(|e| unreadable(&e))?;
        if tail.tail.len() != 32 {
            return Err(IndexBackupError::Forged);
        }
        let expected = blake3::Hash::from(*tail.mac.finalize().as_bytes());
        let mut found = [0u8; 32];
        found.copy_from_slice(&tail.tail);
        if expected != blake3::Hash::from(found) {
            return Err(IndexBackupError::Forged);
        }
        out.sync_all().map_err(|e| unreadable(&e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    result
}
