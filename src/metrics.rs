//! Prometheus metrics in node_exporter's textfile format (`--metrics-file`, issue 18): what a
//! command did, each repository's last snapshot and what this run did to it, each source's API
//! use, each target's packs. Written atomically, so the collector never reads half a file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use crate::backup::{BackupRun, RepoReport, SourceReport};
use crate::vault::Vault;

/// One metrics document, family by family (a `# HELP` and `# TYPE` line, then its samples).
#[derive(Default)]
pub struct Metrics {
    families: BTreeMap<&'static str, Family>,
}

struct Family {
    help: &'static str,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

/// The exposition format's escaping of a label value: backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Adds a gauge sample.
    pub fn gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        value: f64,
    ) {
        self.families
            .entry(name)
            .or_insert_with(|| Family {
                help,
                samples: Vec::new(),
            })
            .samples
            .push((
                labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
                value,
            ));
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, family) in &self.families {
            let _ = writeln!(out, "# HELP {name} {}", family.help);
            let _ = writeln!(out, "# TYPE {name} gauge");
            for (labels, value) in &family.samples {
                let labels: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                    .collect();
                let labels = if labels.is_empty() {
                    String::new()
                } else {
                    format!("{{{}}}", labels.join(","))
                };
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        }
        out
    }

    /// How a command ended: `exit` is the process's exit status (0 ok, 3 partial, 1 failed).
    pub fn command(&mut self, command: &str, exit: i32, seconds: f64, now: f64) {
        let labels = [("command", command)];
        self.gauge(
            "gitvault_command_last_run_timestamp_seconds",
            "When the command last ended (Unix time).",
            &labels,
            now,
        );
        self.gauge(
            "gitvault_command_success",
            "1 if the command's last run did all it was asked, else 0.",
            &labels,
            f64::from(u8::from(exit == 0)),
        );
        self.gauge(
            "gitvault_command_exit_code",
            "The exit status of the command's last run (0 ok, 1 failed, 3 partly done).",
            &labels,
            f64::from(exit),
        );
        self.gauge(
            "gitvault_command_duration_seconds",
            "How long the command's last run took.",
            &labels,
            seconds,
        );
    }

    /// How a daemon job's last run ended (`gitvault daemon`): the job's name beside the
    /// command's own metrics, since two jobs may run one command (two backup schedules).
    pub fn job(&mut self, job: &str, exit: i32, seconds: f64, now: f64) {
        let labels = [("job", job)];
        self.gauge(
            "gitvault_job_last_run_timestamp_seconds",
            "When the daemon job last ended (Unix time).",
            &labels,
            now,
        );
        self.gauge(
            "gitvault_job_exit_code",
            "The exit status of the daemon job's last run (0 ok, 1 failed, 3 partly done).",
            &labels,
            f64::from(exit),
        );
        self.gauge(
            "gitvault_job_duration_seconds",
            "How long the daemon job's last run took.",
            &labels,
            seconds,
        );
    }

    /// Every repository's newest snapshot, from the index: the alert "no backup of X for a day"
    /// needs no state of its own.
    pub fn snapshots(&mut self, vault: &Vault, now: f64) {
        let Ok(newest) = vault.index().newest_snapshot_times() else {
            return;
        };
        for (repo, ms) in newest {
            let at = ms as f64 / 1000.0;
            let labels = [("repo", repo.as_str())];
            self.gauge(
                "gitvault_repository_last_snapshot_timestamp_seconds",
                "When the repository's newest snapshot was taken (Unix time).",
                &labels,
                at,
            );
            self.gauge(
                "gitvault_repository_last_snapshot_age_seconds",
                "Age of the repository's newest snapshot when this file was written.",
                &labels,
                (now - at).max(0.0),
            );
        }
    }

    /// What a backup run did, per repository, per failure reason and per source.
    pub fn backup_run(&mut self, run: &BackupRun) {
        let mut failures: BTreeMap<String, u64> = BTreeMap::new();
        for line in run.lines() {
            self.repository_line(line);
            if line.is_failure() {
                let reason = line
                    .reason
                    .and_then(|r| serde_json::to_value(r).ok())
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_else(|| "other".to_string());
                *failures.entry(reason).or_default() += 1;
            }
        }
        for source in &run.sources {
            if source.error.is_some() {
                *failures.entry("source".to_string()).or_default() += 1;
            }
            self.source(source);
        }
        self.failures(failures);
        self.gauge(
            "gitvault_lagging_replicas",
            "Packs of the last run that a target missed (`gitvault sync` brings it level).",
            &[],
            run.lagging_replicas.len() as f64,
        );
    }

    fn repository_line(&mut self, line: &RepoReport) {
        let status = serde_json::to_value(line.status)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let labels = [("repo", line.repo.as_str())];
        self.gauge(
            "gitvault_repository_run_status",
            "1 for the status the repository's line had in the last run.",
            &[("repo", line.repo.as_str()), ("status", &status)],
            1.0,
        );
        self.gauge(
            "gitvault_repository_bytes_added",
            "New unique bytes the repository added to the vault in the last run.",
            &labels,
            line.bytes_added as f64,
        );
        self.gauge(
            "gitvault_repository_run_seconds",
            "How long the repository took in the last run.",
            &labels,
            line.seconds,
        );
    }

    fn source(&mut self, source: &SourceReport) {
        let labels = [("source", source.source.as_str())];
        self.gauge(
            "gitvault_source_repositories_listed",
            "Repositories the source listed in the last run.",
            &labels,
            source.listed as f64,
        );
        self.gauge(
            "gitvault_source_api_requests",
            "API requests the source's last run sent.",
            &labels,
            source.api.requests as f64,
        );
        self.gauge(
            "gitvault_source_api_not_modified",
            "API requests of the last run answered 304 Not Modified.",
            &labels,
            source.api.not_modified as f64,
        );
        self.gauge(
            "gitvault_source_success",
            "1 if the source could be listed in the last run.",
            &labels,
            f64::from(u8::from(source.error.is_none())),
        );
    }

    /// Every known reason appears, so an alert on a reason has a series to watch even when it
    /// is 0.
    fn failures(&mut self, mut failures: BTreeMap<String, u64>) {
        for reason in [
            "not-attempted",
            "not-found",
            "rate-limited",
            "metadata",
            "lfs",
            "credentials",
            "refused",
            "git",
            "vault",
            "source",
        ] {
            failures.entry(reason.to_string()).or_default();
        }
        for (reason, n) in failures {
            self.gauge(
                "gitvault_run_failures",
                "Repositories (or sources) that failed in the last backup run, by reason.",
                &[("reason", reason.as_str())],
                n as f64,
            );
        }
    }

    /// Each target's packs against the index (one listing per target).
    pub fn targets(&mut self, vault: &Vault) {
        let Ok(stats) = crate::stats::collect(vault) else {
            return;
        };
        for t in &stats.targets {
            let labels = [("target", t.name.as_str())];
            self.gauge(
                "gitvault_target_packs",
                "Packs on the target.",
                &labels,
                t.packs as f64,
            );
            self.gauge(
                "gitvault_target_bytes",
                "Bytes of the packs on the target.",
                &labels,
                t.pack_bytes as f64,
            );
            self.gauge(
                "gitvault_target_missing_packs",
                "Packs the index expects on the target that it does not list.",
                &labels,
                t.missing_packs as f64,
            );
        }
        self.gauge(
            "gitvault_pending_deletion_bytes",
            "Bytes of condemned packs not deleted yet (grace period or S3 Object Lock).",
            &[],
            stats.pending_deletion_bytes as f64,
        );
        // Alert when this comes near: the locks of live packs are not being renewed (no prune
        // or verify ran for half the lock period, or renewals fail).
        let earliest = stats
            .object_lock
            .as_ref()
            .and_then(|l| l.earliest_live_until.as_deref())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        if let Some(t) = earliest {
            self.gauge(
                "gitvault_object_lock_earliest_live_expiry_timestamp_seconds",
                "When the first S3 Object Lock of a live pack runs out (Unix time).",
                &[],
                t.timestamp() as f64,
            );
        }
    }
}

/// Writes `text` to `path` atomically: a temporary file beside it, synced, renamed over it.
pub fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".gitvault-metrics-")
        .tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    // node_exporter runs as another user: the file must be readable (no secrets in it).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
