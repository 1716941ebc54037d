//! `gitvault recover --from URL`: a machine with nothing but the key and one target's URL
//! rebuilds the local vault: config and key files from the target, the index from the newest
//! readable index backup, then every pack the backup does not know is read through its footer,
//! and every snapshot manifest found there becomes a snapshot again (invariant 1: the packs are
//! the truth).

use std::collections::HashSet;
use std::path::Path;

use serde::Serialize;

use crate::crypto::{ChunkId, CryptoError, Unlock, VaultKeys};
use crate::progress::Progress;
use crate::store::pack_name_from_key;
use crate::target::{self, Target};
use crate::vault::catch_up::{
    FooterScan, ListedPack, Listing, adopt_packs, apply_prune_record, record_manifests,
};
use crate::vault::{PUBLIC_FILE, PublicParams, TargetConfig, Vault, VaultError};

#[derive(Debug, Serialize)]
pub struct RecoverReport {
    pub vault: String,
    pub vault_id: String,
    pub target: String,
    /// The index backup the index was restored from, if any could be read.
    pub index_backup: Option<String>,
    /// What the footers of the target's packs gave.
    #[serde(flatten)]
    pub footers: FooterScan,
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
        footers: FooterScan::default(),
        index_backups_ignored: ignored,
        fingerprint,
        fingerprint_checked: options.expect_vault.is_some(),
        snapshots_recovered: 0,
        snapshots_total: 0,
        lock_policy_missing,
    };
    let manifests = rebuild_from_footers(&vault, &keys, options.progress, &mut report)?;
    let (forgotten, _) = apply_prune_record(&vault, &keys)?;
    report.snapshots_recovered = record_manifests(&vault, &keys, manifests, &forgotten)?;
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

/// Records presence of every pack the target lists and reads the footer of each pack the
/// index lacks. Returns the manifest chunks found in those footers.
fn rebuild_from_footers(
    vault: &Vault,
    keys: &VaultKeys,
    progress: &dyn Progress,
    report: &mut RecoverReport,
) -> Result<Vec<ChunkId>, VaultError> {
    let index = vault.index();
    index.clear_presence()?;
    let target = vault
        .targets()
        .first()
        .ok_or_else(|| bad_target(&report.target, "the recovered vault has no target"))?;
    let mut listing = Listing::new();
    let mut unknown = Vec::new();
    for listed in target.list("packs/")? {
        let Some(name) = pack_name_from_key(&listed.key) else {
            continue;
        };
        if index.pack_id(name)?.is_some() {
            index.set_presence(name, target.name(), true)?;
        } else {
            unknown.push(name.to_string());
        }
        listing.insert(
            name.to_string(),
            ListedPack {
                name: name.to_string(),
                size: listed.size,
                holders: vec![0],
            },
        );
    }
    let (manifests, _) = adopt_packs(
        vault,
        keys,
        (&listing, &unknown, &HashSet::new()),
        ("recover", progress),
        &mut report.footers,
    )?;
    Ok(manifests)
}
