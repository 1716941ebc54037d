//! A snapshot's platform metadata written as files a person can read: JSON documents
//! pretty-printed, release assets as they were, names too long for a file system shortened.

use std::path::{Path, PathBuf};

use crate::crypto::{ChunkId, VaultKeys};
use crate::index::SnapshotRow;
use crate::snapshot;
use crate::store::ChunkReader;
use crate::vault::Vault;

use super::{RestoreError, check_destination, io_err, load_snapshot};

/// Writes a snapshot's metadata documents as pretty-printed JSON files (and release assets as
/// they were) under `dir`, which must be new or empty. Returns the number of files written.
pub fn write_metadata(
    vault: &Vault,
    keys: &VaultKeys,
    row: &SnapshotRow,
    dir: &Path,
) -> Result<usize, RestoreError> {
    check_destination(dir)?;
    let store = vault.reader(keys);
    let (manifest, _) = load_snapshot(&store, row)?;
    let Some(map_id) = manifest.metadata.as_deref() else {
        return Err(RestoreError::NoMetadata(row.repo.clone()));
    };
    let map = read_metadata_map(&store, map_id)?;
    let mut written = 0;
    let mut renamed = Vec::new();
    let mut failed = Vec::new();
    for (path, id) in &map.documents {
        let Some(rel) = crate::provider::safe_relative_path(path) else {
            tracing::warn!(%path, "refusing an unsafe metadata path");
            continue;
        };
        let id = id
            .parse()
            .map_err(|e: String| RestoreError::Snapshot(snapshot::SnapshotError::Damaged(e)))?;
        let short = shorten_components(&rel);
        if short != rel {
            renamed.push((path.clone(), short.display().to_string()));
        }
        let out = dir.join(&short);
        // One file that cannot be written (a full disk, a name the file system refuses) must
        // not cost the files after it: they are all tried, and the failures named at the end.
        let attempt = write_document(&store, path, &id, &out);
        match attempt {
            Ok(()) => written += 1,
            Err(e) => {
                tracing::warn!(path = %out.display(), error = %e, "metadata file not written");
                failed.push(format!("{}: {e}", short.display()));
            }
        }
    }
    if !renamed.is_empty() {
        write_renamed_list(dir, &renamed)?;
    }
    if !failed.is_empty() {
        return Err(RestoreError::Io {
            context: format!(
                "{} of {} metadata files could not be written ({written} were): {}",
                failed.len(),
                failed.len() + written,
                failed.join("; ")
            ),
            source: std::io::Error::other("see above"),
        });
    }
    Ok(written)
}

pub(super) fn read_metadata_map(
    store: &ChunkReader<'_>,
    map_id: &str,
) -> Result<crate::provider::MetadataMap, RestoreError> {
    let map_id = map_id
        .parse()
        .map_err(|e: String| RestoreError::Snapshot(snapshot::SnapshotError::Damaged(e)))?;
    serde_json::from_slice(&store.get(&map_id)?).map_err(|e| {
        RestoreError::Snapshot(snapshot::SnapshotError::Damaged(format!(
            "metadata map: {e}"
        )))
    })
}

/// Writes one document to `out`: JSON pretty-printed (as it was if it does not parse), other
/// files (release assets, which can be gigabytes) streamed chunk by chunk.
fn write_document(
    store: &ChunkReader<'_>,
    path: &str,
    id: &ChunkId,
    out: &Path,
) -> Result<(), RestoreError> {
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)
            .map_err(io_err(format!("creating {}", parent.display())))?;
    }
    if path.ends_with(".json") {
        let bytes = store.get(id)?;
        let contents = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| serde_json::to_vec_pretty(&v).ok())
            .unwrap_or(bytes);
        std::fs::write(out, contents).map_err(io_err(format!("writing {}", out.display())))
    } else {
        let file =
            std::fs::File::create(out).map_err(io_err(format!("writing {}", out.display())))?;
        let mut w = std::io::BufWriter::new(file);
        store.get_to(id, &mut w)?;
        std::io::Write::flush(&mut w).map_err(io_err(format!("writing {}", out.display())))
    }
}

/// Which names were too long for a file system, and what they became.
fn write_renamed_list(dir: &Path, renamed: &[(String, String)]) -> Result<(), RestoreError> {
    let list: Vec<serde_json::Value> = renamed
        .iter()
        .map(|(from, to)| serde_json::json!({ "name": from, "written_as": to }))
        .collect();
    let out = dir.join("gitvault-renamed.json");
    std::fs::write(&out, serde_json::to_vec_pretty(&list).unwrap_or_default())
        .map_err(io_err(format!("writing {}", out.display())))
}

/// File systems refuse names over 255 bytes: a longer path component keeps its first 200 bytes
/// (cut on a character boundary) and its extension, with a hash of the whole name between, so
/// that two long names never meet.
fn shorten_components(rel: &Path) -> PathBuf {
    const MAX: usize = 255;
    const KEEP: usize = 200;
    rel.components()
        .map(|c| {
            let name = c.as_os_str().to_string_lossy();
            if name.len() <= MAX {
                return name.into_owned();
            }
            let ext = Path::new(name.as_ref())
                .extension()
                .map(|e| e.to_string_lossy().into_owned())
                .filter(|e| e.len() <= 16)
                .map(|e| format!(".{e}"))
                .unwrap_or_default();
            let mut cut = KEEP;
            while !name.is_char_boundary(cut) {
                cut -= 1;
            }
            let hash = blake3::hash(name.as_bytes()).to_hex();
            format!("{}-{}{ext}", &name[..cut], &hash[..16])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_names_are_shortened_distinctly() {
        let long_a = format!("releases/v1/{}é.tar.gz", "a".repeat(300));
        let long_b = format!("releases/v1/{}b.tar.gz", "a".repeat(300));
        let a = super::shorten_components(std::path::Path::new(&long_a));
        let b = super::shorten_components(std::path::Path::new(&long_b));
        assert_ne!(a, b);
        for p in [&a, &b] {
            assert!(p.components().all(|c| c.as_os_str().len() <= 255));
            assert!(p.to_string_lossy().starts_with("releases/v1/aaaa"));
            assert!(p.to_string_lossy().ends_with(".gz"));
        }
        let short = std::path::Path::new("issues/1.json");
        assert_eq!(super::shorten_components(short), short);
    }
}
