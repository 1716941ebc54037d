//! sync and recover.

use anyhow::Result;

use gitvault::recover::{self, RecoverOptions};

use super::output::bytes;
use super::{Ctx, EXIT_FAILED, EXIT_OK};

#[derive(clap::Args)]
pub struct RecoverArgs {
    /// The target to rebuild from: file:///path or s3://bucket/prefix?…
    #[arg(long)]
    pub from: String,
    /// The name the target gets in the rebuilt vault.
    #[arg(long, default_value = "origin")]
    pub target_name: String,
    /// Ignore index backups: rebuild from the packs' footers alone.
    #[arg(long)]
    pub footers_only: bool,
    /// The fingerprint `init` printed: refuse a target whose key files or gitvault.json give
    /// another (a planted vault).
    #[arg(long, value_name = "FINGERPRINT")]
    pub expect_vault: Option<String>,
    /// The target's S3 Object Lock period, as `target add --lock-days` set it (the target does
    /// not store it): later writes there are locked too.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub lock_days: Option<u32>,
    /// The lock mode that goes with --lock-days (compliance by default).
    #[arg(long, value_enum, requires = "lock_days")]
    pub lock_mode: Option<super::target::LockModeArg>,
}

pub fn sync(ctx: &Ctx) -> Result<i32> {
    let vault = ctx.open()?;
    let keys = ctx.unlock(&vault)?;
    let lock = vault.lock()?;
    let bars = super::output::Bars::new(&ctx.out);
    let reports = gitvault::replicas::sync_watched(&vault, &keys, &lock, &bars)?;
    let ok = reports
        .iter()
        .all(|r| r.error.is_none() && r.unavailable.is_empty());
    ctx.out.print(
        &serde_json::json!({ "ok": ok, "targets": &reports }),
        || {
            let mut t = String::new();
            for r in &reports {
                t.push_str(&format!(
                    "target {}: copied {} packs ({}){}\n",
                    r.target,
                    r.copied.len(),
                    bytes(r.bytes_copied),
                    r.error
                        .as_ref()
                        .map(|e| format!(", error: {e}"))
                        .unwrap_or_default()
                ));
                for p in &r.unavailable {
                    t.push_str(&format!("  no intact copy of pack {p} on any target\n"));
                }
            }
            t
        },
    );
    Ok(if ok { EXIT_OK } else { EXIT_FAILED })
}

pub fn recover(ctx: &Ctx, args: RecoverArgs) -> Result<i32> {
    let unlock = super::prompt::unlock_from_environment(ctx.identity.as_deref())?;
    let bars = super::output::Bars::new(&ctx.out);
    let report = recover::recover(
        &ctx.args_vault,
        &RecoverOptions {
            url: &args.from,
            target_name: &args.target_name,
            footers_only: args.footers_only,
            expect_vault: args.expect_vault.as_deref(),
            progress: &bars,
            lock_days: args.lock_days,
            lock_mode: args
                .lock_days
                .map(|_| super::target::lock_mode(args.lock_mode)),
        },
        &unlock,
    )?;
    gitvault::progress::Progress::done(&bars, "recover");
    if !report.fingerprint_checked {
        eprintln!(
            "warning: the vault's key files and gitvault.json were trusted as found on the target (fingerprint {}); compare it with the one `init` printed, or pass --expect-vault",
            report.fingerprint
        );
    }
    if report.lock_policy_missing {
        eprintln!(
            "warning: the target's files are under S3 Object Lock, but no --lock-days was given: this vault's writes there are not locked until `lock_days` is set in its [[target]] entry (docs/OBJECT-LOCK.md)"
        );
    }
    for (backup, reason) in &report.index_backups_ignored {
        eprintln!("warning: index backup {backup} ignored: {reason}");
    }
    if !report.footers.packs_forged.is_empty() {
        eprintln!(
            "warning: {} packs on the target were not written with this vault's keys and were ignored (left in place): {}",
            report.footers.packs_forged.len(),
            report.footers.packs_forged.join(", ")
        );
    }
    ctx.out.print(&report, || {
        let mut text = format!(
            "recovered vault {} into {} from {}\n  fingerprint: {}{}\n  index backup: {}\n  packs read through their footers: {} ({} unreadable, {} not this vault's)\n  snapshots: {} ({} rebuilt from manifests in packs)\n",
            report.vault_id,
            report.vault,
            report.target,
            report.fingerprint,
            if report.fingerprint_checked { " (as expected)" } else { " (not checked)" },
            report.index_backup.as_deref().unwrap_or("none usable"),
            report.footers.packs_scanned,
            report.footers.packs_unreadable.len(),
            report.footers.packs_forged.len(),
            report.snapshots_total,
            report.snapshots_recovered
        );
        if report.footers.packs_legacy > 0 {
            text.push_str(&format!(
                "  {} packs are from before footers were authenticated: prune keeps them until `gitvault verify --full` has checked them\n",
                report.footers.packs_legacy
            ));
        }
        text
    });
    Ok(if report.footers.packs_unreadable.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}
