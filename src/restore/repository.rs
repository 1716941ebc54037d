//! The bare repository of a snapshot: the walk from its refs through the vault, every object
//! read in pack order (each frame decompressed once) and checked against its id, one pack
//! written with gix, and the LFS objects its pointer blobs name.

use std::io::Write;
use std::path::Path;

use crate::git;
use crate::git::objects::{ObjectSource, Reached, walk};
use crate::index::Index;
use crate::progress::{Progress, Unit};
use crate::snapshot::{Manifest, ObjectKind, Oid, RefSet};
use crate::store::ChunkReader;
use crate::vault::Vault;

use super::{RestoreError, io_err};

pub(super) struct VaultSource<'a, 'v> {
    vault: &'a Vault,
    store: &'a ChunkReader<'v>,
}

impl VaultSource<'_, '_> {
    fn read_checked(&self, oid: &Oid) -> Result<(ObjectKind, Vec<u8>), RestoreError> {
        let (kind, chunk) = self
            .vault
            .index()
            .git_object(oid)?
            .ok_or(RestoreError::MissingObject { oid: *oid })?;
        let data = self.store.get(&chunk)?;
        if git::objects::object_id(kind, &data) != *oid {
            return Err(RestoreError::BadObject { oid: *oid });
        }
        Ok((kind, data))
    }
}

impl ObjectSource for VaultSource<'_, '_> {
    type Error = RestoreError;
    fn read(&mut self, oid: &Oid) -> Result<(ObjectKind, Vec<u8>), RestoreError> {
        self.read_checked(oid)
    }
    fn known(&mut self, _oid: &Oid) -> Result<bool, RestoreError> {
        Ok(false)
    }
}

impl<'a, 'v> VaultSource<'a, 'v> {
    pub(super) fn new(vault: &'a Vault, store: &'a ChunkReader<'v>) -> Self {
        VaultSource { vault, store }
    }
}

/// Every object the snapshot's refs reach (commits and trees are read, blobs only located).
pub(super) fn walk_snapshot(
    source: &mut VaultSource<'_, '_>,
    refs: &RefSet,
) -> Result<Vec<Reached>, RestoreError> {
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
pub(super) type Located = ((i64, u64, u32), Oid, u64);

pub(super) fn locate(index: &Index, reached: &[Reached]) -> Result<Vec<Located>, RestoreError> {
    let mut located = Vec::with_capacity(reached.len());
    for r in reached {
        let place = index
            .git_object_place(&r.oid)?
            .ok_or(RestoreError::MissingObject { oid: r.oid })?
            .unwrap_or((i64::MAX, 0, 0));
        located.push((place, r.oid, r.path_hash));
    }
    located.sort();
    Ok(located)
}

/// Objects, and bytes of them, read ahead of the pack writer.
const READ_AHEAD: usize = 64;
const READ_AHEAD_BYTES: usize = 32 << 20;

/// Writes the bare repository into `staging`: refs, one pack of the located objects, and the
/// LFS objects. Returns (objects, LFS objects) written.
pub(super) fn write(
    source: &VaultSource<'_, '_>,
    (refs, manifest): (&RefSet, &Manifest),
    reached: &[Reached],
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
            let written = git::write_pack(staging, count, |pack_bytes| {
                progress.advance(&bytes_job, pack_bytes - shown);
                shown = pack_bytes;
                let object = rx.recv()?;
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
        reached,
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
    reached: &[Reached],
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
    let blobs: std::collections::HashSet<Oid> = reached
        .iter()
        .filter(|r| r.kind == ObjectKind::Blob)
        .map(|r| r.oid)
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
