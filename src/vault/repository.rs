//! A snapshot's git objects as a pack: the walk from its refs through the vault, every object
//! read in pack order (each frame decompressed once) and checked against its id, one git pack
//! and its index written in one pass. Restore writes repositories with it, and backup rebuilds
//! a dropped mirror cache from the previous snapshot with it (docs/ARCHITECTURE.md).

use std::path::Path;

use crate::git::objects::{ObjectError, ObjectSource, Reached, walk};
use crate::git::{self, GitError};
use crate::index::{Index, IndexError};
use crate::model::{ObjectKind, Oid, RefSet};
use crate::progress::{Progress, Unit};
use crate::store::{ChunkReader, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    #[error(
        "object {oid} is needed by the snapshot but missing from the vault index; run `gitvault verify`"
    )]
    MissingObject { oid: Oid },
    #[error("object {oid} read from the vault does not hash to its id; the vault is damaged")]
    BadObject { oid: Oid },
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
}

impl From<ObjectError> for RepositoryError {
    fn from(e: ObjectError) -> Self {
        RepositoryError::Git(GitError::Object(e))
    }
}

/// The vault's git objects, each checked against its id as it is read.
pub struct VaultSource<'a, 'v> {
    index: &'a Index,
    store: &'a ChunkReader<'v>,
}

impl<'a, 'v> VaultSource<'a, 'v> {
    pub fn new(index: &'a Index, store: &'a ChunkReader<'v>) -> Self {
        VaultSource { index, store }
    }

    pub fn index(&self) -> &'a Index {
        self.index
    }

    pub fn store(&self) -> &'a ChunkReader<'v> {
        self.store
    }

    pub fn read_checked(&self, oid: &Oid) -> Result<(ObjectKind, Vec<u8>), RepositoryError> {
        let (kind, chunk) = self
            .index
            .git_object(oid)?
            .ok_or(RepositoryError::MissingObject { oid: *oid })?;
        let data = self.store.get(&chunk)?;
        if git::objects::object_id(kind, &data) != *oid {
            return Err(RepositoryError::BadObject { oid: *oid });
        }
        Ok((kind, data))
    }
}

impl ObjectSource for VaultSource<'_, '_> {
    type Error = RepositoryError;
    fn read(&mut self, oid: &Oid) -> Result<(ObjectKind, Vec<u8>), RepositoryError> {
        self.read_checked(oid)
    }
    fn known(&mut self, _oid: &Oid) -> Result<bool, RepositoryError> {
        Ok(false)
    }
}

/// Every object the snapshot's refs reach (commits and trees are read, blobs only located).
pub fn walk_snapshot(
    source: &mut VaultSource<'_, '_>,
    refs: &RefSet,
) -> Result<Vec<Reached>, RepositoryError> {
    let mut tips: Vec<Oid> = refs.refs.values().copied().collect();
    tips.sort();
    tips.dedup();
    let phase = std::time::Instant::now();
    let reached = walk(source, &tips)?;
    tracing::info!(
        seconds = phase.elapsed().as_secs_f64(),
        objects = reached.len(),
        "walked the snapshot"
    );
    Ok(reached)
}

/// Where each object lies, as ((pack, frame, offset), id, path hash), sorted: read in the
/// order the objects lie in the packs, each frame is decompressed once.
pub type Located = ((i64, u64, u32), Oid, u64);

pub fn locate(index: &Index, reached: &[Reached]) -> Result<Vec<Located>, RepositoryError> {
    let mut located = Vec::with_capacity(reached.len());
    for r in reached {
        let place = index
            .git_object_place(&r.oid)?
            .ok_or(RepositoryError::MissingObject { oid: r.oid })?
            .unwrap_or((i64::MAX, 0, 0));
        located.push((place, r.oid, r.path_hash));
    }
    located.sort();
    Ok(located)
}

/// Objects, and bytes of them, read ahead of the pack writer.
const READ_AHEAD: usize = 64;
const READ_AHEAD_BYTES: usize = 32 << 20;

/// Writes the located objects as one pack and its index into the bare repository `git_dir`;
/// returns the objects written.
pub fn write_objects(
    source: &VaultSource<'_, '_>,
    located: &[Located],
    git_dir: &Path,
    (job, progress): (&str, &dyn Progress),
) -> Result<u32, RepositoryError> {
    let count = located.len() as u32;
    progress.phase(job, "write pack", Some(u64::from(count)), Unit::Objects);
    if count == 0 {
        return Ok(0);
    }
    // Reading (decryption, decompression, deltas of the vault, hashing) runs on a thread of
    // its own while this one delta-encodes and deflates: the two halves take about the same
    // time. The channel bounds what is read ahead.
    let written = std::thread::scope(|scope| {
        let (tx, rx) = crate::flow::bounded(READ_AHEAD, READ_AHEAD_BYTES);
        scope.spawn(move || {
            for (_, oid, path_hash) in located {
                let object = source
                    .read_checked(oid)
                    .map(|(kind, data)| git::PackObject {
                        oid: *oid,
                        kind,
                        data,
                        path_hash: *path_hash,
                    });
                let size = object.as_ref().map_or(0, |o| o.data.len());
                let failed = object.is_err();
                // A closed channel: the writer stopped (an error of its own).
                if tx.send(object, size).is_err() || failed {
                    break;
                }
            }
        });
        // A line of its own for the pack's bytes, beside the objects' count.
        let bytes_job = format!("{job} pack");
        progress.phase(&bytes_job, "written", None, Unit::Bytes);
        let mut shown = 0;
        let written = git::write_pack(git_dir, count, |pack_bytes| {
            progress.advance(&bytes_job, pack_bytes - shown);
            shown = pack_bytes;
            let object = rx.recv()?;
            progress.advance(job, 1);
            Some(object)
        });
        crate::hooks::point("restore-pack-written");
        progress.done(&bytes_job);
        written
    })??;
    Ok(written)
}
