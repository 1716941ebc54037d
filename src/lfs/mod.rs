//! Git LFS: pointer files in the git data, the LFS objects they name fetched through the batch
//! API (<https://github.com/git-lfs/git-lfs/blob/main/docs/api/batch.md>), each checked against
//! its SHA-256 before it is stored, and the map a snapshot keeps of them (pointer blob → LFS
//! object → chunk).
//!
//! The repository's credentials go only to the origin of the URL they were given for (DESIGN.md
//! invariant 9): an endpoint named by the repository's own `.lfsconfig`, an `href` in a batch
//! answer, or a redirect to another scheme, host or port is asked without them. Every request
//! passes through `Client::authorize` (`batch.rs`), which checks the request's URL.
//!
//! Downloads stream to a temporary file while being hashed, so an object of any size costs a
//! fixed amount of memory; the chunk store then cuts it with content-defined chunking, so a new
//! version of a large file that differs in a few places adds only the changed chunks.

use std::io::{Read, Write};
use std::path::Path;

use age::secrecy::ExposeSecret;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::crypto::ChunkId;
use crate::git::{BoundCredentials, Credentials};
pub use crate::model::{LfsEntry, MISSING, Pointer};
use crate::model::{Oid, map_entries};
use crate::redact::RedactedUrl;

mod batch;

pub use batch::{BatchAnswer, Client, Download};

#[derive(Debug, thiserror::Error)]
pub enum LfsError {
    #[error("LFS endpoint {endpoint}: {reason}")]
    Endpoint {
        endpoint: RedactedUrl,
        reason: String,
    },
    #[error("LFS object {oid}: {reason}")]
    Object { oid: String, reason: String },
    #[error("LFS map: {0}")]
    BadMap(String),
}

/// Pointer files are small; git-lfs never writes one over 1024 bytes.
pub const MAX_POINTER_SIZE: usize = 1024;

/// Parses a pointer file (spec v1: `version` first, keys sorted, `oid sha256:<64 hex>`,
/// `size <n>`, optional `ext-…` lines, each line ending in `\n`).
pub fn parse_pointer(data: &[u8]) -> Option<Pointer> {
    if data.len() > MAX_POINTER_SIZE {
        return None;
    }
    let text = std::str::from_utf8(data).ok()?;
    let body = text.strip_suffix('\n')?;
    let mut lines = body.split('\n');
    let version = lines.next()?;
    if version != "version https://git-lfs.github.com/spec/v1"
        && version != "version https://hawser.github.com/spec/v1"
    {
        return None;
    }
    let mut sha256 = None;
    let mut size = None;
    for line in lines {
        let (key, value) = line.split_once(' ')?;
        match key {
            "oid" => {
                let hex_oid = value.strip_prefix("sha256:")?;
                if hex_oid.len() != 64 || !hex_oid.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                let mut oid = [0u8; 32];
                hex::decode_to_slice(hex_oid, &mut oid).ok()?;
                sha256 = Some(oid);
            }
            "size" => size = Some(value.parse::<u64>().ok()?),
            k if k.starts_with("ext-") => {}
            _ => return None,
        }
    }
    Some(Pointer {
        sha256: sha256?,
        size: size?,
    })
}

const LFS_MAP_VERSION: u8 = 1;
const LFS_ENTRY_LEN: usize = 20 + 32 + 8 + 32;

/// The binary LFS map a manifest names: version, then fixed-size entries sorted by blob.
pub fn encode_map(entries: &[LfsEntry]) -> Vec<u8> {
    let mut sorted = entries.to_vec();
    sorted.sort_by_key(|e| (e.blob, e.pointer));
    sorted.dedup_by_key(|e| (e.blob, e.pointer));
    let mut out = Vec::with_capacity(1 + sorted.len() * LFS_ENTRY_LEN);
    out.push(LFS_MAP_VERSION);
    for e in &sorted {
        out.extend_from_slice(&e.blob.0);
        out.extend_from_slice(&e.pointer.sha256);
        out.extend_from_slice(&e.pointer.size.to_le_bytes());
        out.extend_from_slice(&e.chunk.0);
    }
    out
}

pub fn decode_map(bytes: &[u8]) -> Result<Vec<LfsEntry>, LfsError> {
    let words = ["empty", "unknown version or length"];
    let entries = map_entries(bytes, LFS_MAP_VERSION, LFS_ENTRY_LEN, words)
        .map_err(|e| LfsError::BadMap(e.into()))?;
    Ok(entries
        .map(|e| {
            let mut blob = [0u8; 20];
            blob.copy_from_slice(&e[..20]);
            let mut sha256 = [0u8; 32];
            sha256.copy_from_slice(&e[20..52]);
            let mut size = [0u8; 8];
            size.copy_from_slice(&e[52..60]);
            let mut chunk = [0u8; 32];
            chunk.copy_from_slice(&e[60..]);
            LfsEntry {
                blob: Oid(blob),
                pointer: Pointer {
                    sha256,
                    size: u64::from_le_bytes(size),
                },
                chunk: ChunkId(chunk),
            }
        })
        .collect())
}

/// The LFS endpoint of a repository: `lfs.url` from the repository's `.lfsconfig` when it
/// names one, else git-lfs's default `<url>.git/info/lfs` (`<url>/info/lfs` when the URL ends
/// in `.git`). Only http(s) endpoints are supported.
pub(crate) fn endpoint(repo_url: &str, lfsconfig: Option<&[u8]>) -> Option<String> {
    if let Some(url) = lfsconfig.and_then(lfs_url_from_config) {
        return Some(url.trim_end_matches('/').to_string());
    }
    if !(repo_url.starts_with("http://") || repo_url.starts_with("https://")) {
        return None;
    }
    let base = repo_url.trim_end_matches('/');
    Some(if base.ends_with(".git") {
        format!("{base}/info/lfs")
    } else {
        format!("{base}.git/info/lfs")
    })
}

/// `lfs.url` from a git-config-format file.
fn lfs_url_from_config(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut in_lfs = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_lfs = line.trim_start_matches('[').trim_end_matches(']').trim() == "lfs";
            continue;
        }
        if !in_lfs {
            continue;
        }
        if let Some((key, value)) = line.split_once('=')
            && key.trim().eq_ignore_ascii_case("url")
        {
            let value = value.trim().trim_matches('"');
            if value.starts_with("http://") || value.starts_with("https://") {
                return Some(value.to_string());
            }
        }
    }
    None
}

/// Where an entry's bytes are: its own chunk, or for an object that was missing when the
/// snapshot was taken, the copy a later run stored (the same SHA-256 is the same object).
pub fn resolve(
    index: &crate::index::Index,
    e: &LfsEntry,
) -> Result<Option<ChunkId>, crate::index::IndexError> {
    if e.chunk != MISSING {
        return Ok(Some(e.chunk));
    }
    index.lfs_object(&e.pointer.sha256)
}

/// The LFS objects a snapshot's map (the manifest's `lfs` field) names that the vault cannot
/// provide: `oid: reason`.
pub fn missing_objects(
    index: &crate::index::Index,
    store: &crate::store::ChunkReader<'_>,
    lfs_map: Option<&str>,
) -> Vec<String> {
    let Some(map) = lfs_map else {
        return Vec::new();
    };
    let entries = map
        .parse::<ChunkId>()
        .map_err(|e| e.to_string())
        .and_then(|id| store.get(&id).map_err(|e| e.to_string()))
        .and_then(|b| decode_map(&b).map_err(|e| e.to_string()));
    let entries = match entries {
        Ok(e) => e,
        Err(e) => return vec![format!("the LFS map is unreadable: {e}")],
    };
    let mut missing = Vec::new();
    for e in entries {
        let chunk = match resolve(index, &e) {
            Ok(Some(c)) => c,
            Ok(None) => {
                missing.push(format!(
                    "{}: the server could not provide it when it was backed up",
                    e.pointer.oid_hex()
                ));
                continue;
            }
            Err(err) => {
                missing.push(format!("{}: {err}", e.pointer.oid_hex()));
                continue;
            }
        };
        match index.chunk(&chunk) {
            Ok(Some(_)) => {}
            Ok(None) => missing.push(format!("{}: not in the vault", e.pointer.oid_hex())),
            Err(err) => missing.push(format!("{}: {err}", e.pointer.oid_hex())),
        }
    }
    missing
}

/// The LFS objects stored in a repository's `lfs/objects` directory (as `restore` writes it).
pub(crate) fn local_objects(git_dir: &Path) -> Vec<(Pointer, std::path::PathBuf)> {
    let mut out = Vec::new();
    let Ok(level1) = std::fs::read_dir(git_dir.join("lfs/objects")) else {
        return out;
    };
    for a in level1.flatten() {
        for b in std::fs::read_dir(a.path()).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(b.path()).into_iter().flatten().flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                let mut sha256 = [0u8; 32];
                if name.len() == 64 && hex::decode_to_slice(&name, &mut sha256).is_ok() {
                    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                    out.push((Pointer { sha256, size }, f.path()));
                }
            }
        }
    }
    out.sort();
    out
}

/// Where git-lfs keeps an object inside a repository's git directory.
pub fn object_path(git_dir: &Path, p: &Pointer) -> std::path::PathBuf {
    let hex_oid = p.oid_hex();
    git_dir
        .join("lfs/objects")
        .join(&hex_oid[0..2])
        .join(&hex_oid[2..4])
        .join(&hex_oid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POINTER: &str = "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n";

    #[test]
    fn pointers_parse_strictly() {
        let p = parse_pointer(POINTER.as_bytes()).unwrap();
        assert_eq!(p.size, 12345);
        assert_eq!(
            p.oid_hex(),
            "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393"
        );
        assert!(parse_pointer(POINTER.trim_end().as_bytes()).is_none());
        assert!(parse_pointer(POINTER.replace("sha256:4d", "sha256:zz").as_bytes()).is_none());
        assert!(parse_pointer(b"version https://git-lfs.github.com/spec/v1\nsize 1\n").is_none());
        assert!(parse_pointer(b"hello\n").is_none());
    }

    #[test]
    fn endpoints_follow_git_lfs() {
        assert_eq!(
            endpoint("https://h/o/r.git", None).unwrap(),
            "https://h/o/r.git/info/lfs"
        );
        assert_eq!(
            endpoint("https://h/o/r", None).unwrap(),
            "https://h/o/r.git/info/lfs"
        );
        assert_eq!(
            endpoint(
                "https://h/o/r",
                Some(b"[lfs]\n\turl = \"http://127.0.0.1:9/o/r\"\n")
            )
            .unwrap(),
            "http://127.0.0.1:9/o/r"
        );
        assert!(endpoint("file:///tmp/r.git", None).is_none());
    }

    #[test]
    fn maps_round_trip() {
        let e = LfsEntry {
            blob: Oid([1; 20]),
            pointer: Pointer {
                sha256: [2; 32],
                size: 99,
            },
            chunk: ChunkId([3; 32]),
        };
        assert_eq!(decode_map(&encode_map(&[e, e])).unwrap(), vec![e]);
        assert!(decode_map(&[2]).is_err());
    }
}
