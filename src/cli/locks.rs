//! Living with other hosts on shared targets: `gitvault unlock` (the locks other hosts or
//! killed processes left) and `gitvault catch-up` (their packs and snapshots).

use anyhow::Result;
use clap::Args;

use gitvault::Vault;
use gitvault::crypto::VaultKeys;
use gitvault::vault::WriteLock;
use gitvault::vault::catch_up::AutoCatchUp;
use gitvault::vault::target_lock::{FoundLock, LockKind, LockState, LockTiming};

use super::{Ctx, EXIT_FAILED, EXIT_OK};

#[derive(Args)]
pub struct UnlockArgs {
    /// Only list the locks on every target, with their state.
    #[arg(long, conflicts_with = "remove_all")]
    list: bool,
    /// Remove every lock of this vault, live ones too: only when you know that no other host
    /// is running gitvault on these targets.
    #[arg(long)]
    remove_all: bool,
}

fn line(f: &FoundLock) -> String {
    let state = match f.state {
        LockState::Live => "live",
        LockState::Expired => "expired",
        LockState::ProcessGone => "process gone",
        LockState::NotOurs => "not this vault's (ignored)",
    };
    match &f.info {
        Some(i) => format!(
            "{:<10} {:<40} {:?} {} on {} pid {}: {state}\n",
            f.target, f.key, i.kind, i.purpose, i.host, i.pid
        ),
        None => format!("{:<10} {:<40} {state}\n", f.target, f.key),
    }
}

pub fn unlock(ctx: &Ctx, args: UnlockArgs) -> Result<i32> {
    let vault = ctx.open()?;
    let keys = ctx.unlock(&vault)?;
    let (found, verb) = if args.list {
        (vault.target_locks(&keys)?, "")
    } else {
        (vault.unlock_targets(&keys, args.remove_all)?, "removed ")
    };
    ctx.out.print(&found, || {
        let mut t: String = found.iter().map(|f| format!("{verb}{}", line(f))).collect();
        if found.is_empty() {
            t.push_str(if args.list {
                "no locks\n"
            } else {
                "no stale locks\n"
            });
        }
        t
    });
    Ok(EXIT_OK)
}

/// Brings the index up to date with what other hosts wrote to the targets, under the writer
/// lock and a shared target lock (no prune deletes meanwhile). Quiet when nothing changed.
pub fn catch_up(ctx: &Ctx) -> Result<i32> {
    let vault = ctx.open()?;
    let keys = ctx.unlock(&vault)?;
    let _lock = vault.lock()?;
    let _shared = vault.lock_targets(
        &keys,
        LockKind::Shared,
        "catch-up",
        LockTiming::from_environment(),
    )?;
    let bars = super::output::Bars::new(&ctx.out);
    let report = vault.catch_up(&keys, &bars)?;
    drop(bars);
    ctx.out.print(&report, || {
        let mut t = String::new();
        if report.changed() {
            t.push_str(&format!(
                "caught up: {} new packs, {} vanished; {} snapshots added, {} forgotten, {} dropped with their packs\n",
                report.footers.packs_scanned,
                report.packs_vanished.len(),
                report.snapshots_added,
                report.snapshots_forgotten,
                report.snapshots_dropped,
            ));
        }
        if !report.packs_missing.is_empty() {
            t.push_str(&format!(
                "MISSING: {} packs are on no target and no prune explains it ({}); they stay in the index: run `gitvault verify`\n",
                report.packs_missing.len(),
                report.packs_missing.join(", "),
            ));
        }
        let f = &report.footers;
        if !f.packs_forged.is_empty() || !f.packs_unreadable.is_empty() {
            t.push_str(&format!(
                "ignored: {} packs not written by this vault ({}), {} unreadable ({})\n",
                f.packs_forged.len(),
                f.packs_forged.join(", "),
                f.packs_unreadable.len(),
                f.packs_unreadable.join(", "),
            ));
        }
        t
    });
    Ok(if report.packs_missing.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}

/// Before a read command: brings the index up to date with the targets unless
/// `--no-catch-up`. The key is asked for only when the listings differ from the index (`keys`
/// when the command has it already); `lock` when the command holds the writer lock. What
/// cannot be done is said (busy: info; failed: warning) and the command goes on with the
/// local picture. Packs missing without a prune record are warned about by the catch-up
/// itself and stay in the index, so `verify` still fails on them.
pub fn catch_up_first(
    ctx: &Ctx,
    vault: &Vault,
    keys: Option<&VaultKeys>,
    lock: Option<&WriteLock>,
) {
    if !ctx.catch_up || !vault.targets_changed() {
        return;
    }
    let unlocked;
    let keys = match keys {
        Some(keys) => keys,
        None => match ctx.unlock(vault) {
            Ok(k) => {
                unlocked = k;
                &unlocked
            }
            Err(e) => {
                tracing::warn!(error = %e, "not catching up with the targets (no key); showing this host's index as it is");
                return;
            }
        },
    };
    match vault.catch_up_now(keys, lock) {
        AutoCatchUp::Done(_) => {}
        AutoCatchUp::Busy(why) => {
            tracing::info!(reason = %why, "not catching up with the targets now; showing this host's index as it is");
        }
        AutoCatchUp::Failed(e) => {
            tracing::warn!(error = %e, "catching up with the targets failed; showing this host's index as it is");
        }
    }
}
