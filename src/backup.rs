//! Backing up one repository: one ref advertisement, a negotiated fetch into the mirror cache
//! (skipped when the ref set is the one already in the vault), a walk from the advertised tips to
//! every object the vault lacks, ingest of those objects grouped for compression, and the
//! snapshot: object map, ref set and manifest in the packs, then one index transaction.
//!
//! Invariant kept here: an object is in the index's `git_objects` only if everything it reaches
//! is in the vault. Objects are recorded together with the snapshot row, after every pack is
//! durable, so a crash or a failure never leaves a half-ingested closure behind.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde::Serialize;

use crate::crypto::VaultKeys;
use crate::git::objects::{ObjectSource, Reached, walk};
use crate::git::{self, CacheReader, Credentials, GitError};
use crate::index::NewSnapshot;
use crate::provider::{MetadataMap, MetadataSink, Provider, ProviderError, RepoInfo, SourceConfig};
use crate::redact::RedactedUrl;
use crate::snapshot::{self, Manifest, ObjectEntry, ObjectKind, Oid, RefSet};
use crate::store::{ChunkKind, ChunkReader, ChunkStore, StoreError};
use crate::vault::Vault;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error("LFS: {0}")]
    Lfs(String),
    #[error(
        "metadata: rate limited until {until}; run again after that time to resume (the git snapshot was kept)"
    )]
    RateLimited {
        until: chrono::DateTime<chrono::Utc>,
        snapshot_kept: bool,
    },
}

impl From<git::objects::ObjectError> for BackupError {
    fn from(e: git::objects::ObjectError) -> Self {
        BackupError::Git(GitError::Object(e))
    }
}

/// What the user asked for one repository.
pub struct BackupRequest {
    pub url: String,
    pub name: Option<String>,
    pub credentials: Option<Credentials>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RepoStatus {
    /// New objects were stored.
    Changed,
    /// The advertised refs equal the last snapshot's: nothing fetched.
    Unchanged,
    /// The git data was backed up but the metadata export failed (previous metadata kept).
    Partial,
    /// Not attempted (the run stopped early, e.g. rate limited), or no wiki exists.
    Skipped,
    Failed,
}

/// One line of the run report.
#[derive(Debug, Clone, Serialize)]
pub struct RepoReport {
    /// The vault name; for a URL that could not be named, its redacted text.
    pub repo: String,
    pub url: RedactedUrl,
    pub status: RepoStatus,
    pub snapshot: Option<String>,
    pub refs: usize,
    pub objects_received: u64,
    pub objects_added: u64,
    /// Bytes uploaded to targets for this repository (all replicas).
    pub bytes_uploaded: u64,
    /// New unique bytes (before compression) this repository added to the vault.
    pub bytes_added: u64,
    pub seconds: f64,
    pub metadata_documents: Option<usize>,
    /// LFS objects downloaded and stored by this run.
    pub lfs_objects_stored: u64,
    /// LFS objects the server could not provide (or provided wrong): `oid: reason`.
    pub lfs_missing: Vec<String>,
    pub error: Option<String>,
}

/// The single writer of a run: the chunk store and the snapshots waiting for a flush. A
/// parallel run shares it between its workers behind a mutex; network work (advertisement,
/// fetch, API requests) and the walk happen outside the lock, storing inside it.
pub struct Writer<'v> {
    pub store: ChunkStore<'v>,
    pub deferred: Deferred,
}

impl<'v> Writer<'v> {
    pub fn new(store: ChunkStore<'v>) -> Writer<'v> {
        Writer {
            store,
            deferred: Deferred::default(),
        }
    }
}

/// What one repository's own store calls added: measured inside each locked section, so that
/// workers running side by side do not count each other's bytes.
#[derive(Default)]
struct Tally {
    raw_added: u64,
    uploaded: u64,
}

fn locked<'v, T>(
    writer: &Mutex<Writer<'v>>,
    tally: &mut Tally,
    f: impl FnOnce(&mut Writer<'v>) -> T,
) -> T {
    // A worker that panicked while storing cannot have recorded a snapshot (rows are written
    // only after a flush), so the others may go on.
    let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
    let before = (
        w.store.report().raw_bytes_added,
        w.store.report().bytes_uploaded,
    );
    let out = f(&mut w);
    tally.raw_added += w.store.report().raw_bytes_added - before.0;
    tally.uploaded += w.store.report().bytes_uploaded - before.1;
    out
}

/// Objects the walk may skip: those the vault already has (with their whole closure).
struct CacheSource<'a> {
    cache: &'a CacheReader,
    vault: &'a Vault,
}

impl ObjectSource for CacheSource<'_> {
    type Error = BackupError;
    fn read(&mut self, oid: &Oid) -> Result<(ObjectKind, Vec<u8>), BackupError> {
        Ok(self.cache.read(oid)?)
    }
    fn known(&mut self, oid: &Oid) -> Result<bool, BackupError> {
        Ok(self.vault.index().has_git_object(oid)?)
    }
}

/// Backs up one repository. Failures are returned in the report, never as a panic or an early
/// exit, so that one repository cannot stop the others.
pub fn backup_repository(
    vault: &Vault,
    keys: &VaultKeys,
    writer: &Mutex<Writer<'_>>,
    request: &BackupRequest,
    metadata: Option<(&mut dyn Provider, &RepoInfo)>,
) -> RepoReport {
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut report = RepoReport::for_request(request, RepoStatus::Failed, None);
    let result = run(
        vault,
        keys,
        writer,
        &mut tally,
        request,
        metadata,
        &mut report,
    );
    report.seconds = started.elapsed().as_secs_f64();
    report.bytes_uploaded = tally.uploaded;
    report.bytes_added = tally.raw_added;
    if let Err(BackupError::RateLimited { .. }) = &result {
        let message = result.err().map(|e| e.to_string()).unwrap_or_default();
        report.error = Some(message);
        return report;
    }
    if let Err(e) = result {
        // Messages of lower layers (gix, reqwest) are not ours to trust: the secrets are
        // removed once more, the URL's own password included.
        let mut message = e.to_string();
        let url_credentials = git::parse_remote(&request.url)
            .ok()
            .and_then(|s| s.url_credentials);
        for c in request.credentials.iter().chain(url_credentials.iter()) {
            message = c.scrub(&message);
        }
        tracing::debug!(repo = %report.repo, error = %message, "backup failed");
        report.status = RepoStatus::Failed;
        report.error = Some(message);
    }
    report
}

fn cache_path(vault: &Vault, repo: &str) -> PathBuf {
    let digest = blake3::hash(repo.as_bytes()).to_hex();
    vault.cache_dir().join(format!("{}.git", &digest[..24]))
}

fn run(
    vault: &Vault,
    keys: &VaultKeys,
    writer: &Mutex<Writer<'_>>,
    tally: &mut Tally,
    request: &BackupRequest,
    metadata: Option<(&mut dyn Provider, &RepoInfo)>,
    report: &mut RepoReport,
) -> Result<(), BackupError> {
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
    let previous = vault.index().snapshot_as_of(&name, None)?;
    let cache = cache_path(vault, &name);
    let id_key = keys.id_key();

    let phase = Instant::now();
    let fetched = git::fetch(&spec, &cache, credentials.as_ref(), |refs| {
        previous
            .as_ref()
            .is_some_and(|p| p.refset == id_key.chunk_id(&refs.encode()))
    })?;
    tracing::info!(repo = %name, seconds = phase.elapsed().as_secs_f64(), objects = fetched.objects_received, "fetched");
    report.refs = fetched.refs.refs.len();
    report.objects_received = fetched.objects_received;
    let refset_bytes = fetched.refs.encode();
    let refset_id = id_key.chunk_id(&refset_bytes);
    let unchanged = previous.as_ref().is_some_and(|p| p.refset == refset_id);

    let mut new_objects = Vec::new();
    let mut pointers = Vec::new();
    if !unchanged {
        (new_objects, pointers) = ingest(vault, writer, tally, &cache, &fetched.refs)?;
    }
    // LFS objects of the new pointer blobs, carried with the previous snapshot's.
    let previous_lfs = match &previous {
        Some(p) => locked(writer, tally, |w| previous_lfs_map(&w.store, &p.manifest)),
        None => None,
    };
    // Entries whose object the server could not give are kept as missing and asked for again
    // on every run, changed or not, until it does.
    let (missing_before, mut lfs_entries): (Vec<_>, Vec<_>) = previous_lfs
        .unwrap_or_default()
        .into_iter()
        .partition(|e| e.chunk == crate::lfs::MISSING);
    pointers.extend(missing_before.iter().map(|e| (e.blob, e.pointer)));
    let mut new_lfs = Vec::new();
    if !pointers.is_empty() {
        let lfsconfig = head_lfsconfig(&cache, &fetched.refs);
        let outcome = fetch_lfs(
            vault,
            writer,
            tally,
            &spec.display_url,
            &spec.fetch_url,
            lfsconfig.as_deref(),
            credentials.as_ref(),
            &pointers,
        )?;
        let failed = outcome.failed(&pointers);
        report.lfs_objects_stored = outcome.stored.len() as u64;
        report.lfs_missing = outcome.missing;
        new_lfs = outcome.stored;
        lfs_entries.extend(outcome.known);
        lfs_entries.extend(new_lfs.iter().copied());
        lfs_entries.extend(
            failed
                .into_iter()
                .map(|(blob, pointer)| crate::lfs::LfsEntry {
                    blob,
                    pointer,
                    chunk: crate::lfs::MISSING,
                }),
        );
    }
    let mut lfs_map = None;
    if !lfs_entries.is_empty() {
        let bytes = crate::lfs::encode_map(&lfs_entries);
        lfs_map = Some(locked(writer, tally, |w| w.store.put(ChunkKind::LfsMap, &bytes))?.to_hex());
    }
    let mut object_maps = Vec::new();
    if !new_objects.is_empty() {
        let map = snapshot::encode_object_map(&new_objects);
        object_maps
            .push(locked(writer, tally, |w| w.store.put(ChunkKind::ObjectMap, &map))?.to_hex());
    }
    let mut metadata_id = None;
    let mut metadata_error = None;
    if let Some((provider, repo)) = metadata {
        let previous_map = match &previous {
            Some(p) => locked(writer, tally, |w| previous_metadata(&w.store, &p.manifest)),
            None => None,
        };
        let mut sink = StoreSink {
            writer,
            tally: &mut *tally,
        };
        let exported = provider.export_metadata(repo, previous_map.as_ref(), &mut sink);
        let map = match exported {
            Ok(map) => {
                report.metadata_documents = Some(map.documents.len());
                Some(map)
            }
            Err(e) => {
                // Keep the git snapshot; carry the previous metadata over unchanged.
                metadata_error = Some(e);
                previous_map
            }
        };
        if let Some(map) = map {
            let json = serde_json::to_vec(&map).unwrap_or_default();
            metadata_id =
                Some(locked(writer, tally, |w| w.store.put(ChunkKind::Metadata, &json))?.to_hex());
        }
    }
    let manifest = Manifest {
        format: 1,
        repo: name.clone(),
        time: snapshot_time()?,
        source: spec.display_url.to_string(),
        refset: refset_id.to_hex(),
        ref_count: fetched.refs.refs.len(),
        head: fetched.refs.head.clone(),
        object_maps,
        objects_added: new_objects.len() as u64,
        metadata: metadata_id,
        lfs: lfs_map,
    };
    let manifest_bytes = manifest.encode();
    let pending = PendingSnapshot {
        repo: name.clone(),
        time: manifest.time,
        manifest: id_key.chunk_id(&manifest_bytes),
        refset: refset_id,
        head: head_text(&fetched.refs),
        ref_count: fetched.refs.refs.len() as u64,
        source: spec.display_url.to_string(),
        new_objects,
        new_lfs,
    };
    report.snapshot = Some(pending.id());
    report.objects_added = pending.new_objects.len() as u64;
    locked(writer, tally, |w| -> Result<(), BackupError> {
        w.store.put_chunk(ChunkKind::RefSet, &refset_bytes)?;
        w.store.put_chunk(ChunkKind::Manifest, &manifest_bytes)?;
        w.deferred.waiting.push(pending);
        if !unchanged {
            // Invariant 2: every pack this snapshot needs is durable before the row exists.
            // Unchanged repositories wait for the next flush, so that a run over many of them
            // writes one small pack instead of one per repository.
            commit_deferred(vault, w)?;
        }
        Ok(())
    })?;
    report.status = if unchanged {
        RepoStatus::Unchanged
    } else {
        RepoStatus::Changed
    };
    if !report.lfs_missing.is_empty() {
        report.status = RepoStatus::Partial;
        report.error = Some(format!(
            "{} LFS objects could not be backed up: {}",
            report.lfs_missing.len(),
            report.lfs_missing.join("; ")
        ));
    }
    if let Some(e) = metadata_error {
        report.status = RepoStatus::Partial;
        report.error = Some(format!("metadata: {e}"));
        if let ProviderError::RateLimited { until } = e {
            return Err(BackupError::RateLimited {
                until,
                snapshot_kept: true,
            });
        }
    }
    Ok(())
}

/// A snapshot whose chunks are written but whose row waits for the packs to be durable.
pub struct PendingSnapshot {
    repo: String,
    time: chrono::DateTime<chrono::Utc>,
    manifest: crate::crypto::ChunkId,
    refset: crate::crypto::ChunkId,
    head: Option<String>,
    ref_count: u64,
    source: String,
    new_objects: Vec<ObjectEntry>,
    new_lfs: Vec<crate::lfs::LfsEntry>,
}

impl PendingSnapshot {
    fn id(&self) -> String {
        self.manifest.to_hex()[..16].to_string()
    }
}

/// Snapshots not yet recorded; `commit_deferred` records them. When a flush fails, the waiting
/// snapshots are dropped (their chunks may not be durable) and their repositories listed in
/// `lost`, so that the run report can say they failed.
#[derive(Default)]
pub struct Deferred {
    waiting: Vec<PendingSnapshot>,
    pub lost: Vec<String>,
}

/// Makes every pending snapshot durable and records it: flush, then one row each.
pub fn commit_deferred(vault: &Vault, writer: &mut Writer<'_>) -> Result<(), BackupError> {
    let Writer { store, deferred } = writer;
    if deferred.waiting.is_empty() {
        return Ok(());
    }
    if let Err(e) = store.flush() {
        deferred
            .lost
            .extend(deferred.waiting.drain(..).map(|p| p.repo));
        return Err(e.into());
    }
    crate::hooks::point("before-snapshot-commit");
    for p in deferred.waiting.drain(..) {
        vault.index().insert_snapshot(&NewSnapshot {
            repo: &p.repo,
            time: p.time,
            manifest: p.manifest,
            refset: p.refset,
            head: p.head.clone(),
            ref_count: p.ref_count,
            source: &p.source,
            new_objects: &p.new_objects,
            new_lfs: &p.new_lfs,
        })?;
    }
    Ok(())
}

/// The LFS map of a previous snapshot, if it has one and it reads back.
fn previous_lfs_map(
    store: &ChunkReader<'_>,
    manifest: &crate::crypto::ChunkId,
) -> Option<Vec<crate::lfs::LfsEntry>> {
    let manifest = Manifest::decode(&store.get(manifest).ok()?).ok()?;
    let id: crate::crypto::ChunkId = manifest.lfs?.parse().ok()?;
    crate::lfs::decode_map(&store.get(&id).ok()?).ok()
}

/// `.lfsconfig` at the top of HEAD's tree, where a repository names its LFS server.
fn head_lfsconfig(cache: &std::path::Path, refs: &RefSet) -> Option<Vec<u8>> {
    let reader = CacheReader::open(cache).ok()?;
    let tip = match refs.head.as_ref()? {
        snapshot::Head::Symbolic(target) => *refs.refs.get(target)?,
        snapshot::Head::Detached(oid) => Oid::from_hex(oid)?,
    };
    let (_, commit) = reader.read(&tip).ok()?;
    let info = git::objects::parse_commit(tip, &commit).ok()?;
    let (_, tree) = reader.read(&info.tree).ok()?;
    let entry = git::objects::parse_tree(info.tree, &tree)
        .ok()?
        .into_iter()
        .find(|e| e.name == b".lfsconfig")?;
    let (_, bytes) = reader.read(&entry.oid).ok()?;
    Some(bytes)
}

/// What fetching a run's LFS objects gave.
struct LfsOutcome {
    /// Objects the vault held already.
    known: Vec<crate::lfs::LfsEntry>,
    /// Objects downloaded, verified and stored now.
    stored: Vec<crate::lfs::LfsEntry>,
    /// `oid: reason` for the rest.
    missing: Vec<String>,
}

impl LfsOutcome {
    /// The pointers whose objects are not in the vault after this run.
    fn failed(&self, pointers: &[PointerBlob]) -> Vec<PointerBlob> {
        let have: std::collections::HashSet<[u8; 32]> = self
            .known
            .iter()
            .chain(&self.stored)
            .map(|e| e.pointer.sha256)
            .collect();
        pointers
            .iter()
            .filter(|(_, p)| !have.contains(&p.sha256))
            .copied()
            .collect()
    }
}

/// Numbers the temporary files of LFS downloads within this process.
static DOWNLOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Downloads the LFS objects the vault lacks (up to four at once, each to a temporary file,
/// checked against its SHA-256) and stores them.
#[allow(clippy::too_many_arguments)]
fn fetch_lfs(
    vault: &Vault,
    writer: &Mutex<Writer<'_>>,
    tally: &mut Tally,
    shown_url: &RedactedUrl,
    url: &str,
    lfsconfig: Option<&[u8]>,
    credentials: Option<&Credentials>,
    pointers: &[PointerBlob],
) -> Result<LfsOutcome, BackupError> {
    use crate::lfs::LfsEntry;
    let mut outcome = LfsOutcome {
        known: Vec::new(),
        stored: Vec::new(),
        missing: Vec::new(),
    };
    let mut wanted: Vec<crate::lfs::Pointer> = Vec::new();
    for (blob, p) in pointers {
        match vault.index().lfs_object(&p.sha256)? {
            Some(chunk) => outcome.known.push(LfsEntry {
                blob: *blob,
                pointer: *p,
                chunk,
            }),
            None => wanted.push(*p),
        }
    }
    wanted.sort();
    wanted.dedup();
    if wanted.is_empty() {
        return Ok(outcome);
    }
    let Some(endpoint) = crate::lfs::endpoint(url, lfsconfig) else {
        outcome.missing.extend(wanted.iter().map(|p| {
            format!(
                "{}: no LFS endpoint for {shown_url} (only http(s) servers or an lfs.url in .lfsconfig)",
                p.oid_hex()
            )
        }));
        return Ok(outcome);
    };
    // The credentials were given for the repository's URL: an endpoint elsewhere (named by
    // the repository's .lfsconfig) and hrefs elsewhere are asked without them.
    let client = crate::lfs::Client::new(&endpoint, credentials.cloned(), url)
        .map_err(|e| BackupError::Lfs(e.to_string()))?;
    let answers = match client.batch(&wanted) {
        Ok(a) => a,
        Err(e) => {
            let reason = e.to_string();
            outcome
                .missing
                .extend(wanted.iter().map(|p| format!("{}: {reason}", p.oid_hex())));
            return Ok(outcome);
        }
    };
    let mut downloads = Vec::new();
    for (p, answer) in answers {
        match answer {
            Ok(d) => downloads.push(d),
            Err(reason) => outcome.missing.push(format!("{}: {reason}", p.oid_hex())),
        }
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(crate::lfs::Pointer, Result<std::path::PathBuf, String>)>> =
        Mutex::new(Vec::new());
    let tmp = vault.tmp_dir();
    // The pack writer makes the directory when it first writes; a run whose first new bytes
    // are LFS downloads comes here before that.
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&tmp)
            .map_err(|e| BackupError::Lfs(format!("{}: {e}", tmp.display())))?;
    }
    std::thread::scope(|scope| {
        for _ in 0..downloads.len().clamp(1, 4) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(d) = downloads.get(i) else { break };
                    // Repositories backed up side by side may download the same object: each
                    // download has a file of its own.
                    let dest = tmp.join(format!(
                        "lfs-{}-{}-{}",
                        std::process::id(),
                        DOWNLOADS.fetch_add(1, Ordering::Relaxed),
                        d.pointer.oid_hex()
                    ));
                    let r = client
                        .download(d, &dest)
                        .map(|()| dest.clone())
                        .map_err(|e| {
                            let _ = std::fs::remove_file(&dest);
                            e.to_string()
                        });
                    results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((d.pointer, r));
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut chunks = std::collections::HashMap::new();
    for (p, r) in results {
        match r {
            Ok(path) => {
                let stored = std::fs::File::open(&path)
                    .map_err(|e| BackupError::Lfs(format!("{}: {e}", path.display())))
                    .and_then(|mut f| {
                        locked(writer, tally, |w| {
                            w.store.put_reader(ChunkKind::LfsObject, &mut f)
                        })
                        .map_err(BackupError::from)
                    });
                let _ = std::fs::remove_file(&path);
                let (chunk, _) = stored?;
                chunks.insert(p.sha256, chunk);
            }
            Err(reason) => outcome.missing.push(reason),
        }
    }
    for (blob, p) in pointers {
        if let Some(chunk) = chunks.get(&p.sha256) {
            outcome.stored.push(LfsEntry {
                blob: *blob,
                pointer: *p,
                chunk: *chunk,
            });
        }
    }
    Ok(outcome)
}

/// The metadata map of a previous snapshot, if it has one and it reads back.
fn previous_metadata(
    store: &ChunkReader<'_>,
    manifest: &crate::crypto::ChunkId,
) -> Option<MetadataMap> {
    let manifest = Manifest::decode(&store.get(manifest).ok()?).ok()?;
    let id: crate::crypto::ChunkId = manifest.metadata?.parse().ok()?;
    serde_json::from_slice(&store.get(&id).ok()?).ok()
}

/// Metadata documents go into the chunk store: compact JSON, deduplicated like everything else.
struct StoreSink<'s, 'v> {
    writer: &'s Mutex<Writer<'v>>,
    tally: &'s mut Tally,
}

impl MetadataSink for StoreSink<'_, '_> {
    fn document(
        &mut self,
        value: &serde_json::Value,
    ) -> Result<crate::crypto::ChunkId, ProviderError> {
        let bytes = serde_json::to_vec(value).map_err(|e| ProviderError::Store(e.to_string()))?;
        locked(self.writer, self.tally, |w| {
            w.store.put(ChunkKind::Metadata, &bytes)
        })
        .map_err(|e| ProviderError::Store(e.to_string()))
    }
    fn binary(
        &mut self,
        input: &mut dyn std::io::Read,
    ) -> Result<crate::crypto::ChunkId, ProviderError> {
        // The download streams under the lock: other workers wait to store, not to fetch.
        locked(self.writer, self.tally, |w| {
            w.store.put_reader(ChunkKind::Data, input)
        })
        .map(|(id, _)| id)
        .map_err(|e| ProviderError::Store(e.to_string()))
    }
    fn read(&mut self, id: &crate::crypto::ChunkId) -> Result<Vec<u8>, ProviderError> {
        locked(self.writer, self.tally, |w| w.store.get(id))
            .map_err(|e| ProviderError::Store(e.to_string()))
    }
}

/// What a run over one configured source did.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    pub source: String,
    pub listed: usize,
    pub selected: usize,
    pub repositories: Vec<RepoReport>,
    pub api: crate::provider::http::RequestStats,
    /// Items of the listing that were not readable as repositories.
    pub dropped: Vec<String>,
    pub error: Option<String>,
}

/// What a source run tells its caller as it goes (progress display, live report lines).
/// Called from worker threads, one call at a time.
pub enum SourceEvent<'a> {
    /// The repositories the filters kept, before any is backed up.
    Selected(usize),
    /// One repository (or wiki) is done.
    Done(&'a RepoReport),
}

/// The default number of repositories backed up at once: the work is mostly waiting on the
/// network, and storing is serialised anyway.
pub const DEFAULT_JOBS: usize = 4;

/// One unit of work of a source run.
struct Job<'r> {
    repo: &'r RepoInfo,
    /// `Some(name)` for the repository's wiki, stored as `name`.
    wiki: Option<String>,
}

/// Backs up every repository (and wiki) of a source that its filters keep, with metadata,
/// `jobs` at a time; each worker has its own API client, so at most `jobs` requests are in
/// flight against the provider. One repository's failure does not stop the others; a rate
/// limit stops the source cleanly and says when to resume (repositories done keep their
/// snapshots). `expected`: how many repositories the previous run listed, when an empty
/// listing should fail the source.
pub fn backup_source(
    vault: &Vault,
    keys: &VaultKeys,
    writer: &Mutex<Writer<'_>>,
    source: &SourceConfig,
    jobs: usize,
    expected: Option<usize>,
    progress: &(dyn Fn(SourceEvent<'_>) + Sync),
) -> SourceReport {
    let mut report = SourceReport {
        source: source.name.clone(),
        listed: 0,
        selected: 0,
        repositories: Vec::new(),
        api: Default::default(),
        dropped: Vec::new(),
        error: None,
    };
    let token = match source.token() {
        Ok(t) => t,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    let scrub = |text: String| match &token {
        Some(t) => Credentials {
            username: String::new(),
            secret: t.clone(),
        }
        .scrub(&text),
        None => text,
    };
    let open = || {
        crate::provider::open_provider(
            source,
            Some(vault.index() as &dyn crate::provider::http::HttpCache),
        )
    };
    let mut provider = match open() {
        Ok(p) => p,
        Err(e) => {
            report.error = Some(scrub(e.to_string()));
            return report;
        }
    };
    let crate::provider::Listing { repos, dropped } = match provider.list_repositories() {
        Ok(r) => r,
        Err(e) => {
            report.error = Some(scrub(e.to_string()));
            report.api = provider.stats();
            return report;
        }
    };
    report.listed = repos.len();
    report.dropped = dropped;
    // A token that lost its scopes lists nothing and looks like an emptied account.
    if repos.is_empty()
        && let Some(before) = expected.filter(|n| *n > 0)
    {
        report.error = Some(format!(
            "the API listed no repositories where the previous run listed {before} (a token \
             that lost its access looks like this); pass --allow-empty if the account is \
             really empty"
        ));
        report.api = provider.stats();
        return report;
    }
    let filter = match source.filter() {
        Ok(f) => f,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    let git_origin = match source.git_origin() {
        Ok(o) => o,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    let (selected, refused) = crate::provider::screen_listing(
        repos.into_iter().filter(|r| filter.keeps(r)).collect(),
        &git_origin,
    );
    report.selected = selected.len() + refused.len();
    progress(SourceEvent::Selected(report.selected));

    let mut work = Vec::new();
    for repo in &selected {
        work.push(Job { repo, wiki: None });
        if repo.wiki_url.is_some()
            && let Ok(spec) = git::parse_remote(&repo.clone_url)
        {
            work.push(Job {
                repo,
                wiki: Some(format!("{}.wiki", spec.default_name)),
            });
        }
    }
    let next = AtomicUsize::new(0);
    let stopped: Mutex<Option<String>> = Mutex::new(None);
    let lines: Mutex<Vec<(usize, RepoReport)>> = Mutex::new(Vec::new());
    let api = Mutex::new(crate::provider::http::RequestStats::default());
    let jobs = jobs.clamp(1, work.len().max(1));
    let first = Mutex::new(Some(provider));
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                let taken = first.lock().unwrap_or_else(|e| e.into_inner()).take();
                let mut provider = match taken.map(Ok).unwrap_or_else(open) {
                    Ok(p) => p,
                    Err(e) => {
                        // Without a client this worker takes no work; the others go on.
                        tracing::warn!(error = %scrub(e.to_string()), "a worker could not start");
                        return;
                    }
                };
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(job) = work.get(i) else { break };
                    let halt = stopped.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    let line = match halt {
                        Some(reason) => skipped(job.repo, job.wiki.as_deref(), &reason),
                        None => {
                            let line = backup_job(
                                vault,
                                keys,
                                writer,
                                provider.as_mut(),
                                &git_origin,
                                job,
                            );
                            let line = RepoReport {
                                error: line.error.map(&scrub),
                                ..line
                            };
                            if job.wiki.is_none()
                                && line
                                    .error
                                    .as_deref()
                                    .is_some_and(|e| e.contains("rate limited until"))
                            {
                                *stopped.lock().unwrap_or_else(|e| e.into_inner()) =
                                    line.error.clone();
                            }
                            if line.snapshot.is_some()
                                && let Err(e) =
                                    vault.index().set_repo_source(&line.repo, &source.name)
                            {
                                tracing::warn!(error = %e, "could not record the repository's source");
                            }
                            line
                        }
                    };
                    progress(SourceEvent::Done(&line));
                    lines
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((i, line));
                }
                let stats = provider.stats();
                let mut total = api.lock().unwrap_or_else(|e| e.into_inner());
                total.requests += stats.requests;
                total.not_modified += stats.not_modified;
                total.retries += stats.retries;
                // Workers wait out one pause side by side: the longest wait is the source's.
                total.rate_limit_seconds = total.rate_limit_seconds.max(stats.rate_limit_seconds);
            });
        }
    });
    let mut lines = lines.into_inner().unwrap_or_else(|e| e.into_inner());
    lines.sort_by_key(|(i, _)| *i);
    report.repositories = lines.into_iter().map(|(_, l)| l).collect();
    report.api = api.into_inner().unwrap_or_else(|e| e.into_inner());
    if report.repositories.len() < work.len() {
        report.error = Some("no worker could reach the API".into());
    }
    for (repo, reason) in refused {
        let line = RepoReport::new(
            repo.full_name.clone(),
            RedactedUrl::new(&repo.clone_url),
            RepoStatus::Failed,
            Some(reason),
        );
        progress(SourceEvent::Done(&line));
        report.repositories.push(line);
    }
    report
}

/// Backs up repositories given by URL, `jobs` at a time; reports come back in request order.
pub fn backup_urls(
    vault: &Vault,
    keys: &VaultKeys,
    writer: &Mutex<Writer<'_>>,
    requests: &[BackupRequest],
    jobs: usize,
    done: &(dyn Fn(&RepoReport) + Sync),
) -> Vec<RepoReport> {
    let next = AtomicUsize::new(0);
    let lines: Mutex<Vec<(usize, RepoReport)>> = Mutex::new(Vec::new());
    // Two URLs for one repository (`…/r` and `…/r.git`) would share a mirror cache and race:
    // the repeat is reported, not run.
    let mut seen = std::collections::HashSet::new();
    let repeated: Vec<bool> = requests
        .iter()
        .map(|r| {
            let name = r
                .name
                .clone()
                .or_else(|| git::parse_remote(&r.url).ok().map(|spec| spec.default_name));
            name.is_some_and(|n| !seen.insert(n))
        })
        .collect();
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, requests.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(request) = requests.get(i) else {
                        break;
                    };
                    let line = if repeated[i] {
                        RepoReport::for_request(
                            request,
                            RepoStatus::Skipped,
                            Some("the same repository was given earlier in this run".into()),
                        )
                    } else {
                        backup_repository(vault, keys, writer, request, None)
                    };
                    done(&line);
                    lines
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((i, line));
                }
            });
        }
    });
    let mut lines = lines.into_inner().unwrap_or_else(|e| e.into_inner());
    lines.sort_by_key(|(i, _)| *i);
    lines.into_iter().map(|(_, l)| l).collect()
}

/// Backs up one repository of a source, or its wiki.
fn backup_job(
    vault: &Vault,
    keys: &VaultKeys,
    writer: &Mutex<Writer<'_>>,
    provider: &mut dyn Provider,
    git_origin: &crate::provider::GitOrigin,
    job: &Job<'_>,
) -> RepoReport {
    let url = match &job.wiki {
        Some(_) => job.repo.wiki_url.as_deref().unwrap_or_default(),
        None => &job.repo.clone_url,
    };
    // Invariant 9: the source's git credentials go only to its git origin.
    let credentials = match provider.git_credentials() {
        Ok(c) => c.filter(|_| git_origin.trusts(url)),
        Err(e) => {
            let mut line = skipped(job.repo, job.wiki.as_deref(), "");
            line.status = RepoStatus::Failed;
            line.error = Some(format!("credentials: {e}"));
            return line;
        }
    };
    let Some(name) = &job.wiki else {
        let request = BackupRequest {
            url: job.repo.clone_url.clone(),
            name: None,
            credentials,
        };
        return backup_repository(vault, keys, writer, &request, Some((provider, job.repo)));
    };
    let request = BackupRequest {
        url: job.repo.wiki_url.clone().unwrap_or_default(),
        name: Some(name.clone()),
        credentials,
    };
    let mut line = backup_repository(vault, keys, writer, &request, None);
    if line.status == RepoStatus::Failed
        && line
            .error
            .as_deref()
            .is_some_and(|e| e.contains("does not exist"))
    {
        // has_wiki is on by default: most repositories have no wiki repository.
        line.status = RepoStatus::Skipped;
        line.error = Some("no wiki repository".into());
    }
    line
}

fn skipped(repo: &RepoInfo, wiki: Option<&str>, reason: &str) -> RepoReport {
    RepoReport::new(
        wiki.map(str::to_string)
            .unwrap_or_else(|| repo.full_name.clone()),
        RedactedUrl::new(
            repo.wiki_url
                .as_deref()
                .filter(|_| wiki.is_some())
                .unwrap_or(&repo.clone_url),
        ),
        RepoStatus::Skipped,
        Some(format!("not attempted: {reason}")),
    )
}

impl RepoReport {
    /// A line for a request before (or without) parsing its URL: named by `--name`, else by
    /// the URL's redacted text, never by the raw URL (it may hold a password).
    fn for_request(
        request: &BackupRequest,
        status: RepoStatus,
        error: Option<String>,
    ) -> RepoReport {
        let url = RedactedUrl::new(&request.url);
        let repo = request
            .name
            .clone()
            .unwrap_or_else(|| url.as_str().to_string());
        RepoReport::new(repo, url, status, error)
    }

    fn new(
        repo: String,
        url: RedactedUrl,
        status: RepoStatus,
        error: Option<String>,
    ) -> RepoReport {
        RepoReport {
            repo,
            url,
            status,
            snapshot: None,
            refs: 0,
            objects_received: 0,
            objects_added: 0,
            bytes_uploaded: 0,
            bytes_added: 0,
            seconds: 0.0,
            metadata_documents: None,
            lfs_objects_stored: 0,
            lfs_missing: Vec::new(),
            error,
        }
    }
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

pub fn head_text(refs: &RefSet) -> Option<String> {
    refs.head.as_ref().map(|h| match h {
        snapshot::Head::Symbolic(t) => t.clone(),
        snapshot::Head::Detached(oid) => oid.clone(),
    })
}

/// A blob that is an LFS pointer, and what it points to.
type PointerBlob = (Oid, crate::lfs::Pointer);

/// Stores every object reachable from the refs that the vault lacks; returns their entries
/// and the LFS pointers among them.
fn ingest(
    vault: &Vault,
    writer: &Mutex<Writer<'_>>,
    tally: &mut Tally,
    cache: &std::path::Path,
    refs: &RefSet,
) -> Result<(Vec<ObjectEntry>, Vec<PointerBlob>), BackupError> {
    let reader = CacheReader::open(cache)?;
    let mut tips: Vec<Oid> = refs.refs.values().copied().collect();
    tips.sort();
    tips.dedup();
    let mut source = CacheSource {
        cache: &reader,
        vault,
    };
    let phase = Instant::now();
    let mut reached = walk(&mut source, &tips)?;
    reached.sort_by_key(Reached::group_key);
    tracing::info!(
        seconds = phase.elapsed().as_secs_f64(),
        objects = reached.len(),
        "walked new objects"
    );
    let phase = Instant::now();
    let mut pointers = Vec::new();
    let entries = locked(writer, tally, |w| -> Result<_, BackupError> {
        let mut entries = Vec::with_capacity(reached.len());
        for r in &reached {
            let (kind, data) = reader.read(&r.oid)?;
            if kind == ObjectKind::Blob
                && let Some(p) = crate::lfs::parse_pointer(&data)
            {
                pointers.push((r.oid, p));
            }
            let chunk = w.store.put(kind.chunk_kind(), &data)?;
            entries.push(ObjectEntry {
                oid: r.oid,
                kind,
                chunk,
            });
        }
        Ok(entries)
    })?;
    tracing::info!(seconds = phase.elapsed().as_secs_f64(), "stored objects");
    Ok((entries, pointers))
}
