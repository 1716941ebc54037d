//! Phase 1, **mark**: everything a snapshot reaches — manifest, ref set, object maps, LFS map,
//! metadata map and documents (chunk lists with all their parts), and every git object
//! reachable from its refs, walked through the vault with its chunk. Marking follows exactly
//! the references restore follows, so what restore reads, mark marks (docs/PRUNE.md).

use std::collections::{HashMap, HashSet};

use crate::crypto::ChunkId;
use crate::git::objects::{GroupKey, ObjectError, ObjectSource, Reached, walk_visit};
use crate::index::{IndexError, ObjectChunk, SnapshotRow};
use crate::provider::MetadataMap;
use crate::snapshot::{self, Manifest, ObjectKind, Oid, RefSet};
use crate::store::{ChunkKind, ChunkReader, StoreError};
use crate::vault::Vault;

use super::PruneError;

/// Reached from a kept snapshot's refs.
pub(super) const WALKED: u8 = 1;
/// Listed by a kept snapshot's object map.
pub(super) const MAPPED: u8 = 2;

/// What the mark found live.
///
/// Memory is what limits prune on large vaults, so chunk liveness is kept as 64-bit prefixes
/// of the (keyed, uniformly distributed) chunk ids. A prefix shared by a live and a dead chunk
/// only keeps the dead one for another run (about n²/2⁶⁵ such pairs: 3·10⁻⁶ at 10 M chunks);
/// it never lets a live chunk be judged dead. Objects need exact ids: the walk stops at an
/// object it has seen, so a false "seen" would leave what lies below unmarked.
#[derive(Default)]
pub(super) struct Live {
    pub(super) chunks: HashSet<u64>,
    /// Non-object chunks seen (manifests, maps, documents): exact, so that each is expanded
    /// once.
    others: HashSet<ChunkId>,
    /// Delta chunks whose bases are marked: exact, so that each chain is followed once.
    deltas: HashSet<ChunkId>,
    /// WALKED: reached from a kept snapshot's refs; MAPPED: listed by a kept object map.
    pub(super) objects: HashMap<Oid, u8>,
    /// Packs to be regrouped: the walk records the grouping keys of their objects' chunks.
    pub(super) regroup: HashSet<i64>,
    pub(super) keys: HashMap<u64, GroupKey>,
}

pub(super) fn prefix(id: &ChunkId) -> u64 {
    let mut p = [0u8; 8];
    p.copy_from_slice(&id.0[..8]);
    u64::from_le_bytes(p)
}

/// Marks every snapshot of `rows`; the grouping keys of objects in the `regroup` packs are
/// kept for compaction.
pub(super) fn mark(
    vault: &Vault,
    store: &ChunkReader<'_>,
    rows: &[SnapshotRow],
    regroup: HashSet<i64>,
) -> Result<Live, PruneError> {
    let mut live = Live {
        regroup,
        ..Live::default()
    };
    for row in rows {
        live.snapshot(vault, store, row)?;
    }
    Ok(live)
}

/// Why the walk of a snapshot's objects stopped.
#[derive(Debug, thiserror::Error)]
pub(super) enum MarkError {
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error("git object {0} is not in the vault")]
    Missing(Oid),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Index(IndexError),
}

struct MarkSource<'a, 'v> {
    vault: &'a Vault,
    store: &'a ChunkReader<'v>,
    live: &'a mut Live,
    /// The object `read` just looked up: the visit that follows needs its chunk too.
    last: Option<(Oid, ObjectChunk)>,
}

impl MarkSource<'_, '_> {
    fn lookup(&self, oid: &Oid) -> Result<ObjectChunk, MarkError> {
        self.vault
            .index()
            .git_object_chunk(oid)
            .map_err(MarkError::Index)?
            .ok_or(MarkError::Missing(*oid))
    }

    fn visit(&mut self, reached: Reached) -> Result<(), MarkError> {
        let object = match self.last.take() {
            Some((oid, object)) if oid == reached.oid => object,
            _ => self.lookup(&reached.oid)?,
        };
        *self.live.objects.entry(reached.oid).or_insert(0) |= WALKED;
        self.live
            .object_chunk(self.store, &object, reached.group_key())
            .map_err(MarkError::Store)
    }
}

impl ObjectSource for MarkSource<'_, '_> {
    type Error = MarkError;
    fn read(&mut self, oid: &Oid) -> Result<(ObjectKind, Vec<u8>), MarkError> {
        let object = self.lookup(oid)?;
        let data = self.store.get(&object.chunk).map_err(MarkError::Store)?;
        self.last = Some((*oid, object));
        Ok((object.kind, data))
    }
    fn known(&mut self, oid: &Oid) -> Result<bool, MarkError> {
        Ok(self
            .live
            .objects
            .get(oid)
            .is_some_and(|flags| flags & WALKED != 0))
    }
}

/// Reads and decodes one chunk a snapshot names; any failure is the reason the snapshot is
/// unreadable.
fn read_decoded<T, E: std::fmt::Display>(
    store: &ChunkReader<'_>,
    id: &ChunkId,
    decode: impl FnOnce(&[u8]) -> Result<T, E>,
) -> Result<T, String> {
    store
        .get(id)
        .map_err(|e| e.to_string())
        .and_then(|b| decode(&b).map_err(|e| e.to_string()))
}

impl Live {
    pub(super) fn has(&self, id: &ChunkId) -> bool {
        self.chunks.contains(&prefix(id))
    }

    pub(super) fn walked(&self, oid: &Oid) -> bool {
        self.objects.get(oid).is_some_and(|f| f & WALKED != 0)
    }

    /// Marks a chunk that is not a git object's, with the parts of a chunk list.
    pub(super) fn chunk(&mut self, store: &ChunkReader<'_>, id: ChunkId) -> Result<(), StoreError> {
        if self.others.insert(id) {
            self.chunks.insert(prefix(&id));
            if let Some(parts) = store.list_parts(&id)? {
                self.chunks.extend(parts.iter().map(prefix));
            }
        }
        Ok(())
    }

    /// Marks a git object's chunk; each object is visited once.
    fn object_chunk(
        &mut self,
        store: &ChunkReader<'_>,
        object: &ObjectChunk,
        key: GroupKey,
    ) -> Result<(), StoreError> {
        let p = prefix(&object.chunk);
        self.chunks.insert(p);
        let regroup = self.regroup.contains(&object.pack_id);
        if regroup {
            self.keys.insert(p, key);
        }
        // Expanded even when the prefix was there already: that may be another chunk's.
        if object.chunk_kind == ChunkKind::ChunkList as u8
            && let Some(parts) = store.list_parts(&object.chunk)?
        {
            for part in &parts {
                self.chunks.insert(prefix(part));
                self.keys.insert(prefix(part), key);
            }
        }
        if object.chunk_kind == ChunkKind::Delta as u8 {
            self.delta_bases(store, object.chunk, key)?;
        }
        Ok(())
    }

    /// Marks the chain of bases under a delta chunk: restore reads through all of them, so
    /// they live as long as the delta does, whatever became of the snapshots that added them.
    /// Each delta is expanded once; a base to regroup goes next to the versions stored
    /// against it.
    fn delta_bases(
        &mut self,
        store: &ChunkReader<'_>,
        delta: ChunkId,
        key: GroupKey,
    ) -> Result<(), StoreError> {
        let mut next = Some(delta);
        let mut hops = 0;
        while let Some(id) = next.take() {
            if !self.deltas.insert(id) {
                break;
            }
            let Some(base) = store.delta_base(&id)? else {
                break;
            };
            hops += 1;
            if hops > crate::store::delta::MAX_HOPS {
                return Err(StoreError::CorruptChunk {
                    chunk: delta,
                    pack: String::new(),
                    reason: "its chain of delta bases does not end".into(),
                });
            }
            self.chunks.insert(prefix(&base));
            self.keys.entry(prefix(&base)).or_insert(key);
            if let Some(parts) = store.list_parts(&base)? {
                for part in &parts {
                    self.chunks.insert(prefix(part));
                    self.keys.entry(prefix(part)).or_insert(key);
                }
            }
            next = Some(base);
        }
        Ok(())
    }

    /// Marks everything one snapshot needs.
    pub(super) fn snapshot(
        &mut self,
        vault: &Vault,
        store: &ChunkReader<'_>,
        row: &SnapshotRow,
    ) -> Result<(), PruneError> {
        let unreadable = |reason: String| PruneError::Unreadable {
            repo: row.repo.clone(),
            snapshot: row.id.clone(),
            reason,
        };
        self.chunk(store, row.manifest)?;
        let manifest = read_decoded(store, &row.manifest, Manifest::decode).map_err(unreadable)?;
        let refset_id = manifest
            .refset_id()
            .map_err(|e| unreadable(e.to_string()))?;
        self.chunk(store, refset_id)?;
        let refs = read_decoded(store, &refset_id, RefSet::decode).map_err(unreadable)?;
        self.documents(store, &manifest).map_err(|e| match e {
            Mark::Store(e) => PruneError::Store(e),
            Mark::Unreadable(reason) => unreadable(reason),
        })?;
        let mut tips: Vec<Oid> = refs.refs.values().copied().collect();
        tips.sort();
        tips.dedup();
        let mut source = MarkSource {
            vault,
            store,
            live: self,
            last: None,
        };
        walk_visit(&mut source, &tips, |source, reached| source.visit(reached))
            .map_err(|e| unreadable(e.to_string()))
    }

    /// Marks the maps a manifest names and what they list: object maps (their objects are
    /// MAPPED), the LFS map with its objects, the metadata map with its documents.
    fn documents(&mut self, store: &ChunkReader<'_>, manifest: &Manifest) -> Result<(), Mark> {
        for map in &manifest.object_maps {
            let id: ChunkId = map.parse().map_err(Mark::Unreadable)?;
            self.chunk(store, id)?;
            let entries =
                read_decoded(store, &id, snapshot::decode_object_map).map_err(Mark::Unreadable)?;
            for e in entries {
                *self.objects.entry(e.oid).or_insert(0) |= MAPPED;
            }
        }
        if let Some(map) = &manifest.lfs {
            let id: ChunkId = map.parse().map_err(Mark::Unreadable)?;
            self.chunk(store, id)?;
            let entries =
                read_decoded(store, &id, crate::lfs::decode_map).map_err(Mark::Unreadable)?;
            for e in entries.iter().filter(|e| e.chunk != crate::lfs::MISSING) {
                self.chunk(store, e.chunk)?;
            }
        }
        if let Some(meta) = &manifest.metadata {
            let id: ChunkId = meta.parse().map_err(Mark::Unreadable)?;
            self.chunk(store, id)?;
            let map: MetadataMap = read_decoded(store, &id, |b| serde_json::from_slice(b))
                .map_err(Mark::Unreadable)?;
            for doc in map.documents.values() {
                let id: ChunkId = doc.parse().map_err(Mark::Unreadable)?;
                self.chunk(store, id)?;
            }
        }
        Ok(())
    }
}

/// A document that cannot be marked: the store failed (a prune error of its own), or the
/// document is unreadable (the snapshot is).
enum Mark {
    Store(StoreError),
    Unreadable(String),
}

impl From<StoreError> for Mark {
    fn from(e: StoreError) -> Self {
        Mark::Store(e)
    }
}
