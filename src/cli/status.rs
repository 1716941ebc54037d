//! `gitvault status`: is everything backed up? Exit 1 when not.

use anyhow::Result;
use clap::Args;

use gitvault::policy::Span;

use super::{Ctx, EXIT_FAILED, EXIT_OK};

#[derive(Args)]
pub struct StatusArgs {
    /// A repository whose newest snapshot is older than this is stale (`26h`, `2d`, `1m`):
    /// the exit status is then 1, for cron mails and monitoring.
    #[arg(long, value_name = "SPAN")]
    max_age: Option<Span>,
}

fn age(seconds: Option<i64>) -> String {
    match seconds {
        None => "never".to_string(),
        Some(s) if s < 3600 => format!("{}m", s / 60),
        Some(s) if s < 2 * 86400 => format!("{}h", s / 3600),
        Some(s) => format!("{}d", s / 86400),
    }
}

pub fn status(ctx: &Ctx, args: StatusArgs) -> Result<i32> {
    let vault = ctx.open()?;
    let status = gitvault::status::collect(&vault, args.max_age, chrono::Utc::now())?;
    ctx.out.print(&status, || {
        let mut t = String::new();
        for r in &status.repositories {
            let flag = if r.stale || r.last_problem.is_some() {
                "FAIL"
            } else {
                "ok  "
            };
            t.push_str(&format!(
                "{flag} {:<40} {:<12} last snapshot {} ago{}\n",
                super::repo::terminal_safe(&r.repo),
                r.source.as_deref().unwrap_or("-"),
                age(r.age_seconds),
                if r.stale { " (stale)" } else { "" }
            ));
            if let Some(p) = &r.last_problem {
                t.push_str(&format!(
                    "     last run {}: {} ({}): {}\n",
                    p.at,
                    p.status,
                    p.reason.as_deref().unwrap_or("-"),
                    super::repo::terminal_safe(p.error.as_deref().unwrap_or("-"))
                ));
            }
        }
        for target in &status.targets {
            t.push_str(&format!(
                "{} target {}: {} pack(s) missing{}\n",
                if target.packs_missing == 0 {
                    "ok  "
                } else {
                    "FAIL"
                },
                target.target,
                target.packs_missing,
                if target.packs_missing == 0 {
                    ""
                } else {
                    " (run `gitvault sync`)"
                }
            ));
            if let Some(expires) = &target.lock_expires {
                t.push_str(&format!(
                    "{} target {}: live packs locked until {expires}{}\n",
                    if target.lock_expiring { "FAIL" } else { "ok  " },
                    target.target,
                    if target.lock_expiring {
                        " (soon: run `gitvault prune` or `gitvault verify` to renew)"
                    } else {
                        ""
                    }
                ));
            }
        }
        for (what, run) in [
            ("backup", &status.last_backup),
            ("verify", &status.last_verify),
        ] {
            match run {
                Some(r) => t.push_str(&format!(
                    "{} last {what}: {} ({})\n",
                    if r.ok { "ok  " } else { "FAIL" },
                    r.at,
                    if r.ok { "ok" } else { "failed" }
                )),
                None => t.push_str(&format!("     last {what}: none recorded\n")),
            }
        }
        t
    });
    Ok(if status.ok { EXIT_OK } else { EXIT_FAILED })
}
