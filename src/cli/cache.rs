//! `gitvault cache`: the mirror caches on this host, their sizes, and dropping them.

use anyhow::Result;
use clap::{Args, Subcommand};

use gitvault::backup::cache::{self, CacheEntry};

use super::output::bytes;
use super::{Ctx, EXIT_OK};

#[derive(Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    command: Option<CacheCommand>,
}

#[derive(Subcommand)]
enum CacheCommand {
    /// List the mirror caches and their sizes (the default).
    List,
    /// Remove the mirror caches of REPOs (or --all). The next backup of a repository whose
    /// refs changed rebuilds its cache from the vault: the fetch stays incremental.
    Drop {
        /// Repository names, as `snapshots` shows them.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        repos: Vec<String>,
        /// Every cache, and whatever else lies in DIR/cache (leftovers of killed rebuilds).
        #[arg(long)]
        all: bool,
    },
}

fn lines(entries: &[CacheEntry]) -> String {
    entries
        .iter()
        .map(|e| {
            format!(
                "{:>10}  {}  {}\n",
                bytes(e.bytes),
                e.repo.as_deref().unwrap_or("(unknown repository)"),
                e.path
            )
        })
        .collect()
}

pub fn run(ctx: &Ctx, args: CacheArgs) -> Result<i32> {
    let vault = ctx.open()?;
    match args.command.unwrap_or(CacheCommand::List) {
        CacheCommand::List => {
            let entries = cache::list(&vault)?;
            let total: u64 = entries.iter().map(|e| e.bytes).sum();
            ctx.out.print(
                &serde_json::json!({ "caches": entries, "bytes": total }),
                || format!("{}{:>10}  in all\n", lines(&entries), bytes(total)),
            );
        }
        CacheCommand::Drop { repos, all } => {
            // A backup writes into the caches: none may run meanwhile.
            let _lock = vault.lock()?;
            let dropped = cache::drop_caches(&vault, (!all).then_some(repos.as_slice()))?;
            let total: u64 = dropped.iter().map(|e| e.bytes).sum();
            ctx.out.print(
                &serde_json::json!({ "dropped": dropped, "bytes": total }),
                || {
                    format!(
                        "{}dropped {} caches, {}\n",
                        lines(&dropped),
                        dropped.len(),
                        bytes(total)
                    )
                },
            );
        }
    }
    Ok(EXIT_OK)
}
