//! `gitvault daemon`: unlocks the vault once, turns SIGTERM and SIGINT into the daemon's stop
//! flag and SIGHUP into its reload flag, and logs each job run on stderr (one line as it
//! starts and as it ends).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use gitvault::daemon::Event;

use super::{Ctx, EXIT_OK};

pub fn daemon(ctx: &Ctx) -> Result<i32> {
    let vault = ctx.open()?;
    let keys = ctx.unlock(&vault)?;
    // The vault is opened again for each run, so that config.toml edits apply to the next.
    drop(vault);
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing the signal handlers")?;
    }
    // Also keeps SIGHUP (systemd's ExecReload, `kill -HUP`) from ending the process.
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
        .context("installing the signal handlers")?;
    let quiet = ctx.out.quiet;
    if !quiet {
        eprintln!("daemon: started");
    }
    let log = |event: Event<'_>| log_event(quiet, event);
    let daemon = gitvault::daemon::Context {
        dir: &ctx.args_vault,
        keys: &keys,
        stop: &stop,
        reload: &reload,
        events: &log,
    };
    gitvault::daemon::run(&daemon)?;
    if !quiet {
        eprintln!("daemon: stopped");
    }
    Ok(EXIT_OK)
}

/// One line per start and end of a run, and one with the job's next time after each. A failed run's error and every warning are shown even under
/// `-q`, since nobody watches a daemon's terminal but its log is read after an alert.
fn log_event(quiet: bool, event: Event<'_>) {
    let run = match event {
        Event::Serving(address) => {
            if !quiet {
                eprintln!("daemon: metrics on http://{address}/metrics");
            }
            return;
        }
        Event::Scheduled {
            job,
            next,
            catch_up,
        } => {
            if !quiet {
                let when = if catch_up {
                    "now, to catch up a missed run".to_string()
                } else {
                    next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                };
                eprintln!("job {}: next run {when}", job.name);
            }
            return;
        }
        Event::Started(job) => {
            if !quiet {
                eprintln!("job {}: started", job.name);
            }
            return;
        }
        Event::Busy(job) => {
            if !quiet {
                eprintln!(
                    "job {}: skipped: another daemon on this vault is running it",
                    job.name
                );
            }
            return;
        }
        Event::Reloaded { jobs } => {
            if !quiet {
                eprintln!("daemon: config.toml reloaded, {jobs} job(s)");
            }
            return;
        }
        Event::ReloadFailed(e) => {
            // Shown under -q too: the file on disk is not what runs.
            eprintln!("daemon: config.toml not reloaded, the jobs stay as they were: {e}");
            return;
        }
        Event::Finished(run) => run,
    };
    for warning in &run.warnings {
        eprintln!("job {}: warning: {warning}", run.job);
    }
    let catch_up = if run.catch_up { " (catch-up)" } else { "" };
    match &run.error {
        Some(e) => eprintln!(
            "job {}: failed{catch_up} after {:.1}s: {e}",
            run.job, run.seconds
        ),
        None if !quiet || run.exit_code != EXIT_OK => eprintln!(
            "job {}: finished{catch_up} with exit status {} after {:.1}s",
            run.job, run.exit_code, run.seconds
        ),
        None => {}
    }
}
