//! Delta chunks (kind 13): a chunk whose bytes are a git binary delta against another chunk,
//! the previous version of the same path. A daily increment then costs about what git's own
//! delta costs instead of each changed file's whole size (DESIGN.md, "Storage efficiency").
//!
//! The delta chunk's id is the keyed hash of its own bytes (base id, depth and delta), so it is
//! authenticated like any chunk; the content it stands for is the base's content with the delta
//! applied, and is as authentic as the base. Each delta chunk declares its depth (its base's plus
//! one); readers check it and refuse chains deeper than [`MAX_HOPS`], so a chain is refused
//! or read the same whatever is cached. Writers keep chains at most [`MAX_DEPTH`] long.
//!
//! Resolving a chain reads its bases, often from other packs than the one being read in order:
//! results are kept in a small cache bounded by bytes, so that a restore, which reads the
//! versions of a path oldest pack first, finds each base resolved already.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::crypto::ChunkId;

/// Longest chain a writer makes: a read of the newest version then resolves at most this many
/// deltas (from the cache, usually).
pub const MAX_DEPTH: u8 = 16;
/// Deepest chain a reader follows (room for writers whose `MAX_DEPTH` grows later).
pub const MAX_HOPS: usize = 64;
/// Bytes of resolved contents a reader keeps.
pub(crate) const RESOLVED_CACHE_BYTES: usize = 16 << 20;

const VERSION: u8 = 1;
const HEADER: usize = 2 + 32;

/// The parts of a delta chunk: `u8 version = 1, u8 depth, [32]u8 base chunk id, delta`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DeltaChunk<'a> {
    /// 1 + the base's depth (0 for a base stored whole).
    pub depth: u8,
    pub base: ChunkId,
    pub delta: &'a [u8],
}

impl<'a> DeltaChunk<'a> {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.delta.len());
        out.push(VERSION);
        out.push(self.depth);
        out.extend_from_slice(&self.base.0);
        out.extend_from_slice(self.delta);
        out
    }

    pub(crate) fn decode(bytes: &'a [u8]) -> Result<DeltaChunk<'a>, String> {
        if bytes.len() < HEADER {
            return Err(format!("delta chunk of {} bytes is truncated", bytes.len()));
        }
        if bytes[0] != VERSION {
            return Err(format!("delta chunk version {} is unknown", bytes[0]));
        }
        let mut base = [0u8; 32];
        base.copy_from_slice(&bytes[2..HEADER]);
        Ok(DeltaChunk {
            depth: bytes[1],
            base: ChunkId(base),
            delta: &bytes[HEADER..],
        })
    }
}

/// Resolved contents (with their delta depth) by chunk id, oldest dropped first once over the
/// budget.
pub(crate) struct ResolvedCache {
    map: HashMap<ChunkId, (u8, Arc<Vec<u8>>)>,
    order: VecDeque<ChunkId>,
    bytes: usize,
    budget: usize,
}

impl ResolvedCache {
    pub(crate) fn new(budget: usize) -> ResolvedCache {
        ResolvedCache {
            map: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            budget,
        }
    }

    pub(crate) fn get(&self, id: &ChunkId) -> Option<(u8, Arc<Vec<u8>>)> {
        self.map.get(id).cloned()
    }

    pub(crate) fn put(&mut self, id: ChunkId, depth: u8, content: Arc<Vec<u8>>) {
        if content.len() > self.budget || self.map.contains_key(&id) {
            return;
        }
        self.bytes += content.len();
        self.map.insert(id, (depth, content));
        self.order.push_back(id);
        while self.bytes > self.budget {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((_, gone)) = self.map.remove(&old) {
                self.bytes -= gone.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_chunks_round_trip_and_refuse_damage() {
        let chunk = DeltaChunk {
            depth: 3,
            base: ChunkId([7; 32]),
            delta: b"\x05\x06abc",
        };
        let bytes = chunk.encode();
        assert_eq!(DeltaChunk::decode(&bytes).unwrap(), chunk);
        assert!(DeltaChunk::decode(&bytes[..HEADER - 1]).is_err());
        let mut other = bytes.clone();
        other[0] = 2;
        assert!(DeltaChunk::decode(&other).is_err());
    }

    #[test]
    fn resolved_cache_is_bounded_by_bytes() {
        let mut cache = ResolvedCache::new(10);
        cache.put(ChunkId([1; 32]), 0, Arc::new(vec![0; 6]));
        cache.put(ChunkId([2; 32]), 0, Arc::new(vec![0; 4]));
        assert!(cache.get(&ChunkId([1; 32])).is_some());
        cache.put(ChunkId([3; 32]), 0, Arc::new(vec![0; 5]));
        assert!(cache.get(&ChunkId([1; 32])).is_none());
        assert!(cache.get(&ChunkId([2; 32])).is_some() && cache.get(&ChunkId([3; 32])).is_some());
        cache.put(ChunkId([4; 32]), 0, Arc::new(vec![0; 11]));
        assert!(
            cache.get(&ChunkId([4; 32])).is_none(),
            "larger than the budget"
        );
        assert_eq!(cache.bytes, 9);
    }
}
