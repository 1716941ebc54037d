//! `gitvault stats`: logical versus stored bytes, dedup and compression ratios, and per target
//! what it holds, lacks and holds in excess (garbage: packs no index entry names, left by a
//! crash or an interrupted write; `prune` will collect them).

use std::collections::HashMap;

use serde::Serialize;

use crate::store::pack_name_from_key;
use crate::vault::{Vault, VaultError};

#[derive(Debug, Serialize)]
pub struct Stats {
    pub logical_bytes: u64,
    pub unique_bytes: u64,
    pub stored_bytes: u64,
    pub chunks: u64,
    pub packs: u64,
    /// logical / unique: how much deduplication saved.
    pub dedup_ratio: f64,
    /// unique / stored: how much compression saved.
    pub compression_ratio: f64,
    pub targets: Vec<TargetStats>,
    /// Files left in the vault's tmp/ by interrupted writes.
    pub local_garbage_files: u64,
    pub local_garbage_bytes: u64,
    /// A writer holds the lock: unreferenced packs may be in flight rather than garbage.
    pub writer_active: bool,
    /// Packs prune condemned that are not deleted yet: waiting for the grace period or for
    /// their Object Lock to run out.
    pub pending_deletion_packs: u64,
    pub pending_deletion_bytes: u64,
    /// Targets with Object Lock only: the earliest date a live pack's lock runs out (as last
    /// read or renewed by prune or verify).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<LockStats>,
}

#[derive(Debug, Serialize)]
pub struct LockStats {
    pub earliest_live_until: Option<String>,
    /// Live pack copies whose lock date no prune or verify has read yet.
    pub live_packs_unchecked: u64,
}

#[derive(Debug, Serialize)]
pub struct TargetStats {
    pub name: String,
    pub url: String,
    pub packs: u64,
    pub pack_bytes: u64,
    /// Packs the index expects here that are not listed.
    pub missing_packs: u64,
    /// Packs whose size differs from the index's record.
    pub wrong_size_packs: u64,
    /// Objects under packs/ that no index entry names.
    pub garbage_files: u64,
    pub garbage_bytes: u64,
    pub error: Option<String>,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

pub fn collect(vault: &Vault) -> Result<Stats, VaultError> {
    let totals = vault.index().totals()?;
    let mut targets = Vec::new();
    for target in vault.targets() {
        let expected: HashMap<String, u64> = vault
            .index()
            .packs_on_target(target.name())?
            .into_iter()
            .collect();
        let mut ts = TargetStats {
            name: target.name().to_string(),
            url: target.url().to_string(),
            packs: 0,
            pack_bytes: 0,
            missing_packs: 0,
            wrong_size_packs: 0,
            garbage_files: 0,
            garbage_bytes: 0,
            error: None,
        };
        match target.list("packs/") {
            Ok(listed) => {
                let mut seen = 0u64;
                for obj in listed {
                    match pack_name_from_key(&obj.key).and_then(|n| expected.get(n)) {
                        Some(size) => {
                            seen += 1;
                            ts.packs += 1;
                            ts.pack_bytes += obj.size;
                            if *size != obj.size {
                                ts.wrong_size_packs += 1;
                            }
                        }
                        None => {
                            ts.garbage_files += 1;
                            ts.garbage_bytes += obj.size;
                        }
                    }
                }
                ts.missing_packs = expected.len() as u64 - seen;
            }
            Err(e) => ts.error = Some(e.to_string()),
        }
        targets.push(ts);
    }
    let (mut local_garbage_files, mut local_garbage_bytes) = (0, 0);
    if let Ok(entries) = std::fs::read_dir(vault.tmp_dir()) {
        for entry in entries.flatten() {
            local_garbage_files += 1;
            local_garbage_bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    let pending = vault.index().condemned_sizes()?;
    let object_lock = if vault.targets().iter().any(|t| t.lock_policy().is_some()) {
        let (earliest_live_until, live_packs_unchecked) = vault.earliest_live_lock()?;
        Some(LockStats {
            earliest_live_until,
            live_packs_unchecked,
        })
    } else {
        None
    };
    Ok(Stats {
        pending_deletion_packs: pending.len() as u64,
        pending_deletion_bytes: pending.iter().map(|(_, size)| size).sum(),
        object_lock,
        logical_bytes: totals.logical_bytes,
        unique_bytes: totals.unique_bytes,
        stored_bytes: totals.stored_bytes,
        chunks: totals.chunks,
        packs: totals.packs,
        dedup_ratio: ratio(totals.logical_bytes, totals.unique_bytes),
        compression_ratio: ratio(totals.unique_bytes, totals.stored_bytes),
        targets,
        local_garbage_files,
        local_garbage_bytes,
        writer_active: vault.writer_active(),
    })
}
