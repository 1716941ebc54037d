//! Phase 2, **compact** (no lock): the live chunks of the packs to rewrite, regrouped across
//! all of them into new packs at a high zstd level. The new packs are replicated but not
//! indexed: phase 3 records them under the lock.

use std::collections::HashMap;

use crate::crypto::VaultKeys;
use crate::git::objects::GroupKey;
use crate::store::ChunkReader;
use crate::store::pack::FinishedPack;
use crate::vault::Vault;

use super::PruneError;
use super::mark::{Live, prefix};

/// A pack written by compaction, with the targets that hold it.
pub(super) type Compacted = (FinishedPack, Vec<String>);

/// Compacts `rewrite` (nothing to do when empty), then forgets the grouping keys: the rest of
/// the run needs only liveness.
pub(super) fn compact(
    vault: &Vault,
    keys: &VaultKeys,
    reader: &ChunkReader<'_>,
    live: &mut Live,
    rewrite: &[i64],
) -> Result<Vec<Compacted>, PruneError> {
    let copies = if rewrite.is_empty() {
        Vec::new()
    } else {
        regroup(vault, keys, reader, live, rewrite)?
    };
    live.keys = HashMap::new();
    live.regroup = Default::default();
    Ok(copies)
}

/// One live chunk on its way through the spill file (its id is recomputed from its bytes).
struct Spilled {
    key: GroupKey,
    offset: u64,
    len: u32,
    kind: u8,
}

/// Copies the live chunks of `packs` into new packs, regrouped the way DESIGN.md's layout
/// asks: every object by (type, path, time) across all the packs, the rest after them by kind
/// in their old order. The chunks are read in pack order (each frame decompressed once) into a
/// temporary file in the vault's tmp directory, then written out in the new order.
fn regroup(
    vault: &Vault,
    keys: &VaultKeys,
    reader: &ChunkReader<'_>,
    live: &Live,
    packs: &[i64],
) -> Result<Vec<Compacted>, PruneError> {
    use std::os::unix::fs::FileExt;
    let dir = vault.tmp_dir();
    std::fs::create_dir_all(&dir).map_err(PruneError::Spill)?;
    let file = tempfile::tempfile_in(&dir).map_err(PruneError::Spill)?;
    let mut spilled = spill(vault, reader, live, packs, &file)?;
    // The offset breaks ties: equal keys keep their old order.
    spilled.sort_unstable_by_key(|s| (s.key, s.offset));
    let mut writer = vault.compaction_store(keys);
    let mut buf = Vec::new();
    for s in &spilled {
        buf.resize(s.len as usize, 0);
        file.read_exact_at(&mut buf, s.offset)
            .map_err(PruneError::Spill)?;
        writer.put_copy(keys.id_key().chunk_id(&buf), s.kind, &buf)?;
    }
    writer.flush()?;
    Ok(writer.take_unindexed())
}

/// Reads the live chunks of `packs`, pack by pack, into `file`; returns where each went and
/// its grouping key.
fn spill(
    vault: &Vault,
    reader: &ChunkReader<'_>,
    live: &Live,
    packs: &[i64],
    file: &std::fs::File,
) -> Result<Vec<Spilled>, PruneError> {
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut spilled: Vec<Spilled> = Vec::new();
    let mut offset = 0u64;
    for pack in packs {
        for c in vault.index().chunks_of_pack(*pack, |c| live.has(&c.id))? {
            let (loc, data) = reader.read_chunk(&c.id)?;
            out.write_all(&data).map_err(PruneError::Spill)?;
            // Without a key from the walk (not a git object, or one in a sparse pack): after
            // the objects, by kind, so that each day's ref set or manifest sits next to the
            // others of its kind.
            spilled.push(Spilled {
                key: live
                    .keys
                    .get(&prefix(&c.id))
                    .copied()
                    .unwrap_or_else(|| GroupKey::after_objects(loc.kind)),
                offset,
                len: data.len() as u32,
                kind: loc.kind,
            });
            offset += data.len() as u64;
        }
    }
    out.flush().map_err(PruneError::Spill)?;
    Ok(spilled)
}
