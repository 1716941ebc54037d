//! The chunk store: content-defined chunking, dedup by keyed id, packs of zstd frames encrypted
//! with age, replication of each finished pack to the targets (`writer`), and reads of single
//! chunks with a frame cache and fallback to the next replica (`reader`).
//!
//! The split is by authority: a `ChunkReader` needs only the keys and writes nothing; a
//! `ChunkStore` writes (under the vault's write lock) and holds a reader for what it reads.

pub mod delta;
pub mod pack;
mod reader;
mod writer;

pub use reader::ChunkReader;
pub use writer::{ChunkStore, DeltaBase};

use crate::crypto::ChunkId;
use crate::index::IndexError;
use pack::{Compression, PackError};

crate::model::u8_enum! {
    /// What a chunk holds. The store only interprets `ChunkList` and `Delta`; the rest is a hint for
    /// grouping and for rebuilding the index from packs.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum ChunkKind, pub(crate) fn from_u8 {
        // Grouped by what writes them (rustfmt leaves a macro's body as written): the chunker,
        // the git object walk, LFS, and the parts of a snapshot.
        Data = 0, ChunkList = 1,
        GitCommit = 2, GitTree = 3, GitBlob = 4, GitTag = 5,
        LfsObject = 6,
        Manifest = 7, ObjectMap = 8, Metadata = 9, RefSet = 10,
        /// Written by prune: forgotten manifests (recover skips them) and the object map of
        /// live objects whose adding snapshots were forgotten. The newest one wins.
        PruneRecord = 11,
        /// A snapshot's LFS map (src/lfs.rs).
        LfsMap = 12,
        /// A git delta against another chunk (`store::delta`); what it stands for is read
        /// back by `ChunkReader::get`.
        Delta = 13,
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
    /// Chunks stored as deltas against an earlier version of their path.
    pub deltas: u64,
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
    fn the_index_indexes_the_kinds_it_is_asked_for() {
        assert_eq!(
            crate::index::INDEXED_CHUNK_KINDS,
            [ChunkKind::Manifest as u8, ChunkKind::PruneRecord as u8]
        );
    }

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
