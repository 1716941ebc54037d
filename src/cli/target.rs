use anyhow::Result;
use clap::Subcommand;
use serde::Serialize;

use super::{Ctx, EXIT_OK};

#[derive(Subcommand)]
pub enum TargetCommand {
    /// Add a target: file:///path, or s3://bucket/prefix?endpoint=…&region=…&access_key_env=…&secret_key_env=…
    Add { name: String, url: String },
    /// List the targets.
    List,
    /// Remove a target from the vault (its files are left where they are).
    Remove { name: String },
}

#[derive(Serialize)]
struct TargetRow {
    name: String,
    url: String,
}

pub fn run(ctx: &Ctx, cmd: TargetCommand) -> Result<i32> {
    let mut vault = ctx.open()?;
    match cmd {
        TargetCommand::Add { name, url } => {
            let lock = vault.lock()?;
            vault.add_target(&name, &url, &lock)?;
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
                })
                .collect();
            ctx.out.print(&rows, || {
                rows.iter()
                    .map(|r| format!("{:<12} {}\n", r.name, r.url))
                    .collect()
            });
        }
    }
    Ok(EXIT_OK)
}
