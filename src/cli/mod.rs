//! Command-line front end: clap definitions, one function per command, output as human tables
//! or one JSON document (`--json`). No logic of its own beyond turning arguments into library
//! calls and results into text.

mod cache;
mod chunk;
mod config;
mod daemon;
mod locks;
mod output;
mod prompt;
mod replicas;
mod repo;
mod restore_into;
mod retention;
mod source;
mod status;
mod target;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use gitvault::Vault;
use gitvault::vault::InitOptions;
use output::Output;

/// Exit codes (DESIGN.md): 0 all done, 1 failed, 3 partly done.
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_PARTIAL: i32 = 3;

#[derive(Parser)]
#[command(
    name = "gitvault",
    version,
    about = "Encrypted, deduplicating, replicated backups of git repositories"
)]
pub struct Args {
    /// The vault directory.
    #[arg(
        long,
        global = true,
        env = "GITVAULT_VAULT",
        default_value = "gitvault-vault"
    )]
    vault: PathBuf,
    /// An age identity file that opens the vault (else GITVAULT_PASSPHRASE, else a prompt).
    #[arg(long, global = true, env = "GITVAULT_IDENTITY_FILE")]
    identity: Option<PathBuf>,
    /// Print one JSON document on stdout instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// More diagnostics on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Write Prometheus metrics of this run to PATH when the command ends (node_exporter's
    /// textfile format, replaced atomically; docs/OPERATIONS.md).
    #[arg(
        long,
        global = true,
        env = "GITVAULT_METRICS_FILE",
        value_name = "PATH"
    )]
    metrics_file: Option<PathBuf>,
    /// Read commands (snapshots, ls, restore, verify, stats, forget) use this host's index as
    /// it is, without first catching up with what other hosts wrote to the targets (offline
    /// use, scripts). Backups and prune always catch up.
    #[arg(long, global = true, env = "GITVAULT_NO_CATCH_UP")]
    no_catch_up: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new vault: index, keys, and a local target DIR/data.
    Init {
        /// An age recipient (age1…) that can open the vault keys; repeat for several people.
        #[arg(long = "recipient")]
        recipients: Vec<String>,
        /// Protect the vault keys with a passphrase (from GITVAULT_PASSPHRASE or a prompt).
        #[arg(long)]
        passphrase: bool,
        /// Join an existing vault instead: this host's directory is built from the target at
        /// URL (its keys open with --identity or GITVAULT_PASSPHRASE), as `recover` does.
        #[arg(long, value_name = "URL", conflicts_with_all = ["recipients", "passphrase"])]
        join: Option<String>,
        /// With --join: the fingerprint the vault's `init` printed; any other is refused.
        #[arg(long, value_name = "FINGERPRINT", requires = "join")]
        expect_vault: Option<String>,
    },
    /// Generate an age identity for opening vaults (like `age-keygen`): writes it to --output
    /// (mode 0600, refusing to overwrite) and prints its public key for `init --recipient`.
    Keygen {
        #[arg(long)]
        output: PathBuf,
    },
    /// Manage the places packs are replicated to.
    #[command(subcommand)]
    Target(target::TargetCommand),
    /// Manage the accounts (GitHub organisations and users) that `backup` covers by default.
    #[command(subcommand)]
    Source(source::SourceCommand),
    /// Back up repositories by URL or path, or configured sources (all of them without an
    /// argument): every ref, exactly as advertised, as a new snapshot.
    Backup(repo::BackupArgs),
    /// List snapshots, oldest first.
    Snapshots(repo::SnapshotsArgs),
    /// The refs and HEAD of a snapshot (the newest unless --at or --snapshot).
    Ls(repo::LsArgs),
    /// Write a snapshot as a bare repository (exact refs, HEAD, one pack), optionally push it.
    Restore(repo::RestoreArgs),
    /// Check that every target holds every pack at the right size (one LIST each); --full
    /// downloads and rehashes every replica; --restore-sample N restores N random snapshots and
    /// runs git fsck on them.
    #[command(alias = "check")]
    Verify(repo::VerifyArgs),
    /// Copy every pack a target lacks (or holds damaged) from a target that has it intact.
    #[command(alias = "copy")]
    Sync,
    /// Rebuild a vault directory from one target and the key (newest index backup, then pack
    /// footers). --vault names the new directory.
    Recover(replicas::RecoverArgs),
    /// Apply a retention policy: forget the snapshots it does not keep (per repository; the
    /// newest is always kept). `prune` then reclaims their space.
    Forget(retention::ForgetArgs),
    /// Reclaim the space of what no snapshot needs: delete packs holding nothing live,
    /// rewrite packs mostly dead, and regroup small packs (daily increments) by file path so
    /// that versions compress together. Safe while backups run (docs/PRUNE.md).
    Prune(retention::PruneArgs),
    /// Logical versus stored bytes, dedup ratio, and per target what it holds.
    Stats,
    /// Is everything backed up? Each repository's newest snapshot and its age, its last
    /// failure, packs a target lacks, the last backup and verify; exit 1 if anything is wrong.
    Status(status::StatusArgs),
    /// Run the `[[job]]`s of config.toml (backup, forget+prune, verify) on their cron schedules
    /// until SIGTERM or SIGINT, which lets a running backup finish its current repositories
    /// and commit before exiting 0; SIGHUP reads the jobs again once the running one ended. A
    /// job whose slot passed while no daemon ran runs at once.
    Daemon,
    /// The mirror caches on this host (DIR/cache): list their sizes; `cache drop REPO…|--all`
    /// removes them (the next backup rebuilds one from the vault when it has to fetch).
    Cache(cache::CacheArgs),
    /// Plumbing: store and read raw data in the chunk store (scripts and tests).
    #[command(subcommand)]
    Chunk(chunk::ChunkCommand),
    /// Remove stale locks from the targets (expired, or left by a process gone from this host);
    /// --list shows every lock, --remove-all removes live ones too.
    Unlock(locks::UnlockArgs),
    /// Bring this host's index up to date with what other hosts wrote to the targets (their
    /// packs and snapshots, packs their prunes deleted): one LIST per target, footers read only
    /// of packs new here. Backups and prune do it themselves; run it before `snapshots`,
    /// `restore` or `verify` to see other hosts' snapshots. Prints nothing when nothing changed.
    CatchUp,
    /// Merge backup run reports (files, or vault directories for their newest) into one
    /// summary: the shards of a sharded account. Exit 1 unless every run was ok and no
    /// repository was backed up twice.
    Report {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Check the vault's configuration.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Print a completion script for a shell, e.g. `gitvault completions bash >
    /// /etc/bash_completion.d/gitvault`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages: one per command into --dir (gitvault.1, gitvault-backup.1, …), or the
    /// main page on stdout.
    Man {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub struct Ctx {
    pub args_vault: PathBuf,
    pub identity: Option<PathBuf>,
    pub out: Output,
    /// Whether read commands catch up with the targets first (not `--no-catch-up`).
    pub catch_up: bool,
    /// The report of a backup run, kept for the metrics written after the command.
    pub backup_run: std::sync::Mutex<Option<gitvault::backup::BackupRun>>,
}

impl Ctx {
    pub fn open(&self) -> Result<Vault> {
        Ok(Vault::open(&self.args_vault)?)
    }

    pub fn unlock(&self, vault: &Vault) -> Result<gitvault::crypto::VaultKeys> {
        let how = prompt::unlock_from_environment(self.identity.as_deref())?;
        Ok(vault.unlock(&how)?)
    }
}

pub fn main() -> i32 {
    let started = std::time::Instant::now();
    let matches = Args::command().get_matches();
    let command_name = matches.subcommand_name().unwrap_or("gitvault").to_string();
    let args = match Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    let level = match (args.quiet, args.verbose) {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("GITVAULT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("gitvault={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(output::LogLine::default)
        .with_target(false)
        .with_ansi(colour_allowed())
        .init();
    let ctx = Ctx {
        args_vault: args.vault.clone(),
        identity: args.identity.clone(),
        out: Output::new(args.json, args.quiet),
        catch_up: !args.no_catch_up,
        backup_run: std::sync::Mutex::new(None),
    };
    let notifier = notify_start(&ctx, &command_name);
    let mut error = None;
    let code = match run(&ctx, args.command) {
        Ok(code) => code,
        Err(e) => {
            ctx.out.error(&e);
            error = Some(output::error_text(&e));
            EXIT_FAILED
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    if let Some(path) = &args.metrics_file {
        write_metrics(&ctx, path, &command_name, code, seconds);
    }
    if let Some(notifier) = notifier {
        let run = ctx.backup_run.lock().ok();
        let ending = gitvault::notify::Ending {
            exit_code: code,
            seconds,
            error: error.as_deref(),
            backup_run: run.as_ref().and_then(|r| r.as_ref()),
        };
        for e in notifier.finish(&ending) {
            notify_warning(&ctx, &e);
        }
    }
    code
}

/// The command's notifier, after its start ping, when `[notify]` lists the command. A vault
/// that cannot be read sends nothing: the command itself says what is wrong with it.
fn notify_start(ctx: &Ctx, command: &str) -> Option<gitvault::notify::Notifier> {
    let config = Vault::read_config(&ctx.args_vault).ok()?;
    match gitvault::notify::Notifier::for_command(config.notify.as_ref(), command) {
        Ok(notifier) => {
            for e in notifier.iter().flat_map(|n| n.start()) {
                notify_warning(ctx, &e);
            }
            notifier
        }
        Err(e) => {
            notify_warning(ctx, &e);
            None
        }
    }
}

/// A notification that did not arrive is a warning: the command's own result stands.
fn notify_warning(ctx: &Ctx, e: &gitvault::notify::NotifyError) {
    if !ctx.out.quiet {
        eprintln!("warning: {e}");
    }
}

/// The command's metrics, with what the vault says of every repository when it opens; a
/// failure to write them is reported but does not change the exit status.
fn write_metrics(ctx: &Ctx, path: &std::path::Path, command: &str, code: i32, seconds: f64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let mut metrics = gitvault::metrics::Metrics::default();
    metrics.command(command, code, seconds, now);
    if let Some(run) = ctx.backup_run.lock().ok().as_ref().and_then(|r| r.as_ref()) {
        metrics.backup_run(run);
    }
    if let Ok(vault) = ctx.open() {
        metrics.snapshots(&vault, now);
        metrics.targets(&vault);
    }
    if let Err(e) = gitvault::metrics::write_file(path, &metrics.render()) {
        eprintln!("error: writing metrics to {}: {e}", path.display());
    }
}

fn report(ctx: &Ctx, paths: &[PathBuf]) -> Result<i32> {
    let summary = gitvault::report::merge(paths)?;
    ctx.out.print(&summary, || {
        let mut t = format!(
            "{} {} run(s), {} added\n",
            if summary.ok { "ok  " } else { "FAIL" },
            summary.runs.len(),
            output::bytes(summary.bytes_added)
        );
        for (status, n) in &summary.by_status {
            t.push_str(&format!("     {status}: {n}\n"));
        }
        for (name, s) in &summary.sources {
            t.push_str(&format!(
                "     source {name}: {} listed, {} selected{}\n",
                s.listed,
                s.selected,
                if s.errors.is_empty() { "" } else { ", failed" }
            ));
        }
        for p in &summary.problems {
            t.push_str(&format!("FAIL {}\n", repo::terminal_safe(p)));
        }
        for r in &summary.repeated {
            t.push_str(&format!(
                "FAIL {r}: backed up by more than one run (shards overlap)\n"
            ));
        }
        t
    });
    Ok(if summary.ok { EXIT_OK } else { EXIT_FAILED })
}

/// Colour only on a terminal, and never when `NO_COLOR` is set to anything (no-color.org).
fn colour_allowed() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn run(ctx: &Ctx, command: Command) -> Result<i32> {
    match command {
        Command::Init {
            join: Some(url),
            expect_vault,
            ..
        } => replicas::recover(
            ctx,
            replicas::RecoverArgs {
                from: url,
                target_name: "origin".to_string(),
                footers_only: false,
                expect_vault,
                lock_days: None,
                lock_mode: None,
            },
        ),
        Command::Init {
            recipients,
            passphrase,
            ..
        } => {
            let passphrase = if passphrase {
                Some(prompt::new_passphrase_from_environment()?)
            } else {
                None
            };
            let report = Vault::init(
                &ctx.args_vault,
                InitOptions {
                    recipients,
                    passphrase,
                },
            )
            .with_context(|| format!("creating a vault at {}", ctx.args_vault.display()))?;
            ctx.out.print(&report, || {
                format!(
                    "created vault {} at {}\n  fingerprint: {}\n  public key: {}\n  key files:  {}\n  target:     local {}\n\
                     Keep the identity or passphrase that opens the key files safe: without it the backups cannot be read (docs/KEYS.md).\n\
                     Write the fingerprint down: `gitvault recover --expect-vault FINGERPRINT` refuses a target whose keys are not this vault's.\n",
                    report.vault_id,
                    report.vault,
                    report.fingerprint,
                    report.public_key,
                    report.key_files.join(", "),
                    report.target
                )
            });
            Ok(EXIT_OK)
        }
        Command::Target(cmd) => target::run(ctx, cmd),
        Command::Cache(args) => cache::run(ctx, args),
        Command::Keygen { output } => {
            let public = gitvault::crypto::write_identity_file(&output)
                .with_context(|| format!("writing {}", output.display()))?;
            ctx.out.print(
                &serde_json::json!({ "public_key": public, "identity_file": output }),
                || format!("{public}\n"),
            );
            Ok(EXIT_OK)
        }
        Command::Stats => {
            let vault = ctx.open()?;
            locks::catch_up_first(ctx, &vault, None, None);
            let stats = gitvault::stats::collect(&vault)?;
            ctx.out.print(&stats, || output::stats_table(&stats));
            Ok(EXIT_OK)
        }
        Command::Chunk(cmd) => chunk::run(ctx, cmd),
        Command::Daemon => daemon::daemon(ctx),
        Command::Status(args) => status::status(ctx, args),
        Command::Backup(args) => repo::backup(ctx, args),
        Command::Source(cmd) => source::run(ctx, cmd),
        Command::Snapshots(args) => repo::snapshots(ctx, args),
        Command::Ls(args) => repo::ls(ctx, args),
        Command::Restore(args) => repo::restore(ctx, args),
        Command::Verify(args) => repo::verify(ctx, args),
        Command::Sync => replicas::sync(ctx),
        Command::Recover(args) => replicas::recover(ctx, args),
        Command::Forget(args) => retention::forget(ctx, args),
        Command::Prune(args) => retention::prune(ctx, args),
        Command::Config(cmd) => config::run(ctx, cmd),
        Command::Report { paths } => report(ctx, &paths),
        Command::Unlock(args) => locks::unlock(ctx, args),
        Command::CatchUp => locks::catch_up(ctx),
        Command::Completions { shell } => {
            let mut cmd = Args::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "gitvault", &mut script);
            output::emit(&String::from_utf8_lossy(&script));
            Ok(EXIT_OK)
        }
        Command::Man { dir } => {
            let cmd = Args::command();
            match dir {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                    clap_mangen::generate_to(cmd, &dir)
                        .with_context(|| format!("writing man pages to {}", dir.display()))?;
                }
                None => {
                    let mut page = Vec::new();
                    clap_mangen::Man::new(cmd).render(&mut page)?;
                    output::emit(&String::from_utf8_lossy(&page));
                }
            }
            Ok(EXIT_OK)
        }
    }
}
