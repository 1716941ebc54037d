//! backup, snapshots, ls, restore, verify: the commands about repositories and snapshots.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::Serialize;

use gitvault::backup::{self, BackupRequest, RepoStatus};
use gitvault::git::Credentials;
use gitvault::restore::{self, Selector};
use gitvault::snapshot;

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
    #[arg(long)]
    pub to: PathBuf,
    /// After restoring, mirror-push to this (empty) remote; credentials as for backup.
    #[arg(long)]
    pub push: Option<String>,
    /// The LFS endpoint the restored LFS objects are uploaded to after the push (default: the
    /// push URL's `<url>.git/info/lfs`, as git-lfs would use).
    #[arg(long, requires = "push")]
    pub push_lfs_url: Option<String>,
    /// Also write the snapshot's platform metadata (issues, pull requests, releases…) as
    /// readable JSON files under this directory.
    #[arg(long)]
    pub metadata_to: Option<PathBuf>,
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
}

fn selector(args: &SelectArgs) -> Result<Selector> {
    Ok(Selector {
        snapshot: args.snapshot.clone(),
        at: args.at.as_deref().map(snapshot::parse_date).transpose()?,
    })
}

#[derive(Serialize)]
struct BackupRun {
    ok: bool,
    repositories: Vec<backup::RepoReport>,
    sources: Vec<backup::SourceReport>,
    lagging_replicas: Vec<(String, String, String)>,
}

/// Text from a server made safe to print: control characters (escape codes, carriage
/// returns that overwrite a line) are shown escaped.
fn terminal_safe(text: &str) -> String {
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

pub fn backup(ctx: &Ctx, args: BackupArgs) -> Result<i32> {
    if args.name.is_some() && args.urls.len() != 1 {
        bail!("--name applies to exactly one URL");
    }
    let mut vault = ctx.open()?;
    if let Some(n) = args.min_replicas {
        vault.set_min_replicas(n);
    }
    // Arguments naming a configured source back that source up; others are URLs or paths. No
    // argument: every source.
    let sources: Vec<gitvault::provider::SourceConfig> = if args.urls.is_empty() {
        if vault.config().sources.is_empty() {
            bail!(
                "nothing to back up: give URLs or paths, or add a source with `gitvault source add`"
            );
        }
        vault.config().sources.clone()
    } else {
        vault
            .config()
            .sources
            .iter()
            .filter(|s| args.urls.contains(&s.name))
            .cloned()
            .collect()
    };
    let urls: Vec<String> = args
        .urls
        .iter()
        .filter(|u| !sources.iter().any(|s| &s.name == *u))
        .cloned()
        .collect();
    let keys = ctx.unlock(&vault)?;
    let lock = vault.lock()?;
    let credentials = Credentials::from_environment();
    let writer = std::sync::Mutex::new(backup::Writer::new(vault.store(&keys, &lock)));
    let requests: Vec<BackupRequest> = urls
        .iter()
        .map(|url| BackupRequest {
            url: url.clone(),
            name: args.name.clone(),
            credentials: credentials.clone(),
        })
        .collect();
    let reports = backup::backup_urls(
        &vault,
        &keys,
        &writer,
        &requests,
        usize::from(args.jobs),
        &|line| print_line(ctx, line),
    );
    let mut source_reports = Vec::new();
    for source in &sources {
        let bar = ctx.out.count_bar(&format!("source {}", source.name));
        let report = backup::backup_source(
            &vault,
            &keys,
            &writer,
            source,
            usize::from(args.jobs),
            (!args.allow_empty).then(|| previous_listing(&vault, &source.name)),
            &|event| match event {
                backup::SourceEvent::Selected(n) => bar.set_length(n as u64),
                backup::SourceEvent::Done(line) => {
                    if !line.repo.ends_with(".wiki") {
                        bar.inc(1);
                    }
                    bar.suspend(|| print_line(ctx, line));
                }
            },
        );
        bar.finish_and_clear();
        if !report.dropped.is_empty() && !ctx.out.json {
            eprintln!(
                "source {}: {} listed items are not repositories and were left out: {}",
                source.name,
                report.dropped.len(),
                terminal_safe(&report.dropped.join(", "))
            );
        }
        if let Some(e) = &report.error
            && !ctx.out.json
        {
            eprintln!("source {}: failed: {}", source.name, terminal_safe(e));
        }
        source_reports.push(report);
    }
    // Unchanged repositories' snapshots are recorded together, after one final flush. Any whose
    // flush failed (here or during a later repository's) are reported as failed.
    let mut writer = writer.into_inner().unwrap_or_else(|e| e.into_inner());
    let final_commit = backup::commit_deferred(&vault, &mut writer);
    let backup::Writer { store, deferred } = writer;
    let mut reports = reports;
    if !deferred.lost.is_empty() {
        let reason = match &final_commit {
            Err(e) => format!("the snapshot could not be made durable: {e}"),
            Ok(()) => "the snapshot could not be made durable (a later flush failed)".to_string(),
        };
        for r in reports
            .iter_mut()
            .chain(
                source_reports
                    .iter_mut()
                    .flat_map(|s| s.repositories.iter_mut()),
            )
            .filter(|r| deferred.lost.contains(&r.repo) && r.status != RepoStatus::Failed)
        {
            r.status = RepoStatus::Failed;
            r.snapshot = None;
            r.error = Some(reason.clone());
        }
    }
    let all: Vec<&backup::RepoReport> = reports
        .iter()
        .chain(source_reports.iter().flat_map(|s| s.repositories.iter()))
        .collect();
    let bad = |r: &&&backup::RepoReport| {
        matches!(r.status, RepoStatus::Failed | RepoStatus::Partial)
            || (r.status == RepoStatus::Skipped
                && r.error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("not attempted")))
    };
    let failed = all.iter().filter(bad).count()
        + source_reports.iter().filter(|s| s.error.is_some()).count();
    let succeeded = all
        .iter()
        .filter(|r| {
            matches!(
                r.status,
                RepoStatus::Changed | RepoStatus::Unchanged | RepoStatus::Partial
            )
        })
        .count();
    let lagging = store.report().lagging.clone();
    drop(store);
    let mut index_backup_failed = Vec::new();
    let changed = all.iter().any(|r| r.status == RepoStatus::Changed);
    if succeeded > 0 && gitvault::replicas::index_backup_due(&vault, changed) {
        index_backup_failed = gitvault::replicas::upload_index_backup(&vault, &keys, &lock)?;
    }
    if !ctx.out.json && !ctx.out.quiet {
        for (pack, target, error) in &lagging {
            eprintln!(
                "warning: pack {pack} is not on target {target} ({error}); run `gitvault sync`"
            );
        }
        for target in &index_backup_failed {
            eprintln!("warning: the index backup did not reach target {target}");
        }
    }
    let run = BackupRun {
        ok: failed == 0,
        repositories: reports,
        sources: source_reports,
        lagging_replicas: lagging,
    };
    if let Err(e) = save_run_report(&vault, &run) {
        tracing::warn!(error = %e, "the run report could not be stored");
    }
    ctx.out.print(&run, || {
        run.repositories
            .iter()
            .chain(run.sources.iter().flat_map(|s| s.repositories.iter()))
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
    Ok(if failed == 0 {
        EXIT_OK
    } else if succeeded > 0 {
        EXIT_PARTIAL
    } else {
        EXIT_FAILED
    })
}

/// How many repositories `source` listed the last time it listed without an error, as this
/// host's run reports say; with no report of it here (another host ran it, or the reports
/// were cleared), how many repositories the index holds for it.
fn previous_listing(vault: &gitvault::Vault, source: &str) -> usize {
    let mut reports: Vec<_> = std::fs::read_dir(vault.dir().join("reports"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    reports.sort();
    for path in reports.iter().rev() {
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        let Ok(run) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        let listed = run["sources"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["source"] == source && s["error"].is_null())
            .and_then(|s| s["listed"].as_u64());
        if let Some(n) = listed {
            return n as usize;
        }
    }
    vault
        .index()
        .repo_sources()
        .map(|m| m.values().filter(|s| *s == source).count())
        .unwrap_or(0)
}

/// Keeps the run report as JSON in DIR/reports/ (the newest 100), for monitoring and audits.
fn save_run_report(vault: &gitvault::Vault, run: &BackupRun) -> std::io::Result<()> {
    let dir = vault.dir().join("reports");
    std::fs::create_dir_all(&dir)?;
    let name = format!(
        "backup-{}.json",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
    );
    std::fs::write(
        dir.join(name),
        serde_json::to_vec_pretty(run).unwrap_or_default(),
    )?;
    let mut old: Vec<_> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .collect();
    old.sort();
    let excess = old.len().saturating_sub(100);
    for path in old.into_iter().take(excess) {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

pub fn snapshots(ctx: &Ctx, args: SnapshotsArgs) -> Result<i32> {
    let vault = ctx.open()?;
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
    let row = restore::select_snapshot(&vault, &args.repo, &selector(&args.select)?)?;
    let keys = ctx.unlock(&vault)?;
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
    // Prune deletes no pack while a restore holds a lease.
    let _lease = vault.read_lease()?;
    let row = restore::select_snapshot(&vault, &args.repo, &selector(&args.select)?)?;
    let keys = ctx.unlock(&vault)?;
    let mut report = restore::restore_snapshot(&vault, &keys, &row, &args.to)?;
    if let Some(dir) = &args.metadata_to {
        report.metadata_files = Some(restore::write_metadata(&vault, &keys, &row, dir)?);
    }
    if let Some(url) = &args.push {
        let credentials = Credentials::from_environment();
        report.pushed_to = Some(restore::push_mirror(&args.to, url, credentials.as_ref())?);
        if report.lfs_objects > 0 {
            report.lfs_uploaded = Some(restore::push_lfs(
                &args.to,
                url,
                args.push_lfs_url.as_deref(),
                credentials.as_ref(),
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
    let full = args.full;
    let options = gitvault::verify::VerifyOptions {
        full,
        restore_sample: args.restore_sample,
    };
    let out = gitvault::verify::run(&vault, &keys, lock, &options)?;
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
