//! backup, snapshots, ls, restore, verify: the commands about repositories and snapshots.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use gitvault::backup::{self, BackupRequest, RepoStatus};
use gitvault::git::Credentials;
use gitvault::restore::{self, Selector};
use gitvault::snapshot;

use super::output::Bars;
use super::output::bytes;
use super::{Ctx, EXIT_FAILED, EXIT_OK, EXIT_PARTIAL};

#[derive(clap::Args)]
pub struct BackupArgs {
    /// Git URLs or local paths (https://, http://, ssh://, git@host:path, git://, file://), or
    /// names of configured sources. None: every configured source.
    pub urls: Vec<String>,
    /// The repository's name in the vault (default: host/owner/repo). Only with one URL.
    #[arg(long)]
    pub name: Option<String>,
    /// A pack counts as written once this many targets hold it (default: the config's
    /// `min_replicas`, 0 meaning all). Targets that missed packs are reported; `gitvault sync`
    /// brings them level.
    #[arg(long)]
    pub min_replicas: Option<usize>,
    /// Repositories backed up at once (and API requests in flight per source). Fetching and
    /// API calls overlap; storing is one at a time.
    #[arg(long, short = 'j', default_value_t = backup::DEFAULT_JOBS as u16, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Accept a source that lists no repositories although its previous run listed some
    /// (otherwise the run fails: a token that lost its access lists nothing too).
    #[arg(long)]
    pub allow_empty: bool,
    /// Back up only shard I of N of the configured sources' repositories (0-based, by a
    /// stable hash of owner/name), to split an account between hosts or pods.
    #[arg(
        long,
        value_name = "I/N",
        env = "GITVAULT_SHARD",
        conflicts_with = "shards"
    )]
    pub shard: Option<backup::Shard>,
    /// With N shards, take I from Kubernetes' JOB_COMPLETION_INDEX (an Indexed Job's pod).
    #[arg(long, value_name = "N")]
    pub shards: Option<u32>,
}

#[derive(clap::Args)]
pub struct SnapshotsArgs {
    /// Only this repository.
    pub repo: Option<String>,
    /// Only snapshots taken at or after this date (RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    pub since: Option<String>,
    /// Only snapshots taken at or before this date (YYYY-MM-DD means the end of that day, UTC).
    #[arg(long)]
    pub until: Option<String>,
}

#[derive(clap::Args)]
pub struct SelectArgs {
    /// The snapshot as of this date: the newest taken at or before it.
    #[arg(long, conflicts_with = "snapshot")]
    pub at: Option<String>,
    /// A snapshot id (a unique prefix is enough).
    #[arg(long)]
    pub snapshot: Option<String>,
}

#[derive(clap::Args)]
pub struct LsArgs {
    pub repo: String,
    #[command(flatten)]
    pub select: SelectArgs,
}

#[derive(clap::Args)]
pub struct RestoreArgs {
    pub repo: String,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Where to write the bare repository (must not exist or be empty).
    #[arg(long, required_unless_present = "to_source")]
    pub to: Option<PathBuf>,
    /// After restoring, mirror-push to this (empty) remote; credentials as for backup.
    #[arg(long, requires = "to")]
    pub push: Option<String>,
    /// The LFS endpoint the restored LFS objects are uploaded to after the push (default: the
    /// push URL's `<url>.git/info/lfs`, as git-lfs would use).
    #[arg(long, requires = "push")]
    pub push_lfs_url: Option<String>,
    /// Also write the snapshot's platform metadata (issues, pull requests, releases…) as
    /// readable JSON files under this directory.
    #[arg(long, requires = "to")]
    pub metadata_to: Option<PathBuf>,
    /// Recreate the repository in the account of this configured source (GitHub, Gitea,
    /// GitLab or Bitbucket Cloud): the repository, every ref, LFS objects, wiki, labels, milestones, issues with
    /// comments, pull/merge requests (as such when their branches were restored, else as
    /// issues), releases. Stopped runs continue where they stopped when run again.
    #[arg(long, conflicts_with = "to", value_name = "SOURCE")]
    pub to_source: Option<String>,
    /// With --to-source: the account to create the repository under (default: the source's
    /// owner; on GitLab a group's full path such as `acme/platform`, or a user; on Bitbucket
    /// a workspace).
    #[arg(long, requires = "to_source")]
    pub owner: Option<String>,
    /// With --to-source: the new repository's name (default: the original's).
    #[arg(long, requires = "to_source")]
    pub name: Option<String>,
    /// With --to-source: print what would be created and any conflict, change nothing.
    #[arg(long, requires = "to_source")]
    pub dry_run: bool,
    /// With --to-source: push into a repository of that name that exists already (refused
    /// otherwise). Nothing there is deleted or overwritten; diverged branches are refused.
    #[arg(long, requires = "to_source")]
    pub into_existing: bool,
    /// With --to-source: create the repository public (default: private).
    #[arg(long, requires = "to_source")]
    pub public: bool,
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// Download every replica of every pack, decrypt it and rehash every chunk (reads everything).
    #[arg(long)]
    pub full: bool,
    /// Restore N random snapshots into a temporary place, run `git fsck --full` on each and
    /// compare their refs with the manifest.
    #[arg(long, default_value_t = 0)]
    pub restore_sample: usize,
    /// On targets with Object Lock: read every object's lock (one HEAD request each) and name
    /// those whose lock is missing, in the wrong mode, shorter than the policy, or expired.
    #[arg(long)]
    pub locks: bool,
}

fn selector(args: &SelectArgs) -> Result<Selector> {
    Ok(Selector {
        snapshot: args.snapshot.clone(),
        at: args.at.as_deref().map(snapshot::parse_date).transpose()?,
    })
}

/// Text from a server made safe to print: control characters (escape codes, carriage
/// returns that overwrite a line) are shown escaped.
pub(super) fn terminal_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn print_line(ctx: &Ctx, report: &backup::RepoReport) {
    if ctx.out.json || ctx.out.quiet {
        return;
    }
    // Names and messages come from API servers: no terminal escape codes reach the screen.
    let repo = terminal_safe(&report.repo);
    match report.status {
        RepoStatus::Failed | RepoStatus::Partial | RepoStatus::Skipped => eprintln!(
            "{}: {}: {}",
            repo,
            format!("{:?}", report.status).to_lowercase(),
            terminal_safe(report.error.as_deref().unwrap_or("unknown error"))
        ),
        status => eprintln!(
            "{}: {} ({} refs, {} new objects, {}{} uploaded, {:.1}s)",
            repo,
            if status == RepoStatus::Unchanged {
                "unchanged"
            } else {
                "backed up"
            },
            report.refs,
            report.objects_added,
            report
                .metadata_documents
                .map(|n| format!("{n} metadata documents, "))
                .unwrap_or_default(),
            bytes(report.bytes_uploaded),
            report.seconds
        ),
    }
}

/// A flag SIGTERM and SIGINT set: the run then starts no new repository, finishes the ones
/// in progress and commits (systemd's stop, Ctrl-C). A second signal ends the process at once.
fn stop_on_signals() -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // Registered first, so it sees the flag as the previous signal left it.
        signal_hook::flag::register_conditional_shutdown(signal, 130, std::sync::Arc::clone(&stop))
            .context("installing the signal handlers")?;
        signal_hook::flag::register(signal, std::sync::Arc::clone(&stop))
            .context("installing the signal handlers")?;
    }
    Ok(stop)
}

/// `--shard I/N`, or `--shards N` with I from `JOB_COMPLETION_INDEX`.
fn shard_of(args: &BackupArgs) -> Result<Option<backup::Shard>> {
    if let Some(count) = args.shards {
        let index = std::env::var("JOB_COMPLETION_INDEX").map_err(|_| {
            anyhow::anyhow!(
                "--shards needs JOB_COMPLETION_INDEX (set in the pods of a Kubernetes Indexed Job); use --shard I/N elsewhere"
            )
        })?;
        return Ok(Some(format!("{}/{count}", index.trim()).parse()?));
    }
    Ok(args.shard)
}

pub fn backup(ctx: &Ctx, args: BackupArgs) -> Result<i32> {
    let shard = shard_of(&args)?;
    if args.name.is_some() && args.urls.len() != 1 {
        bail!("--name applies to exactly one URL");
    }
    let mut vault = ctx.open()?;
    if let Some(n) = args.min_replicas {
        vault.set_min_replicas(n);
    }
    let (sources, requests) = what_to_back_up(&vault, &args)?;
    let keys = ctx.unlock(&vault)?;
    let lock = vault.lock()?;
    let options = backup::Options {
        jobs: usize::from(args.jobs),
        allow_empty: args.allow_empty,
        shard,
    };
    let bars = Bars::new(&ctx.out);
    let stop = stop_on_signals()?;
    let mut session = backup::Session::new(&vault, &keys, &lock, options)?
        .with_progress(&bars)
        .with_stop(&stop);
    // A run of several repositories: a total line beside the running repositories' own lines
    // (and the sources' lines), its length growing as sources list theirs.
    let total = if requests.len() > 1 || !sources.is_empty() {
        let bar = bars.add(ctx.out.count_bar("total"));
        bar.set_length(requests.len() as u64);
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    session.backup_urls(&requests, &|line| {
        total.inc(1);
        bars.println(|| print_line(ctx, line));
    });
    for source in &sources {
        let bar = bars.add(ctx.out.count_bar(&format!("source {}", source.name)));
        let report = session.backup_source(source, &|event| match event {
            backup::SourceEvent::Selected(n) => {
                bar.set_length(n as u64);
                total.inc_length(n as u64);
            }
            backup::SourceEvent::Done(line) => {
                if !line.repo.ends_with(".wiki") {
                    bar.inc(1);
                    total.inc(1);
                }
                bars.println(|| print_line(ctx, line));
            }
        });
        bar.finish_and_clear();
        print_source_problems(ctx, report);
    }
    total.finish_and_clear();
    let run = session.finish()?;
    if !ctx.out.json && !ctx.out.quiet {
        for (pack, target, error) in &run.lagging_replicas {
            eprintln!(
                "warning: pack {pack} is not on target {target} ({error}); run `gitvault sync`"
            );
        }
        for target in &run.index_backup_missed {
            eprintln!("warning: the index backup did not reach target {target}");
        }
        if let Some(why) = &run.target_lock_lost {
            eprintln!(
                "warning: the lock on the targets could not be kept ({why}); run `gitvault verify`"
            );
        }
    }
    ctx.out.print(&run, || {
        run.lines()
            .map(|r| {
                format!(
                    "{:<10} {:<40} {}\n",
                    format!("{:?}", r.status).to_lowercase(),
                    terminal_safe(&r.repo),
                    r.snapshot.as_deref().unwrap_or("-")
                )
            })
            .collect()
    });
    let code = match run.outcome() {
        backup::RunOutcome::Ok => EXIT_OK,
        backup::RunOutcome::Partial => EXIT_PARTIAL,
        backup::RunOutcome::Failed => EXIT_FAILED,
    };
    if let Ok(mut kept) = ctx.backup_run.lock() {
        *kept = Some(run);
    }
    Ok(code)
}

/// Arguments naming a configured source back that source up; others are URLs or paths. No
/// argument: every source.
fn what_to_back_up(
    vault: &gitvault::Vault,
    args: &BackupArgs,
) -> Result<(Vec<gitvault::provider::SourceConfig>, Vec<BackupRequest>)> {
    let configured = &vault.config().sources;
    if args.urls.is_empty() && configured.is_empty() {
        bail!("nothing to back up: give URLs or paths, or add a source with `gitvault source add`");
    }
    let names = (!args.urls.is_empty()).then_some(args.urls.as_slice());
    let sources = backup::sources_named(configured, names);
    let urls = args
        .urls
        .iter()
        .filter(|u| !sources.iter().any(|s| &s.name == *u));
    let requests = backup::url_requests(urls, args.name.as_deref());
    Ok((sources, requests))
}

/// Items a source's listing left out and the source's own failure, on stderr.
fn print_source_problems(ctx: &Ctx, report: &backup::SourceReport) {
    if ctx.out.json {
        return;
    }
    if !report.dropped.is_empty() {
        eprintln!(
            "source {}: {} listed items are not repositories and were left out: {}",
            report.source,
            report.dropped.len(),
            terminal_safe(&report.dropped.join(", "))
        );
    }
    if let Some(e) = &report.error {
        eprintln!("source {}: failed: {}", report.source, terminal_safe(e));
    }
}

pub fn snapshots(ctx: &Ctx, args: SnapshotsArgs) -> Result<i32> {
    let vault = ctx.open()?;
    super::locks::catch_up_first(ctx, &vault, None, None);
    let since = args
        .since
        .as_deref()
        .map(snapshot::parse_date_start)
        .transpose()?;
    let until = args
        .until
        .as_deref()
        .map(snapshot::parse_date)
        .transpose()?;
    let rows = vault
        .index()
        .snapshots(args.repo.as_deref(), since, until)?;
    ctx.out.print(&rows, || {
        let mut t = format!(
            "{:<16}  {:<20}  {:>6}  {:>8}  repo\n",
            "id", "time (UTC)", "refs", "objects"
        );
        for r in &rows {
            t.push_str(&format!(
                "{:<16}  {:<20}  {:>6}  {:>8}  {}\n",
                r.id,
                r.time.format("%Y-%m-%d %H:%M:%S"),
                r.ref_count,
                r.objects_added,
                r.repo
            ));
        }
        t
    });
    Ok(EXIT_OK)
}

#[derive(Serialize)]
struct LsOutput {
    repo: String,
    snapshot: String,
    time: chrono::DateTime<chrono::Utc>,
    source: String,
    head: Option<snapshot::Head>,
    refs: Vec<LsRef>,
}

#[derive(Serialize)]
struct LsRef {
    name: String,
    oid: String,
}

pub fn ls(ctx: &Ctx, args: LsArgs) -> Result<i32> {
    let vault = ctx.open()?;
    let keys = ctx.unlock(&vault)?;
    super::locks::catch_up_first(ctx, &vault, Some(&keys), None);
    let row = restore::select_snapshot(&vault, &args.repo, &selector(&args.select)?)?;
    let store = vault.reader(&keys);
    let (manifest, refs) = restore::load_snapshot(&store, &row)?;
    let out = LsOutput {
        repo: row.repo.clone(),
        snapshot: row.id.clone(),
        time: row.time,
        source: manifest.source.clone(),
        head: refs.head.clone(),
        refs: refs
            .refs
            .iter()
            .map(|(n, o)| LsRef {
                name: n.clone(),
                oid: o.to_hex(),
            })
            .collect(),
    };
    ctx.out.print(&out, || {
        let mut t = String::new();
        match &out.head {
            Some(snapshot::Head::Symbolic(target)) => t.push_str(&format!("HEAD -> {target}\n")),
            Some(snapshot::Head::Detached(oid)) => t.push_str(&format!("HEAD {oid} (detached)\n")),
            None => {}
        }
        for r in &out.refs {
            t.push_str(&format!("{} {}\n", r.oid, r.name));
        }
        t
    });
    Ok(EXIT_OK)
}

pub fn restore(ctx: &Ctx, args: RestoreArgs) -> Result<i32> {
    let vault = ctx.open()?;
    let keys = ctx.unlock(&vault)?;
    super::locks::catch_up_first(ctx, &vault, Some(&keys), None);
    // Prune deletes no pack while a restore holds a lease.
    let _lease = vault.read_lease()?;
    let row = restore::select_snapshot(&vault, &args.repo, &selector(&args.select)?)?;
    let Some(to) = &args.to else {
        return super::restore_into::run(ctx, &vault, &keys, &row, &args);
    };
    let bars = Bars::new(&ctx.out);
    let mut report = restore::restore_snapshot_watched(&vault, &keys, &row, to, &bars)?;
    if let Some(dir) = &args.metadata_to {
        report.metadata_files = Some(restore::write_metadata(&vault, &keys, &row, dir)?);
    }
    if let Some(url) = &args.push {
        let credentials = Credentials::from_environment();
        report.pushed_to = Some(restore::push_mirror(to, url, credentials.as_ref())?);
        if report.lfs_objects > 0 {
            report.lfs_uploaded = Some(restore::push_lfs(
                to,
                url,
                args.push_lfs_url.as_deref(),
                credentials.as_ref(),
                (&report.repo, &bars),
            )?);
        }
    }
    ctx.out.print(&report, || {
        format!(
            "restored {} as of snapshot {} ({}) to {}: {} refs, {} objects{}{}{}\n",
            report.repo,
            report.snapshot,
            report.time.format("%Y-%m-%d %H:%M:%S UTC"),
            report.path,
            report.refs,
            report.objects,
            if report.lfs_objects > 0 {
                format!(", {} LFS objects", report.lfs_objects)
            } else {
                String::new()
            },
            report
                .pushed_to
                .as_ref()
                .map(|u| format!(", pushed to {u}"))
                .unwrap_or_default(),
            report
                .lfs_uploaded
                .map(|n| format!(" ({n} LFS objects uploaded)"))
                .unwrap_or_default()
        )
    });
    Ok(EXIT_OK)
}

pub fn verify(ctx: &Ctx, args: VerifyArgs) -> Result<i32> {
    let vault = ctx.open()?;
    let keys = ctx.unlock(&vault)?;
    let lock = vault.lock()?;
    super::locks::catch_up_first(ctx, &vault, Some(&keys), Some(&lock));
    let full = args.full;
    let options = gitvault::verify::VerifyOptions {
        full,
        restore_sample: args.restore_sample,
        locks: args.locks,
    };
    let bars = Bars::new(&ctx.out);
    let out = gitvault::verify::run_watched(&vault, &keys, lock, &options, &bars)?;
    let ok = out.ok;
    ctx.out.print(&out, || verify_text(&out, full));
    Ok(if ok { EXIT_OK } else { EXIT_FAILED })
}

/// `verify`'s human-readable table.
fn verify_text(out: &gitvault::verify::VerifyReport, full: bool) -> String {
    let mut t = String::new();
    for r in &out.targets {
        t.push_str(&format!(
            "{} target {}: {} packs expected, {} missing, {} wrong size{}\n",
            if r.ok() { "ok  " } else { "FAIL" },
            r.target,
            r.packs_expected,
            r.missing.len(),
            r.wrong_size.len(),
            if full {
                format!(
                    ", {} checked in full, {} corrupt",
                    r.packs_checked,
                    r.corrupt.len()
                )
            } else {
                String::new()
            }
        ));
        for p in &r.missing {
            t.push_str(&format!("     missing: pack {p} (run `gitvault sync`)\n"));
        }
        for p in &r.wrong_size {
            t.push_str(&format!(
                "     wrong size: pack {p} (run `gitvault sync`)\n"
            ));
        }
        for (p, why) in &r.corrupt {
            t.push_str(&format!(
                "     corrupt: pack {p}: {why} (run `gitvault sync`)\n"
            ));
        }
        if !r.unindexed.is_empty() {
            t.push_str(&format!(
                "     note: {} pack(s) on the target are not in the index (left by an interrupted run; harmless)\n",
                r.unindexed.len()
            ));
        }
        if let Some(e) = &r.error {
            t.push_str(&format!("     error: {e}\n"));
        }
    }
    for m in &out.lfs_missing {
        t.push_str(&format!("FAIL {m}\n"));
    }
    if let Some(r) = &out.lock_renewal {
        t.push_str(&format!(
            "{} Object Lock: {} locks checked, {} not renewed; live packs locked until {} at the earliest\n",
            if r.failed == 0 { "ok  " } else { "FAIL" },
            r.checked,
            r.failed,
            r.earliest_live_until.as_deref().unwrap_or("-"),
        ));
    }
    if let Some(l) = &out.locks {
        t.push_str(&format!(
            "{} {} objects' locks read, {} fall short\n",
            if l.findings.is_empty() {
                "ok  "
            } else {
                "FAIL"
            },
            l.objects_checked,
            l.findings.len()
        ));
        for f in &l.findings {
            t.push_str(&format!("     {} {}: {}\n", f.target, f.key, f.problem));
        }
    }
    for r in &out.restored {
        t.push_str(&format!(
            "{} {} {}: {}\n",
            if r.ok { "ok  " } else { "FAIL" },
            r.repo,
            r.snapshot,
            if r.ok {
                "git fsck --full passed, refs match".to_string()
            } else {
                r.problems.join("; ")
            }
        ));
    }
    t.push_str(&format!(
        "{} snapshot(s) restored and checked\n",
        out.restored.len()
    ));
    t
}
