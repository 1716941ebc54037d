//! Restoring one repository as of a snapshot: the snapshot's ref set, a walk through the vault
//! from its refs to every object they reach, and a bare repository written with exactly those
//! refs and objects. The repository is built in a temporary sibling directory and renamed into
//! place only when complete, so a failure leaves nothing half-written at the destination.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::crypto::VaultKeys;
use crate::git::objects::{ObjectSource, walk};
use crate::git::{self, Credentials, GitError};
use crate::index::{IndexError, SnapshotRow};
use crate::snapshot::{self, Manifest, ObjectKind, Oid, RefSet};
use crate::store::{ChunkReader, StoreError};
use crate::vault::Vault;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("LFS: {0}")]
    Lfs(String),
    #[error("no snapshot of `{repo}`{when}; `gitvault snapshots` lists what the vault has")]
    NoSnapshot { repo: String, when: String },
    #[error("snapshot id `{prefix}` matches {count} snapshots of `{repo}`; give more digits")]
    Ambiguous {
        repo: String,
        prefix: String,
        count: usize,
    },
    #[error(
        "the snapshot of `{0}` holds no platform metadata (it was not backed up through a provider source)"
    )]
    NoMetadata(String),
    #[error("{0} exists and is not empty; restore into a new or empty directory")]
    NotEmpty(String),
    #[error(
        "object {oid} is needed by the snapshot but missing from the vault index; run `gitvault verify`"
    )]
    MissingObject { oid: Oid },
    #[error("object {oid} read from the vault does not hash to its id; the vault is damaged")]
    BadObject { oid: Oid },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("pushing to the remote failed: {0}")]
    Push(String),
    #[error(
        "the index says snapshot {snapshot} is of `{repo}`, but its manifest disagrees ({reason}); nothing was written. The index is not to be trusted: rebuild it with `gitvault recover`"
    )]
    WrongManifest {
        repo: String,
        snapshot: String,
        reason: String,
    },
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
}

impl From<git::objects::ObjectError> for RestoreError {
    fn from(e: git::objects::ObjectError) -> Self {
        RestoreError::Git(GitError::Object(e))
    }
}

/// Which snapshot: by id prefix, as of a date, or the newest.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    pub snapshot: Option<String>,
    pub at: Option<DateTime<Utc>>,
}

pub fn select_snapshot(
    vault: &Vault,
    repo: &str,
    sel: &Selector,
) -> Result<SnapshotRow, RestoreError> {
    if let Some(prefix) = &sel.snapshot {
        let mut found = vault.index().snapshots_by_prefix(repo, prefix)?;
        return match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(RestoreError::NoSnapshot {
                repo: repo.to_string(),
                when: format!(" with id {prefix}"),
            }),
            count => Err(RestoreError::Ambiguous {
                repo: repo.to_string(),
                prefix: prefix.clone(),
                count,
            }),
        };
    }
    vault
        .index()
        .snapshot_as_of(repo, sel.at)?
        .ok_or_else(|| RestoreError::NoSnapshot {
            repo: repo.to_string(),
            when: sel
                .at
                .map(|t| format!(" at or before {}", t.to_rfc3339()))
                .unwrap_or_default(),
        })
}

/// The manifest and ref set of a snapshot, read from the packs.
pub fn load_snapshot(
    store: &ChunkReader<'_>,
    row: &SnapshotRow,
) -> Result<(Manifest, RefSet), RestoreError> {
    let manifest = Manifest::decode(&store.get(&row.manifest)?)?;
    // The manifest's bytes are checked against its keyed id, but the index row that led here
    // may not be what it was (an index rebuilt from a forged backup, a damaged cache): the
    // manifest must say it is the snapshot that was asked for, before anything is written.
    let mismatch = if manifest.repo != row.repo {
        Some(format!("it belongs to `{}`", manifest.repo))
    } else if manifest.time.timestamp_millis() != row.time.timestamp_millis() {
        Some(format!("it was taken at {}", manifest.time.to_rfc3339()))
    } else if manifest.refset_id()? != row.refset {
        Some("its ref set differs".to_string())
    } else {
        None
    };
    if let Some(reason) = mismatch {
        return Err(RestoreError::WrongManifest {
            repo: row.repo.clone(),
            snapshot: row.id.clone(),
            reason,
        });
    }
    let refs = RefSet::decode(&store.get(&manifest.refset_id()?)?)
        .map_err(snapshot::SnapshotError::from)?;
    Ok((manifest, refs))
}

struct VaultSource<'a, 'v> {
    vault: &'a Vault,
    store: &'a ChunkReader<'v>,
}

impl VaultSource<'_, '_> {
    fn read_checked(&self, oid: &Oid) -> Result<(ObjectKind, Vec<u8>), RestoreError> {
        let (kind, chunk) = self
            .vault
            .index()
            .git_object(oid)?
            .ok_or(RestoreError::MissingObject { oid: *oid })?;
        let data = self.store.get(&chunk)?;
        let id = gix::objs::compute_hash(gix::hash::Kind::Sha1, gix_kind(kind), &data)
            .map_err(|_| RestoreError::BadObject { oid: *oid })?;
        if id.as_slice() != oid.0 {
            return Err(RestoreError::BadObject { oid: *oid });
        }
        Ok((kind, data))
    }
}

fn gix_kind(kind: ObjectKind) -> gix::objs::Kind {
    match kind {
        ObjectKind::Commit => gix::objs::Kind::Commit,
        ObjectKind::Tree => gix::objs::Kind::Tree,
        ObjectKind::Blob => gix::objs::Kind::Blob,
        ObjectKind::Tag => gix::objs::Kind::Tag,
    }
}

impl ObjectSource for VaultSource<'_, '_> {
    type Error = RestoreError;
    fn read(&mut self, oid: &Oid) -> Result<(ObjectKind, Vec<u8>), RestoreError> {
        self.read_checked(oid)
    }
    fn known(&mut self, _oid: &Oid) -> Result<bool, RestoreError> {
        Ok(false)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub repo: String,
    pub snapshot: String,
    pub time: DateTime<Utc>,
    pub path: String,
    pub refs: usize,
    pub objects: u64,
    /// LFS objects written into `lfs/objects`.
    pub lfs_objects: u64,
    pub pushed_to: Option<String>,
    /// LFS objects uploaded to the push URL's LFS server.
    pub lfs_uploaded: Option<u64>,
    pub metadata_files: Option<usize>,
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RestoreError {
    let context = context.into();
    move |source| RestoreError::Io { context, source }
}

fn check_destination(to: &Path) -> Result<(), RestoreError> {
    match std::fs::read_dir(to) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(RestoreError::NotEmpty(to.display().to_string()));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => Err(RestoreError::NotEmpty(to.display().to_string())),
    }
}

/// Writes the snapshot `row` as a bare repository at `to`.
pub fn restore_snapshot(
    vault: &Vault,
    keys: &VaultKeys,
    row: &SnapshotRow,
    to: &Path,
) -> Result<RestoreReport, RestoreError> {
    check_destination(to)?;
    let store = vault.reader(keys);
    let (manifest, refs) = load_snapshot(&store, row)?;
    let mut source = VaultSource {
        vault,
        store: &store,
    };
    let mut tips: Vec<Oid> = refs.refs.values().copied().collect();
    tips.sort();
    tips.dedup();
    let phase = std::time::Instant::now();
    let reached = walk(&mut source, &tips)?;
    tracing::info!(
        seconds = phase.elapsed().as_secs_f64(),
        objects = reached.len(),
        "walked the snapshot"
    );
    let phase = std::time::Instant::now();
    // Read in the order the objects lie in the packs, so each frame is decompressed once.
    let mut located = Vec::with_capacity(reached.len());
    for r in &reached {
        let (_, chunk) = vault
            .index()
            .git_object(&r.oid)?
            .ok_or(RestoreError::MissingObject { oid: r.oid })?;
        let place = vault
            .index()
            .chunk(&chunk)?
            .map(|l| (l.pack_id, l.frame.offset, l.offset))
            .unwrap_or((i64::MAX, 0, 0));
        located.push((place, r.oid, r.path_hash));
    }
    located.sort();

    let parent = to
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_err(format!("creating {}", parent.display())))?;
    let staging: PathBuf = parent.join(format!(
        ".{}.gitvault-restore-{}",
        to.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    let mut lfs_written = 0;
    let result = (|| -> Result<u64, RestoreError> {
        git::write_bare_repository(&staging, &refs)?;
        let mut iter = located.iter();
        let count = located.len() as u32;
        let written = if count == 0 {
            0
        } else {
            git::write_pack(&staging, count, || {
                let (_, oid, path_hash) = iter.next()?;
                Some(
                    source
                        .read_checked(oid)
                        .map(|(kind, data)| git::PackObject {
                            oid: *oid,
                            kind,
                            data,
                            path_hash: *path_hash,
                        }),
                )
            })??
        };
        lfs_written = write_lfs_objects(vault.index(), &store, &manifest, &reached, &staging)?;
        Ok(u64::from(written))
    })();
    tracing::info!(seconds = phase.elapsed().as_secs_f64(), "wrote the pack");
    let objects = match result {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if to.exists() {
        std::fs::remove_dir(to).map_err(io_err(format!("replacing the empty {}", to.display())))?;
    }
    std::fs::rename(&staging, to).map_err(io_err(format!(
        "moving the restored repository to {}",
        to.display()
    )))?;
    Ok(RestoreReport {
        repo: row.repo.clone(),
        snapshot: row.id.clone(),
        time: row.time,
        path: to.display().to_string(),
        refs: refs.refs.len(),
        objects,
        lfs_objects: lfs_written,
        pushed_to: None,
        lfs_uploaded: None,
        metadata_files: None,
    })
}

/// Writes the LFS objects the restored refs' pointer blobs name into `git_dir/lfs/objects`,
/// where git-lfs looks for them, checking each one's SHA-256 on the way.
fn write_lfs_objects(
    index: &crate::index::Index,
    store: &ChunkReader<'_>,
    manifest: &Manifest,
    reached: &[git::objects::Reached],
    git_dir: &Path,
) -> Result<u64, RestoreError> {
    use sha2::Digest;
    let Some(map) = &manifest.lfs else {
        return Ok(0);
    };
    let id: crate::crypto::ChunkId = map
        .parse()
        .map_err(|e: String| RestoreError::Lfs(format!("LFS map id: {e}")))?;
    let entries =
        crate::lfs::decode_map(&store.get(&id)?).map_err(|e| RestoreError::Lfs(e.to_string()))?;
    let blobs: std::collections::HashSet<Oid> = reached
        .iter()
        .filter(|r| r.kind == ObjectKind::Blob)
        .map(|r| r.oid)
        .collect();
    let mut written = std::collections::HashSet::new();
    for e in entries.iter().filter(|e| blobs.contains(&e.blob)) {
        let Some(chunk) = crate::lfs::resolve(index, e)? else {
            tracing::warn!(oid = %e.pointer.oid_hex(), "LFS object missing from the vault");
            continue;
        };
        if !written.insert(e.pointer.sha256) {
            continue;
        }
        let path = crate::lfs::object_path(git_dir, &e.pointer);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        }
        let file =
            std::fs::File::create(&path).map_err(io_err(format!("writing {}", path.display())))?;
        struct Hashing<W> {
            out: W,
            hash: sha2::Sha256,
        }
        impl<W: Write> Write for Hashing<W> {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let n = self.out.write(buf)?;
                self.hash.update(&buf[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                self.out.flush()
            }
        }
        let mut out = Hashing {
            out: std::io::BufWriter::new(file),
            hash: sha2::Sha256::new(),
        };
        let size = store.get_to(&chunk, &mut out)?;
        out.flush()
            .map_err(io_err(format!("writing {}", path.display())))?;
        if size != e.pointer.size || out.hash.finalize().as_slice() != e.pointer.sha256 {
            return Err(RestoreError::Lfs(format!(
                "LFS object {} read back with the wrong content",
                e.pointer.oid_hex()
            )));
        }
    }
    Ok(written.len() as u64)
}

/// Writes a snapshot's metadata documents as pretty-printed JSON files (and release assets as
/// they were) under `dir`, which must be new or empty. Returns the number of files written.
pub fn write_metadata(
    vault: &Vault,
    keys: &VaultKeys,
    row: &SnapshotRow,
    dir: &Path,
) -> Result<usize, RestoreError> {
    check_destination(dir)?;
    let store = vault.reader(keys);
    let (manifest, _) = load_snapshot(&store, row)?;
    let Some(map_id) = manifest.metadata.as_deref() else {
        return Err(RestoreError::NoMetadata(row.repo.clone()));
    };
    let map_id = map_id
        .parse()
        .map_err(|e: String| RestoreError::Snapshot(snapshot::SnapshotError::Damaged(e)))?;
    let map: crate::provider::MetadataMap =
        serde_json::from_slice(&store.get(&map_id)?).map_err(|e| {
            RestoreError::Snapshot(snapshot::SnapshotError::Damaged(format!(
                "metadata map: {e}"
            )))
        })?;
    let mut written = 0;
    let mut renamed = Vec::new();
    let mut failed = Vec::new();
    for (path, id) in &map.documents {
        let Some(rel) = crate::provider::safe_relative_path(path) else {
            tracing::warn!(%path, "refusing an unsafe metadata path");
            continue;
        };
        let id = id
            .parse()
            .map_err(|e: String| RestoreError::Snapshot(snapshot::SnapshotError::Damaged(e)))?;
        let short = shorten_components(&rel);
        if short != rel {
            renamed.push((path.clone(), short.display().to_string()));
        }
        let out = dir.join(&short);
        // One file that cannot be written (a full disk, a name the file system refuses) must
        // not cost the files after it: they are all tried, and the failures named at the end.
        let attempt = (|| -> Result<(), RestoreError> {
            if let Some(parent) = out.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(io_err(format!("creating {}", parent.display())))?;
            }
            if path.ends_with(".json") {
                let bytes = store.get(&id)?;
                let contents = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| serde_json::to_vec_pretty(&v).ok())
                    .unwrap_or(bytes);
                std::fs::write(&out, contents).map_err(io_err(format!("writing {}", out.display())))
            } else {
                // Release assets can be gigabytes: streamed, chunk by chunk.
                let file = std::fs::File::create(&out)
                    .map_err(io_err(format!("writing {}", out.display())))?;
                let mut w = std::io::BufWriter::new(file);
                store.get_to(&id, &mut w)?;
                std::io::Write::flush(&mut w).map_err(io_err(format!("writing {}", out.display())))
            }
        })();
        match attempt {
            Ok(()) => written += 1,
            Err(e) => {
                tracing::warn!(path = %out.display(), error = %e, "metadata file not written");
                failed.push(format!("{}: {e}", short.display()));
            }
        }
    }
    if !renamed.is_empty() {
        // Which names were too long for a file system, and what they became.
        let list: Vec<serde_json::Value> = renamed
            .iter()
            .map(|(from, to)| serde_json::json!({ "name": from, "written_as": to }))
            .collect();
        let out = dir.join("gitvault-renamed.json");
        std::fs::write(&out, serde_json::to_vec_pretty(&list).unwrap_or_default())
            .map_err(io_err(format!("writing {}", out.display())))?;
    }
    if !failed.is_empty() {
        return Err(RestoreError::Io {
            context: format!(
                "{} of {} metadata files could not be written ({written} were): {}",
                failed.len(),
                failed.len() + written,
                failed.join("; ")
            ),
            source: std::io::Error::other("see above"),
        });
    }
    Ok(written)
}

/// File systems refuse names over 255 bytes: a longer path component keeps its first 200 bytes
/// (cut on a character boundary) and its extension, with a hash of the whole name between, so
/// that two long names never meet.
fn shorten_components(rel: &Path) -> PathBuf {
    const MAX: usize = 255;
    const KEEP: usize = 200;
    rel.components()
        .map(|c| {
            let name = c.as_os_str().to_string_lossy();
            if name.len() <= MAX {
                return name.into_owned();
            }
            let ext = Path::new(name.as_ref())
                .extension()
                .map(|e| e.to_string_lossy().into_owned())
                .filter(|e| e.len() <= 16)
                .map(|e| format!(".{e}"))
                .unwrap_or_default();
            let mut cut = KEEP;
            while !name.is_char_boundary(cut) {
                cut -= 1;
            }
            let hash = blake3::hash(name.as_bytes()).to_hex();
            format!("{}-{}{ext}", &name[..cut], &hash[..16])
        })
        .collect()
}

/// Mirrors a restored repository to an (empty) remote with the git CLI (gix cannot push).
/// Credentials go through git's environment-supplied config, never the command line or URL.
/// After a mirror push, uploads the restored repository's LFS objects to `lfs_url`, else the push
/// URL's default LFS endpoint (`lfs.url` of the restored HEAD's `.lfsconfig` is not followed: it
/// names the old server). Returns how many the server did not have.
pub fn push_lfs(
    repo: &Path,
    url: &str,
    lfs_url: Option<&str>,
    credentials: Option<&Credentials>,
) -> Result<u64, RestoreError> {
    let objects = crate::lfs::local_objects(repo);
    if objects.is_empty() {
        return Ok(0);
    }
    let spec = git::parse_remote(url)?;
    let explicit = lfs_url.map(|u| format!("[lfs]\n\turl = {u}\n"));
    let endpoint = crate::lfs::endpoint(&spec.fetch_url, explicit.as_deref().map(str::as_bytes))
        .ok_or_else(|| {
            RestoreError::Lfs(format!(
                "{} has no http(s) LFS endpoint: its {} LFS objects were not uploaded",
                spec.display_url,
                objects.len()
            ))
        })?;
    let creds = credentials.cloned().or(spec.url_credentials);
    // The user named both the push URL and any --push-lfs-url: the credentials may go to
    // that one's origin, never to hrefs elsewhere that the server answers with.
    let client = crate::lfs::Client::new(&endpoint, creds, lfs_url.unwrap_or(url))
        .map_err(|e| RestoreError::Lfs(e.to_string()))?;
    client
        .upload(&objects)
        .map_err(|e| RestoreError::Lfs(e.to_string()))
}

pub fn push_mirror(
    repo: &Path,
    url: &str,
    credentials: Option<&Credentials>,
) -> Result<String, RestoreError> {
    let spec = git::parse_remote(url)?;
    let mut cmd = Command::new("git");
    cmd.arg("-C")
        .arg(repo)
        .args(["push", "--mirror", "--quiet"])
        .arg(&spec.fetch_url);
    cmd.env("GIT_TERMINAL_PROMPT", "0");
    let creds = credentials.cloned().or(spec.url_credentials);
    if let Some(c) = &creds
        && spec.is_http
    {
        if !url::Url::parse(&spec.fetch_url).is_ok_and(|u| git::transport_allows_credentials(&u)) {
            return Err(git::GitError::InsecureCredentials {
                url: spec.display_url,
            }
            .into());
        }
        // git would send the header to wherever the first request is redirected, and use that
        // origin for the rest of the push: no redirects when credentials are attached.
        let header = c.authorization_header();
        cmd.env("GIT_CONFIG_COUNT", "2")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env("GIT_CONFIG_VALUE_0", header)
            .env("GIT_CONFIG_KEY_1", "http.followRedirects")
            .env("GIT_CONFIG_VALUE_1", "false");
    }
    let out = cmd.output().map_err(io_err("running git push"))?;
    if !out.status.success() {
        let mut msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if let Some(c) = &creds {
            msg = c.scrub(&msg);
        }
        return Err(RestoreError::Push(msg));
    }
    Ok(spec.display_url.to_string())
}

/// Runs `git fsck --full` on a restored repository and compares its refs and HEAD with the
/// snapshot's; returns the problems found (empty when all is well).
pub fn check_restored(repo: &Path, refs: &RefSet) -> Vec<String> {
    let mut problems = Vec::new();
    match Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["fsck", "--full", "--no-dangling"])
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => problems.push(format!(
            "git fsck --full failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => problems.push(format!("cannot run git fsck: {e}")),
    }
    match Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["for-each-ref", "--format=%(objectname) %(refname)"])
        .output()
    {
        Ok(out) if out.status.success() => {
            let actual: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            let expected: Vec<String> = refs.refs.iter().map(|(n, o)| format!("{o} {n}")).collect();
            if actual != expected {
                problems.push(format!(
                    "refs differ from the snapshot: {} restored, {} expected",
                    actual.len(),
                    expected.len()
                ));
            }
        }
        Ok(out) => problems.push(format!(
            "git for-each-ref failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => problems.push(format!("cannot run git for-each-ref: {e}")),
    }
    if let Some(snapshot::Head::Symbolic(target)) = &refs.head {
        let head = std::fs::read_to_string(repo.join("HEAD")).unwrap_or_default();
        if head.trim() != format!("ref: {target}") {
            problems.push(format!(
                "HEAD is `{}`, the snapshot says `ref: {target}`",
                head.trim()
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_names_are_shortened_distinctly() {
        let long_a = format!("releases/v1/{}é.tar.gz", "a".repeat(300));
        let long_b = format!("releases/v1/{}b.tar.gz", "a".repeat(300));
        let a = super::shorten_components(std::path::Path::new(&long_a));
        let b = super::shorten_components(std::path::Path::new(&long_b));
        assert_ne!(a, b);
        for p in [&a, &b] {
            assert!(p.components().all(|c| c.as_os_str().len() <= 255));
            assert!(p.to_string_lossy().starts_with("releases/v1/aaaa"));
            assert!(p.to_string_lossy().ends_with(".gz"));
        }
        let short = std::path::Path::new("issues/1.json");
        assert_eq!(super::shorten_components(short), short);
    }
}
