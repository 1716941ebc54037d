use anyhow::Result;
use clap::Subcommand;
use serde::Serialize;

use gitvault::target::LockMode;
use gitvault::vault::TargetConfig;

use super::{Ctx, EXIT_OK};

#[derive(Subcommand)]
pub enum TargetCommand {
    /// Add a target: file:///path, or s3://bucket/prefix?endpoint=…&region=…&access_key_env=…&secret_key_env=…
    Add {
        name: String,
        url: String,
        /// S3 Object Lock: write every object locked for N days, so that whoever holds this
        /// host's S3 credentials cannot delete or overwrite it before then (the bucket must
        /// have Object Lock enabled). Storage of deleted data is paid until locks run out.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        lock_days: Option<u32>,
        /// compliance: nobody can remove a lock early; governance: accounts allowed to bypass
        /// governance retention can.
        #[arg(long, value_enum, requires = "lock_days")]
        lock_mode: Option<LockModeArg>,
        /// Let prune compact packs on this locked target (old packs keep costing storage until
        /// their locks run out, so it is off by default).
        #[arg(long, requires = "lock_days")]
        allow_compaction: bool,
    },
    /// List the targets.
    List,
    /// Remove a target from the vault (its files are left where they are).
    Remove { name: String },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LockModeArg {
    Compliance,
    Governance,
}

/// The mode `--lock-mode` names, compliance when not given.
pub fn lock_mode(arg: Option<LockModeArg>) -> LockMode {
    match arg {
        Some(LockModeArg::Governance) => LockMode::Governance,
        _ => LockMode::Compliance,
    }
}

#[derive(Serialize)]
struct TargetRow {
    name: String,
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    lock_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lock_mode: Option<&'static str>,
}

pub fn run(ctx: &Ctx, cmd: TargetCommand) -> Result<i32> {
    let mut vault = ctx.open()?;
    match cmd {
        TargetCommand::Add {
            name,
            url,
            lock_days,
            lock_mode,
            allow_compaction,
        } => {
            let lock = vault.lock()?;
            let entry = TargetConfig {
                lock_days,
                lock_mode: lock_days.map(|_| self::lock_mode(lock_mode)),
                allow_compaction,
                ..TargetConfig::new(&name, &url)
            };
            vault.add_configured_target(entry, &lock)?;
            ctx.out.print(&serde_json::json!({ "added": name }), || {
                format!("added target {name}; run `gitvault sync` to copy existing packs to it\n")
            });
        }
        TargetCommand::Remove { name } => {
            let lock = vault.lock()?;
            vault.remove_target(&name, &lock)?;
            ctx.out.print(&serde_json::json!({ "removed": name }), || {
                format!("removed target {name}\n")
            });
        }
        TargetCommand::List => {
            let rows: Vec<TargetRow> = vault
                .config()
                .targets
                .iter()
                .map(|t| TargetRow {
                    name: t.name.clone(),
                    url: t.url.clone(),
                    lock_days: t.lock_days,
                    lock_mode: t.lock_policy().map(|p| p.mode.as_str()),
                })
                .collect();
            ctx.out.print(&rows, || {
                rows.iter()
                    .map(|r| match (r.lock_days, r.lock_mode) {
                        (Some(days), Some(mode)) => format!(
                            "{:<12} {} (Object Lock: {days} days, {mode})\n",
                            r.name, r.url
                        ),
                        _ => format!("{:<12} {}\n", r.name, r.url),
                    })
                    .collect()
            });
        }
    }
    Ok(EXIT_OK)
}
