//! A repository's LFS objects: those of its new pointer blobs and those the server could not
//! give last time, downloaded (a few at once, each checked against its SHA-256), stored, and
//! listed in the snapshot's LFS map. An object the server cannot give is recorded as missing
//! and asked for again on every run until it comes.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::BackupError;
use super::repo::{PointerBlob, Remote, read_manifest};
use super::schedule::in_parallel;
use super::writer::{Writer, WriterHandle};
use crate::crypto::ChunkId;
use crate::git::{self, CacheReader};
use crate::lfs::{Client, Download, LfsEntry, MISSING, Pointer};
use crate::progress::{Progress, Unit};
use crate::snapshot::{Head, Oid, RefSet};
use crate::store::ChunkKind;
use crate::vault::Vault;

/// LFS downloads at once, per repository.
const DOWNLOAD_THREADS: usize = 4;

/// What a repository's snapshot gets from LFS.
#[derive(Default)]
pub(super) struct LfsResult {
    /// The LFS map's chunk, when the repository has LFS objects.
    pub(super) map: Option<String>,
    /// Objects downloaded, verified and stored now.
    pub(super) stored: Vec<LfsEntry>,
    /// `oid: reason` for the objects not in the vault after this run.
    pub(super) missing: Vec<String>,
}

/// Backs up the LFS objects of `pointers` (the new pointer blobs) and of the previous
/// snapshot's missing entries, and stores the map of all, the previous ones carried over.
pub(super) fn backup_lfs(
    vault: &Vault,
    handle: &mut WriterHandle<'_, '_>,
    remote: &Remote,
    refs: &RefSet,
    previous: Option<&ChunkId>,
    mut pointers: Vec<PointerBlob>,
    watch: (&str, &dyn Progress),
) -> Result<LfsResult, BackupError> {
    let previous_map = previous.and_then(|m| handle.with(|w| previous_lfs_map(w, m)));
    let (missing_before, mut entries): (Vec<_>, Vec<_>) = previous_map
        .unwrap_or_default()
        .into_iter()
        .partition(|e| e.chunk == MISSING);
    pointers.extend(missing_before.iter().map(|e| (e.blob, e.pointer)));
    // With packs missing from every target, an object the previous snapshot had may have
    // been in one: it is downloaded and stored again.
    let (kept, lost): (Vec<_>, Vec<_>) = handle.with(|w| {
        entries
            .into_iter()
            .partition(|e| w.store.avoided().is_empty() || intact(w, &e.chunk))
    });
    entries = kept;
    pointers.extend(lost.iter().map(|e| (e.blob, e.pointer)));
    let mut result = LfsResult::default();
    if !pointers.is_empty() {
        let lfsconfig = head_lfsconfig(&remote.cache, refs);
        let outcome = fetch_lfs(
            vault,
            handle,
            remote,
            lfsconfig.as_deref(),
            &pointers,
            watch,
        )?;
        let failed = outcome.failed(&pointers);
        entries.extend(outcome.known);
        entries.extend(outcome.stored.iter().copied());
        entries.extend(failed.into_iter().map(|(blob, pointer)| LfsEntry {
            blob,
            pointer,
            chunk: MISSING,
        }));
        result.stored = outcome.stored;
        result.missing = outcome.missing;
    }
    if !entries.is_empty() {
        let bytes = crate::lfs::encode_map(&entries);
        result.map = Some(
            handle
                .with(|w| w.store.put(ChunkKind::LfsMap, &bytes))?
                .to_hex(),
        );
    }
    Ok(result)
}

/// Whether `chunk` reads back without the packs missing from every target (an error
/// reading it counts as no).
fn intact(w: &Writer<'_>, chunk: &ChunkId) -> bool {
    w.store.intact(chunk, w.store.avoided()).unwrap_or(false)
}

/// The LFS map of a previous snapshot, if it has one and it reads back.
fn previous_lfs_map(w: &Writer<'_>, manifest: &ChunkId) -> Option<Vec<LfsEntry>> {
    let id: ChunkId = read_manifest(w, manifest)?.lfs?.parse().ok()?;
    crate::lfs::decode_map(&w.store.get(&id).ok()?).ok()
}

/// `.lfsconfig` at the top of HEAD's tree, where a repository names its LFS server.
fn head_lfsconfig(cache: &Path, refs: &RefSet) -> Option<Vec<u8>> {
    let reader = CacheReader::open(cache).ok()?;
    let tip = match refs.head.as_ref()? {
        Head::Symbolic(target) => *refs.refs.get(target)?,
        Head::Detached(oid) => Oid::from_hex(oid)?,
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
#[derive(Default)]
struct LfsOutcome {
    /// Objects the vault held already.
    known: Vec<LfsEntry>,
    /// Objects downloaded, verified and stored now.
    stored: Vec<LfsEntry>,
    /// `oid: reason` for the rest.
    missing: Vec<String>,
}

impl LfsOutcome {
    /// The pointers whose objects are not in the vault after this run.
    fn failed(&self, pointers: &[PointerBlob]) -> Vec<PointerBlob> {
        let have: HashSet<[u8; 32]> = self
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

/// Downloads the LFS objects the vault lacks and stores them.
fn fetch_lfs(
    vault: &Vault,
    handle: &mut WriterHandle<'_, '_>,
    remote: &Remote,
    lfsconfig: Option<&[u8]>,
    pointers: &[PointerBlob],
    watch: (&str, &dyn Progress),
) -> Result<LfsOutcome, BackupError> {
    let mut outcome = LfsOutcome::default();
    let wanted = sort_out_known(vault, handle, pointers, &mut outcome)?;
    if wanted.is_empty() {
        return Ok(outcome);
    }
    let url = &remote.spec.fetch_url;
    let Some(endpoint) = crate::lfs::endpoint(url, lfsconfig) else {
        let shown = &remote.spec.display_url;
        outcome.missing.extend(wanted.iter().map(|p| {
            format!(
                "{}: no LFS endpoint for {shown} (only http(s) servers or an lfs.url in .lfsconfig)",
                p.oid_hex()
            )
        }));
        return Ok(outcome);
    };
    // The credentials were given for the repository's URL: an endpoint elsewhere (named by
    // the repository's .lfsconfig) and hrefs elsewhere are asked without them.
    let client = Client::new(&endpoint, remote.credentials.clone(), url)?;
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
    let files = download_all(vault, &client, &downloads, watch)?;
    let chunks = store_downloads(handle, files, &mut outcome)?;
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

/// Puts the pointers whose objects the vault holds into `outcome.known`; returns the others'
/// pointers, each once.
fn sort_out_known(
    vault: &Vault,
    handle: &mut WriterHandle<'_, '_>,
    pointers: &[PointerBlob],
    outcome: &mut LfsOutcome,
) -> Result<Vec<Pointer>, BackupError> {
    let mut wanted = Vec::new();
    for (blob, p) in pointers {
        let held = vault
            .index()
            .lfs_object(&p.sha256)?
            .filter(|chunk| handle.with(|w| w.store.avoided().is_empty() || intact(w, chunk)));
        match held {
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
    Ok(wanted)
}

/// An object's downloaded file, or why it could not be downloaded.
type Downloaded = (Pointer, Result<PathBuf, String>);

/// Numbers the temporary files of LFS downloads within this process.
static DOWNLOADS: AtomicU64 = AtomicU64::new(0);

/// Downloads each object to a temporary file of its own, a few at once; a failed download
/// leaves no file and gives its reason.
fn download_all(
    vault: &Vault,
    client: &Client,
    downloads: &[Download],
    (job, progress): (&str, &dyn Progress),
) -> Result<Vec<Downloaded>, BackupError> {
    let tmp = vault.tmp_dir();
    // The pack writer makes the directory when it first writes; a run whose first new bytes
    // are LFS downloads comes here before that.
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&tmp)
            .map_err(|source| BackupError::LfsFile {
                path: tmp.clone(),
                source,
            })?;
    }
    let bytes = downloads.iter().map(|d| d.pointer.size).sum();
    let phase = format!("lfs download ({} objects)", downloads.len());
    progress.phase(job, &phase, Some(bytes), Unit::Bytes);
    crate::hooks::point("lfs-download-started");
    let (files, _) = in_parallel(
        downloads,
        DOWNLOAD_THREADS,
        || Some(()),
        |(), _, d| {
            // Repositories backed up side by side may download the same object: each
            // download has a file of its own.
            let dest = tmp.join(format!(
                "lfs-{}-{}-{}",
                std::process::id(),
                DOWNLOADS.fetch_add(1, Ordering::Relaxed),
                d.pointer.oid_hex()
            ));
            let file = client
                .download(d, &dest, &|n| progress.advance(job, n))
                .map(|()| dest.clone())
                .map_err(|e| {
                    let _ = std::fs::remove_file(&dest);
                    e.to_string()
                });
            (d.pointer, file)
        },
    );
    Ok(files)
}

/// Stores the downloaded files (and removes them); returns each stored object's chunk by its
/// SHA-256. Failed downloads go to `outcome.missing`.
fn store_downloads(
    handle: &mut WriterHandle<'_, '_>,
    files: Vec<Downloaded>,
    outcome: &mut LfsOutcome,
) -> Result<HashMap<[u8; 32], ChunkId>, BackupError> {
    let mut chunks = HashMap::new();
    for (p, file) in files {
        let path = match file {
            Ok(path) => path,
            Err(reason) => {
                outcome.missing.push(reason);
                continue;
            }
        };
        let stored = std::fs::File::open(&path)
            .map_err(|source| BackupError::LfsFile {
                path: path.clone(),
                source,
            })
            .and_then(|mut f| {
                handle
                    .with(|w| w.store.put_reader(ChunkKind::LfsObject, &mut f))
                    .map_err(BackupError::from)
            });
        let _ = std::fs::remove_file(&path);
        let (chunk, _) = stored?;
        chunks.insert(p.sha256, chunk);
    }
    Ok(chunks)
}
