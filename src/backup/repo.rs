//! One repository: resolve the URL, fetch (one advertisement; nothing more when the ref set is
//! unchanged), walk and ingest the new objects, LFS and metadata, then the snapshot. Failures
//! end in the report, never in a panic or an early exit, so one repository cannot stop the
//! others.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use super::writer::{PendingSnapshot, Writer, WriterHandle};
use super::{BackupError, BackupRequest, Reason, RepoReport, RepoStatus, lfs, metadata};
use crate::crypto::{ChunkId, VaultKeys};
use crate::git::objects::{ObjectSource, Reached, walk};
use crate::git::previous::previous_versions;
use crate::git::{self, CacheReader, Credentials, FetchResult, RemoteSpec};
use crate::index::SnapshotRow;
use crate::progress::{Progress, Unit};
use crate::provider::{Provider, ProviderError, RepoInfo};
use crate::snapshot::{self, Manifest, ObjectEntry, ObjectKind, Oid, RefSet};
use crate::store::{ChunkKind, DeltaBase};
use crate::vault::Vault;
use crate::vault::target_lock::LockTiming;

/// A blob that is an LFS pointer, and what it points to.
pub(super) type PointerBlob = (Oid, crate::lfs::Pointer);

/// The repository as this run names and reaches it.
pub(super) struct Remote {
    pub(super) spec: RemoteSpec,
    pub(super) name: String,
    pub(super) credentials: Option<Credentials>,
    /// The mirror cache the fetch negotiates against.
    pub(super) cache: PathBuf,
}

/// Backs up one repository, with its platform metadata when `metadata` names the provider
/// and its listing entry.
pub(super) fn backup_repository(
    vault: &Vault,
    keys: &VaultKeys,
    writer: &Mutex<Writer<'_>>,
    request: &BackupRequest,
    metadata: Option<(&mut dyn Provider, &RepoInfo)>,
    progress: &dyn Progress,
) -> RepoReport {
    let started = Instant::now();
    crate::hooks::point("backup-repository-started");
    let mut handle = WriterHandle::new(writer);
    let mut report = RepoReport::for_request(request, RepoStatus::Failed);
    let result = run(
        vault,
        keys,
        &mut handle,
        request,
        metadata,
        progress,
        &mut report,
    );
    progress.done(&report.repo);
    report.seconds = started.elapsed().as_secs_f64();
    report.bytes_uploaded = handle.uploaded;
    report.bytes_added = handle.raw_added;
    let snapshot_kept = matches!(result, Ok(()) | Err(BackupError::RateLimited { .. }));
    if snapshot_kept && !vault.config().cache.keep {
        // Only after a snapshot: a failed run's cache keeps what it fetched for the next one.
        super::cache::drop_after_backup(&super::cache::cache_path(vault, &report.repo));
    }
    match result {
        Ok(()) => {}
        // The snapshot was kept: the line stays partial.
        Err(e @ BackupError::RateLimited { .. }) => {
            report.reason = Some(e.reason());
            report.error = Some(e.to_string());
        }
        Err(e) => {
            let message = scrub(request, e.to_string());
            tracing::debug!(repo = %report.repo, error = %message, "backup failed");
            report.set(RepoStatus::Failed, e.reason(), message);
        }
    }
    report
}

/// Messages of lower layers (gix, reqwest) are not ours to trust: the secrets are removed once
/// more, the URL's own password included.
fn scrub(request: &BackupRequest, mut message: String) -> String {
    let url_credentials = git::parse_remote(&request.url)
        .ok()
        .and_then(|s| s.url_credentials);
    for c in request.credentials.iter().chain(url_credentials.iter()) {
        message = c.scrub(&message);
    }
    message
}

fn run(
    vault: &Vault,
    keys: &VaultKeys,
    handle: &mut WriterHandle<'_, '_>,
    request: &BackupRequest,
    metadata: Option<(&mut dyn Provider, &RepoInfo)>,
    progress: &dyn Progress,
    report: &mut RepoReport,
) -> Result<(), BackupError> {
    let remote = resolve(vault, request, report)?;
    let previous = vault.index().snapshot_as_of(&remote.name, None)?;
    progress.phase(&report.repo, "fetch", None, Unit::Objects);
    let fetched = fetch(vault, keys, &remote, previous.as_ref(), report, progress)?;
    let refset_bytes = fetched.refs.encode();
    let refset = keys.id_key().chunk_id(&refset_bytes);
    let mut unchanged = previous.as_ref().is_some_and(|p| p.refset == refset);
    let mut previous = previous;
    // Held until this repository's snapshot is durable (`record` flushes changed ones).
    let _lease = if unchanged {
        None
    } else {
        let lease = vault.lease_repository(keys, &remote.name, LockTiming::from_environment())?;
        if lease.waited {
            // Another host stored this repository meanwhile: what it stored is not new.
            handle.with(|_| vault.catch_up(keys, &crate::progress::Silent))?;
            previous = vault.index().snapshot_as_of(&remote.name, None)?;
            unchanged = previous.as_ref().is_some_and(|p| p.refset == refset);
        }
        Some(lease)
    };
    let (new_objects, pointers) = if unchanged {
        Default::default()
    } else {
        ingest(
            vault,
            handle,
            &remote.cache,
            &fetched.refs,
            (&report.repo, progress),
        )?
    };
    let previous = previous.as_ref().map(|p| &p.manifest);
    let lfs = lfs::backup_lfs(
        vault,
        handle,
        &remote,
        &fetched.refs,
        previous,
        pointers,
        (&report.repo, progress),
    )?;
    report.lfs_objects_stored = lfs.stored.len() as u64;
    report.lfs_missing = lfs.missing;
    let object_maps = store_object_map(handle, &new_objects)?;
    let exported = metadata::export(handle, metadata, previous)?;
    report.metadata_documents = exported.documents;
    let manifest = Manifest {
        format: 1,
        repo: remote.name.clone(),
        time: snapshot_time()?,
        source: remote.spec.display_url.to_string(),
        refset: refset.to_hex(),
        ref_count: fetched.refs.refs.len(),
        head: fetched.refs.head.clone(),
        object_maps,
        objects_added: new_objects.len() as u64,
        metadata: exported.map,
        lfs: lfs.map,
        source_name: request.source.clone(),
    };
    let manifest_bytes = manifest.encode();
    let pending = PendingSnapshot {
        repo: remote.name.clone(),
        time: manifest.time,
        manifest: keys.id_key().chunk_id(&manifest_bytes),
        refset,
        head: head_text(&fetched.refs),
        ref_count: fetched.refs.refs.len() as u64,
        source: remote.spec.display_url.to_string(),
        new_objects,
        new_lfs: lfs.stored,
    };
    report.snapshot = Some(pending.id());
    report.objects_added = pending.new_objects.len() as u64;
    record(
        vault,
        handle,
        &refset_bytes,
        &manifest_bytes,
        pending,
        unchanged,
    )?;
    judge(report, unchanged, exported.error)
}

/// Names the repository and picks its credentials: the request's, else the URL's own.
fn resolve(
    vault: &Vault,
    request: &BackupRequest,
    report: &mut RepoReport,
) -> Result<Remote, BackupError> {
    let spec = git::parse_remote(&request.url)?;
    let name = request
        .name
        .clone()
        .unwrap_or_else(|| spec.default_name.clone());
    report.repo = name.clone();
    report.url = spec.display_url.clone();
    snapshot::check_repo_name(&name)?;
    let credentials = request
        .credentials
        .clone()
        .or_else(|| spec.url_credentials.clone());
    let cache = super::cache::cache_path(vault, &name);
    Ok(Remote {
        spec,
        name,
        credentials,
        cache,
    })
}

/// One advertisement, and the objects of the refs unless they are the previous snapshot's.
fn fetch(
    vault: &Vault,
    keys: &VaultKeys,
    remote: &Remote,
    previous: Option<&SnapshotRow>,
    report: &mut RepoReport,
    progress: &dyn Progress,
) -> Result<FetchResult, BackupError> {
    let id_key = keys.id_key();
    let job = report.repo.clone();
    let phase = Instant::now();
    // A missing cache (dropped, or damaged and deleted) is rebuilt from the previous snapshot,
    // so that the fetch negotiates with its tips and receives only what is new. Failing that,
    // the fetch is a full one: slower, nothing lost.
    let seed = |cache: &std::path::Path| -> bool {
        let Some(previous) = previous else {
            return false;
        };
        let started = Instant::now();
        let rebuilt = super::cache::rebuild(vault, keys, previous, cache, (&job, progress));
        progress.phase(&job, "fetch", None, Unit::Objects);
        match rebuilt {
            Ok(objects) => {
                tracing::info!(repo = %remote.name, objects, seconds = started.elapsed().as_secs_f64(), "rebuilt the mirror cache from the vault");
                true
            }
            Err(e) => {
                tracing::warn!(repo = %remote.name, error = %e, "could not rebuild the mirror cache from the vault; fetching everything again");
                false
            }
        }
    };
    let fetched = git::fetch(
        &remote.spec,
        &remote.cache,
        remote.credentials.as_ref(),
        |refs| previous.is_some_and(|p| p.refset == id_key.chunk_id(&refs.encode())),
        &seed,
        (&job, progress),
    )?;
    tracing::info!(repo = %remote.name, seconds = phase.elapsed().as_secs_f64(), objects = fetched.objects_received, "fetched");
    report.refs = fetched.refs.refs.len();
    report.objects_received = fetched.objects_received;
    Ok(fetched)
}

fn store_object_map(
    handle: &mut WriterHandle<'_, '_>,
    new_objects: &[ObjectEntry],
) -> Result<Vec<String>, BackupError> {
    if new_objects.is_empty() {
        return Ok(Vec::new());
    }
    let map = snapshot::encode_object_map(new_objects);
    let id = handle.with(|w| w.store.put(ChunkKind::ObjectMap, &map))?;
    Ok(vec![id.to_hex()])
}

/// Writes the ref set and manifest chunks and queues the snapshot's row.
fn record(
    vault: &Vault,
    handle: &mut WriterHandle<'_, '_>,
    refset_bytes: &[u8],
    manifest_bytes: &[u8],
    pending: PendingSnapshot,
    unchanged: bool,
) -> Result<(), BackupError> {
    handle.with(|w| -> Result<(), BackupError> {
        w.store.put_chunk(ChunkKind::RefSet, refset_bytes)?;
        w.store.put_chunk(ChunkKind::Manifest, manifest_bytes)?;
        w.deferred.waiting.push(pending);
        if !unchanged {
            // Invariant 2: every pack this snapshot needs is durable before the row exists.
            // Unchanged repositories wait for the next flush, so that a run over many of them
            // writes one small pack instead of one per repository.
            w.commit_deferred(vault)?;
        }
        Ok(())
    })
}

/// The line's status once the snapshot is queued: missing LFS objects or a failed metadata
/// export make it partial; a rate limit also stops the source (the caller sees the error).
fn judge(
    report: &mut RepoReport,
    unchanged: bool,
    metadata_error: Option<ProviderError>,
) -> Result<(), BackupError> {
    report.status = if unchanged {
        RepoStatus::Unchanged
    } else {
        RepoStatus::Changed
    };
    if !report.lfs_missing.is_empty() {
        let error = format!(
            "{} LFS objects could not be backed up: {}",
            report.lfs_missing.len(),
            report.lfs_missing.join("; ")
        );
        report.set(RepoStatus::Partial, Reason::Lfs, error);
    }
    if let Some(e) = metadata_error {
        report.set(
            RepoStatus::Partial,
            Reason::Metadata,
            format!("metadata: {e}"),
        );
        if let ProviderError::RateLimited { until } = e {
            return Err(BackupError::RateLimited { until });
        }
    }
    Ok(())
}

/// Objects the walk may skip: those the vault already has (with their whole closure).
struct CacheSource<'a> {
    cache: &'a CacheReader,
    vault: &'a Vault,
    /// Packs are missing from every target: the closure of a known object may pass through
    /// one, so nothing is skipped (each object is then judged by itself in `ingest`).
    damaged: bool,
}

impl ObjectSource for CacheSource<'_> {
    type Error = BackupError;
    fn read(&mut self, oid: &Oid) -> Result<(ObjectKind, Vec<u8>), BackupError> {
        Ok(self.cache.read(oid)?)
    }
    fn known(&mut self, oid: &Oid) -> Result<bool, BackupError> {
        Ok(!self.damaged && self.vault.index().has_git_object(oid)?)
    }
}

/// With packs missing: whether the vault's copy of `oid` reads back without them (its
/// chunk, a delta's bases, a chunk list's parts); if not, it is stored again.
fn held_intact(vault: &Vault, w: &Writer<'_>, oid: &Oid) -> Result<bool, BackupError> {
    match vault.index().git_object(oid)? {
        Some((_, chunk)) => Ok(w.store.intact(&chunk, w.store.avoided())?),
        None => Ok(false),
    }
}

/// Objects, and bytes of them, read ahead of the store.
const READ_AHEAD: usize = 256;
const READ_AHEAD_BYTES: usize = 32 << 20;

/// Stores every object reachable from the refs that the vault lacks; returns their entries
/// and the LFS pointers among them.
fn ingest(
    vault: &Vault,
    handle: &mut WriterHandle<'_, '_>,
    cache: &std::path::Path,
    refs: &RefSet,
    (job, progress): (&str, &dyn Progress),
) -> Result<(Vec<ObjectEntry>, Vec<PointerBlob>), BackupError> {
    let damaged = handle.with(|w| !w.store.avoided().is_empty());
    let (reached, bases) = {
        let reader = CacheReader::open(cache)?;
        let mut tips: Vec<Oid> = refs.refs.values().copied().collect();
        tips.sort();
        tips.dedup();
        let mut source = CacheSource {
            cache: &reader,
            vault,
            damaged,
        };
        let phase = Instant::now();
        progress.phase(job, "walk", None, Unit::Objects);
        let mut reached = walk(&mut source, &tips)?;
        reached.sort_by_key(Reached::group_key);
        tracing::info!(
            seconds = phase.elapsed().as_secs_f64(),
            objects = reached.len(),
            "walked new objects"
        );
        // No deltas while packs are missing: a base's chain could pass through one.
        let bases = if damaged {
            Default::default()
        } else {
            previous_versions(&mut source, &reached)?
        };
        // Dropped here: the reading thread opens its own, and two would map the cache's packs
        // (and fill an object cache) twice.
        (reached, bases)
    };
    let phase = Instant::now();
    let mut pointers = Vec::new();
    progress.phase(job, "store", Some(reached.len() as u64), Unit::Objects);
    // Reading from the mirror cache (inflating, resolving git's deltas) runs on a thread of
    // its own while this one hashes, compresses, encrypts and indexes.
    let (tx, rx) = crate::flow::bounded(READ_AHEAD, READ_AHEAD_BYTES);
    let entries = std::thread::scope(|scope| {
        let (reached, bases) = (&reached, &bases);
        scope.spawn(move || {
            let reader = match CacheReader::open_for_one_pass(cache) {
                Ok(reader) => reader,
                Err(e) => {
                    let _ = tx.send(Err(e), 0);
                    return;
                }
            };
            for r in reached {
                let object = read_with_base(&reader, r, bases);
                let size = object.as_ref().map_or(0, CacheObject::size);
                let failed = object.is_err();
                // A closed channel: the store stopped (an error of its own).
                if tx.send(object, size).is_err() || failed {
                    break;
                }
            }
        });
        handle.with(|w| -> Result<_, BackupError> {
            let mut entries = Vec::with_capacity(reached.len());
            for r in reached {
                let object = rx.recv().ok_or(BackupError::ReaderStopped)??;
                if damaged && held_intact(vault, w, &r.oid)? {
                    progress.advance(job, 1);
                    continue;
                }
                let (kind, data) = (object.kind, &object.data);
                if kind == ObjectKind::Blob
                    && let Some(p) = crate::lfs::parse_pointer(data)
                {
                    pointers.push((r.oid, p));
                }
                let chunk = match &object.base {
                    Some((base, content)) => put_against(vault, w, base, content, kind, data)?,
                    None => w.store.put(kind.chunk_kind(), data)?,
                };
                entries.push(ObjectEntry {
                    oid: r.oid,
                    kind,
                    chunk,
                });
                progress.advance(job, 1);
            }
            Ok(entries)
        })
    })?;
    tracing::info!(seconds = phase.elapsed().as_secs_f64(), "stored objects");
    Ok((entries, pointers))
}

/// An object read from the mirror cache, with the content of the previous version of its
/// path when there is one of the same kind.
struct CacheObject {
    kind: ObjectKind,
    data: Vec<u8>,
    base: Option<(Oid, Vec<u8>)>,
}

impl CacheObject {
    fn size(&self) -> usize {
        self.data.len() + self.base.as_ref().map_or(0, |(_, b)| b.len())
    }
}

fn read_with_base(
    reader: &CacheReader,
    r: &Reached,
    bases: &std::collections::HashMap<u64, Oid>,
) -> Result<CacheObject, git::GitError> {
    let (kind, data) = reader.read(&r.oid)?;
    let base = bases
        .get(&r.path_hash)
        .filter(|b| **b != r.oid)
        .and_then(|b| match reader.read(b) {
            Ok((k, content)) if k == kind => Some((*b, content)),
            _ => None,
        });
    Ok(CacheObject { kind, data, base })
}

/// Stores a new version of a path as a delta against `base` (whose content the mirror cache
/// gave), the version the vault holds; whole when the base cannot serve (not stored as that
/// kind, a chunk list, a chain at its limit, or a base that does not read back).
fn put_against(
    vault: &Vault,
    w: &mut Writer<'_>,
    base: &Oid,
    content: &[u8],
    kind: ObjectKind,
    data: &[u8],
) -> Result<ChunkId, BackupError> {
    let stored = match vault.index().git_object_chunk(base)? {
        Some(object) if object.kind == kind => object.chunk,
        _ => return Ok(w.store.put(kind.chunk_kind(), data)?),
    };
    let depth = match w.store.delta_depth(&stored) {
        Ok(Some(depth)) => depth,
        Ok(None) => return Ok(w.store.put(kind.chunk_kind(), data)?),
        Err(e) => {
            tracing::debug!(base = %base, error = %e, "delta base unreadable; storing whole");
            return Ok(w.store.put(kind.chunk_kind(), data)?);
        }
    };
    let base = DeltaBase {
        id: stored,
        depth,
        content,
    };
    Ok(w.store.put_against(kind.chunk_kind(), data, &base)?)
}

/// The manifest stored under `id`, if it reads back.
pub(super) fn read_manifest(w: &Writer<'_>, id: &ChunkId) -> Option<Manifest> {
    Manifest::decode(&w.store.get(id).ok()?).ok()
}

/// The moment a snapshot is recorded at: now, or `GITVAULT_NOW` (RFC 3339) when a test or a
/// replay of history needs snapshots dated in the past.
fn snapshot_time() -> Result<chrono::DateTime<chrono::Utc>, BackupError> {
    match std::env::var("GITVAULT_NOW") {
        Ok(text) => {
            let time = snapshot::parse_date(&text)?;
            // A snapshot from the future would be every later "as of" answer and the anchor
            // of `--keep-within`.
            if time > chrono::Utc::now() + chrono::Duration::days(1) {
                return Err(snapshot::SnapshotError::BadDate(format!(
                    "{text} (GITVAULT_NOW lies in the future)"
                ))
                .into());
            }
            Ok(time)
        }
        Err(_) => Ok(chrono::Utc::now()),
    }
}

fn head_text(refs: &RefSet) -> Option<String> {
    refs.head.as_ref().map(|h| match h {
        snapshot::Head::Symbolic(t) => t.clone(),
        snapshot::Head::Detached(oid) => oid.clone(),
    })
}
