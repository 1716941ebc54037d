//! `gitvault recover --from URL`: a machine with nothing but the key and one target's URL
//! rebuilds the local vault: config and key files from the target, the index from the newest
//! readable index backup, then every pack the backup does not know is read through its footer,
//! and every snapshot manifest found there becomes a snapshot again (invariant 1: the packs are
//! the truth).

use std::path::Path;

use serde::Serialize;

use crate::crypto::{self, ChunkId, CryptoError, Unlock, VaultKeys};
use crate::index::{Index, NewSnapshot};
use crate::snapshot::{self, Manifest};
use crate::store::pack::{FinishedPack, read_footer};
use crate::store::{ChunkKind, pack_key, pack_name_from_key};
use crate::target::{self, Target};
use crate::vault::{PUBLIC_FILE, PublicParams, Vault, VaultError};

#[derive(Debug, Serialize)]
pub struct RecoverReport {
    pub vault: String,
    pub vault_id: String,
    pub target: String,
    /// The index backup the index was restored from, if any could be read.
    pub index_backup: Option<String>,
    /// Packs whose footers were read because the index did not know them.
    pub packs_scanned: u64,
    pub packs_unreadable: Vec<String>,
    pub snapshots_recovered: u64,
    pub snapshots_total: u64,
}

pub struct RecoverOptions<'a> {
    pub url: &'a str,
    /// The name the target gets in the new vault's config.
    pub target_name: &'a str,
    /// Ignore index backups and rebuild from pack footers alone.
    pub footers_only: bool,
}

fn bad_target(url: &str, reason: impl Into<String>) -> VaultError {
    VaultError::BadConfig {
        path: url.to_string(),
        reason: reason.into(),
    }
}

pub fn recover(
    dir: &Path,
    options: &RecoverOptions<'_>,
    unlock: &Unlock,
) -> Result<RecoverReport, VaultError> {
    let source = target::open_target(options.target_name, options.url)?;
    let params: PublicParams = match source.get(PUBLIC_FILE) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            bad_target(options.url, format!("its {PUBLIC_FILE} is unreadable: {e}"))
        })?,
        Err(e) => {
            return Err(bad_target(
                options.url,
                format!("no gitvault vault there ({e})"),
            ));
        }
    };
    let (keys, key_files) = unlock_from_target(source.as_ref(), &params, unlock)?;
    let vault_dir =
        Vault::create_recovered(dir, &params, options.target_name, source.url(), &key_files)?;

    let mut index_backup = None;
    if !options.footers_only {
        index_backup =
            restore_index_backup(source.as_ref(), &keys, &vault_dir.join("index.sqlite"));
    }
    let vault = Vault::open(&vault_dir)?;
    let target = vault
        .targets()
        .first()
        .ok_or_else(|| bad_target(options.url, "the recovered vault has no target"))?;
    let mut report = RecoverReport {
        vault: vault_dir.display().to_string(),
        vault_id: params.vault_id.clone(),
        target: target.url().to_string(),
        index_backup,
        packs_scanned: 0,
        packs_unreadable: Vec::new(),
        snapshots_recovered: 0,
        snapshots_total: 0,
    };
    let manifests = rebuild_from_footers(&vault, target.as_ref(), &keys, &mut report)?;
    // The newest prune record says which manifests were forgotten (their packs may still hold
    // them) and maps the live objects whose adding snapshots are gone.
    let record = {
        let store = vault.reader(&keys);
        crate::retention::prune::newest_record(&vault, &store)
            .map_err(|e| bad_target(options.url, e.to_string()))?
    };
    let forgotten: std::collections::HashSet<ChunkId> = record
        .as_ref()
        .map(|r| r.forgotten.iter().filter_map(|m| m.parse().ok()).collect())
        .unwrap_or_default();
    if !forgotten.is_empty() {
        let forgotten: Vec<ChunkId> = forgotten.iter().copied().collect();
        vault.index().delete_snapshots(&forgotten)?;
    }
    if let Some(map) = record.as_ref().and_then(|r| r.orphan_objects.as_ref()) {
        let store = vault.reader(&keys);
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
    let manifests: Vec<ChunkId> = manifests
        .into_iter()
        .filter(|m| !forgotten.contains(m))
        .collect();
    report.snapshots_recovered = recover_snapshots(&vault, &keys, manifests)?;
    report.snapshots_total = vault.index().snapshots(None, None, None)?.len() as u64;
    Ok(report)
}

/// A key file's name on the target and its bytes.
type KeyFile = (String, Vec<u8>);

fn unlock_from_target(
    source: &dyn Target,
    params: &PublicParams,
    unlock: &Unlock,
) -> Result<(VaultKeys, Vec<KeyFile>), VaultError> {
    let mut files = Vec::new();
    for listed in source.list("keys/")? {
        files.push((listed.key.clone(), source.get(&listed.key)?));
    }
    if files.is_empty() {
        return Err(VaultError::NoKeyFiles(source.url().to_string()));
    }
    let mut opened = None;
    for (name, bytes) in &files {
        match VaultKeys::open(name, bytes, unlock) {
            Ok((keys, _)) if keys.public_key() == params.public_key => {
                opened = Some(keys);
                break;
            }
            Ok(_) | Err(CryptoError::WrongKey) => {}
            Err(e) => tracing::warn!(key_file = %name, error = %e, "key file unusable"),
        }
    }
    let keys = opened.ok_or(CryptoError::WrongKey)?;
    Ok((keys, files))
}

/// Writes the newest index backup that decrypts and opens to `dest`; returns its name.
fn restore_index_backup(source: &dyn Target, keys: &VaultKeys, dest: &Path) -> Option<String> {
    let mut backups = source.list("index/").ok()?;
    backups.sort_by(|a, b| b.key.cmp(&a.key));
    for backup in backups {
        let attempt = (|| -> Result<(), String> {
            // Streamed: an index backup can be gigabytes.
            let sealed = source.open(&backup.key).map_err(|e| e.to_string())?;
            let decrypted =
                crypto::decrypting_reader(keys.identity(), sealed).map_err(|e| e.to_string())?;
            let mut plain =
                zstd::stream::read::Decoder::new(decrypted).map_err(|e| e.to_string())?;
            let tmp = dest.with_extension("recovering");
            let copied = std::fs::File::create(&tmp).and_then(|mut out| {
                std::io::copy(&mut plain, &mut out).and_then(|_| out.sync_all())
            });
            if let Err(e) = copied {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.to_string());
            }
            let check = Index::open(&tmp).and_then(|i| i.totals().map(|_| ()));
            if let Err(e) = check {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.to_string());
            }
            std::fs::rename(&tmp, dest).map_err(|e| e.to_string())
        })();
        match attempt {
            Ok(()) => return Some(backup.key),
            Err(e) => {
                tracing::warn!(backup = %backup.key, error = %e, "index backup unusable, trying an older one")
            }
        }
    }
    None
}

/// Records presence of every listed pack; reads the footer of each pack the index lacks.
/// Returns the manifest chunks found in those footers.
fn rebuild_from_footers(
    vault: &Vault,
    target: &dyn Target,
    keys: &VaultKeys,
    report: &mut RecoverReport,
) -> Result<Vec<ChunkId>, VaultError> {
    let index = vault.index();
    index.clear_presence()?;
    let mut manifests = Vec::new();
    for listed in target.list("packs/")? {
        let Some(name) = pack_name_from_key(&listed.key) else {
            continue;
        };
        if index.pack_id(name)?.is_some() {
            index.set_presence(name, target.name(), true)?;
            continue;
        }
        report.packs_scanned += 1;
        let footer = target
            .open(&pack_key(name))
            .map_err(|e| e.to_string())
            .and_then(|input| read_footer(keys.identity(), input).map_err(|e| e.to_string()));
        let footer = match footer {
            Ok(f) => f,
            Err(reason) => {
                tracing::warn!(pack = %name, %reason, "pack footer unreadable");
                report.packs_unreadable.push(name.to_string());
                continue;
            }
        };
        manifests.extend(
            footer
                .entries
                .iter()
                .filter(|e| e.kind == ChunkKind::Manifest as u8)
                .map(|e| e.id),
        );
        let pack = FinishedPack {
            name: name.to_string(),
            path: Default::default(),
            size: listed.size,
            raw_bytes: footer.frames.iter().map(|f| u64::from(f.raw_len)).sum(),
            footer,
        };
        index.commit_pack(&pack, &[target.name().to_string()], 0)?;
    }
    Ok(manifests)
}

/// Turns manifests found in packs into snapshot rows (oldest first), with the objects their
/// object maps name.
fn recover_snapshots(
    vault: &Vault,
    keys: &VaultKeys,
    manifests: Vec<ChunkId>,
) -> Result<u64, VaultError> {
    let store = vault.reader(keys);
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
    found.sort_by_key(|(_, m)| m.time);
    let mut recovered = 0;
    for (id, manifest) in found {
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
        let refset = manifest
            .refset_id()
            .map_err(|e| bad_target("manifest", e.to_string()))?;
        let lfs = manifest
            .lfs
            .as_ref()
            .and_then(|m| m.parse::<ChunkId>().ok())
            .and_then(|id| store.get(&id).ok())
            .and_then(|b| crate::lfs::decode_map(&b).ok())
            .unwrap_or_default();
        // Only objects whose bytes came back with the packs.
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
        })?;
        recovered += 1;
    }
    Ok(recovered)
}
