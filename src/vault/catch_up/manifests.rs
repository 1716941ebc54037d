//! From manifests found in packs to snapshot rows: the newest prune record first (what it
//! forgot stays forgotten), then every readable manifest not yet recorded, oldest first.

use std::collections::HashSet;

use crate::crypto::{ChunkId, VaultKeys};
use crate::index::NewSnapshot;
use crate::model::Oid;
use crate::snapshot::{self, Manifest};
use crate::store::ChunkReader;
use crate::vault::{Vault, VaultError};

/// The newest prune record says which manifests were forgotten (their packs may still hold
/// them: their snapshots are deleted again) and maps the live objects whose adding snapshots
/// are gone (recorded). Returns the forgotten manifests and how many snapshot rows went.
pub(crate) fn apply_prune_record(
    vault: &Vault,
    keys: &VaultKeys,
) -> Result<(HashSet<ChunkId>, u64), VaultError> {
    let store = vault.reader(keys);
    let record = snapshot::newest_prune_record(vault.index(), &store)
        .map(|found| found.map(|(_, record)| record))
        .map_err(|e| VaultError::BadConfig {
            path: "the newest prune record".to_string(),
            reason: e.to_string(),
        })?;
    let forgotten: HashSet<ChunkId> = record
        .as_ref()
        .map(|r| r.forgotten.iter().filter_map(|m| m.parse().ok()).collect())
        .unwrap_or_default();
    let mut dropped = 0;
    if !forgotten.is_empty() {
        let forgotten: Vec<ChunkId> = forgotten.iter().copied().collect();
        dropped = vault.index().delete_snapshots(&forgotten)? as u64;
    }
    if let Some(map) = record.as_ref().and_then(|r| r.orphan_objects.as_ref()) {
        let entries = map
            .parse::<ChunkId>()
            .map_err(|e| e.to_string())
            .and_then(|id| store.get(&id).map_err(|e| e.to_string()))
            .and_then(|b| snapshot::decode_object_map(&b).map_err(|e| e.to_string()));
        match entries {
            Ok(entries) => vault.index().add_git_objects(&entries)?,
            Err(e) => tracing::warn!(error = %e, "the prune record's object map is unreadable"),
        }
    }
    Ok((forgotten, dropped))
}

/// Turns manifests found in packs into snapshot rows (oldest first), with the objects their
/// object maps name; manifests in `forgotten` stay forgotten. Returns how many were added.
pub(crate) fn record_manifests(
    vault: &Vault,
    keys: &VaultKeys,
    manifests: Vec<ChunkId>,
    forgotten: &HashSet<ChunkId>,
) -> Result<u64, VaultError> {
    // One manifest can sit in several packs (a compaction copy beside its condemned original,
    // a crash between uploads, a replay): one snapshot each.
    let mut manifests: Vec<ChunkId> = manifests
        .into_iter()
        .filter(|m| !forgotten.contains(m))
        .collect();
    manifests.sort();
    manifests.dedup();
    let store = vault.reader(keys);
    let found = readable_manifests(vault, &store, manifests)?;
    let mut recorded = 0;
    for (id, manifest) in found {
        record_snapshot(vault, &store, id, &manifest)?;
        recorded += 1;
    }
    Ok(recorded)
}

/// The manifests not yet recorded that can be read and are not dated in the future, oldest
/// first.
fn readable_manifests(
    vault: &Vault,
    store: &ChunkReader<'_>,
    manifests: Vec<ChunkId>,
) -> Result<Vec<(ChunkId, Manifest)>, VaultError> {
    let mut found = Vec::new();
    for id in manifests {
        if vault.index().has_snapshot(&id)? {
            continue;
        }
        match store
            .get(&id)
            .map_err(|e| e.to_string())
            .and_then(|b| Manifest::decode(&b).map_err(|e| e.to_string()))
        {
            Ok(m) => found.push((id, m)),
            Err(e) => tracing::warn!(manifest = %id, error = %e, "manifest unreadable"),
        }
    }
    // A manifest from the future would become every repository's "newest" snapshot and the
    // anchor of `--keep-within`; a clock can be wrong by minutes, not days.
    let horizon = chrono::Utc::now() + chrono::Duration::days(1);
    found.retain(|(id, m)| {
        let ok = m.time <= horizon;
        if !ok {
            tracing::warn!(manifest = %id, time = %m.time, "manifest dated in the future; ignored");
        }
        ok
    });
    found.sort_by_key(|(_, m)| m.time);
    Ok(found)
}

/// One snapshot row for `manifest`, with the objects of its readable object maps and the LFS
/// objects whose bytes came back with the packs.
fn record_snapshot(
    vault: &Vault,
    store: &ChunkReader<'_>,
    id: ChunkId,
    manifest: &Manifest,
) -> Result<(), VaultError> {
    let mut objects = Vec::new();
    for map in &manifest.object_maps {
        let Ok(map_id) = map.parse::<ChunkId>() else {
            continue;
        };
        match store
            .get(&map_id)
            .map_err(|e| e.to_string())
            .and_then(|b| snapshot::decode_object_map(&b).map_err(|e| e.to_string()))
        {
            Ok(entries) => objects.extend(entries),
            Err(e) => tracing::warn!(manifest = %id, error = %e, "object map unreadable"),
        }
    }
    let refset = manifest.refset_id().map_err(|e| VaultError::BadConfig {
        path: format!("manifest {id}"),
        reason: e.to_string(),
    })?;
    let lfs = manifest
        .lfs
        .as_ref()
        .and_then(|m| m.parse::<ChunkId>().ok())
        .and_then(|id| store.get(&id).ok())
        .and_then(|b| crate::lfs::decode_map(&b).ok())
        .unwrap_or_default();
    let mut lfs_present = Vec::with_capacity(lfs.len());
    for e in lfs {
        if vault.index().has_chunk(&e.chunk)? {
            lfs_present.push(e);
        }
    }
    vault.index().insert_snapshot(&NewSnapshot {
        repo: &manifest.repo,
        time: manifest.time,
        manifest: id,
        refset,
        head: manifest.head.as_ref().map(|h| match h {
            snapshot::Head::Symbolic(t) => t.clone(),
            snapshot::Head::Detached(o) => o.clone(),
        }),
        ref_count: manifest.ref_count as u64,
        source: &manifest.source,
        new_objects: &objects,
        new_lfs: &lfs_present,
        // Another host's backup stored again what missing packs held: its copies count.
        replace_objects: !vault.index().missing_packs()?.is_empty(),
    })?;
    // Oldest first: the source of the newest snapshot wins. `forget` on this host then applies
    // that source's retention to the repository, as the host that backed it up would.
    if let Some(source) = &manifest.source_name {
        vault.index().set_repo_source(&manifest.repo, source)?;
    }
    Ok(())
}

/// After another host's prune deleted objects this index knew, an object that prune judged
/// dead can keep its row here (its chunk sat in a pack the prune spared) while objects it
/// reaches went: a backup cutting its walk at it would refer to what is gone (the closure
/// invariant, docs/ARCHITECTURE.md). The live objects are exactly those the snapshots' object
/// maps and the newest prune record's map list, as `recover` rebuilds them: every other row
/// goes. Reads every object map, so it runs only when a vanished pack took objects; a map
/// that does not read leaves every row in place (a restore needs them). Returns the rows
/// dropped.
pub(super) fn keep_only_listed_objects(vault: &Vault, keys: &VaultKeys) -> Result<u64, VaultError> {
    let store = vault.reader(keys);
    let mut maps: Vec<ChunkId> = Vec::new();
    for row in vault.index().snapshots(None, None, None)? {
        match store
            .get(&row.manifest)
            .map_err(|e| e.to_string())
            .and_then(|b| Manifest::decode(&b).map_err(|e| e.to_string()))
        {
            Ok(m) => maps.extend(
                m.object_maps
                    .iter()
                    .filter_map(|id| id.parse::<ChunkId>().ok()),
            ),
            Err(e) => {
                tracing::warn!(manifest = %row.manifest, error = %e, "manifest unreadable; object rows left as they are");
                return Ok(0);
            }
        }
    }
    let record = snapshot::newest_prune_record(vault.index(), &store)
        .ok()
        .flatten()
        .and_then(|(_, r)| r.orphan_objects)
        .and_then(|m| m.parse::<ChunkId>().ok());
    maps.extend(record);
    let mut live: HashSet<Oid> = HashSet::new();
    for map in maps {
        match store
            .get(&map)
            .map_err(|e| e.to_string())
            .and_then(|b| snapshot::decode_object_map(&b).map_err(|e| e.to_string()))
        {
            Ok(entries) => live.extend(entries.into_iter().map(|e| e.oid)),
            Err(e) => {
                tracing::warn!(map = %map, error = %e, "object map unreadable; object rows left as they are");
                return Ok(0);
            }
        }
    }
    Ok(vault
        .index()
        .drop_git_objects_except(&|oid| live.contains(oid))?)
}
