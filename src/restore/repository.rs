//! The bare repository of a snapshot: the walk from its refs through the vault, every object
//! read in pack order (each frame decompressed once) and checked against its id, one pack
//! written with gix, and the LFS objects its pointer blobs name.

use std::io::Write;
use std::path::Path;

use crate::git;
use crate::git::objects::{ObjectSource, walk_each};
use crate::index::{GitObjectRow, Index};
use crate::progress::{Progress, Unit};
use crate::snapshot::{Manifest, ObjectKind, Oid, RefSet};
use crate::store::ChunkReader;
use crate::vault::Vault;

use super::{RestoreError, io_err};

pub(super) struct VaultSource<'a, 'v> {
    vault: &'a Vault,
    store: &'a ChunkReader<'v>,
    /// The index row of the object read last, which the walk keeps rather than asking again.
    last: Option<(Oid, Option<GitObjectRow>)>,
}

impl VaultSource<'_, '_> {
    /// The object's kind and content, read where the index says its chunk lies; checked
    /// against its git id when `check`.
    fn read_row(
        &self,
        oid: &Oid,
        row: Option<&GitObjectRow>,
        check: bool,
    ) -> Result<(ObjectKind, Vec<u8>), RestoreError> {
        let (kind, data) = match row {
            Some(row) => (row.kind, self.store.get_placed(&row.chunk, &row.place)?),
            // No row or no chunk row: the reader names what is missing.
            None => {
                let (kind, chunk) = self
                    .vault
                    .index()
                    .git_object(oid)?
                    .ok_or(RestoreError::MissingObject { oid: *oid })?;
                (kind, self.store.get(&chunk)?)
            }
        };
        if check && git::objects::object_id(kind, &data) != *oid {
            return Err(RestoreError::BadObject { oid: *oid });
        }
        Ok((kind, data))
    }
}

impl ObjectSource for VaultSource<'_, '_> {
    type Error = RestoreError;
    /// For the walk, unchecked against the git id: the chunk's bytes are authenticated by its
    /// keyed id already, and every object the walk reaches is read again and checked before it
    /// goes into the pack, so an index that maps an id to the wrong chunk still fails the
    /// restore (SHA-1 of every commit and tree twice was a twentieth of a restore).
    fn read(&mut self, oid: &Oid) -> Result<(ObjectKind, Vec<u8>), RestoreError> {
        let row = self.vault.index().git_object_row(oid)?.flatten();
        self.last = Some((*oid, row));
        self.read_row(oid, row.as_ref(), false)
    }
    fn known(&mut self, _oid: &Oid) -> Result<bool, RestoreError> {
        Ok(false)
    }
}

impl<'a, 'v> VaultSource<'a, 'v> {
    pub(super) fn new(vault: &'a Vault, store: &'a ChunkReader<'v>) -> Self {
        VaultSource {
            vault,
            store,
            last: None,
        }
    }
}

/// Every object the snapshot's refs reach (commits and trees are read, blobs only located),
/// with its index row, in the order the objects lie in the packs.
pub(super) fn walk_snapshot(
    source: &mut VaultSource<'_, '_>,
    refs: &RefSet,
) -> Result<Vec<Located>, RestoreError> {
    let mut tips: Vec<Oid> = refs.refs.values().copied().collect();
    tips.sort();
    tips.dedup();
    let phase = std::time::Instant::now();
    let index = source.vault.index();
    let mut located = Vec::new();
    walk_each(source, &tips, |source, r| {
        let row = match source.last.take() {
            Some((oid, row)) if oid == r.oid => row,
            // Blobs are not read by the walk: their row is looked up here, once.
            _ => index
                .git_object_row(&r.oid)?
                .ok_or(RestoreError::MissingObject { oid: r.oid })?,
        };
        located.push(Located {
            oid: r.oid,
            path_hash: r.path_hash,
            row,
        });
        Ok(())
    })?;
    located.sort_unstable_by_key(|l| (l.place(), l.oid));
    tracing::info!(
        seconds = phase.elapsed().as_secs_f64(),
        objects = located.len(),
        "walked the snapshot"
    );
    Ok(located)
}

/// An object to write: its id and path hash, and its index row (None when its chunk is gone:
/// reading it then fails with the reader's own error).
pub(super) struct Located {
    oid: Oid,
    path_hash: u64,
    row: Option<GitObjectRow>,
}

impl Located {
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

/// Writes the bare repository into `staging`: refs, one pack of the located objects, and the
/// LFS objects. Returns (objects, LFS objects) written.
pub(super) fn write(
    source: &VaultSource<'_, '_>,
    (refs, manifest): (&RefSet, &Manifest),
    located: &[Located],
    staging: &Path,
    (job, progress): (&str, &dyn Progress),
) -> Result<(u64, u64), RestoreError> {
    git::write_bare_repository(staging, refs)?;
    let count = located.len() as u32;
    progress.phase(job, "write pack", Some(u64::from(count)), Unit::Objects);
    let written = if count == 0 {
        0
    } else {
        // Reading (decryption, decompression, deltas of the vault, hashing) runs on a thread
        // of its own while this one delta-encodes and deflates: the two halves take about the
        // same time. The channel bounds what is read ahead.
        std::thread::scope(|scope| {
            // Objects go over in batches: a wake-up per object was a tenth of the time.
            let (tx, rx) = crate::flow::bounded(READ_AHEAD_BATCHES, READ_AHEAD_BYTES);
            scope.spawn(move || {
                let mut batch = Vec::with_capacity(BATCH_OBJECTS);
                let mut bytes = 0;
                for at in located {
                    let object =
                        source
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
            let written = git::write_pack(staging, count, |pack_bytes| {
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
        })??
    };
    let lfs_written = write_lfs_objects(
        source.vault.index(),
        source.store,
        manifest,
        located,
        staging,
    )?;
    Ok((u64::from(written), lfs_written))
}

/// Writes the LFS objects the restored refs' pointer blobs name into `git_dir/lfs/objects`,
/// where git-lfs looks for them, checking each one's SHA-256 on the way.
fn write_lfs_objects(
    index: &Index,
    store: &ChunkReader<'_>,
    manifest: &Manifest,
    located: &[Located],
    git_dir: &Path,
) -> Result<u64, RestoreError> {
    use sha2::Digest;
    let Some(map) = &manifest.lfs else {
        return Ok(0);
    };
    let id: crate::crypto::ChunkId = map
        .parse()
        .map_err(|e: String| RestoreError::Lfs(format!("LFS map id: {e}")))?;
    let entries = crate::lfs::decode_map(&store.get(&id)?).map_err(RestoreError::LfsFailed)?;
    let blobs: std::collections::HashSet<Oid> = located
        .iter()
        .filter(|l| l.row.is_some_and(|row| row.kind == ObjectKind::Blob))
        .map(|l| l.oid)
        .collect();
    let mut written = std::collections::HashSet::new();
    for e in entries.iter().filter(|e| blobs.contains(&e.blob)) {
        let Some(chunk) = crate::lfs::resolve(index, e)? else {
            tracing::warn!(oid = %e.pointer.oid_hex(), "LFS object missing from the vault");
            continue;
        };
        if !written.insert(e.pointer.sha256) {
            continue;
        }
        let path = crate::lfs::object_path(git_dir, &e.pointer);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        }
        let file =
            std::fs::File::create(&path).map_err(io_err(format!("writing {}", path.display())))?;
        struct Hashing<W> {
            out: W,
            hash: sha2::Sha256,
        }
        impl<W: Write> Write for Hashing<W> {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let n = self.out.write(buf)?;
                self.hash.update(&buf[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                self.out.flush()
            }
        }
        let mut out = Hashing {
            out: std::io::BufWriter::new(file),
            hash: sha2::Sha256::new(),
        };
        let size = store.get_to(&chunk, &mut out)?;
        out.flush()
            .map_err(io_err(format!("writing {}", path.display())))?;
        if size != e.pointer.size || out.hash.finalize().as_slice() != e.pointer.sha256 {
            return Err(RestoreError::Lfs(format!(
                "LFS object {} read back with the wrong content",
                e.pointer.oid_hex()
            )));
        }
    }
    Ok(written.len() as u64)
}
