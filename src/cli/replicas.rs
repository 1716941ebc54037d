//! sync and recover.

use anyhow::Result;

use gitvault::recover::{self, RecoverOptions};
use gitvault::vault;

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
}

pub fn sync(ctx: &Ctx) -> Result<i32> {
    let vault = ctx.open()?;
    let keys = ctx.unlock(&vault)?;
    let lock = vault.lock()?;
    let reports = gitvault::replicas::sync(&vault, &keys, &lock)?;
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
    let unlock = vault::unlock_from_environment(ctx.identity.as_deref())?;
    let report = recover::recover(
        &ctx.args_vault,
        &RecoverOptions {
            url: &args.from,
            target_name: &args.target_name,
            footers_only: args.footers_only,
        },
        &unlock,
    )?;
    ctx.out.print(&report, || {
        format!(
            "recovered vault {} into {} from {}\n  index backup: {}\n  packs read through their footers: {} ({} unreadable)\n  snapshots: {} ({} rebuilt from manifests in packs)\n",
            report.vault_id,
            report.vault,
            report.target,
            report.index_backup.as_deref().unwrap_or("none usable"),
            report.packs_scanned,
            report.packs_unreadable.len(),
            report.snapshots_total,
            report.snapshots_recovered
        )
    });
    Ok(if report.packs_unreadable.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}
