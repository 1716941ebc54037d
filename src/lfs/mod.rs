//! Git LFS: pointer files in the git data, the LFS objects they name fetched through the batch
//! API (<https://github.com/git-lfs/git-lfs/blob/main/docs/api/batch.md>), each checked against
//! its SHA-256 before it is stored, and the map a snapshot keeps of them (pointer blob → LFS
//! object → chunk).
//!
//! The repository's credentials go only to the origin of the URL they were given for (DESIGN.md
//! invariant 9): an endpoint named by the repository's own `.lfsconfig`, an `href` in a batch
//! answer, or a redirect to another scheme, host or port is asked without them. Every request
//! passes through [`Client::authorize`], which checks the request's URL.
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
use crate::model::Oid;
pub use crate::model::{LfsEntry, MISSING, Pointer};
use crate::redact::RedactedUrl;

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
    let (version, body) = bytes
        .split_first()
        .ok_or_else(|| LfsError::BadMap("empty".into()))?;
    if *version != LFS_MAP_VERSION || body.len() % LFS_ENTRY_LEN != 0 {
        return Err(LfsError::BadMap("unknown version or length".into()));
    }
    Ok(body
        .chunks_exact(LFS_ENTRY_LEN)
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
pub fn endpoint(repo_url: &str, lfsconfig: Option<&[u8]>) -> Option<String> {
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

#[derive(Deserialize)]
struct BatchResponse {
    #[serde(default)]
    objects: Vec<BatchObject>,
}

#[derive(Deserialize)]
struct BatchObject {
    oid: String,
    #[serde(default)]
    actions: Option<Actions>,
    #[serde(default)]
    error: Option<BatchError>,
}

#[derive(Deserialize)]
struct Actions {
    download: Option<Action>,
    upload: Option<Action>,
    verify: Option<Action>,
}

#[derive(Deserialize)]
struct Action {
    href: String,
    #[serde(default)]
    header: std::collections::HashMap<String, String>,
}

#[derive(Deserialize)]
struct BatchError {
    code: u16,
    message: String,
}

/// Where to fetch one object from.
pub struct Download {
    pub pointer: Pointer,
    href: String,
    header: Vec<(String, String)>,
}

/// One object of a batch answer: where to download it, or why the server will not give it.
pub type BatchAnswer = (Pointer, Result<Download, String>);

/// An LFS server, asked with the repository's credentials where their origin allows.
pub struct Client {
    http: reqwest::blocking::Client,
    endpoint: String,
    credentials: Option<BoundCredentials>,
}

impl Client {
    /// `credentials` were given for `home` (the repository's URL) and go only to its origin.
    pub fn new(
        endpoint: &str,
        credentials: Option<Credentials>,
        home: &str,
    ) -> Result<Client, LfsError> {
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(15))
            // Credentials are attached per request after the origin check; reqwest drops the
            // Authorization header when a redirect changes scheme, host or port. A redirect
            // from https to plain http is not followed at all.
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let downgrade = attempt.url().scheme() == "http"
                    && attempt.previous().iter().any(|u| u.scheme() == "https");
                if downgrade || attempt.previous().len() >= 10 {
                    attempt.stop()
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .map_err(|e| LfsError::Endpoint {
                endpoint: shown(endpoint),
                reason: e.to_string(),
            })?;
        Ok(Client {
            http,
            endpoint: endpoint.to_string(),
            credentials: credentials.and_then(|c| BoundCredentials::new(c, home)),
        })
    }

    /// Adds the credentials to a request for `url` if, and only if, `url` is on their origin
    /// and the transport may carry them.
    fn authorize(
        &self,
        request: reqwest::blocking::RequestBuilder,
        url: &str,
    ) -> reqwest::blocking::RequestBuilder {
        match self.credentials.as_ref().and_then(|b| b.for_url(url)) {
            Some(c) => request.basic_auth(&c.username, Some(c.secret.expose_secret())),
            None => request,
        }
    }

    /// Why a refused request may have failed: credentials exist but were kept from this URL.
    fn withheld_hint(&self, url: &str) -> String {
        match &self.credentials {
            Some(b) if b.for_url(url).is_none() => format!(
                " (credentials were not sent: they go only to {} over https or to loopback)",
                b.origin()
            ),
            _ => String::new(),
        }
    }

    /// Asks where to download `pointers` from. Per object: where to get it, or why not.
    pub fn batch(&self, pointers: &[Pointer]) -> Result<Vec<BatchAnswer>, LfsError> {
        let mut out = Vec::new();
        // The spec lets servers cap a batch; 100 is what git-lfs sends.
        for group in pointers.chunks(100) {
            let body = serde_json::json!({
                "operation": "download",
                "transfers": ["basic"],
                "hash_algo": "sha256",
                "objects": group.iter().map(|p| serde_json::json!({"oid": p.oid_hex(), "size": p.size})).collect::<Vec<_>>(),
            });
            let url = format!("{}/objects/batch", self.endpoint);
            let err = |reason: String| LfsError::Endpoint {
                endpoint: shown(&self.endpoint),
                reason,
            };
            let response = self
                .authorize(self.http.post(&url), &url)
                .header("Accept", "application/vnd.git-lfs+json")
                .header("Content-Type", "application/vnd.git-lfs+json")
                .body(body.to_string())
                .send()
                .map_err(|e| err(e.without_url().to_string()))?;
            let status = response.status();
            if !status.is_success() {
                return Err(err(format!(
                    "the batch request answered HTTP {status}{}",
                    self.withheld_hint(&url)
                )));
            }
            let answer: BatchResponse = response
                .json()
                .map_err(|e| err(format!("unreadable batch answer: {}", e.without_url())))?;
            for p in group {
                let hex_oid = p.oid_hex();
                let found = answer.objects.iter().find(|o| o.oid == hex_oid);
                let result = match found {
                    None => Err("the server did not answer for it".to_string()),
                    Some(o) => match (
                        &o.error,
                        o.actions.as_ref().and_then(|a| a.download.as_ref()),
                    ) {
                        (Some(e), _) => Err(format!("{} {}", e.code, e.message)),
                        (None, Some(a)) => Ok(Download {
                            pointer: *p,
                            href: a.href.clone(),
                            header: a
                                .header
                                .iter()
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect(),
                        }),
                        (None, None) => Err("no download action offered".to_string()),
                    },
                };
                out.push((*p, result));
            }
        }
        Ok(out)
    }

    /// Uploads objects from files (batch API `upload`, basic transfer: PUT, then the optional
    /// verify POST). Objects the server already has come back without actions and are skipped.
    /// Returns how many were sent; the first failure stops it.
    pub fn upload(&self, objects: &[(Pointer, std::path::PathBuf)]) -> Result<u64, LfsError> {
        let mut sent = 0;
        for group in objects.chunks(100) {
            let body = serde_json::json!({
                "operation": "upload",
                "transfers": ["basic"],
                "hash_algo": "sha256",
                "objects": group.iter().map(|(p, _)| serde_json::json!({"oid": p.oid_hex(), "size": p.size})).collect::<Vec<_>>(),
            });
            let err = |reason: String| LfsError::Endpoint {
                endpoint: shown(&self.endpoint),
                reason,
            };
            let url = format!("{}/objects/batch", self.endpoint);
            let response = self
                .authorize(self.http.post(&url), &url)
                .header("Accept", "application/vnd.git-lfs+json")
                .header("Content-Type", "application/vnd.git-lfs+json")
                .body(body.to_string())
                .send()
                .map_err(|e| err(e.without_url().to_string()))?;
            if !response.status().is_success() {
                return Err(err(format!(
                    "the upload batch request answered HTTP {}{}",
                    response.status(),
                    self.withheld_hint(&url)
                )));
            }
            let answer: BatchResponse = response
                .json()
                .map_err(|e| err(format!("unreadable batch answer: {}", e.without_url())))?;
            for (p, path) in group {
                let fail = |reason: String| LfsError::Object {
                    oid: p.oid_hex(),
                    reason,
                };
                let Some(o) = answer.objects.iter().find(|o| o.oid == p.oid_hex()) else {
                    return Err(fail("the server did not answer for it".into()));
                };
                if let Some(e) = &o.error {
                    return Err(fail(format!("{} {}", e.code, e.message)));
                }
                let Some(upload) = o.actions.as_ref().and_then(|a| a.upload.as_ref()) else {
                    continue;
                };
                let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
                let mut request = self
                    .http
                    .put(&upload.href)
                    .header("Content-Type", "application/octet-stream")
                    .body(reqwest::blocking::Body::sized(file, p.size));
                if upload.header.is_empty() {
                    request = self.authorize(request, &upload.href);
                }
                for (k, v) in &upload.header {
                    request = request.header(k, v);
                }
                let put = request
                    .send()
                    .map_err(|e| fail(e.without_url().to_string()))?;
                if !put.status().is_success() {
                    return Err(fail(format!("upload answered HTTP {}", put.status())));
                }
                if let Some(verify) = o.actions.as_ref().and_then(|a| a.verify.as_ref()) {
                    let mut request = self
                        .http
                        .post(&verify.href)
                        .header("Content-Type", "application/vnd.git-lfs+json")
                        .body(serde_json::json!({"oid": p.oid_hex(), "size": p.size}).to_string());
                    if verify.header.is_empty() {
                        request = self.authorize(request, &verify.href);
                    }
                    for (k, v) in &verify.header {
                        request = request.header(k, v);
                    }
                    let answer = request
                        .send()
                        .map_err(|e| fail(e.without_url().to_string()))?;
                    if !answer.status().is_success() {
                        return Err(fail(format!("verify answered HTTP {}", answer.status())));
                    }
                }
                sent += 1;
            }
        }
        Ok(sent)
    }

    /// Downloads one object into `dest`, checking its size and SHA-256 as it streams.
    pub fn download(&self, d: &Download, dest: &Path) -> Result<(), LfsError> {
        let fail = |reason: String| LfsError::Object {
            oid: d.pointer.oid_hex(),
            reason,
        };
        let mut request = self.http.get(&d.href);
        if d.header.is_empty() {
            // Servers that need no per-action header expect the repository's credentials, if
            // the href is on their origin; any other host gets none.
            request = self.authorize(request, &d.href);
        }
        for (k, v) in &d.header {
            request = request.header(k, v);
        }
        // The href may carry a token in its query: errors never show it.
        let mut response = request
            .send()
            .map_err(|e| fail(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(fail(format!(
                "download answered HTTP {}{}",
                response.status(),
                if d.header.is_empty() {
                    self.withheld_hint(&d.href)
                } else {
                    String::new()
                }
            )));
        }
        let mut file = std::fs::File::create(dest).map_err(|e| fail(e.to_string()))?;
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = response
                .read(&mut buf)
                .map_err(|e| fail(format!("download interrupted: {e}")))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(|e| fail(e.to_string()))?;
            total += n as u64;
            if total > d.pointer.size {
                return Err(fail(format!(
                    "the server sent more than the {} bytes the pointer says",
                    d.pointer.size
                )));
            }
        }
        file.sync_all().map_err(|e| fail(e.to_string()))?;
        if total != d.pointer.size {
            return Err(fail(format!(
                "the server sent {total} bytes where the pointer says {}",
                d.pointer.size
            )));
        }
        if hasher.finalize().as_slice() != d.pointer.sha256 {
            return Err(fail(
                "the bytes the server sent do not have the pointer's SHA-256: rejected".into(),
            ));
        }
        Ok(())
    }
}

/// A URL for messages: never userinfo or query (hrefs may carry tokens).
fn shown(url: &str) -> RedactedUrl {
    RedactedUrl::new(url)
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
pub fn local_objects(git_dir: &Path) -> Vec<(Pointer, std::path::PathBuf)> {
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
