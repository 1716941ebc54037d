//! The single writer of a run and the snapshots waiting for it to flush. Parallel workers
//! share it behind a mutex: network work (advertisement, fetch, API requests) and the walk
//! happen outside the lock, storing inside it.

use std::sync::Mutex;

use super::BackupError;
use crate::crypto::ChunkId;
use crate::index::NewSnapshot;
use crate::lfs::LfsEntry;
use crate::snapshot::ObjectEntry;
use crate::store::ChunkStore;
use crate::vault::Vault;

/// The chunk store of a run and the snapshots waiting for a flush.
pub(super) struct Writer<'v> {
    pub(super) store: ChunkStore<'v>,
    pub(super) deferred: Deferred,
}

impl<'v> Writer<'v> {
    pub(super) fn new(store: ChunkStore<'v>) -> Writer<'v> {
        Writer {
            store,
            deferred: Deferred::default(),
        }
    }

    /// Makes every pending snapshot durable and records it: flush, then one row each.
    pub(super) fn commit_deferred(&mut self, vault: &Vault) -> Result<(), BackupError> {
        let Writer { store, deferred } = self;
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
        let replace_objects = !store.avoided().is_empty();
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
                replace_objects,
            })?;
        }
        Ok(())
    }
}

/// A snapshot whose chunks are written but whose row waits for the packs to be durable.
pub(super) struct PendingSnapshot {
    pub(super) repo: String,
    pub(super) time: chrono::DateTime<chrono::Utc>,
    pub(super) manifest: ChunkId,
    pub(super) refset: ChunkId,
    pub(super) head: Option<String>,
    pub(super) ref_count: u64,
    pub(super) source: String,
    pub(super) new_objects: Vec<ObjectEntry>,
    pub(super) new_lfs: Vec<LfsEntry>,
}

impl PendingSnapshot {
    /// The snapshot id users see.
    pub(super) fn id(&self) -> String {
        self.manifest.to_hex()[..16].to_string()
    }
}

/// Snapshots not yet recorded; `Writer::commit_deferred` records them. When a flush fails, the
/// waiting snapshots are dropped (their chunks may not be durable) and their repositories
/// listed in `lost`, so that the run report can say they failed.
#[derive(Default)]
pub(super) struct Deferred {
    pub(super) waiting: Vec<PendingSnapshot>,
    pub(super) lost: Vec<String>,
}

/// One repository's use of the shared writer. What its own store calls add is measured inside
/// each locked section, so that workers running side by side do not count each other's bytes.
pub(super) struct WriterHandle<'a, 'v> {
    writer: &'a Mutex<Writer<'v>>,
    /// New unique bytes (before compression) this repository added.
    pub(super) raw_added: u64,
    /// Bytes this repository uploaded to targets (all replicas).
    pub(super) uploaded: u64,
}

impl<'a, 'v> WriterHandle<'a, 'v> {
    pub(super) fn new(writer: &'a Mutex<Writer<'v>>) -> Self {
        WriterHandle {
            writer,
            raw_added: 0,
            uploaded: 0,
        }
    }

    /// Runs `f` with the writer locked, counting what it adds to this repository.
    pub(super) fn with<T>(&mut self, f: impl FnOnce(&mut Writer<'v>) -> T) -> T {
        // A worker that panicked while storing cannot have recorded a snapshot (rows are
        // written only after a flush), so the others may go on.
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let before = (
            w.store.report().raw_bytes_added,
            w.store.report().bytes_uploaded,
        );
        let out = f(&mut w);
        self.raw_added += w.store.report().raw_bytes_added - before.0;
        self.uploaded += w.store.report().bytes_uploaded - before.1;
        out
    }
}
