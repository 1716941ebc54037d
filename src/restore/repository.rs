//! The bare repository of a snapshot: refs and HEAD, the pack `vault::repository` writes (the
//! walk through the vault, objects read in pack order and checked), and the LFS objects its
//! pointer blobs name.

use std::io::Write;
use std::path::Path;

use crate::git;
use crate::index::Index;
use crate::progress::Progress;
use crate::snapshot::{Manifest, ObjectKind, Oid, RefSet};
use crate::store::ChunkReader;
use crate::vault::repository::write_objects;
pub(super) use crate::vault::repository::{Located, VaultSource, walk_snapshot};

use super::{RestoreError, io_err};

/// Writes the bare repository into `staging`: refs, one pack of the located objects, and the
/// LFS objects. Returns (objects, LFS objects) written.
pub(super) fn write(
    source: &VaultSource<'_, '_>,
    (refs, manifest): (&RefSet, &Manifest),
    located: &[Located],
    staging: &Path,
    watch: (&str, &dyn Progress),
) -> Result<(u64, u64), RestoreError> {
    git::write_bare_repository(staging, refs)?;
    let written = write_objects(source, located, staging, watch)?;
    let lfs_written =
        write_lfs_objects(source.index(), source.store(), manifest, located, staging)?;
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
        .filter(|l| l.kind() == Some(ObjectKind::Blob))
        .map(Located::oid)
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
