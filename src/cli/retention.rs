//! forget | prune: retention policies and reclaiming space.

use anyhow::{Result, bail};

use gitvault::retention::forget::{self, PolicyOrigin};
use gitvault::retention::{Count, Policy, Span};

use super::{Ctx, EXIT_OK};

#[derive(clap::Args)]
pub struct ForgetArgs {
    /// Keep the N newest snapshots (a number or `unlimited`).
    #[arg(long, value_name = "N")]
    pub keep_last: Option<Count>,
    /// Keep the newest snapshot of each of the N most recent hours that have one.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<Count>,
    /// … of each of the N most recent days (UTC).
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<Count>,
    /// … of each of the N most recent ISO weeks.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<Count>,
    /// … of each of the N most recent months.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<Count>,
    /// … of each of the N most recent years.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<Count>,
    /// Keep every snapshot newer than the repository's newest minus this span (`1y6m`, `14d`,
    /// `36h`).
    #[arg(long, value_name = "SPAN")]
    pub keep_within: Option<Span>,
    /// Only repositories whose name matches; repeatable.
    #[arg(long = "repo", value_name = "GLOB")]
    pub repos: Vec<String>,
    /// Show what would be kept and why, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn forget(ctx: &Ctx, args: ForgetArgs) -> Result<i32> {
    let vault = ctx.open()?;
    let policy = Policy {
        keep_last: args.keep_last,
        keep_hourly: args.keep_hourly,
        keep_daily: args.keep_daily,
        keep_weekly: args.keep_weekly,
        keep_monthly: args.keep_monthly,
        keep_yearly: args.keep_yearly,
        keep_within: args.keep_within,
    };
    let given = (!policy.is_empty()).then_some(&policy);
    let has_configured = vault.config().retention.is_some()
        || vault.config().sources.iter().any(|s| s.retention.is_some());
    if given.is_none() && !has_configured {
        bail!(
            "no retention policy: give --keep-last/--keep-daily/… or set [retention] in config.toml (docs/PRUNE.md)"
        );
    }
    // Deciding needs no lock; applying takes the writer lock for one transaction.
    let lock = if args.dry_run {
        None
    } else {
        Some(vault.lock()?)
    };
    // Another host's snapshots count for the policy (keep-last counts them all).
    super::locks::catch_up_first(ctx, &vault, None, lock.as_ref());
    let plans = forget::plan(&vault, given, &args.repos)?;
    let removed = match &lock {
        Some(lock) => forget::apply(&vault, lock, &plans)?,
        None => 0,
    };
    let would_remove: usize = plans.iter().map(|p| p.removed().count()).sum();
    let doc = serde_json::json!({
        "dry_run": args.dry_run,
        "removed": removed,
        "would_remove": would_remove,
        "repositories": plans,
    });
    ctx.out.print(&doc, || {
        let mut text = String::new();
        for plan in &plans {
            let origin = match &plan.policy {
                Some(PolicyOrigin::CommandLine) => "command-line policy".to_string(),
                Some(PolicyOrigin::Source(s)) => format!("policy of source {s}"),
                Some(PolicyOrigin::Config) => "config policy".to_string(),
                None => "no policy: everything kept".to_string(),
            };
            text.push_str(&format!("{} ({origin})\n", plan.repo));
            for s in &plan.snapshots {
                text.push_str(&format!(
                    "  {} {} {}  {}\n",
                    if s.keep { "keep  " } else { "forget" },
                    s.snapshot.id,
                    s.snapshot.time.format("%Y-%m-%d %H:%M:%S"),
                    s.reasons.join(", ")
                ));
            }
        }
        if args.dry_run {
            text.push_str(&format!(
                "dry run: {would_remove} snapshots would be forgotten\n"
            ));
        } else {
            text.push_str(&format!(
                "{removed} snapshots forgotten; `gitvault prune` reclaims their space\n"
            ));
        }
        text
    });
    Ok(EXIT_OK)
}

#[derive(clap::Args)]
pub struct PruneArgs {
    /// Report what would be freed, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Rewrite packs whose live share of bytes is below this percentage. (Small packs are
    /// regrouped whatever this says, once there are four or more.)
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub repack_below: u8,
    /// Delete condemned packs only once they were condemned this long ago (`36h`, `7d`): for
    /// readers this machine's read lease does not cover (another host reading the targets).
    #[arg(long, value_name = "SPAN")]
    pub grace: Option<Span>,
    /// Vouch for an index made by a gitvault from before 2026-12 (which may have been recovered
    /// from a forged index backup): prune refuses to judge packs by it otherwise.
    #[arg(long)]
    pub trust_index: bool,
}

pub fn prune(ctx: &Ctx, args: PruneArgs) -> Result<i32> {
    use gitvault::retention::prune::{PruneOptions, prune_watched};
    let vault = ctx.open()?;
    let keys = ctx.unlock(&vault)?;
    let grace = match args.grace {
        Some(span) => {
            let now = chrono::Utc::now();
            (now - span.before(now)).to_std().unwrap_or_default()
        }
        None => std::time::Duration::ZERO,
    };
    let options = PruneOptions {
        dry_run: args.dry_run,
        repack_below: f64::from(args.repack_below) / 100.0,
        grace,
        trust_index: args.trust_index,
        ..PruneOptions::default()
    };
    let bars = super::output::Bars::new(&ctx.out);
    let report = prune_watched(&vault, &keys, &options, &bars)?;
    ctx.out.print(&report, || {
        let mut text = format!(
            "{} snapshots; {} live chunks, {} dead chunks, {} dead git objects\n",
            report.snapshots, report.live_chunks, report.dead_chunks, report.dead_objects
        );
        if report.dry_run {
            text.push_str(&format!(
                "dry run: {} packs would be deleted and {} rewritten, freeing about {} ({} → {})\n",
                report.packs_emptied,
                report.packs_compacted,
                super::output::bytes(report.bytes_freed.max(0) as u64),
                super::output::bytes(report.stored_bytes_before),
                super::output::bytes(report.stored_bytes_after),
            ));
        } else {
            text.push_str(&format!(
                "{} packs deleted ({} emptied, {} rewritten into {} new), {} freed: {} → {}\n",
                report.packs_deleted,
                report.packs_emptied,
                report.packs_compacted,
                report.packs_written,
                super::output::bytes(report.bytes_freed.max(0) as u64),
                super::output::bytes(report.stored_bytes_before),
                super::output::bytes(report.stored_bytes_after),
            ));
            if report.packs_waiting > 0 {
                text.push_str(&format!(
                    "{} condemned packs wait for the grace period; a later prune deletes them\n",
                    report.packs_waiting
                ));
            }
        }
        if report.packs_locked > 0 {
            text.push_str(&format!(
                "{} condemned packs ({}) are under Object Lock until {} at the earliest: pending, a later prune deletes them\n",
                report.packs_locked,
                super::output::bytes(report.bytes_locked),
                report.locked_until.as_deref().unwrap_or("?"),
            ));
        }
        if report.compaction_skipped_for_locks {
            text.push_str(
                "compaction skipped: a target has Object Lock (allow it with allow_compaction = true)\n",
            );
        }
        if let Some(locks) = &report.locks {
            text.push_str(&format!(
                "Object Lock: {} locks checked, {} not renewed; live packs locked until {} at the earliest\n",
                locks.checked,
                locks.failed,
                locks.earliest_live_until.as_deref().unwrap_or("-"),
            ));
        }
        for failure in &report.index_backup_failed {
            text.push_str(&format!(
                "index backup not written ({failure}): condemned packs are deleted by a later prune\n"
            ));
        }
        text
    });
    Ok(EXIT_OK)
}
