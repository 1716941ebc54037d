//! The chunk store: content-defined chunking, dedup by keyed id, packs of zstd frames encrypted
//! with age, replication of each finished pack to the targets, and reads of single chunks.
//!
//! Write order (what makes crashes safe): chunks go into a local temporary pack; a finished pack
//! is uploaded create-only to the targets; only when the replication policy is met is it
//! recorded, with its chunks, in the index in one transaction. A crash before that leaves an
//! unreferenced pack (garbage), never an index entry pointing at nothing.

pub mod pack;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use fastcdc::v2020::{FastCDC, Normalization, StreamCDC};

use crate::crypto::{ChunkId, VaultKeys};
use crate::hooks;
use crate::index::{ChunkLocation, Index, IndexError};
use crate::target::{Body, Target, TargetError};
use pack::{Compression, FinishedPack, PackError, PackReader, PackWriter};

/// What a chunk holds. The store only interprets `ChunkList`; the rest is a hint for grouping
/// and for rebuilding the index from packs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ChunkKind {
    Data = 0,
    ChunkList = 1,
    GitCommit = 2,
    GitTree = 3,
    GitBlob = 4,
    GitTag = 5,
    LfsObject = 6,
    Manifest = 7,
    ObjectMap = 8,
    Metadata = 9,
    RefSet = 10,
    /// Written by prune: forgotten manifests (recover skips them) and the object map of live
    /// objects whose adding snapshots were forgotten. The newest one wins.
    PruneRecord = 11,
    /// A snapshot's LFS map (src/lfs.rs).
    LfsMap = 12,
}

impl ChunkKind {
    pub fn from_u8(v: u8) -> Option<ChunkKind> {
        use ChunkKind::*;
        [
            Data,
            ChunkList,
            GitCommit,
            GitTree,
            GitBlob,
            GitTag,
            LfsObject,
            Manifest,
            ObjectMap,
            Metadata,
            RefSet,
            PruneRecord,
            LfsMap,
        ]
        .into_iter()
        .find(|k| *k as u8 == v)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("chunk {0} is not in the vault")]
    UnknownChunk(ChunkId),
    #[error("chunk {0} is not durable yet (its pack is still being written)")]
    NotDurable(ChunkId),
    #[error(
        "pack {pack} is missing on every target that should hold it ({targets}); run `gitvault verify` and `gitvault sync`"
    )]
    MissingPack { pack: String, targets: String },
    #[error(
        "pack {pack} is unreadable ({reasons}); run `gitvault verify --full` and `gitvault sync` to repair it from another target"
    )]
    CorruptPack { pack: String, reasons: String },
    #[error("chunk {chunk} in pack {pack} is corrupt: {reason}")]
    CorruptChunk {
        chunk: ChunkId,
        pack: String,
        reason: String,
    },
    #[error(
        "pack {pack} reached {got} of the {wanted} targets the replication policy requires: {errors}"
    )]
    NotEnoughReplicas {
        pack: String,
        wanted: usize,
        got: usize,
        errors: String,
    },
    #[error("the vault has no targets; add one with `gitvault target add`")]
    NoTargets,
    #[error("writing a pack failed: {0}")]
    Pack(#[from] PackError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("reading input failed: {0}")]
    Input(std::io::Error),
    #[error("writing output failed: {0}")]
    Output(std::io::Error),
}

/// Content-defined chunking parameters; fixed when the vault is created (changing them would
/// stop new data from deduplicating against old).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CdcParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for CdcParams {
    fn default() -> Self {
        CdcParams {
            min: 256 * 1024,
            avg: 1024 * 1024,
            max: 4 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct StoreSettings {
    pub compression: Compression,
    /// A pack is closed once this many compressed bytes are in it.
    pub pack_size: u64,
    pub cdc: CdcParams,
    /// How many targets must hold a pack before it counts as written (0: all of them).
    pub min_replicas: usize,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            compression: Compression {
                level: 3,
                frame_size: 32 << 20,
            },
            pack_size: 32 << 20,
            cdc: CdcParams::default(),
            min_replicas: 0,
        }
    }
}

/// What a write session did, for run reports.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WriteReport {
    pub packs_written: u64,
    pub bytes_uploaded: u64,
    pub chunks_added: u64,
    pub chunks_deduplicated: u64,
    pub raw_bytes_added: u64,
    pub logical_bytes: u64,
    /// Packs that missed a target while the policy was still met: (pack, target, error).
    pub lagging: Vec<(String, String, String)>,
}

/// The object name of a pack on every target.
pub fn pack_key(name: &str) -> String {
    format!("packs/{}/{}", name.get(..2).unwrap_or("00"), name)
}

/// Recognises `packs/xx/<64 hex>` and returns the pack name.
pub fn pack_name_from_key(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("packs/")?;
    let (dir, name) = rest.split_once('/')?;
    let valid = name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && name.starts_with(dir);
    valid.then_some(name)
}

const FRAME_CACHE_SLOTS: usize = 4;

type FrameKey = (i64, u64);

#[derive(Default)]
struct FrameCache {
    slots: Vec<(FrameKey, Arc<Vec<u8>>)>,
}

impl FrameCache {
    fn get(&mut self, key: FrameKey) -> Option<Arc<Vec<u8>>> {
        let pos = self.slots.iter().position(|(k, _)| *k == key)?;
        let slot = self.slots.remove(pos);
        let frame = slot.1.clone();
        self.slots.push(slot);
        Some(frame)
    }
    fn put(&mut self, key: FrameKey, frame: Arc<Vec<u8>>) {
        if self.slots.len() >= FRAME_CACHE_SLOTS {
            self.slots.remove(0);
        }
        self.slots.push((key, frame));
    }
}

/// Reads and writes chunks of one vault. Writing needs the vault's write lock (held by the
/// caller that built this store); reading does not.
pub struct ChunkStore<'v> {
    index: &'v Index,
    targets: &'v [Box<dyn Target>],
    keys: &'v VaultKeys,
    recipient: age::x25519::Recipient,
    auth: crate::crypto::AuthKey,
    tmp_dir: PathBuf,
    settings: StoreSettings,
    cdc_seed: u64,
    writer: Option<PackWriter>,
    pending: HashSet<ChunkId>,
    pending_logical: u64,
    cache: Mutex<FrameCache>,
    report: WriteReport,
    /// Prune's compaction: packs are replicated but not indexed; prune records them (and
    /// repoints their chunks) under the writer lock.
    defer_index: bool,
    unindexed: Vec<(FinishedPack, Vec<String>)>,
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
            index,
            targets,
            keys,
            recipient: keys.identity().to_public(),
            auth: keys.auth_key(),
            tmp_dir,
            settings,
            cdc_seed: u64::from_le_bytes(seed),
            writer: None,
            pending: HashSet::new(),
            pending_logical: 0,
            cache: Mutex::new(FrameCache::default()),
            report: WriteReport::default(),
            defer_index: false,
            unindexed: Vec::new(),
        }
    }

    pub fn report(&self) -> &WriteReport {
        &self.report
    }

    /// True when the chunk is durable in the vault or waiting in the open pack.
    pub fn contains(&self, id: &ChunkId) -> Result<bool, StoreError> {
        Ok(self.pending.contains(id) || self.index.has_chunk(id)?)
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
        if self.pending.contains(&id) {
            return Ok(());
        }
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
        self.pending.insert(id);
        if writer.written_size() >= self.settings.pack_size {
            self.finish_pack()?;
        }
        Ok(())
    }

    /// The parts of a chunk list, or None when `id` is a plain chunk.
    pub fn list_parts(&self, id: &ChunkId) -> Result<Option<Vec<ChunkId>>, StoreError> {
        let Some(loc) = self.index.chunk(id)? else {
            return Err(StoreError::NotDurable(*id));
        };
        if loc.kind != ChunkKind::ChunkList as u8 {
            return Ok(None);
        }
        let (loc, data) = self.read_chunk(id)?;
        let list = ChunkList::decode(&data).map_err(|reason| StoreError::CorruptChunk {
            chunk: *id,
            pack: loc.pack_name.clone(),
            reason,
        })?;
        Ok(Some(list.parts.into_iter().map(|(id, _)| id).collect()))
    }

    /// Stores one chunk as it is (no cutting).
    pub fn put_chunk(&mut self, kind: ChunkKind, data: &[u8]) -> Result<ChunkId, StoreError> {
        let id = self.keys.id_key().chunk_id(data);
        if self.contains(&id)? {
            self.report.chunks_deduplicated += 1;
            return Ok(id);
        }
        if self.targets.is_empty() {
            return Err(StoreError::NoTargets);
        }
        let writer = match &mut self.writer {
            Some(w) => w,
            None => self.writer.insert(PackWriter::create(
                &self.tmp_dir,
                &self.recipient,
                &self.auth,
                self.settings.compression,
            )?),
        };
        writer.add(id, kind as u8, data)?;
        self.pending.insert(id);
        self.report.chunks_added += 1;
        self.report.raw_bytes_added += data.len() as u64;
        if writer.written_size() >= self.settings.pack_size {
            self.finish_pack()?;
        }
        Ok(id)
    }

    /// Makes everything put so far durable: closes the open pack, uploads and indexes it.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        if self.writer.as_ref().is_some_and(|w| w.chunk_count() > 0) {
            self.finish_pack()?;
        } else if let Some(w) = self.writer.take() {
            w.discard();
        }
        if self.pending_logical > 0 {
            self.index.add_logical_bytes(self.pending_logical)?;
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
        self.pending.clear();
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
                    s.spawn(move || {
                        let r = t.put_if_absent(key, Body::File(&pack.path)).map(|_| ());
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
            0 => self.targets.len(),
            n => n.min(self.targets.len()),
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
        self.index
            .commit_pack(&pack.record(), &stored, self.pending_logical)?;
        self.pending_logical = 0;
        self.pending.clear();
        self.report.packs_written += 1;
        self.report.bytes_uploaded += pack.size * stored.len() as u64;
        tracing::debug!(pack = %pack.name, size = pack.size, chunks = pack.footer.entries.len(), "pack written");
        Ok(())
    }

    /// Reads back what `put` stored.
    pub fn get(&self, id: &ChunkId) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        self.get_to(id, &mut out)?;
        Ok(out)
    }

    /// Streams what `put` stored into `out`; returns the byte count.
    pub fn get_to(&self, id: &ChunkId, out: &mut dyn Write) -> Result<u64, StoreError> {
        let (loc, data) = self.read_chunk(id)?;
        if loc.kind != ChunkKind::ChunkList as u8 {
            out.write_all(&data).map_err(StoreError::Output)?;
            return Ok(data.len() as u64);
        }
        let list = ChunkList::decode(&data).map_err(|reason| StoreError::CorruptChunk {
            chunk: *id,
            pack: loc.pack_name.clone(),
            reason,
        })?;
        let mut total = 0;
        for (part, len) in &list.parts {
            let (_, bytes) = self.read_chunk(part)?;
            if bytes.len() as u64 != *len {
                return Err(StoreError::CorruptChunk {
                    chunk: *part,
                    pack: loc.pack_name.clone(),
                    reason: format!("length {} where the chunk list says {len}", bytes.len()),
                });
            }
            out.write_all(&bytes).map_err(StoreError::Output)?;
            total += *len;
        }
        Ok(total)
    }

    /// The kind and bytes of one stored chunk, checked against its id.
    pub fn read_chunk(&self, id: &ChunkId) -> Result<(ChunkLocation, Vec<u8>), StoreError> {
        let Some(loc) = self.index.chunk(id)? else {
            return Err(if self.pending.contains(id) {
                StoreError::NotDurable(*id)
            } else {
                StoreError::UnknownChunk(*id)
            });
        };
        let frame = self.frame(&loc, id)?;
        let start = loc.offset as usize;
        let end = start + loc.len as usize;
        // `frame` checked the chunk already; a frame that passed holds it.
        let bytes = frame
            .get(start..end)
            .ok_or_else(|| StoreError::CorruptChunk {
                chunk: *id,
                pack: loc.pack_name.clone(),
                reason: "lies outside its frame".into(),
            })?;
        Ok((loc, bytes.to_vec()))
    }

    /// Whether `frame` holds the chunk `id` where `loc` says, with the bytes its id names.
    fn check_chunk(&self, frame: &[u8], loc: &ChunkLocation, id: &ChunkId) -> Result<(), String> {
        let start = loc.offset as usize;
        let bytes = frame
            .get(start..start + loc.len as usize)
            .ok_or_else(|| format!("chunk {id} lies outside its frame"))?;
        if self.keys.id_key().chunk_id(bytes) != *id {
            return Err(format!("chunk {id}: content does not match its id"));
        }
        Ok(())
    }

    /// The frame that holds chunk `id`, from the cache or the first target whose copy holds
    /// the chunk's true bytes: a target that serves other bytes under a pack's name (damage or
    /// forgery) is reported and the next one is asked.
    fn frame(&self, loc: &ChunkLocation, id: &ChunkId) -> Result<Arc<Vec<u8>>, StoreError> {
        let key = (loc.pack_id, loc.frame.offset);
        if let Some(frame) = self.cache.lock().ok().and_then(|mut c| c.get(key))
            && self.check_chunk(&frame, loc, id).is_ok()
        {
            return Ok(frame);
        }
        let holders = self.index.pack_targets(loc.pack_id)?;
        let object = pack_key(&loc.pack_name);
        let mut missing = Vec::new();
        let mut broken = Vec::new();
        for target in self
            .targets
            .iter()
            .filter(|t| holders.iter().any(|h| h == t.name()))
        {
            let attempt = target
                .open(&object)
                .map_err(|e| match e {
                    TargetError::NotFound { .. } => None,
                    other => Some(other.to_string()),
                })
                .and_then(|input| {
                    PackReader::open(self.keys.identity(), input)
                        .and_then(|mut r| r.frame(&loc.frame))
                        .map_err(|e| Some(e.to_string()))
                })
                .and_then(|frame| {
                    self.check_chunk(&frame, loc, id).map_err(Some)?;
                    Ok(frame)
                });
            match attempt {
                Ok(frame) => {
                    let frame = Arc::new(frame);
                    if let Ok(mut c) = self.cache.lock() {
                        c.put(key, frame.clone());
                    }
                    return Ok(frame);
                }
                Err(None) => missing.push(target.name().to_string()),
                Err(Some(reason)) => {
                    tracing::warn!(pack = %loc.pack_name, target = target.name(), %reason, "pack unreadable");
                    broken.push(format!("on {}: {reason}", target.name()))
                }
            }
        }
        if broken.is_empty() {
            Err(StoreError::MissingPack {
                pack: loc.pack_name.clone(),
                targets: if missing.is_empty() {
                    "no configured target holds it".to_string()
                } else {
                    missing.join(", ")
                },
            })
        } else {
            broken.extend(missing.iter().map(|t| format!("missing on {t}")));
            Err(StoreError::CorruptPack {
                pack: loc.pack_name.clone(),
                reasons: broken.join("; "),
            })
        }
    }
}

impl Drop for ChunkStore<'_> {
    fn drop(&mut self) {
        // An unflushed pack was never acknowledged: drop its temporary file.
        if let Some(w) = self.writer.take() {
            w.discard();
        }
    }
}

fn upload_panicked() -> TargetError {
    TargetError::Io {
        target: "?".into(),
        op: "put",
        key: String::new(),
        source: std::io::Error::other("upload thread panicked"),
    }
}

/// The chunk that stands for an input cut into several chunks.
struct ChunkList {
    kind: ChunkKind,
    parts: Vec<(ChunkId, u64)>,
}

const CHUNK_LIST_VERSION: u8 = 1;

impl ChunkList {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(6 + self.parts.len() * 40);
        out.push(CHUNK_LIST_VERSION);
        out.push(self.kind as u8);
        out.extend_from_slice(&(self.parts.len() as u32).to_le_bytes());
        for (id, len) in &self.parts {
            out.extend_from_slice(&id.0);
            out.extend_from_slice(&len.to_le_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<ChunkList, String> {
        if bytes.len() < 6 || bytes[0] != CHUNK_LIST_VERSION {
            return Err("unknown chunk list version".into());
        }
        let kind = ChunkKind::from_u8(bytes[1]).ok_or("unknown chunk kind in chunk list")?;
        let count = u32::from_le_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]) as usize;
        let body = &bytes[6..];
        if body.len() != count.saturating_mul(40) {
            return Err("chunk list length does not match its count".into());
        }
        let parts = body
            .chunks_exact(40)
            .map(|e| {
                let mut id = [0u8; 32];
                id.copy_from_slice(&e[..32]);
                let mut len = [0u8; 8];
                len.copy_from_slice(&e[32..]);
                (ChunkId(id), u64::from_le_bytes(len))
            })
            .collect();
        Ok(ChunkList { kind, parts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_keys_round_trip() {
        let name = "ab".to_string() + &"0".repeat(62);
        assert_eq!(pack_name_from_key(&pack_key(&name)), Some(name.as_str()));
        assert_eq!(pack_name_from_key("packs/ab/.tmp-x"), None);
        assert_eq!(pack_name_from_key(&format!("packs/cd/{name}")), None);
    }

    #[test]
    fn chunk_list_round_trip_and_rejects_garbage() {
        let list = ChunkList {
            kind: ChunkKind::LfsObject,
            parts: vec![(ChunkId([7; 32]), 5), (ChunkId([9; 32]), 1 << 40)],
        };
        let back = ChunkList::decode(&list.encode()).unwrap();
        assert_eq!(back.parts, list.parts);
        assert_eq!(back.kind, ChunkKind::LfsObject);
        assert!(ChunkList::decode(&[1, 0, 5, 0, 0, 0]).is_err());
        assert!(ChunkList::decode(&[]).is_err());
    }
}
