//! The daemon's `GET /metrics` (`[daemon] metrics_address`): each job's last run, each
//! command's last run, the last backup run's lines, and what the vault says of every
//! repository and target at the moment of the scrape. One small HTTP/1.1 server on its own
//! thread, one connection at a time: Prometheus scrapes every few seconds at most, and a
//! client that stalls is cut off by a read timeout.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backup::BackupRun;
use crate::metrics::Metrics;
use crate::vault::Vault;

/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How a run ended: exit status, seconds, when (Unix time).
#[derive(Clone, Copy)]
struct Ending {
    exit: i32,
    seconds: f64,
    at: f64,
}

/// What the daemon's runs left for the next scrape.
#[derive(Default)]
pub(super) struct Latest {
    jobs: BTreeMap<String, Ending>,
    commands: BTreeMap<&'static str, Ending>,
    backup: Option<BackupRun>,
}

impl Latest {
    pub(super) fn record(
        &mut self,
        job: &str,
        command: &'static str,
        (exit, seconds, at): (i32, f64, f64),
        backup: Option<BackupRun>,
    ) {
        let ending = Ending { exit, seconds, at };
        self.jobs.insert(job.to_string(), ending);
        self.commands.insert(command, ending);
        if backup.is_some() {
            self.backup = backup;
        }
    }

    fn render(&self, dir: &std::path::Path, now: f64) -> String {
        let mut metrics = Metrics::default();
        for (job, e) in &self.jobs {
            metrics.job(job, e.exit, e.seconds, e.at);
        }
        for (command, e) in &self.commands {
            metrics.command(command, e.exit, e.seconds, e.at);
        }
        if let Some(run) = &self.backup {
            metrics.backup_run(run);
        }
        if let Ok(vault) = Vault::open(dir) {
            metrics.snapshots(&vault, now);
            metrics.targets(&vault);
        }
        metrics.render()
    }
}

/// Serves `latest` on `listener` until the process ends.
pub(super) fn serve(listener: TcpListener, dir: PathBuf, latest: Arc<Mutex<Latest>>) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            if let Err(e) = answer(stream, &dir, &latest) {
                tracing::debug!(error = %e, "a metrics request failed");
            }
        }
    });
}

fn answer(stream: TcpStream, dir: &std::path::Path, latest: &Mutex<Latest>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut reader = BufReader::new(stream);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // The headers say nothing this server needs; read them so the client sees a clean close.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 0 && !header.trim().is_empty() {
        header.clear();
    }
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, body) = if method == "GET" && path.split('?').next() == Some("/metrics") {
        let now = super::unix_now();
        let text = latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .render(dir, now);
        ("200 OK", text)
    } else {
        (
            "404 Not Found",
            "only GET /metrics is served here\n".to_string(),
        )
    };
    let mut stream = reader.into_inner();
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
