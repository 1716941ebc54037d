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
