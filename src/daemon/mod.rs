//! `gitvault daemon`: runs the `[[job]]`s of config.toml on their cron schedules until asked
//! to stop. One loop runs one job at a time, so a job never overlaps itself (nor another: the
//! vault has one writer anyway); a tick that falls while its job runs is skipped, not queued.
//! Two daemons on one vault (a second one started by mistake, an old one not yet gone) do not
//! run one job at once either: a run holds DIR/daemon/<job>.lock (an flock, released by the
//! kernel when its process dies), and a daemon that finds it held skips that slot.
//! Each run is a command of its own as far as operators see: its notifications, its metrics
//! file, its report. The time each job last started is kept in DIR/daemon/<job>.last, so that
//! a daemon started after downtime runs a job that missed its slot once, at once (catch-up),
//! rather than once per missed slot or not until the next.
//!
//! Stopping: the caller's flag (set by SIGTERM) ends the wait at once; a running backup stops
//! taking repositories, finishes the running ones and commits (`Session::with_stop`); a
//! maintenance or verify run is left to end, since stopping prune midway only wastes its work.
//!
//! Reloading: the caller's reload flag (set by SIGHUP) has config.toml's jobs read again
//! between runs, never during one: a running job ends as it would have. A job whose schedule
//! did not change keeps its next time; a config that does not read keeps the jobs as they were.

mod endpoint;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::backup::{self, BackupRun, RunOutcome};
use crate::crypto::VaultKeys;
use crate::notify::{Ending, Notifier, NotifyError, error_text};
use crate::timetable::{Timetable, TimetableError, jitter};
use crate::vault::{DaemonConfig, JobConfig, JobKind};
use crate::vault::{Vault, VaultError};

/// Exit statuses of a run, as the commands' (DESIGN.md): 0 done, 1 failed, 3 partly done.
const EXIT_OK: i32 = 0;
const EXIT_FAILED: i32 = 1;
const EXIT_PARTIAL: i32 = 3;

/// The longest the loop sleeps before it looks at the stop flag again.
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("job {job}: {source}")]
    Timetable {
        job: String,
        #[source]
        source: TimetableError,
    },
    // Two jobs of one name would share a state file and their metrics.
    #[error("two [[job]] tables are named {0}: give each its own name")]
    SameName(String),
    #[error("no [[job]] in config.toml: nothing to run (docs/OPERATIONS.md, \"The daemon\")")]
    NoJobs,
    #[error("serving metrics on {address}: {source}")]
    Metrics {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("keeping the daemon's state in {path}: {source}")]
    State {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What one run of a job did, as the daemon tells its caller.
#[derive(Debug)]
pub struct JobRun {
    pub job: String,
    pub kind: JobKind,
    /// The exit status the job's command would have had.
    pub exit_code: i32,
    pub seconds: f64,
    pub error: Option<String>,
    /// It ran because its slot passed while no daemon ran.
    pub catch_up: bool,
    /// Notifications not delivered and a metrics file not written: warnings, the run stands.
    pub warnings: Vec<String>,
}

/// What the daemon tells its caller as it goes.
pub enum Event<'a> {
    /// `GET /metrics` is served there (`[daemon] metrics_address`).
    Serving(SocketAddr),
    /// When the job runs next; `catch_up`: at once, for a slot missed while no daemon ran.
    Scheduled {
        job: &'a JobConfig,
        next: DateTime<Utc>,
        catch_up: bool,
    },
    Started(&'a JobConfig),
    Finished(&'a JobRun),
    /// The job's slot came while another daemon on this vault ran it: this one skipped it.
    Busy(&'a JobConfig),
    /// config.toml was read again (the reload flag); the jobs now scheduled.
    Reloaded {
        jobs: usize,
    },
    /// config.toml could not be used on reload: the jobs stay as they were.
    ReloadFailed(&'a DaemonError),
}

/// A job and when it runs next.
struct Scheduled {
    job: JobConfig,
    timetable: Timetable,
    next: DateTime<Utc>,
    catch_up: bool,
}

/// What every run needs.
pub struct Context<'a> {
    pub dir: &'a Path,
    pub keys: &'a VaultKeys,
    /// Set by the caller (SIGTERM, SIGINT) to end the daemon after the current run.
    pub stop: &'a AtomicBool,
    /// Set by the caller (SIGHUP) to read config.toml's jobs again; cleared when done.
    pub reload: &'a AtomicBool,
    /// Told of each job's next time, and of each run as it starts and ends.
    pub events: &'a dyn Fn(Event<'_>),
}

/// Runs the jobs until `ctx.stop` is set; returns once the run in progress (if any) ended.
pub fn run(ctx: &Context<'_>) -> Result<(), DaemonError> {
    let config = Vault::read_config(ctx.dir)?;
    if config.jobs.is_empty() {
        return Err(DaemonError::NoJobs);
    }
    std::fs::create_dir_all(state_dir(ctx.dir)).map_err(|e| state_error(ctx.dir, e))?;
    let latest = Arc::new(Mutex::new(endpoint::Latest::default()));
    if let Some(address) = config
        .daemon
        .as_ref()
        .and_then(|d| d.metrics_address.as_ref())
    {
        serve_metrics(ctx, address, &latest)?;
    }
    let mut jobs = schedule(ctx, config.jobs, config.daemon.as_ref(), &[])?;
    while !ctx.stop.load(Ordering::SeqCst) {
        if ctx.reload.swap(false, Ordering::SeqCst) {
            match reload(ctx, &jobs) {
                Ok(new) => {
                    jobs = new;
                    (ctx.events)(Event::Reloaded { jobs: jobs.len() });
                }
                Err(e) => (ctx.events)(Event::ReloadFailed(&e)),
            }
        }
        let Some(due) = jobs.iter_mut().min_by_key(|s| s.next) else {
            break;
        };
        let now = Utc::now();
        if due.next > now {
            let wait = (due.next - now).to_std().unwrap_or_default();
            std::thread::sleep(wait.min(POLL));
            continue;
        }
        match hold_job_lock(ctx.dir, &due.job.name)? {
            Some(_held) => {
                (ctx.events)(Event::Started(&due.job));
                record_start(ctx.dir, &due.job.name, Utc::now())?;
                let run = run_job(ctx, &due.job, due.catch_up, &latest);
                (ctx.events)(Event::Finished(&run));
            }
            None => (ctx.events)(Event::Busy(&due.job)),
        }
        // From the end of the run: the ticks that fell while it ran are skipped.
        due.next = next_time(&due.timetable, &due.job, Utc::now());
        due.catch_up = false;
        (ctx.events)(Event::Scheduled {
            job: &due.job,
            next: due.next,
            catch_up: false,
        });
    }
    Ok(())
}

/// Binds `address` and serves `GET /metrics` from `latest` on a thread of its own.
fn serve_metrics(
    ctx: &Context<'_>,
    address: &str,
    latest: &Arc<Mutex<endpoint::Latest>>,
) -> Result<(), DaemonError> {
    let failed = |source| DaemonError::Metrics {
        address: address.to_string(),
        source,
    };
    let listener = std::net::TcpListener::bind(address).map_err(failed)?;
    (ctx.events)(Event::Serving(listener.local_addr().map_err(failed)?));
    endpoint::serve(listener, ctx.dir.to_path_buf(), Arc::clone(latest));
    Ok(())
}

/// config.toml's jobs, read again; those scheduled as in `before` keep their times.
fn reload(ctx: &Context<'_>, before: &[Scheduled]) -> Result<Vec<Scheduled>, DaemonError> {
    let config = Vault::read_config(ctx.dir)?;
    if config.jobs.is_empty() {
        return Err(DaemonError::NoJobs);
    }
    schedule(ctx, config.jobs, config.daemon.as_ref(), before)
}

/// Each job's first time: its time in `before` when it is scheduled there alike, else now
/// for one that missed its last slot, else its next slot.
fn schedule(
    ctx: &Context<'_>,
    config: Vec<JobConfig>,
    daemon: Option<&DaemonConfig>,
    before: &[Scheduled],
) -> Result<Vec<Scheduled>, DaemonError> {
    let now = Utc::now();
    let mut jobs = Vec::new();
    for job in config {
        if jobs.iter().any(|s: &Scheduled| s.job.name == job.name) {
            return Err(DaemonError::SameName(job.name));
        }
        let timetable = job
            .timetable(daemon)
            .map_err(|source| DaemonError::Timetable {
                job: job.name.clone(),
                source,
            })?;
        let kept = before.iter().find(|s| {
            s.job.name == job.name
                && s.job.schedule == job.schedule
                && s.job.jitter == job.jitter
                && s.timetable.zone_name() == timetable.zone_name()
        });
        let (next, catch_up) = match kept {
            Some(s) => (s.next, s.catch_up),
            None if timetable.missed(last_run(ctx.dir, &job.name), now) => (now, true),
            None => (next_time(&timetable, &job, now), false),
        };
        (ctx.events)(Event::Scheduled {
            job: &job,
            next,
            catch_up,
        });
        jobs.push(Scheduled {
            job,
            timetable,
            next,
            catch_up,
        });
    }
    Ok(jobs)
}

/// The job's next scheduled time after `now`, with its jitter; a schedule with no next time
/// (its last year passed) never runs again.
fn next_time(timetable: &Timetable, job: &JobConfig, now: DateTime<Utc>) -> DateTime<Utc> {
    let delay = chrono::Duration::from_std(jitter(job.jitter)).unwrap_or_default();
    timetable
        .next_after(now)
        .map_or(DateTime::<Utc>::MAX_UTC, |t| t + delay)
}

fn state_dir(dir: &Path) -> PathBuf {
    dir.join("daemon")
}

fn state_error(dir: &Path, source: std::io::Error) -> DaemonError {
    DaemonError::State {
        path: state_dir(dir).display().to_string(),
        source,
    }
}

fn state_file(dir: &Path, job: &str) -> PathBuf {
    // Job names are the user's: keep only what is safe in a file name.
    let safe: String = job
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    state_dir(dir).join(format!("{safe}.last"))
}

/// The job's lock, held until the returned file is dropped; `None` when another process
/// holds it (another daemon runs the job now).
fn hold_job_lock(dir: &Path, job: &str) -> Result<Option<std::fs::File>, DaemonError> {
    let path = state_file(dir, job).with_extension("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| state_error(dir, e))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(state_error(dir, e)),
    }
}

/// When the job last started under a daemon; `None` when never (or the file is unreadable,
/// which then waits for the next slot rather than guessing).
fn last_run(dir: &Path, job: &str) -> Option<DateTime<Utc>> {
    let text = std::fs::read_to_string(state_file(dir, job)).ok()?;
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Recorded when a run starts, not when it ends: a daemon killed mid-run then does not run
/// the job again at once on restart, which for a long backup would repeat the work that
/// killed it (a machine shutting down, an OOM kill).
fn record_start(dir: &Path, job: &str, at: DateTime<Utc>) -> Result<(), DaemonError> {
    let path = state_file(dir, job);
    let tmp = path.with_extension("last.tmp");
    std::fs::write(&tmp, at.to_rfc3339())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| state_error(dir, e))
}

/// One run of `job`: its notifications around it, the job, its metrics after it.
fn run_job(
    ctx: &Context<'_>,
    job: &JobConfig,
    catch_up: bool,
    latest: &Mutex<endpoint::Latest>,
) -> JobRun {
    let started = Instant::now();
    let mut warnings = Vec::new();
    let notify = Vault::read_config(ctx.dir).ok().and_then(|c| c.notify);
    let notifier = match Notifier::for_command(notify.as_ref(), job.kind.command()) {
        Ok(n) => n,
        Err(e) => {
            warnings.push(e.to_string());
            None
        }
    };
    let texts = |errors: Vec<NotifyError>| errors.into_iter().map(|e| e.to_string());
    if let Some(n) = &notifier {
        warnings.extend(texts(n.start()));
    }
    let (exit_code, error, backup_run) = match run_kind(ctx, job) {
        Ok((code, run)) => (code, None, run),
        Err(e) => (EXIT_FAILED, Some(e), None),
    };
    let seconds = started.elapsed().as_secs_f64();
    if let Some(n) = &notifier {
        let ending = Ending {
            exit_code,
            seconds,
            error: error.as_deref(),
            backup_run: backup_run.as_ref(),
        };
        warnings.extend(texts(n.finish(&ending)));
    }
    if let Some(path) = &job.metrics_file {
        let metrics = job_metrics(ctx.dir, job, exit_code, seconds, backup_run.as_ref());
        if let Err(e) = crate::metrics::write_file(path, &metrics) {
            warnings.push(format!("writing metrics to {}: {e}", path.display()));
        }
    }
    latest.lock().unwrap_or_else(|e| e.into_inner()).record(
        &job.name,
        job.kind.command(),
        (exit_code, seconds, unix_now()),
        backup_run,
    );
    JobRun {
        job: job.name.clone(),
        kind: job.kind,
        exit_code,
        seconds,
        error,
        catch_up,
        warnings,
    }
}

/// The run's metrics, as `--metrics-file` writes a command's, plus the job's own.
fn job_metrics(
    dir: &Path,
    job: &JobConfig,
    exit_code: i32,
    seconds: f64,
    run: Option<&BackupRun>,
) -> String {
    let now = unix_now();
    let mut metrics = crate::metrics::Metrics::default();
    metrics.command(job.kind.command(), exit_code, seconds, now);
    metrics.job(&job.name, exit_code, seconds, now);
    if let Some(run) = run {
        metrics.backup_run(run);
    }
    if let Ok(vault) = Vault::open(dir) {
        metrics.snapshots(&vault, now);
        metrics.targets(&vault);
    }
    metrics.render()
}

/// Runs the job's command; its exit status and, for a backup, the run's report. Errors are
/// kept as text: the daemon only reports them, and goes on.
fn run_kind(ctx: &Context<'_>, job: &JobConfig) -> Result<(i32, Option<BackupRun>), String> {
    let text = |e: &dyn std::error::Error| error_text(e);
    let vault = Vault::open(ctx.dir).map_err(|e| text(&e))?;
    match job.kind {
        JobKind::Backup => {
            let run = backup_job(&vault, ctx, job)?;
            let code = match run.outcome() {
                RunOutcome::Ok => EXIT_OK,
                RunOutcome::Partial => EXIT_PARTIAL,
                RunOutcome::Failed => EXIT_FAILED,
            };
            Ok((code, Some(run)))
        }
        JobKind::Maintenance => {
            use crate::retention::{forget, prune};
            {
                // The writer lock only for forget's one transaction: prune takes it itself.
                let lock = vault.lock().map_err(|e| text(&e))?;
                let plans = forget::plan(&vault, None, &[]).map_err(|e| text(&e))?;
                forget::apply(&vault, &lock, &plans).map_err(|e| text(&e))?;
            }
            prune::prune(&vault, ctx.keys, &prune::PruneOptions::default())
                .map_err(|e| text(&e))?;
            Ok((EXIT_OK, None))
        }
        JobKind::Verify => {
            let lock = vault.lock().map_err(|e| text(&e))?;
            let options = crate::verify::VerifyOptions {
                full: false,
                restore_sample: job.restore_sample,
                locks: false,
            };
            let report =
                crate::verify::run(&vault, ctx.keys, lock, &options).map_err(|e| text(&e))?;
            Ok((if report.ok { EXIT_OK } else { EXIT_FAILED }, None))
        }
    }
}

/// A backup of the job's URLs and sources (every configured source when it names neither),
/// stopped early by the daemon's stop flag.
fn backup_job(vault: &Vault, ctx: &Context<'_>, job: &JobConfig) -> Result<BackupRun, String> {
    let text = |e: &dyn std::error::Error| error_text(e);
    let everything = job.sources.is_empty() && job.urls.is_empty();
    let names = (!everything).then_some(job.sources.as_slice());
    let sources = backup::sources_named(&vault.config().sources, names);
    if sources.is_empty() && job.urls.is_empty() {
        return Err("nothing to back up: the job names no URL and no source is configured".into());
    }
    let requests = backup::url_requests(&job.urls, None);
    let lock = vault.lock().map_err(|e| text(&e))?;
    let options = backup::Options {
        jobs: job.jobs.unwrap_or(backup::DEFAULT_JOBS),
        ..backup::Options::default()
    };
    let mut session = backup::Session::new(vault, ctx.keys, &lock, options)
        .map_err(|e| text(&e))?
        .with_stop(ctx.stop);
    session.backup_urls(&requests, &|_| {});
    for source in &sources {
        session.backup_source(source, &|_| {});
    }
    session.finish().map_err(|e| text(&e))
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
