//! Writing chunks: content-defined cutting, dedup by keyed id, an open pack that is closed at
//! the configured size, then replicated to the targets and recorded in the index.
//!
//! Write order (what makes crashes safe): chunks go into a local temporary pack; a finished pack
//! is uploaded create-only to the targets; only when the replication policy is met is it
//! recorded, with its chunks, in the index in one transaction. A crash before that leaves an
//! unreferenced pack (garbage), never an index entry pointing at nothing.

use std::collections::HashSet;
use std::io::Read;
use std::ops::Deref;
use std::path::PathBuf;

use fastcdc::v2020::{FastCDC, Normalization, StreamCDC};

use super::delta::{DeltaChunk, MAX_DEPTH};
use super::pack::{FinishedPack, PackWriter};
use super::{ChunkKind, ChunkList, ChunkReader, StoreError, StoreSettings, WriteReport, pack_key};
use crate::crypto::{ChunkId, VaultKeys};
use crate::hooks;
use crate::index::Index;
use crate::progress::{Progress, Silent, Unit};
use crate::target::{Body, Target, TargetError};

/// Objects smaller than this are stored whole: a delta would save next to nothing.
const MIN_DELTA_TARGET: usize = 64;

/// A chunk a new version may be stored against: its id, its delta depth
/// (`ChunkReader::delta_depth`) and its content.
pub struct DeltaBase<'a> {
    pub id: ChunkId,
    pub depth: u8,
    pub content: &'a [u8],
}

/// Writes chunks of one vault, and reads them through the `ChunkReader` it holds (it derefs to
/// it, so a store serves wherever a reader is wanted). Writing needs the vault's write lock
/// (held by the caller that built this store).
pub struct ChunkStore<'v> {
    reader: ChunkReader<'v>,
    recipient: age::x25519::Recipient,
    auth: crate::crypto::AuthKey,
    tmp_dir: PathBuf,
    settings: StoreSettings,
    cdc_seed: u64,
    writer: Option<PackWriter>,
    pending_logical: u64,
    report: WriteReport,
    /// Prune's compaction: packs are replicated but not indexed; prune records them (and
    /// repoints their chunks) under the writer lock.
    defer_index: bool,
    unindexed: Vec<(FinishedPack, Vec<String>)>,
    /// Packs whose chunks do not count as stored (missing from every target): chunks only
    /// they hold are written again, and their rows move to the new pack.
    avoid: HashSet<i64>,
    /// Told of each target's uploaded bytes (`target NAME` jobs).
    uploads: &'v dyn Progress,
}

impl<'v> ChunkStore<'v> {
    pub fn new(
        index: &'v Index,
        targets: &'v [Box<dyn Target>],
        keys: &'v VaultKeys,
        tmp_dir: PathBuf,
        settings: StoreSettings,
    ) -> ChunkStore<'v> {
        // The gear table is keyed from the id key so that chunk boundaries, like chunk ids,
        // reveal nothing about content.
        let seed_bytes = keys.id_key().chunk_id(b"gitvault fastcdc gear seed v1").0;
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&seed_bytes[..8]);
        ChunkStore {
            reader: ChunkReader::new(index, targets, keys),
            recipient: keys.identity().to_public(),
            auth: keys.auth_key(),
            tmp_dir,
            settings,
            cdc_seed: u64::from_le_bytes(seed),
            writer: None,
            pending_logical: 0,
            report: WriteReport::default(),
            defer_index: false,
            unindexed: Vec::new(),
            avoid: HashSet::new(),
            uploads: &Silent,
        }
    }

    /// Shows each target's uploads on `progress` as a job `target NAME`, from now until the
    /// store is dropped.
    pub fn watch_uploads(&mut self, progress: &'v dyn Progress) {
        for t in self.reader.targets {
            progress.phase(&upload_job(t.as_ref()), "upload", None, Unit::Bytes);
        }
        self.uploads = progress;
    }

    pub fn report(&self) -> &WriteReport {
        &self.report
    }

    /// True when the chunk is durable in the vault (in a pack not avoided) or waiting in the
    /// open pack.
    pub fn contains(&self, id: &ChunkId) -> Result<bool, StoreError> {
        if self.reader.unflushed.contains(id) {
            return Ok(true);
        }
        if self.avoid.is_empty() {
            return Ok(self.reader.index.has_chunk(id)?);
        }
        Ok(self
            .reader
            .index
            .chunk(id)?
            .is_some_and(|loc| !self.avoid.contains(&loc.pack_id)))
    }

    /// Chunks in the packs `ids` (missing from every target) count as absent from now on:
    /// what only they hold is stored again (a backup's snapshot must be complete).
    pub fn avoid_packs(&mut self, ids: HashSet<i64>) {
        self.avoid = ids;
    }

    /// The packs [`ChunkStore::avoid_packs`] named.
    pub fn avoided(&self) -> &HashSet<i64> {
        &self.avoid
    }

    /// Stores `data`, cutting it into content-defined chunks when it is larger than one chunk.
    /// Returns the id that `get` takes; storing the same bytes again writes nothing.
    pub fn put(&mut self, kind: ChunkKind, data: &[u8]) -> Result<ChunkId, StoreError> {
        self.pending_logical += data.len() as u64;
        self.report.logical_bytes += data.len() as u64;
        if data.len() <= self.settings.cdc.min as usize {
            return self.put_chunk(kind, data);
        }
        let cdc = self.settings.cdc;
        let cuts: Vec<_> = FastCDC::with_level_and_seed(
            data,
            cdc.min as usize,
            cdc.avg as usize,
            cdc.max as usize,
            Normalization::Level1,
            self.cdc_seed,
        )
        .collect();
        let mut parts = Vec::with_capacity(cuts.len());
        for c in cuts {
            let part = &data[c.offset..c.offset + c.length];
            parts.push((self.put_chunk(kind, part)?, part.len() as u64));
        }
        self.finish_parts(kind, parts)
    }

    /// Like `put`, for inputs too large to hold in memory. Returns the id and the byte count.
    pub fn put_reader(
        &mut self,
        kind: ChunkKind,
        input: impl Read,
    ) -> Result<(ChunkId, u64), StoreError> {
        let cdc = self.settings.cdc;
        let chunker = StreamCDC::with_level_and_seed(
            input,
            cdc.min as usize,
            cdc.avg as usize,
            cdc.max as usize,
            Normalization::Level1,
            self.cdc_seed,
        );
        let mut parts = Vec::new();
        let mut total = 0u64;
        for chunk in chunker {
            let chunk = chunk.map_err(|e| match e {
                fastcdc::v2020::Error::IoError(io) => StoreError::Input(io),
                other => StoreError::Input(std::io::Error::other(other.to_string())),
            })?;
            total += chunk.data.len() as u64;
            parts.push((self.put_chunk(kind, &chunk.data)?, chunk.data.len() as u64));
        }
        self.pending_logical += total;
        self.report.logical_bytes += total;
        if parts.is_empty() {
            return Ok((self.put_chunk(kind, &[])?, 0));
        }
        Ok((self.finish_parts(kind, parts)?, total))
    }

    fn finish_parts(
        &mut self,
        kind: ChunkKind,
        parts: Vec<(ChunkId, u64)>,
    ) -> Result<ChunkId, StoreError> {
        match parts.as_slice() {
            [] => self.put_chunk(kind, &[]),
            [(single, _)] => Ok(*single),
            _ => {
                let list = ChunkList { kind, parts }.encode();
                self.put_chunk(ChunkKind::ChunkList, &list)
            }
        }
    }

    /// Compaction mode: finished packs are replicated and kept for `take_unindexed` instead of
    /// being recorded in the index.
    pub fn defer_indexing(&mut self) {
        self.defer_index = true;
    }

    /// The packs written in compaction mode, with the targets holding each.
    pub fn take_unindexed(&mut self) -> Vec<(FinishedPack, Vec<String>)> {
        std::mem::take(&mut self.unindexed)
    }

    /// Copies a chunk that already has an id (compaction), without deduplicating against the
    /// index, where it is present in the pack being emptied.
    pub fn put_copy(&mut self, id: ChunkId, kind: u8, data: &[u8]) -> Result<(), StoreError> {
        if self.reader.unflushed.contains(&id) {
            return Ok(());
        }
        if self.add_to_open_pack(id, kind, data)? {
            self.finish_pack()?;
        }
        Ok(())
    }

    /// Stores `data` (one chunk's worth: no cutting) as a delta against `base`, the previous
    /// version of its path, when that is much smaller and the chain stays short; else whole.
    /// Content already in the vault whole is not stored again. Returns the id `get` takes.
    pub fn put_against(
        &mut self,
        kind: ChunkKind,
        data: &[u8],
        base: &DeltaBase<'_>,
    ) -> Result<ChunkId, StoreError> {
        let whole = self.reader.keys.id_key().chunk_id(data);
        let eligible = data.len() <= self.settings.cdc.min as usize
            && data.len() >= MIN_DELTA_TARGET
            && !self.contains(&whole)?;
        let older;
        let (id, depth, content) = match base.depth {
            _ if !eligible => return self.put(kind, data),
            d if d < MAX_DEPTH => (base.id, d, base.content),
            // A chain at its limit branches from its middle: a delta against an older version
            // is larger, but far smaller than storing this version whole.
            // A base that does not read back only costs the delta.
            _ => match self.shallower(base.id) {
                Ok(Some((id, depth))) => match self.reader.get(&id) {
                    Ok(content) => {
                        older = content;
                        (id, depth, older.as_slice())
                    }
                    Err(_) => return self.put(kind, data),
                },
                Ok(None) | Err(_) => return self.put(kind, data),
            },
        };
        // A delta must save at least half of the content to be worth a second read.
        let Some(delta) = crate::delta::encode_within(content, data, data.len() / 2) else {
            return self.put(kind, data);
        };
        let doc = DeltaChunk {
            depth: depth + 1,
            base: id,
            delta: &delta,
        }
        .encode();
        self.pending_logical += data.len() as u64;
        self.report.logical_bytes += data.len() as u64;
        self.report.deltas += 1;
        self.put_chunk(ChunkKind::Delta, &doc)
    }

    /// The first chunk down the chain of bases under `id` whose depth is at most half the
    /// limit, with that depth.
    fn shallower(&self, id: ChunkId) -> Result<Option<(ChunkId, u8)>, StoreError> {
        let mut id = id;
        for _ in 0..super::delta::MAX_HOPS {
            let Some(depth) = self.reader.delta_depth(&id)? else {
                return Ok(None);
            };
            if depth <= MAX_DEPTH / 2 {
                return Ok(Some((id, depth)));
            }
            match self.reader.delta_base(&id)? {
                Some(base) => id = base,
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Stores one chunk as it is (no cutting).
    pub fn put_chunk(&mut self, kind: ChunkKind, data: &[u8]) -> Result<ChunkId, StoreError> {
        let id = self.reader.keys.id_key().chunk_id(data);
        if self.contains(&id)? {
            self.report.chunks_deduplicated += 1;
            return Ok(id);
        }
        if self.reader.targets.is_empty() {
            return Err(StoreError::NoTargets);
        }
        let full = self.add_to_open_pack(id, kind as u8, data)?;
        self.report.chunks_added += 1;
        self.report.raw_bytes_added += data.len() as u64;
        if full {
            self.finish_pack()?;
        }
        Ok(id)
    }

    /// Adds a chunk to the open pack (opening one if needed); true when the pack is full.
    fn add_to_open_pack(&mut self, id: ChunkId, kind: u8, data: &[u8]) -> Result<bool, StoreError> {
        let writer = match &mut self.writer {
            Some(w) => w,
            None => self.writer.insert(PackWriter::create(
                &self.tmp_dir,
                &self.recipient,
                &self.auth,
                self.settings.compression,
            )?),
        };
        writer.add(id, kind, data)?;
        self.reader.unflushed.insert(id);
        Ok(writer.written_size() >= self.settings.pack_size)
    }

    /// Makes everything put so far durable: closes the open pack, uploads and indexes it.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        if self.writer.as_ref().is_some_and(|w| w.chunk_count() > 0) {
            self.finish_pack()?;
        } else if let Some(w) = self.writer.take() {
            w.discard();
        }
        if self.pending_logical > 0 {
            self.reader.index.add_logical_bytes(self.pending_logical)?;
            self.pending_logical = 0;
        }
        Ok(())
    }

    fn finish_pack(&mut self) -> Result<(), StoreError> {
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        let finished = match writer.finish() {
            Ok(f) => f,
            Err(e) => {
                self.forget_pending();
                return Err(e.into());
            }
        };
        hooks::point("pack-written");
        let result = self.replicate_and_index(&finished);
        let _ = std::fs::remove_file(&finished.path);
        if result.is_err() {
            // The pack's chunks are not durable: later puts of the same bytes must store them
            // again instead of deduplicating against a pack that does not exist.
            self.forget_pending();
        }
        result
    }

    fn forget_pending(&mut self) {
        self.reader.unflushed.clear();
        self.pending_logical = 0;
    }

    fn replicate_and_index(&mut self, pack: &FinishedPack) -> Result<(), StoreError> {
        let key = pack_key(&pack.name);
        let outcomes: Vec<(String, Result<(), TargetError>)> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .targets
                .iter()
                .map(|t| {
                    let key = &key;
                    let uploads = self.uploads;
                    s.spawn(move || {
                        let r = t.put_if_absent(key, Body::File(&pack.path)).map(|_| ());
                        if r.is_ok() {
                            uploads.advance(&upload_job(t.as_ref()), pack.size);
                        }
                        (t.name().to_string(), r)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| ("?".to_string(), Err(upload_panicked())))
                })
                .collect()
        });
        let mut stored = Vec::new();
        let mut failures = Vec::new();
        for (target, outcome) in outcomes {
            match outcome {
                Ok(()) => stored.push(target),
                Err(e) => failures.push((target, e.to_string())),
            }
        }
        let wanted = match self.settings.min_replicas {
            0 => self.reader.targets.len(),
            n => n.min(self.reader.targets.len()),
        };
        if stored.len() < wanted {
            return Err(StoreError::NotEnoughReplicas {
                pack: pack.name.clone(),
                wanted,
                got: stored.len(),
                errors: failures
                    .iter()
                    .map(|(t, e)| format!("{t}: {e}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
        for (target, error) in failures {
            tracing::warn!(pack = %pack.name, %target, %error, "pack not replicated to a target");
            self.report.lagging.push((pack.name.clone(), target, error));
        }
        hooks::point("pack-uploaded");
        if self.defer_index {
            self.unindexed.push((pack.clone(), stored.clone()));
            self.report.packs_written += 1;
            self.report.bytes_uploaded += pack.size * stored.len() as u64;
            return Ok(());
        }
        self.reader.index.commit_pack_moving(
            &pack.record(),
            &stored,
            self.pending_logical,
            (&self.avoid, true),
        )?;
        self.pending_logical = 0;
        self.reader.unflushed.clear();
        self.report.packs_written += 1;
        self.report.bytes_uploaded += pack.size * stored.len() as u64;
        tracing::debug!(pack = %pack.name, size = pack.size, chunks = pack.footer.entries.len(), "pack written");
        Ok(())
    }
}

impl<'v> Deref for ChunkStore<'v> {
    type Target = ChunkReader<'v>;

    fn deref(&self) -> &ChunkReader<'v> {
        &self.reader
    }
}

impl Drop for ChunkStore<'_> {
    fn drop(&mut self) {
        // An unflushed pack was never acknowledged: drop its temporary file.
        if let Some(w) = self.writer.take() {
            w.discard();
        }
        for t in self.reader.targets {
            self.uploads.done(&upload_job(t.as_ref()));
        }
    }
}

/// The progress job of a target's uploads.
fn upload_job(target: &dyn Target) -> String {
    format!("target {}", target.name())
}

fn upload_panicked() -> TargetError {
    TargetError::Io {
        target: "?".into(),
        op: "put",
        key: String::new(),
        source: std::io::Error::other("upload thread panicked"),
    }
}
