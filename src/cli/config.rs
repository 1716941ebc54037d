//! `gitvault config check`: the vault's config.toml read as the program reads it, with what it
//! would ignore or refuse named.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;

use super::{Ctx, EXIT_FAILED, EXIT_OK};

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Check config.toml: unknown keys (typos are otherwise ignored), sources and targets the
    /// program would refuse. Exit 1 when anything is found.
    Check {
        /// Check this file instead of the vault's config.toml (e.g. before installing it).
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

pub fn run(ctx: &Ctx, cmd: ConfigCommand) -> Result<i32> {
    match cmd {
        ConfigCommand::Check { file } => {
            let path = file.unwrap_or_else(|| ctx.args_vault.join(gitvault::vault::CONFIG_FILE));
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let check = gitvault::vault::check_config(&text);
            ctx.out.print(&check, || {
                let mut t = String::new();
                for key in &check.unknown_keys {
                    t.push_str(&format!("unknown key: {key} (ignored)\n"));
                }
                for problem in &check.problems {
                    t.push_str(&format!("problem: {problem}\n"));
                }
                if check.ok() {
                    t.push_str(&format!("{}: ok\n", path.display()));
                }
                t
            });
            Ok(if check.ok() { EXIT_OK } else { EXIT_FAILED })
        }
    }
}
