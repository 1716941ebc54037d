//! A snapshot's git objects as a pack: the walk from its refs through the vault, every object
//! read in pack order (each frame decompressed once) and checked against its id, one git pack
//! and its index written in one pass. Restore writes repositories with it, and backup rebuilds
//! a dropped mirror cache from the previous snapshot with it (docs/ARCHITECTURE.md).

use std::path::Path;

use crate::git::objects::{ObjectError, ObjectSource, walk_each};
use crate::git::{self, GitError};
use crate::index::{GitObjectRow, Index, IndexError};
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

/// The vault's git objects, read where the index says their chunks lie.
pub struct VaultSource<'a, 'v> {
    index: &'a Index,
    store: &'a ChunkReader<'v>,
    /// The index row of the object read last, which the walk keeps rather than asking again.
    last: Option<(Oid, Option<GitObjectRow>)>,
}

impl<'a, 'v> VaultSource<'a, 'v> {
    pub fn new(index: &'a Index, store: &'a ChunkReader<'v>) -> Self {
        VaultSource {
            index,
            store,
            last: None,
        }
    }

    pub fn index(&self) -> &'a Index {
        self.index
    }

    pub fn store(&self) -> &'a ChunkReader<'v> {
        self.store
    }

    /// The object's kind and content, read where the index says its chunk lies (`row`, when
    /// known); checked against its git id when `check`.
    fn read_row(
        &self,
        oid: &Oid,
        row: Option<&GitObjectRow>,
        check: bool,
    ) -> Result<(ObjectKind, Vec<u8>), RepositoryError> {
        let (kind, data) = match row {
            Some(row) => (row.kind, self.store.get_placed(&row.chunk, &row.place)?),
            // No row or no chunk row: the reader names what is missing.
            None => {
                let (kind, chunk) = self
                    .index
                    .git_object(oid)?
                    .ok_or(RepositoryError::MissingObject { oid: *oid })?;
                (kind, self.store.get(&chunk)?)
            }
        };
        if check && git::objects::object_id(kind, &data) != *oid {
            return Err(RepositoryError::BadObject { oid: *oid });
        }
        Ok((kind, data))
    }
}

impl ObjectSource for VaultSource<'_, '_> {
    type Error = RepositoryError;
    /// For the walk, unchecked against the git id: the chunk's bytes are authenticated by its
    /// keyed id already, and every object the walk reaches is read again and checked before it
    /// goes into the pack, so an index that maps an id to the wrong chunk still fails (SHA-1
    /// of every commit and tree twice was a twentieth of a restore).
    fn read(&mut self, oid: &Oid) -> Result<(ObjectKind, Vec<u8>), RepositoryError> {
        let row = self.index.git_object_row(oid)?.flatten();
        self.last = Some((*oid, row));
        self.read_row(oid, row.as_ref(), false)
    }
    fn known(&mut self, _oid: &Oid) -> Result<bool, RepositoryError> {
        Ok(false)
    }
}

/// Every object the snapshot's refs reach (commits and trees are read, blobs only located),
/// with its index row. Put in pack order with `Walked::in_pack_order` once the walk's reader
/// (and its frame cache) is dropped.
pub fn walk_snapshot(
    source: &mut VaultSource<'_, '_>,
    refs: &RefSet,
) -> Result<Walked, RepositoryError> {
    let mut tips: Vec<Oid> = refs.refs.values().copied().collect();
    tips.sort();
    tips.dedup();
    let phase = std::time::Instant::now();
    let index = source.index;
    let mut walked = Walked {
        segments: Vec::new(),
        count: 0,
    };
    walk_each(source, &tips, |source, r| {
        let row = match source.last.take() {
            Some((oid, row)) if oid == r.oid => row,
            // Blobs are not read by the walk: their row is looked up here, once.
            _ => index
                .git_object_row(&r.oid)?
                .ok_or(RepositoryError::MissingObject { oid: r.oid })?,
        };
        walked.push(Located {
            oid: r.oid,
            path_hash: r.path_hash,
            row,
        });
        Ok(())
    })?;
    tracing::info!(
        seconds = phase.elapsed().as_secs_f64(),
        objects = walked.count,
        "walked the snapshot"
    );
    Ok(walked)
}

/// Objects a walk reached, in segments of a fixed size: a single list, doubling as it grows,
/// held its old and its new copy at once while the walk's frame cache was full, which put a
/// restore's peak memory above git's (cargo: 217 MB against 209).
pub struct Walked {
    segments: Vec<Vec<Located>>,
    count: usize,
}

impl Walked {
    const SEGMENT: usize = 1 << 14;

    fn push(&mut self, located: Located) {
        match self.segments.last_mut() {
            Some(last) if last.len() < Self::SEGMENT => last.push(located),
            _ => {
                let mut segment = Vec::with_capacity(Self::SEGMENT);
                segment.push(located);
                self.segments.push(segment);
            }
        }
        self.count += 1;
    }

    /// The objects in the order they lie in the packs: read in this order, each frame is
    /// decompressed once.
    pub fn in_pack_order(self) -> Vec<Located> {
        let mut located = Vec::with_capacity(self.count);
        for segment in self.segments {
            located.extend(segment);
        }
        located.sort_unstable_by_key(|l| (l.place(), l.oid));
        located
    }
}

/// An object to write: its id and path hash, and its index row (None when its chunk is gone:
/// reading it then fails with the reader's own error).
pub struct Located {
    oid: Oid,
    path_hash: u64,
    row: Option<GitObjectRow>,
}

impl Located {
    pub fn oid(&self) -> Oid {
        self.oid
    }

    /// The object's kind, when the index knows its chunk.
    pub fn kind(&self) -> Option<ObjectKind> {
        self.row.map(|row| row.kind)
    }

    /// Where its chunk lies: read in this order, each frame is decompressed once.
    fn place(&self) -> (i64, u64, u32) {
        self.row.map_or((i64::MAX, 0, 0), |row| {
            (row.place.pack_id, row.place.frame_offset, row.place.offset)
        })
    }
}

/// Batches, and bytes of objects, read ahead of the pack writer; what one batch holds at most
/// (a single larger object goes alone).
const READ_AHEAD_BATCHES: usize = 8;
const READ_AHEAD_BYTES: usize = 16 << 20;
const BATCH_OBJECTS: usize = 128;
const BATCH_BYTES: usize = 2 << 20;

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
    // its own while `git::write_pack` delta-encodes on this one and deflates on a third. The
    // channel bounds what is read ahead; objects go over in batches, since a wake-up per
    // object was a tenth of the time.
    let written = std::thread::scope(|scope| {
        let (tx, rx) = crate::flow::bounded(READ_AHEAD_BATCHES, READ_AHEAD_BYTES);
        scope.spawn(move || {
            let mut batch = Vec::with_capacity(BATCH_OBJECTS);
            let mut bytes = 0;
            for at in located {
                let object = source
                    .read_row(&at.oid, at.row.as_ref(), true)
                    .map(|(kind, data)| git::PackObject {
                        oid: at.oid,
                        kind,
                        data,
                        path_hash: at.path_hash,
                    });
                bytes += object.as_ref().map_or(0, |o| o.data.len());
                let failed = object.is_err();
                batch.push(object);
                if failed || batch.len() >= BATCH_OBJECTS || bytes >= BATCH_BYTES {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_OBJECTS));
                    // A closed channel: the writer stopped (an error of its own).
                    if tx.send(full, std::mem::take(&mut bytes)).is_err() || failed {
                        return;
                    }
                }
            }
            if !batch.is_empty() {
                let _ = tx.send(batch, bytes);
            }
        });
        // A line of its own for the pack's bytes, beside the objects' count.
        let bytes_job = format!("{job} pack");
        progress.phase(&bytes_job, "written", None, Unit::Bytes);
        let mut shown = 0;
        let mut pending = Vec::new().into_iter();
        let written = git::write_pack(git_dir, count, |pack_bytes| {
            progress.advance(&bytes_job, pack_bytes - shown);
            shown = pack_bytes;
            let object = match pending.next() {
                Some(object) => object,
                None => {
                    pending = rx.recv()?.into_iter();
                    pending.next()?
                }
            };
            progress.advance(job, 1);
            Some(object)
        });
        crate::hooks::point("restore-pack-written");
        progress.done(&bytes_job);
        written
    })??;
    Ok(written)
}
