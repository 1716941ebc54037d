//! Reading chunks back: the index says where a chunk lies (pack, frame, offset), one frame of
//! that pack is fetched from the first target whose copy holds the chunk's true bytes, and a
//! few recent frames are kept so that neighbouring reads cost nothing.
//!
//! A reader needs no lock and writes nothing; it only ever trusts bytes that hash to the id
//! asked for, so a damaged or hostile target makes a read fail or fall back, never lie.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::{Arc, Mutex};

use super::delta::{DeltaChunk, MAX_HOPS, RESOLVED_CACHE_BYTES, ResolvedCache};
use super::pack::PackReader;
use super::{ChunkKind, ChunkList, StoreError, pack_key};
use crate::crypto::{ChunkId, VaultKeys};
use crate::index::{ChunkLocation, ChunkPlace, FrameInfo, Index};
use crate::target::{Target, TargetError};

/// Decompressed frame bytes a reader keeps by default (four whole 32 MiB frames, more when
/// frames are small: a pack's last frame usually is). The frame read last is always kept.
const FRAME_CACHE_BYTES: usize = 128 << 20;

type FrameKey = (i64, u64);

/// Recently read frames, least recently used first, bounded by their decompressed bytes.
struct FrameCache {
    slots: Vec<(FrameKey, Arc<Vec<u8>>)>,
    bytes: usize,
    budget: usize,
}

impl FrameCache {
    fn new(budget: usize) -> FrameCache {
        FrameCache {
            slots: Vec::new(),
            bytes: 0,
            budget,
        }
    }
    fn get(&mut self, key: FrameKey) -> Option<Arc<Vec<u8>>> {
        let pos = self.slots.iter().position(|(k, _)| *k == key)?;
        let slot = self.slots.remove(pos);
        let frame = slot.1.clone();
        self.slots.push(slot);
        Some(frame)
    }
    /// Drops the oldest frames until `incoming` more bytes fit the budget, and returns a buffer
    /// to decompress the incoming frame into: the allocation of a frame dropped here when no
    /// reader still holds it. A restore then holds one frame buffer throughout instead of
    /// freeing and allocating 32 MiB a frame, which the allocator does not always give back
    /// (measured: 97 MB peak against 64 MB for ripgrep).
    fn make_room(&mut self, incoming: usize) -> Vec<u8> {
        let mut spare = None;
        while !self.slots.is_empty() && self.bytes + incoming > self.budget {
            let (_, frame) = self.slots.remove(0);
            self.bytes -= frame.len();
            if let Ok(buffer) = Arc::try_unwrap(frame) {
                spare = Some(buffer);
            }
        }
        spare.unwrap_or_default()
    }
    fn put(&mut self, key: FrameKey, frame: Arc<Vec<u8>>) {
        self.make_room(frame.len());
        self.bytes += frame.len();
        self.slots.push((key, frame));
    }
}

/// Reads the chunks of one vault. Holds no lock: the index is read in WAL mode and packs are
/// immutable.
pub struct ChunkReader<'v> {
    pub(super) index: &'v Index,
    pub(super) targets: &'v [Box<dyn Target>],
    pub(super) keys: &'v VaultKeys,
    /// Chunks that the `ChunkStore` holding this reader put into its open pack: reading one
    /// fails as "not durable yet" rather than "unknown". Empty for a reader of its own.
    pub(super) unflushed: HashSet<ChunkId>,
    cache: Mutex<FrameCache>,
    /// The frame read last for a delta chunk's base: bases lie in other packs than the chunks
    /// read in order, which would otherwise push the frame being read out of `cache`.
    base_frames: Mutex<FrameCache>,
    resolved: Mutex<ResolvedCache>,
    /// Pack names and frame lengths `get_placed` looked up: a few hundred for a restore.
    frames: Mutex<HashMap<(i64, u64), (String, FrameInfo)>>,
}

impl<'v> ChunkReader<'v> {
    pub(crate) fn new(
        index: &'v Index,
        targets: &'v [Box<dyn Target>],
        keys: &'v VaultKeys,
    ) -> ChunkReader<'v> {
        ChunkReader {
            index,
            targets,
            keys,
            unflushed: HashSet::new(),
            cache: Mutex::new(FrameCache::new(FRAME_CACHE_BYTES)),
            base_frames: Mutex::new(FrameCache::new(0)),
            resolved: Mutex::new(ResolvedCache::new(RESOLVED_CACHE_BYTES)),
            frames: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps only the frame read last: for a caller that reads in pack and frame order (a
    /// restore), where a frame once left is not needed again. Memory: one decompressed frame.
    pub(crate) fn sequential(mut self) -> Self {
        self.cache = Mutex::new(FrameCache::new(0));
        self
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
        let list = decode_list(id, &loc, &data)?;
        Ok(Some(list.parts.into_iter().map(|(id, _)| id).collect()))
    }

    /// Whether `id` reads back without the packs `avoid` (packs missing from every target):
    /// its own pack, a delta's chain of bases and a chunk list's parts, reading those deltas
    /// and lists to find out. A chunk that does not read counts as not intact.
    pub fn intact(&self, id: &ChunkId, avoid: &HashSet<i64>) -> Result<bool, StoreError> {
        let mut todo = vec![*id];
        let mut seen = HashSet::new();
        while let Some(id) = todo.pop() {
            if !seen.insert(id) {
                continue;
            }
            let Some(loc) = self.index.chunk(&id)? else {
                return Ok(false);
            };
            if avoid.contains(&loc.pack_id) {
                return Ok(false);
            }
            let below = if loc.kind == ChunkKind::Delta as u8 {
                self.delta_base(&id).map(|b| b.into_iter().collect())
            } else if loc.kind == ChunkKind::ChunkList as u8 {
                self.list_parts(&id).map(Option::unwrap_or_default)
            } else {
                Ok(Vec::new())
            };
            match below {
                Ok(ids) => todo.extend(ids),
                Err(_) => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Reads back what `ChunkStore::put` stored.
    pub fn get(&self, id: &ChunkId) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        self.get_to(id, &mut out)?;
        Ok(out)
    }

    /// Streams what `ChunkStore::put` stored into `out`; returns the byte count.
    pub fn get_to(&self, id: &ChunkId, out: &mut dyn Write) -> Result<u64, StoreError> {
        let (loc, data) = self.read_chunk(id)?;
        if loc.kind == ChunkKind::Delta as u8 {
            let content = self.resolve(id, &loc, &data, 0)?;
            out.write_all(&content).map_err(StoreError::Output)?;
            return Ok(content.len() as u64);
        }
        if loc.kind != ChunkKind::ChunkList as u8 {
            out.write_all(&data).map_err(StoreError::Output)?;
            return Ok(data.len() as u64);
        }
        let list = decode_list(id, &loc, &data)?;
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

    /// The depth of a delta chunk (0 for a chunk stored whole), or None for a chunk list,
    /// which is no delta base.
    pub fn delta_depth(&self, id: &ChunkId) -> Result<Option<u8>, StoreError> {
        let Some(loc) = self.index.chunk(id)? else {
            return Err(StoreError::UnknownChunk(*id));
        };
        match loc.kind {
            k if k == ChunkKind::ChunkList as u8 => Ok(None),
            k if k == ChunkKind::Delta as u8 => {
                let (loc, data) = self.read_chunk_with(id, true)?;
                let doc = DeltaChunk::decode(&data).map_err(|reason| corrupt(id, &loc, reason))?;
                Ok(Some(doc.depth))
            }
            _ => Ok(Some(0)),
        }
    }

    /// The base of a delta chunk, or None for any other chunk (prune keeps bases alive).
    pub fn delta_base(&self, id: &ChunkId) -> Result<Option<ChunkId>, StoreError> {
        let Some(loc) = self.index.chunk(id)? else {
            return Err(StoreError::UnknownChunk(*id));
        };
        if loc.kind != ChunkKind::Delta as u8 {
            return Ok(None);
        }
        let (loc, data) = self.read_chunk_with(id, true)?;
        let doc = DeltaChunk::decode(&data).map_err(|reason| corrupt(id, &loc, reason))?;
        Ok(Some(doc.base))
    }

    /// The content a delta chunk stands for: its base's content (resolved the same way) with
    /// its delta applied. The depth each delta declares must be its base's plus one and at
    /// most `MAX_HOPS`, so whether a chain is refused does not depend on what is cached.
    fn resolve(
        &self,
        id: &ChunkId,
        loc: &ChunkLocation,
        data: &[u8],
        hops: usize,
    ) -> Result<Arc<Vec<u8>>, StoreError> {
        if let Some((_, hit)) = self.resolved.lock().ok().and_then(|c| c.get(id)) {
            return Ok(hit);
        }
        let doc = DeltaChunk::decode(data).map_err(|reason| corrupt(id, loc, reason))?;
        if doc.depth as usize > MAX_HOPS || hops >= MAX_HOPS {
            return Err(corrupt(
                id,
                loc,
                format!("delta chain longer than {MAX_HOPS}"),
            ));
        }
        let (base_depth, base) = self.base_content(&doc.base, hops + 1)?;
        if base_depth as usize + 1 != doc.depth as usize {
            return Err(corrupt(
                id,
                loc,
                format!(
                    "declares delta depth {} over a base of depth {base_depth}",
                    doc.depth
                ),
            ));
        }
        let content = crate::delta::apply_delta(&base, doc.delta)
            .map_err(|e| corrupt(id, loc, format!("its delta does not apply: {e}")))?;
        let content = Arc::new(content);
        if let Ok(mut c) = self.resolved.lock() {
            c.put(*id, doc.depth, content.clone());
        }
        Ok(content)
    }

    /// A delta base's depth and content, kept for the next version of its path.
    fn base_content(&self, id: &ChunkId, hops: usize) -> Result<(u8, Arc<Vec<u8>>), StoreError> {
        if let Some(hit) = self.resolved.lock().ok().and_then(|c| c.get(id)) {
            return Ok(hit);
        }
        let (loc, data) = self.read_chunk_with(id, true)?;
        if loc.kind == ChunkKind::Delta as u8 {
            let content = self.resolve(id, &loc, &data, hops)?;
            let depth = DeltaChunk::decode(&data).map(|d| d.depth).unwrap_or(0);
            return Ok((depth, content));
        }
        let content = if loc.kind == ChunkKind::ChunkList as u8 {
            let mut whole = Vec::new();
            self.get_to(id, &mut whole)?;
            whole
        } else {
            data
        };
        let content = Arc::new(content);
        if let Ok(mut c) = self.resolved.lock() {
            c.put(*id, 0, content.clone());
        }
        Ok((0, content))
    }

    /// The kind and bytes of one stored chunk, checked against its id.
    pub(crate) fn read_chunk(&self, id: &ChunkId) -> Result<(ChunkLocation, Vec<u8>), StoreError> {
        self.read_chunk_with(id, false)
    }

    /// `read_chunk`, keeping the frame in the base cache when `base` (see `base_frames`).
    fn read_chunk_with(
        &self,
        id: &ChunkId,
        base: bool,
    ) -> Result<(ChunkLocation, Vec<u8>), StoreError> {
        let Some(loc) = self.index.chunk(id)? else {
            return Err(if self.unflushed.contains(id) {
                StoreError::NotDurable(*id)
            } else {
                StoreError::UnknownChunk(*id)
            });
        };
        let bytes = self.read_at(id, &loc, base)?;
        Ok((loc, bytes))
    }

    /// Reads back what `ChunkStore::put` stored under `id`, which the index said lies at
    /// `place` (`Index::git_object_row`): a restore's reads then ask the index nothing more
    /// than once a frame.
    pub fn get_placed(&self, id: &ChunkId, place: &ChunkPlace) -> Result<Vec<u8>, StoreError> {
        if place.kind == ChunkKind::ChunkList as u8 {
            return self.get(id);
        }
        let key = (place.pack_id, place.frame_offset);
        let known = self.frames.lock().ok().and_then(|f| f.get(&key).cloned());
        let (pack_name, frame) = match known {
            Some(found) => found,
            None => {
                let found = self
                    .index
                    .frame(place.pack_id, place.frame_offset)?
                    .ok_or(StoreError::UnknownChunk(*id))?;
                if let Ok(mut frames) = self.frames.lock() {
                    frames.insert(key, found.clone());
                }
                found
            }
        };
        let loc = ChunkLocation {
            kind: place.kind,
            pack_id: place.pack_id,
            pack_name,
            frame,
            offset: place.offset,
            len: place.len,
        };
        let data = self.read_at(id, &loc, false)?;
        if loc.kind == ChunkKind::Delta as u8 {
            return Ok(self.resolve(id, &loc, &data, 0)?.to_vec());
        }
        Ok(data)
    }

    /// The bytes of chunk `id` where `loc` says, checked against the id.
    fn read_at(
        &self,
        id: &ChunkId,
        loc: &ChunkLocation,
        base: bool,
    ) -> Result<Vec<u8>, StoreError> {
        let frame = self.frame(loc, id, base)?;
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
        Ok(bytes.to_vec())
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
    fn frame(
        &self,
        loc: &ChunkLocation,
        id: &ChunkId,
        base: bool,
    ) -> Result<Arc<Vec<u8>>, StoreError> {
        let key = (loc.pack_id, loc.frame.offset);
        for cache in [&self.cache, &self.base_frames] {
            if let Some(frame) = cache.lock().ok().and_then(|mut c| c.get(key))
                && self.check_chunk(&frame, loc, id).is_ok()
            {
                return Ok(frame);
            }
        }
        let cache = if base { &self.base_frames } else { &self.cache };
        let mut buffer = cache
            .lock()
            .map(|mut c| c.make_room(loc.frame.raw_len as usize))
            .unwrap_or_default();
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
                        .and_then(|mut r| r.frame_into(&loc.frame, &mut buffer))
                        .map_err(|e| Some(e.to_string()))
                })
                .and_then(|()| self.check_chunk(&buffer, loc, id).map_err(Some));
            match attempt {
                Ok(()) => {
                    let frame = Arc::new(std::mem::take(&mut buffer));
                    if let Ok(mut c) = cache.lock() {
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

fn corrupt(id: &ChunkId, loc: &ChunkLocation, reason: String) -> StoreError {
    StoreError::CorruptChunk {
        chunk: *id,
        pack: loc.pack_name.clone(),
        reason,
    }
}

/// A chunk list read from `loc`; a list that does not decode names the pack it came from.
fn decode_list(id: &ChunkId, loc: &ChunkLocation, data: &[u8]) -> Result<ChunkList, StoreError> {
    ChunkList::decode(data).map_err(|reason| StoreError::CorruptChunk {
        chunk: *id,
        pack: loc.pack_name.clone(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_cache_is_bounded_by_bytes_and_keeps_the_last_frame() {
        let mut cache = FrameCache::new(10);
        cache.put((1, 0), Arc::new(vec![0; 6]));
        cache.put((1, 6), Arc::new(vec![0; 4]));
        assert!(cache.get((1, 0)).is_some());
        // (1, 6) is now the oldest: room for 4 more bytes drops it, and nothing else.
        let spare = cache.make_room(4);
        assert!(spare.capacity() >= 4);
        assert!(cache.get((1, 6)).is_none() && cache.get((1, 0)).is_some());
        // A frame larger than the budget is still kept, alone.
        let mut sequential = FrameCache::new(0);
        sequential.put((1, 0), Arc::new(vec![0; 6]));
        assert!(sequential.get((1, 0)).is_some());
        let held = sequential.get((1, 0));
        let spare = sequential.make_room(6);
        assert_eq!(spare.capacity(), 0, "a frame still held is not reused");
        sequential.put((1, 6), Arc::new(vec![0; 6]));
        assert!(sequential.get((1, 0)).is_none() && sequential.get((1, 6)).is_some());
        assert_eq!(sequential.bytes, 6);
        drop(held);
    }
}
