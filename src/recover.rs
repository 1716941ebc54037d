//! `gitvault recover --from URL`: a machine with nothing but the key and one target's URL
//! rebuilds the local vault: config and key files from the target, the index from the newest
//! readable index backup, then every pack the backup does not know is read through its footer,
//! and every snapshot manifest found there becomes a snapshot again (invariant 1: the packs are
//! the truth).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::Serialize;

use crate::crypto::{ChunkId, CryptoError, Unlock, VaultKeys};
use crate::index::NewSnapshot;
use crate::progress::{Progress, Unit};
use crate::snapshot::{self, Manifest};
use crate::store::pack::{FinishedPack, PackError, Provenance, read_footer, verify_pack};
use crate::store::{ChunkKind, ChunkReader, pack_key, pack_name_from_key};
use crate::target::{self, Target};
use crate::vault::{PUBLIC_FILE, PublicParams, TargetConfig, Vault, VaultError};

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
    /// Packs that decrypt but were not written with this vault's keys (forged, or replays of
    /// another pack's footer): ignored, never deleted.
    pub packs_forged: Vec<String>,
    /// Packs written before footers were authenticated (format 1): recorded, but prune does
    /// not delete them until `verify --full` has checked their every chunk.
    pub packs_legacy: u64,
    /// Index backups passed over, with the reason (forged, renamed, format 1, unreadable).
    pub index_backups_ignored: Vec<(String, String)>,
    /// The fingerprint of the vault that was opened (compare with the one `init` printed).
    pub fingerprint: String,
    /// Whether `--expect-vault` confirmed it; when false, the target's key files and
    /// `gitvault.json` were trusted as found.
    pub fingerprint_checked: bool,
    pub snapshots_recovered: u64,
    pub snapshots_total: u64,
    /// The target's files are under S3 Object Lock but no lock policy was given: the new
    /// vault's writes there are not locked until `lock_days` is set.
    pub lock_policy_missing: bool,
}

pub struct RecoverOptions<'a> {
    pub url: &'a str,
    /// The name the target gets in the new vault's config.
    pub target_name: &'a str,
    /// Ignore index backups and rebuild from pack footers alone.
    pub footers_only: bool,
    /// The fingerprint `init` printed: a target whose keys or `gitvault.json` give another is
    /// refused before anything is written.
    pub expect_vault: Option<&'a str>,
    /// Told of the packs whose footers are read (`progress::Silent` for none).
    pub progress: &'a dyn Progress,
    /// The target's Object Lock policy in the new vault (docs/OBJECT-LOCK.md): it is not
    /// stored on the target, so it must be given again.
    pub lock_days: Option<u32>,
    pub lock_mode: Option<target::LockMode>,
}

/// Fingerprints compare without their dashes and case.
fn normalise_fingerprint(f: &str) -> String {
    f.chars()
        .filter(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn bad_target(url: &str, reason: impl Into<String>) -> VaultError {
    VaultError::BadConfig {
        path: url.to_string(),
        reason: reason.into(),
    }
}

/// The target to recover from, its entry in the new config, and whether its files are locked
/// while no lock policy was given (a locked target recovered without its policy would get
/// unlocked writes from now on).
fn open_source(
    options: &RecoverOptions<'_>,
) -> Result<(Box<dyn Target>, TargetConfig, bool), VaultError> {
    let entry = TargetConfig {
        lock_days: options.lock_days,
        lock_mode: options.lock_mode,
        ..TargetConfig::new(options.target_name, options.url)
    };
    let source = entry.open()?;
    if source.lock_policy().is_some() {
        source.check_lock_support()?;
    }
    let policy_missing = source.lock_policy().is_none()
        && matches!(
            source.retentions(&[PUBLIC_FILE.to_string()]).pop(),
            Some(Ok(Some(found))) if found.until.is_some()
        );
    let entry = TargetConfig {
        url: source.url().to_string(),
        ..entry
    };
    Ok((source, entry, policy_missing))
}

pub fn recover(
    dir: &Path,
    options: &RecoverOptions<'_>,
    unlock: &Unlock,
) -> Result<RecoverReport, VaultError> {
    let (source, entry, lock_policy_missing) = open_source(options)?;
    let params = read_public_params(source.as_ref(), options.url)?;
    let (keys, key_files) = unlock_from_target(source.as_ref(), &params, unlock)?;
    let fingerprint = keys.fingerprint(&params.vault_id);
    if let Some(expected) = options.expect_vault
        && normalise_fingerprint(expected) != normalise_fingerprint(&fingerprint)
    {
        return Err(bad_target(
            options.url,
            format!(
                "its vault has fingerprint {fingerprint}, not the expected {expected}: its key files or gitvault.json are not the ones `init` made; nothing was written"
            ),
        ));
    }
    let vault_dir = Vault::create_recovered(dir, &params, entry, &key_files)?;
    let vault = Vault::open(&vault_dir)?;
    vault
        .index()
        .set_meta("origin", crate::index::ORIGIN_RECOVER)?;

    let mut ignored = Vec::new();
    let mut index_backup = None;
    if !options.footers_only {
        index_backup = import_index_backup(source.as_ref(), &vault, &keys, &mut ignored);
    }
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
        packs_forged: Vec::new(),
        packs_legacy: 0,
        index_backups_ignored: ignored,
        fingerprint,
        fingerprint_checked: options.expect_vault.is_some(),
        snapshots_recovered: 0,
        snapshots_total: 0,
        lock_policy_missing,
    };
    let manifests = rebuild_from_footers(
        &vault,
        target.as_ref(),
        (&keys, options.progress),
        &mut report,
    )?;
    let forgotten = apply_prune_record(&vault, &keys, options.url)?;
    // One manifest can sit in several packs (a compaction copy beside its condemned original,
    // a crash between uploads, a replay): one snapshot each.
    let mut manifests: Vec<ChunkId> = manifests
        .into_iter()
        .filter(|m| !forgotten.contains(m))
        .collect();
    manifests.sort();
    manifests.dedup();
    report.snapshots_recovered = recover_snapshots(&vault, &keys, manifests)?;
    report.snapshots_total = vault.index().snapshots(None, None, None)?.len() as u64;
    Ok(report)
}

/// The target's `gitvault.json`: what makes it a vault, and which one.
fn read_public_params(source: &dyn Target, url: &str) -> Result<PublicParams, VaultError> {
    match source.head(PUBLIC_FILE) {
        Ok(Some(size)) if size > crate::vault::MAX_SMALL_FILE => {
            return Err(bad_target(
                url,
                format!("its {PUBLIC_FILE} is {size} bytes: not a gitvault vault"),
            ));
        }
        _ => {}
    }
    match source.get(PUBLIC_FILE) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| bad_target(url, format!("its {PUBLIC_FILE} is unreadable: {e}"))),
        Err(e) => Err(bad_target(url, format!("no gitvault vault there ({e})"))),
    }
}

/// The newest prune record says which manifests were forgotten (their packs may still hold
/// them: their snapshots are deleted again) and maps the live objects whose adding snapshots
/// are gone (recorded). Returns the forgotten manifests.
fn apply_prune_record(
    vault: &Vault,
    keys: &VaultKeys,
    url: &str,
) -> Result<HashSet<ChunkId>, VaultError> {
    let store = vault.reader(keys);
    let record = snapshot::newest_prune_record(vault.index(), &store)
        .map(|found| found.map(|(_, record)| record))
        .map_err(|e| bad_target(url, e.to_string()))?;
    let forgotten: HashSet<ChunkId> = record
        .as_ref()
        .map(|r| r.forgotten.iter().filter_map(|m| m.parse().ok()).collect())
        .unwrap_or_default();
    if !forgotten.is_empty() {
        let forgotten: Vec<ChunkId> = forgotten.iter().copied().collect();
        vault.index().delete_snapshots(&forgotten)?;
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
    Ok(forgotten)
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
        // A key file is a few hundred bytes; a planted giant must not be read into memory.
        if listed.size > crate::vault::MAX_SMALL_FILE {
            tracing::warn!(key_file = %listed.key, size = listed.size, "oversized key file ignored");
            continue;
        }
        files.push((listed.key.clone(), source.get(&listed.key)?));
    }
    if files.is_empty() {
        return Err(VaultError::NoKeyFiles(source.url().to_string()));
    }
    // Every key file that opens must hold the same secrets for the vault `gitvault.json`
    // names: a planted key file encrypted to the user's (public) recipient must not be able to
    // substitute its own keys, and is refused rather than guessed around.
    let mut opened: Option<(VaultKeys, String)> = None;
    for (name, bytes) in &files {
        match VaultKeys::open(name, bytes, unlock) {
            Ok((keys, vault_id)) => {
                if keys.public_key() != params.public_key || vault_id != params.vault_id {
                    tracing::warn!(key_file = %name, "key file belongs to another vault; ignored");
                    continue;
                }
                if let Some((first, first_name)) = &opened {
                    if first.fingerprint(&params.vault_id) != keys.fingerprint(&params.vault_id) {
                        return Err(bad_target(
                            source.url(),
                            format!(
                                "key files {first_name} and {name} open to different secrets for one vault: one of them is forged; nothing was written"
                            ),
                        ));
                    }
                } else {
                    opened = Some((keys, name.clone()));
                }
            }
            Err(CryptoError::WrongKey) => {}
            Err(e) => tracing::warn!(key_file = %name, error = %e, "key file unusable"),
        }
    }
    let (keys, _) = opened.ok_or(CryptoError::WrongKey)?;
    Ok((keys, files))
}

/// Imports from the newest index backup that authenticates what the packs cannot give back
/// (HTTP cache, repository sources, counters); returns its name. Backups that do not
/// authenticate are listed in `ignored` and left on the target.
fn import_index_backup(
    source: &dyn Target,
    vault: &Vault,
    keys: &VaultKeys,
    ignored: &mut Vec<(String, String)>,
) -> Option<String> {
    let mut backups = source.list("index/").ok()?;
    backups.sort_by(|a, b| b.key.cmp(&a.key));
    let tmp = vault.tmp_dir();
    std::fs::create_dir_all(&tmp).ok()?;
    let dest = tmp.join(format!("index-import-{}.sqlite", std::process::id()));
    let auth = keys.auth_key();
    for backup in backups {
        let attempt = (|| -> Result<u64, String> {
            // Streamed: an index backup can be gigabytes.
            let sealed = source.open(&backup.key).map_err(|e| e.to_string())?;
            let seal = crate::vault::index_backup::IndexBackupSeal {
                auth: &auth,
                vault_id: &vault.config().vault_id,
                key: &backup.key,
            };
            crate::vault::index_backup::open_index_backup(sealed, keys.identity(), &seal, &dest)
                .map_err(|e| e.to_string())?;
            let imported = vault
                .index()
                .import_backup(&dest)
                .map_err(|e| e.to_string());
            let _ = std::fs::remove_file(&dest);
            imported
        })();
        match attempt {
            Ok(rows) => {
                tracing::info!(backup = %backup.key, rows, "index backup imported");
                return Some(backup.key);
            }
            Err(e) => {
                tracing::warn!(backup = %backup.key, error = %e, "index backup not used, trying an older one");
                ignored.push((backup.key, e));
            }
        }
    }
    None
}

/// Packs that share a footer. Two packs with one footer are a pack and a replay of it
/// (another file made from its bytes): recording the replay's chunks could make prune think
/// the genuine pack redundant. Both are then read whole, and only packs whose every byte
/// checks are kept. Footers are recorded as they are read (a vault's footers together can be
/// gigabytes); a rejected first pack is taken out again.
struct Replays<'a> {
    target: &'a dyn Target,
    keys: &'a VaultKeys,
    /// Footer digest → the pack recorded with it.
    seen: HashMap<[u8; 32], String>,
    /// Packs read whole, and whether they checked.
    checked: HashMap<String, bool>,
}

impl Replays<'_> {
    fn check_whole(&mut self, name: &str) -> bool {
        if let Some(ok) = self.checked.get(name) {
            return *ok;
        }
        let result = self
            .target
            .get(&pack_key(name))
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                verify_pack(self.keys.identity(), self.keys.id_key(), name, &bytes)
                    .map_err(|e| e.to_string())
            });
        if let Err(reason) = &result {
            tracing::warn!(pack = %name, %reason, "a pack sharing its footer with another does not check: ignored");
        }
        self.checked.insert(name.to_string(), result.is_ok());
        result.is_ok()
    }

    /// Whether pack `name`, sealed with `seal`, may be recorded. A first pack with the same
    /// footer that does not check is taken out of the index again.
    fn admit(
        &mut self,
        index: &crate::index::Index,
        name: &str,
        seal: &crate::store::pack::FooterSeal,
        report: &mut RecoverReport,
    ) -> Result<bool, VaultError> {
        if let Some(first) = self.seen.get(&seal.digest()).cloned() {
            tracing::warn!(pack = %name, other = %first, "two packs carry one footer; both are checked in full");
            if !self.check_whole(&first) {
                index.unrecord_pack(&first)?;
                if !seal.is_authenticated() {
                    report.packs_legacy = report.packs_legacy.saturating_sub(1);
                }
                report.packs_forged.push(first);
                self.seen.remove(&seal.digest());
            }
            if !self.check_whole(name) {
                report.packs_forged.push(name.to_string());
                return Ok(false);
            }
        }
        self.seen
            .entry(seal.digest())
            .or_insert_with(|| name.to_string());
        Ok(true)
    }
}

/// Records presence of every listed pack; reads the footer of each pack the index lacks.
/// Returns the manifest chunks found in those footers.
fn rebuild_from_footers(
    vault: &Vault,
    target: &dyn Target,
    (keys, progress): (&VaultKeys, &dyn Progress),
    report: &mut RecoverReport,
) -> Result<Vec<ChunkId>, VaultError> {
    let index = vault.index();
    index.clear_presence()?;
    let auth = keys.auth_key();
    let mut manifests = Vec::new();
    let mut replays = Replays {
        target,
        keys,
        seen: HashMap::new(),
        checked: HashMap::new(),
    };
    let listing = target.list("packs/")?;
    progress.phase(
        "recover",
        "read pack footers",
        Some(listing.len() as u64),
        Unit::Packs,
    );
    for listed in listing {
        progress.advance("recover", 1);
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
            .map_err(|e| PackError::Io(std::io::Error::other(e.to_string())))
            .and_then(|input| read_footer(keys.identity(), &auth, input));
        let (footer, seal) = match footer {
            Ok(f) => f,
            Err(PackError::Forged(reason)) => {
                tracing::warn!(pack = %name, %reason, "pack not written by this vault; ignored");
                report.packs_forged.push(name.to_string());
                continue;
            }
            Err(reason) => {
                tracing::warn!(pack = %name, %reason, "pack footer unreadable");
                report.packs_unreadable.push(name.to_string());
                continue;
            }
        };
        if !replays.admit(index, name, &seal, report)? {
            continue;
        }
        let provenance = if seal.is_authenticated() {
            Provenance::Authenticated
        } else {
            report.packs_legacy += 1;
            Provenance::Legacy
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
            provenance,
        };
        index.commit_pack(&pack.record(), &[target.name().to_string()], 0)?;
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
    let found = readable_manifests(vault, &store, manifests)?;
    let mut recovered = 0;
    for (id, manifest) in found {
        record_snapshot(vault, &store, id, &manifest)?;
        recovered += 1;
    }
    Ok(recovered)
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
    Ok(())
}
