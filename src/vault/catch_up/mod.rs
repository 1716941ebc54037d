//! Catching up with the targets (issue 17): the targets are the vault and this host's index a
//! cache of them, which other hosts' backups and prunes outdate. A catch-up lists `packs/` on
//! every target and compares the listing with the index: packs it does not know are read
//! through their authenticated footers (their chunks recorded, their manifests becoming
//! snapshots unless the newest prune record forgot them), and packs it knows that no target
//! holds any more (another host's prune deleted them) leave the index with what depended on
//! them. `recover` uses the same pieces on an empty index. Nothing here writes to a target.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::crypto::{ChunkId, VaultKeys};
use crate::index::Index;
use crate::progress::{Progress, Unit};
use crate::store::pack::{FinishedPack, FooterSeal, PackError, Provenance, read_footer};
use crate::store::{ChunkKind, pack_key, pack_name_from_key};

use super::{Vault, VaultError};

mod auto;
mod manifests;
pub use auto::AutoCatchUp;
use manifests::keep_only_listed_objects;
pub(crate) use manifests::{apply_prune_record, record_manifests};

/// What reading the footers of packs the index lacked found.
#[derive(Debug, Default, Serialize)]
pub struct FooterScan {
    /// Packs whose footers were read because the index did not know them.
    pub packs_scanned: u64,
    pub packs_unreadable: Vec<String>,
    /// Packs that decrypt but were not written with this vault's keys (forged, or replays of
    /// another pack's footer): ignored, never deleted.
    pub packs_forged: Vec<String>,
    /// Packs written before footers were authenticated (format 1): recorded, but prune does
    /// not delete them until `verify --full` has checked their every chunk.
    pub packs_legacy: u64,
}

/// What one catch-up changed in the index.
#[derive(Debug, Default, Serialize)]
pub struct CatchUpReport {
    /// Packs new to this host (other hosts' backups and compactions).
    #[serde(flatten)]
    pub footers: FooterScan,
    /// Packs the index listed that no target holds any more, after another host's prune (a
    /// prune record this host had not seen): they leave the index.
    pub packs_vanished: Vec<String>,
    /// Packs the index lists that no target holds any more, with no new prune record to
    /// explain it: damage or deletion by someone else. They stay in the index, so that
    /// `verify` reports them and reads fail naming them; `sync` cannot repair them.
    pub packs_missing: Vec<String>,
    /// Chunk rows of vanished packs that moved to a copy in a new pack.
    pub chunks_moved: u64,
    /// Chunk rows of vanished packs with no copy in a new pack: gone from the index.
    pub chunks_dropped: u64,
    /// Git object rows whose chunk went: backups store those objects again.
    pub objects_dropped: u64,
    /// Snapshots whose manifest went with a vanished pack.
    pub snapshots_dropped: u64,
    /// Snapshots the newest prune record forgot (another host's `forget` and prune).
    pub snapshots_forgotten: u64,
    /// Snapshots other hosts made, now in the index.
    pub snapshots_added: u64,
    /// New packs on fewer targets than the replication policy asks (another host's target
    /// set differs, a run still uploading, or one that failed for that reason): recorded
    /// where they are; `gitvault sync` copies them to the other targets.
    pub packs_short_of_replicas: Vec<String>,
    /// Targets whose listing failed: vanished packs are not judged without every listing.
    pub targets_unlisted: Vec<String>,
}

impl CatchUpReport {
    /// Whether the index changed (a host alone on its targets sees nothing, and says nothing).
    pub fn changed(&self) -> bool {
        self.footers.packs_scanned > 0
            || !self.packs_vanished.is_empty()
            || !self.packs_missing.is_empty()
            || self.snapshots_forgotten > 0
    }
}

/// A pack some target lists: its size, and the targets (by position) listing it.
pub(crate) struct ListedPack {
    pub name: String,
    pub size: u64,
    pub holders: Vec<usize>,
}

/// Every pack the targets list, by name.
pub(crate) type Listing = BTreeMap<String, ListedPack>;

const JOB: &str = "catch-up";

/// `meta` key: the newest prune record this host has seen (its own or caught up with). A pack
/// gone from every target counts as pruned only when a newer record appeared since: another
/// host pruned. Without one, its absence is damage, and the index keeps the pack to say so.
pub const SEEN_PRUNE_RECORD: &str = "seen_prune_record";

/// The id of the newest readable prune record; None when there is none or it cannot be read
/// (a damaged vault: then nothing counts as explained).
fn newest_prune_record_id(vault: &Vault, keys: &VaultKeys) -> Option<String> {
    let store = vault.reader(keys);
    match crate::snapshot::newest_prune_record(vault.index(), &store) {
        Ok(found) => found.map(|(id, _)| id.to_hex()),
        Err(e) => {
            tracing::warn!(error = %e, "the prune records cannot be read");
            None
        }
    }
}

impl Vault {
    /// Brings the index up to date with the targets: one LIST of `packs/` per target, and no
    /// footer read when nothing changed. Backups run it under their shared target lock, so no
    /// prune deletes what it reads meanwhile; prune runs it before its mark and again under
    /// its exclusive lock.
    pub fn catch_up(
        &self,
        keys: &VaultKeys,
        progress: &dyn Progress,
    ) -> Result<CatchUpReport, VaultError> {
        let index = self.index();
        let mut report = CatchUpReport::default();
        let listed = self.list_packs(&mut report.targets_unlisted);
        let known = index.packs()?;
        let known_names: HashSet<&str> = known.iter().map(|p| p.name.as_str()).collect();
        // A hostile or failing target can hide a pack from one listing; only a pack absent
        // from every target's listing is gone.
        let vanished: Vec<(i64, String)> = if report.targets_unlisted.is_empty() {
            known
                .iter()
                .filter(|p| !listed.contains_key(&p.name))
                .map(|p| (p.id, p.name.clone()))
                .collect()
        } else {
            Vec::new()
        };
        // Every new pack is read, however few targets hold it: one left out could hold the
        // manifest of a snapshot prune must mark (hosts need not share every target). Those
        // short of the replication policy are named, for `verify` and `sync` to repair.
        let required = match self.store_settings().min_replicas {
            0 => self.targets().len(),
            n => n.min(self.targets().len()),
        };
        let mut new = Vec::new();
        for (name, pack) in &listed {
            if known_names.contains(name.as_str()) {
                continue;
            }
            if pack.holders.len() < required {
                report.packs_short_of_replicas.push(name.clone());
            }
            new.push(name.clone());
        }
        if new.is_empty() && vanished.is_empty() {
            // Every pack the index knows is listed: any found missing before came back.
            if report.targets_unlisted.is_empty() && !index.missing_packs()?.is_empty() {
                index.set_missing_packs(&[])?;
            }
            return Ok(report);
        }
        let _job = crate::progress::Job::new(progress, JOB);
        let moving_from: HashSet<i64> = vanished.iter().map(|(id, _)| *id).collect();
        let (manifests, moved) = adopt_packs(
            self,
            keys,
            (&listed, &new, &moving_from),
            (JOB, progress),
            &mut report.footers,
        )?;
        report.chunks_moved = moved;
        let newest_record = newest_prune_record_id(self, keys);
        let seen = index.meta(SEEN_PRUNE_RECORD)?;
        let explained = newest_record.is_some() && newest_record != seen;
        // A pack once found missing stays missing: a later prune elsewhere does not explain
        // damage that came before it.
        let known_missing: HashSet<String> = index.missing_packs()?.into_iter().collect();
        let (still_missing, vanished): (Vec<_>, Vec<_>) = vanished
            .into_iter()
            .partition(|(_, name)| !explained || known_missing.contains(name));
        if !still_missing.is_empty() {
            let names: Vec<String> = still_missing.iter().map(|(_, n)| n.clone()).collect();
            tracing::warn!(
                packs = %names.join(", "),
                "packs are missing from every target and no prune explains it; they stay in the index (run `gitvault verify`)"
            );
            report.packs_missing = names;
        }
        if report.targets_unlisted.is_empty() {
            // Backups store again what only these packs held (`ChunkStore::avoid_packs`).
            index.set_missing_packs(&report.packs_missing)?;
        }
        if !vanished.is_empty() {
            report.chunks_moved +=
                move_to_known_copies(self, keys, &listed, &vanished, &moving_from)?;
            let names: Vec<String> = vanished.into_iter().map(|(_, n)| n).collect();
            tracing::info!(
                packs = names.len(),
                "packs gone from every target leave the index"
            );
            let gone = index.drop_vanished_packs(&names)?;
            report.chunks_dropped = gone.chunks;
            report.objects_dropped = gone.objects;
            report.snapshots_dropped = gone.snapshots;
            report.packs_vanished = names;
        }
        if let Some(id) = &newest_record {
            index.set_meta(SEEN_PRUNE_RECORD, id)?;
        }
        // A prune record in a missing pack must not stop every later backup: without it,
        // nothing is forgotten here, which keeps more, never less.
        let (forgotten, dropped) = match apply_prune_record(self, keys) {
            Ok(applied) => applied,
            Err(e) if !report.packs_missing.is_empty() => {
                tracing::warn!(error = %e, "the newest prune record is unreadable; not applied");
                (HashSet::new(), 0)
            }
            Err(e) => return Err(e),
        };
        report.snapshots_forgotten = dropped;
        // After the forgotten snapshots went: their object maps must not keep rows alive.
        if report.objects_dropped > 0 {
            report.objects_dropped += keep_only_listed_objects(self, keys)?;
        }
        report.snapshots_added = record_manifests(self, keys, manifests, &forgotten)?;
        if report.changed() {
            tracing::info!(
                packs_new = report.footers.packs_scanned,
                packs_vanished = report.packs_vanished.len(),
                snapshots_added = report.snapshots_added,
                snapshots_forgotten = report.snapshots_forgotten,
                "caught up with other hosts' writes"
            );
        }
        Ok(report)
    }

    /// What `packs/` holds on every target; targets whose listing failed are named in
    /// `unlisted`.
    fn list_packs(&self, unlisted: &mut Vec<String>) -> Listing {
        let mut listed = Listing::new();
        for (position, target) in self.targets().iter().enumerate() {
            match target.list("packs/") {
                Ok(items) => {
                    for item in items {
                        let Some(name) = pack_name_from_key(&item.key) else {
                            continue;
                        };
                        listed
                            .entry(name.to_string())
                            .or_insert_with(|| ListedPack {
                                name: name.to_string(),
                                size: item.size,
                                holders: Vec::new(),
                            })
                            .holders
                            .push(position);
                    }
                }
                Err(e) => {
                    tracing::warn!(target = target.name(), error = %e, "listing packs failed; vanished packs are not judged");
                    unlisted.push(target.name().to_string());
                }
            }
        }
        listed
    }
}

/// Packs that share a footer. Two packs with one footer are a pack and a replay of it
/// (another file made from its bytes): recording the replay's chunks could make prune think
/// the genuine pack redundant. Both are then read whole, and only packs whose every byte
/// checks are kept. Footers are recorded as they are read (a vault's footers together can be
/// gigabytes); a rejected first pack is taken out again.
struct Replays<'a> {
    vault: &'a Vault,
    keys: &'a VaultKeys,
    /// Footer digest → the pack recorded with it.
    seen: HashMap<[u8; 32], String>,
    /// Which target to read a pack from.
    holder: HashMap<String, usize>,
    /// Packs read whole, and whether they checked.
    checked: HashMap<String, bool>,
}

impl Replays<'_> {
    fn check_whole(&mut self, name: &str) -> bool {
        if let Some(ok) = self.checked.get(name) {
            return *ok;
        }
        let target = self
            .holder
            .get(name)
            .and_then(|&i| self.vault.targets().get(i));
        let result = match target {
            Some(target) => target
                .get(&pack_key(name))
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    crate::store::pack::verify_pack(
                        self.keys.identity(),
                        self.keys.id_key(),
                        name,
                        &bytes,
                    )
                    .map_err(|e| e.to_string())
                }),
            None => Err("no target lists it".to_string()),
        };
        if let Err(reason) = &result {
            tracing::warn!(pack = %name, %reason, "a pack sharing its footer with another does not check: ignored");
        }
        self.checked.insert(name.to_string(), result.is_ok());
        result.is_ok()
    }

    /// Whether a new pack all of whose chunks the index knew (`first` is one of them) may
    /// stay: unless the known pack holding `first` has the same footer, it may; if it has,
    /// the new pack must check byte by byte.
    fn twin_checks(
        &mut self,
        listing: &Listing,
        name: &str,
        first: ChunkId,
        seal: &FooterSeal,
    ) -> Result<bool, VaultError> {
        let Some(location) = self.vault.index().chunk(&first)? else {
            return Ok(true);
        };
        let Some(twin) = listing.get(&location.pack_name) else {
            return Ok(true);
        };
        if twin.name == name {
            return Ok(true);
        }
        let auth = self.keys.auth_key();
        let mut ignored = FooterScan::default();
        let Some((_, twin_seal, _)) =
            read_listed_footer(self.vault, self.keys, &auth, twin, &mut ignored)
        else {
            return Ok(true);
        };
        if twin_seal.digest() != seal.digest() {
            return Ok(true);
        }
        tracing::warn!(pack = %name, other = %twin.name, "a new pack carries the footer of a known one; it is checked in full");
        Ok(self.check_whole(name))
    }

    /// Whether pack `name`, sealed with `seal`, may be recorded. A first pack with the same
    /// footer that does not check is taken out of the index again.
    fn admit(
        &mut self,
        index: &Index,
        name: &str,
        seal: &FooterSeal,
        scan: &mut FooterScan,
    ) -> Result<bool, VaultError> {
        if let Some(first) = self.seen.get(&seal.digest()).cloned() {
            tracing::warn!(pack = %name, other = %first, "two packs carry one footer; both are checked in full");
            if !self.check_whole(&first) {
                index.unrecord_pack(&first)?;
                if !seal.is_authenticated() {
                    scan.packs_legacy = scan.packs_legacy.saturating_sub(1);
                }
                scan.packs_forged.push(first);
                self.seen.remove(&seal.digest());
            }
            if !self.check_whole(name) {
                scan.packs_forged.push(name.to_string());
                return Ok(false);
            }
        }
        self.seen
            .entry(seal.digest())
            .or_insert_with(|| name.to_string());
        Ok(true)
    }
}

/// Reads the footer of each of the packs `names` (all unknown to the index) from a target
/// listing it, and records those that authenticate, with their chunks, as held by the targets
/// listing them; chunk rows pointing into `moving_from` move to the new copies. Returns the
/// manifest chunks the footers list, and how many chunk rows moved.
pub(crate) fn adopt_packs(
    vault: &Vault,
    keys: &VaultKeys,
    (listing, names, moving_from): (&Listing, &[String], &HashSet<i64>),
    (job, progress): (&str, &dyn Progress),
    scan: &mut FooterScan,
) -> Result<(Vec<ChunkId>, u64), VaultError> {
    if names.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let index = vault.index();
    let auth = keys.auth_key();
    let mut manifests = Vec::new();
    let mut moved = 0;
    let mut replays = Replays {
        vault,
        keys,
        seen: HashMap::new(),
        holder: HashMap::new(),
        checked: HashMap::new(),
    };
    progress.phase(
        job,
        "read pack footers",
        Some(names.len() as u64),
        Unit::Packs,
    );
    for name in names {
        progress.advance(job, 1);
        let Some(listed) = listing.get(name) else {
            continue;
        };
        scan.packs_scanned += 1;
        let Some((footer, seal, from)) = read_listed_footer(vault, keys, &auth, listed, scan)
        else {
            continue;
        };
        replays.holder.insert(name.clone(), from);
        if !replays.admit(index, name, &seal, scan)? {
            continue;
        }
        let first = footer.entries.first().map(|e| e.id);
        let found: Vec<ChunkId> = footer
            .entries
            .iter()
            .filter(|e| e.kind == ChunkKind::Manifest as u8)
            .map(|e| e.id)
            .collect();
        let committed = record_footer(vault, listed, footer, &seal, (moving_from, true))?;
        moved += committed.moved;
        // A pack adding nothing may be a copy or another host's duplicate, or a replay of a
        // pack this index knows: a twin footer is checked byte by byte, as recover does.
        if committed.inserted == 0
            && committed.moved == 0
            && let Some(first) = first
            && !replays.twin_checks(listing, name, first, &seal)?
        {
            index.unrecord_pack(name)?;
            scan.packs_forged.push(name.clone());
            continue;
        }
        if !seal.is_authenticated() {
            scan.packs_legacy += 1;
        }
        manifests.extend(found);
    }
    Ok((manifests, moved))
}

/// Records a pack from its footer, as held by the targets listing it.
fn record_footer(
    vault: &Vault,
    listed: &ListedPack,
    footer: crate::store::pack::Footer,
    seal: &FooterSeal,
    moving: (&HashSet<i64>, bool),
) -> Result<crate::index::Committed, VaultError> {
    let provenance = if seal.is_authenticated() {
        Provenance::Authenticated
    } else {
        Provenance::Legacy
    };
    let pack = FinishedPack {
        name: listed.name.clone(),
        path: Default::default(),
        size: listed.size,
        raw_bytes: footer.frames.iter().map(|f| u64::from(f.raw_len)).sum(),
        footer,
        provenance,
    };
    let holders: Vec<String> = listed
        .holders
        .iter()
        .filter_map(|&i| vault.targets().get(i))
        .map(|t| t.name().to_string())
        .collect();
    Ok(vault
        .index()
        .commit_pack_moving(&pack.record(), &holders, 0, moving)?)
}

/// Chunk rows still pointing into vanished packs after the new packs were read may have a
/// copy in a pack the index already knows (a compaction copy read before its source was
/// deleted, or a duplicate two hosts wrote at once). Only packs whose footers list chunks
/// whose rows point elsewhere can hold one: their footers are read, until no row is left.
fn move_to_known_copies(
    vault: &Vault,
    keys: &VaultKeys,
    listing: &Listing,
    vanished: &[(i64, String)],
    moving_from: &HashSet<i64>,
) -> Result<u64, VaultError> {
    let index = vault.index();
    let left = || -> Result<u64, VaultError> {
        let mut n = 0;
        for (_, name) in vanished {
            n += index.chunks_in_pack(name)?;
        }
        Ok(n)
    };
    if left()? == 0 {
        return Ok(0);
    }
    let auth = keys.auth_key();
    let mut moved = 0;
    for name in index.packs_with_foreign_chunks()? {
        // Vanished packs are in no listing.
        let Some(listed) = listing.get(&name) else {
            continue;
        };
        let mut ignored = FooterScan::default();
        let Some((footer, seal, _)) = read_listed_footer(vault, keys, &auth, listed, &mut ignored)
        else {
            continue;
        };
        moved += record_footer(vault, listed, footer, &seal, (moving_from, false))?.moved;
        if left()? == 0 {
            break;
        }
    }
    Ok(moved)
}

/// The footer of a listed pack and the target it came from; forged and unreadable packs are
/// reported in `scan` and give `None`. A target that fails to answer is passed over for the
/// next one listing the pack.
fn read_listed_footer(
    vault: &Vault,
    keys: &VaultKeys,
    auth: &crate::crypto::AuthKey,
    listed: &ListedPack,
    scan: &mut FooterScan,
) -> Option<(crate::store::pack::Footer, FooterSeal, usize)> {
    let name = listed.name.as_str();
    let mut last = None;
    for &position in &listed.holders {
        let Some(target) = vault.targets().get(position) else {
            continue;
        };
        let footer = target
            .open(&pack_key(name))
            .map_err(|e| PackError::Io(std::io::Error::other(e.to_string())))
            .and_then(|input| read_footer(keys.identity(), auth, input));
        match footer {
            Ok((footer, seal)) => return Some((footer, seal, position)),
            Err(PackError::Forged(reason)) => {
                tracing::warn!(pack = %name, %reason, "pack not written by this vault; ignored");
                scan.packs_forged.push(name.to_string());
                return None;
            }
            Err(reason) => last = Some(reason),
        }
    }
    if let Some(reason) = last {
        tracing::warn!(pack = %name, %reason, "pack footer unreadable");
    }
    scan.packs_unreadable.push(name.to_string());
    None
}
