use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use serde::Serialize;

use gitvault::vault::target_lock::{LockKind, LockTiming};
use gitvault::{ChunkId, ChunkKind};

use super::{Ctx, EXIT_OK};

#[derive(Subcommand)]
pub enum ChunkCommand {
    /// Store files (or `-` for stdin) and print their ids.
    Put { paths: Vec<PathBuf> },
    /// Write what an id stands for to stdout or --output.
    Cat {
        id: ChunkId,
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

#[derive(Serialize)]
struct Stored {
    path: String,
    id: String,
    bytes: u64,
}

#[derive(Serialize)]
struct PutReport {
    stored: Vec<Stored>,
    report: gitvault::store::WriteReport,
}

pub fn run(ctx: &Ctx, cmd: ChunkCommand) -> Result<i32> {
    let vault = ctx.open()?;
    let keys = ctx.unlock(&vault)?;
    match cmd {
        ChunkCommand::Put { paths } => {
            let lock = vault.lock()?;
            let _shared = vault.lock_targets(
                &keys,
                LockKind::Shared,
                "chunk put",
                LockTiming::from_environment(),
            )?;
            let mut store = vault.store(&keys, &lock);
            let mut stored = Vec::new();
            for path in &paths {
                let shown = path.display().to_string();
                let (id, bytes) = if shown == "-" {
                    store.put_reader(ChunkKind::Data, io::stdin().lock())?
                } else {
                    let file = File::open(path).with_context(|| format!("opening {shown}"))?;
                    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
                    let bar = ctx.out.bytes_bar(len);
                    let result = store.put_reader(ChunkKind::Data, bar.wrap_read(file));
                    bar.finish_and_clear();
                    result.with_context(|| format!("storing {shown}"))?
                };
                stored.push(Stored {
                    path: shown,
                    id: id.to_hex(),
                    bytes,
                });
            }
            store.flush()?;
            let report = PutReport {
                stored,
                report: store.report().clone(),
            };
            ctx.out.print(&report, || {
                report
                    .stored
                    .iter()
                    .map(|s| format!("{}  {}\n", s.id, s.path))
                    .collect()
            });
        }
        ChunkCommand::Cat { id, output } => {
            let store = vault.reader(&keys);
            match output {
                Some(path) => {
                    let mut out = BufWriter::new(
                        File::create(&path)
                            .with_context(|| format!("creating {}", path.display()))?,
                    );
                    store.get_to(&id, &mut out)?;
                    out.flush()?;
                }
                None => {
                    let stdout = io::stdout();
                    let mut out = BufWriter::new(stdout.lock());
                    let written = store
                        .get_to(&id, &mut out)
                        .map(|_| ())
                        .map_err(|e| match e {
                            gitvault::store::StoreError::Output(io) => {
                                super::output::exit_if_broken_pipe(&io);
                                gitvault::store::StoreError::Output(io)
                            }
                            other => other,
                        });
                    written?;
                    if let Err(e) = out.flush() {
                        super::output::exit_if_broken_pipe(&e);
                        return Err(e.into());
                    }
                }
            }
        }
    }
    Ok(EXIT_OK)
}
