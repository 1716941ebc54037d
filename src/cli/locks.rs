//! `gitvault unlock`: the locks other hosts (or killed processes) left on the targets.

use anyhow::Result;
use clap::Args;

use gitvault::vault::target_lock::{FoundLock, LockState};

use super::{Ctx, EXIT_OK};

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
