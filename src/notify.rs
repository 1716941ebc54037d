//! Notifications around a command (`[notify]` in config.toml): healthchecks.io-style pings when
//! it starts and when it ends (one URL per outcome), and a JSON webhook carrying the run report.
//!
//! A notification is a side channel. It never changes what the command did or its exit status
//! (failures come back as errors for the caller to show as warnings), and it never holds a
//! scheduled run for long: each phase (start, end) gets `timeout` seconds in all, its one retry
//! included, and the end's ping and webhook go out side by side. The URLs' secrets (`${VAR}`)
//! are filled in per request and never leave this module: errors name the URL as written in
//! config.toml, redacted, and error text from the HTTP client is stripped of the URL.

use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::backup::BackupRun;
use crate::redact::RedactedUrl;
use crate::vault::{NotifyConfig, NotifyUrlError, resolve_notify_url};

/// Why a notification did not arrive.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notify.{key}: {source}")]
    Url {
        key: &'static str,
        source: NotifyUrlError,
    },
    #[error("notify.{key} ({url}) was not delivered: {reason}")]
    Request {
        key: &'static str,
        url: RedactedUrl,
        reason: String,
    },
    #[error("notify.{key} ({url}): the receiver answered HTTP {status}")]
    Status {
        key: &'static str,
        url: RedactedUrl,
        status: u16,
    },
    #[error("notify: cannot set up an HTTP client: {0}")]
    Client(String),
}

/// How a command ended, by its exit status (DESIGN.md: 0 done, 3 partly done, else failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Partial,
    Failure,
}

impl Outcome {
    pub fn from_exit_code(code: i32) -> Outcome {
        match code {
            0 => Outcome::Success,
            3 => Outcome::Partial,
            _ => Outcome::Failure,
        }
    }
}

/// What the end of a command reports.
pub struct Ending<'a> {
    pub exit_code: i32,
    pub seconds: f64,
    /// The error that ended the command, when one did (as the command printed it).
    pub error: Option<&'a str>,
    /// The backup run's report, for `backup`.
    pub backup_run: Option<&'a BackupRun>,
}

/// The webhook's JSON document.
#[derive(Serialize)]
struct WebhookDocument<'a> {
    command: &'a str,
    outcome: Outcome,
    exit_code: i32,
    duration_seconds: f64,
    host: String,
    started: String,
    finished: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    /// Repositories and sources that failed, with their reasons, so that a receiver need not
    /// walk the report to say why.
    failures: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<&'a BackupRun>,
}

/// Sends one command's notifications.
pub struct Notifier {
    config: NotifyConfig,
    command: String,
    started: SystemTime,
    client: reqwest::blocking::Client,
}

/// The pause before the retry: long enough for a receiver's restart or a dropped connection.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// The most of a ping's summary: healthchecks.io keeps 100 kB of a ping's body and a run over
/// thousands of failing repositories should not upload megabytes to say so.
const SUMMARY_BYTES: usize = 64 * 1024;
/// A try with less time left than this is not worth starting.
const SHORTEST_TRY: Duration = Duration::from_millis(200);

impl Notifier {
    /// A notifier for `command`, or `None` when `[notify]` is absent or does not list it.
    pub fn for_command(
        config: Option<&NotifyConfig>,
        command: &str,
    ) -> Result<Option<Notifier>, NotifyError> {
        let Some(config) = config.filter(|c| c.notifies(command)) else {
            return Ok(None);
        };
        let client = reqwest::blocking::Client::builder()
            .user_agent(concat!("gitvault/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.timeout())
            // A redirect could take the URL's secret elsewhere, and ping services do not
            // redirect: a 3xx counts as not delivered.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| NotifyError::Client(error_text(&e.without_url())))?;
        Ok(Some(Notifier {
            config: config.clone(),
            command: command.to_string(),
            started: SystemTime::now(),
            client,
        }))
    }

    /// Pings `start` (GET, as healthchecks.io's `/start`), if configured.
    pub fn start(&self) -> Vec<NotifyError> {
        let Some(url) = &self.config.start else {
            return Vec::new();
        };
        self.send("start", url, None).err().into_iter().collect()
    }

    /// Pings the URL for the outcome (POST with a short text summary, which healthchecks.io
    /// keeps as the ping's log) and posts the webhook document, at the same time.
    pub fn finish(&self, ending: &Ending<'_>) -> Vec<NotifyError> {
        let outcome = Outcome::from_exit_code(ending.exit_code);
        let (key, url) = match outcome {
            Outcome::Success => ("success", &self.config.success),
            Outcome::Partial if self.config.partial.is_some() => ("partial", &self.config.partial),
            Outcome::Partial | Outcome::Failure => ("failure", &self.config.failure),
        };
        let ping = url.as_deref().map(|url| (key, url));
        let failures = ending.backup_run.map(failures).unwrap_or_default();
        let host = crate::vault::target_lock::host_name();
        let summary = summary(&self.command, &host, outcome, ending, &failures);
        let document = WebhookDocument {
            command: &self.command,
            outcome,
            exit_code: ending.exit_code,
            duration_seconds: ending.seconds,
            host,
            started: rfc3339(self.started),
            finished: rfc3339(SystemTime::now()),
            error: ending.error,
            failures,
            report: ending.backup_run,
        };
        std::thread::scope(|scope| {
            let ping = ping.map(|(key, url)| {
                let body = (summary.clone().into_bytes(), "text/plain; charset=utf-8");
                scope.spawn(move || self.send(key, url, Some(body)))
            });
            let webhook = self.config.webhook.as_deref().map(|url| {
                let document = &document;
                scope.spawn(move || match serde_json::to_vec(document) {
                    Ok(json) => self.send("webhook", url, Some((json, "application/json"))),
                    Err(e) => Err(NotifyError::Request {
                        key: "webhook",
                        url: RedactedUrl::new(url),
                        reason: format!("the document could not be encoded: {e}"),
                    }),
                })
            });
            [ping, webhook]
                .into_iter()
                .flatten()
                .filter_map(|handle| match handle.join() {
                    Ok(result) => result.err(),
                    Err(_) => Some(NotifyError::Client("a sender thread panicked".into())),
                })
                .collect()
        })
    }

    /// One request with its retry, all within the configured timeout. A 4xx is not retried:
    /// asking again would get the same answer.
    fn send(
        &self,
        key: &'static str,
        raw: &str,
        body: Option<(Vec<u8>, &'static str)>,
    ) -> Result<(), NotifyError> {
        let url = resolve_notify_url(raw).map_err(|source| NotifyError::Url { key, source })?;
        let shown = || RedactedUrl::new(raw);
        let deadline = Instant::now() + self.config.timeout();
        let mut last = None;
        for attempt in 0..2 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left < SHORTEST_TRY {
                break;
            }
            if attempt > 0 {
                std::thread::sleep(RETRY_PAUSE.min(left / 4));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let request = match &body {
                Some((bytes, kind)) => self
                    .client
                    .post(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, *kind)
                    .body(bytes.clone()),
                None => self.client.get(url.clone()),
            };
            match request.timeout(left).send() {
                // The answer's body is not read: a receiver cannot make us wait on it.
                Ok(answer) if answer.status().is_success() => return Ok(()),
                Ok(answer) => {
                    let status = answer.status();
                    last = Some(NotifyError::Status {
                        key,
                        url: shown(),
                        status: status.as_u16(),
                    });
                    if status.is_client_error() || status.is_redirection() {
                        break;
                    }
                }
                Err(e) => {
                    let reason = if e.is_timeout() {
                        format!("no answer within {} s", self.config.timeout().as_secs())
                    } else {
                        scrub(&error_text(&e.without_url()), &url)
                    };
                    last = Some(NotifyError::Request {
                        key,
                        url: shown(),
                        reason,
                    });
                }
            }
        }
        Err(last.unwrap_or_else(|| NotifyError::Request {
            key,
            url: shown(),
            reason: format!("no answer within {} s", self.config.timeout().as_secs()),
        }))
    }
}

/// One line for people (a healthchecks.io log, a chat message), then the error and the
/// failures, cut at [`SUMMARY_BYTES`]: the webhook carries the whole report.
fn summary(
    command: &str,
    host: &str,
    outcome: Outcome,
    ending: &Ending<'_>,
    failures: &[String],
) -> String {
    let word = match outcome {
        Outcome::Success => "success",
        Outcome::Partial => "partial",
        Outcome::Failure => "failure",
    };
    let mut text = format!(
        "gitvault {} on {host}: {word} (exit {}) after {:.1} s\n",
        command, ending.exit_code, ending.seconds
    );
    let lines: Vec<&str> = ending
        .error
        .into_iter()
        .chain(failures.iter().map(String::as_str))
        .collect();
    for (shown, line) in lines.iter().enumerate() {
        if text.len() + line.len() > SUMMARY_BYTES {
            text.push_str(&format!("… and {} more\n", lines.len() - shown));
            break;
        }
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// `repo: message` for each repository and source of the run that failed.
fn failures(run: &BackupRun) -> Vec<String> {
    let repositories = run
        .lines()
        .filter(|r| r.is_failure())
        .map(|r| format!("{}: {}", r.repo, r.error.as_deref().unwrap_or("failed")));
    let sources = run
        .sources
        .iter()
        .filter_map(|s| Some(format!("source {}: {}", s.source, s.error.as_deref()?)));
    repositories.chain(sources).collect()
}

/// An error with its causes: reqwest's own text is only "error sending request" (the daemon's
/// run errors use it too).
pub(crate) fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text = format!("{text}: {c_text}");
        }
        cause = c.source();
    }
    text
}

/// The filled-in URL and its path and query taken out of `text`, should a lower layer have
/// quoted them despite `without_url`: they hold the secrets.
fn scrub(text: &str, url: &url::Url) -> String {
    let mut text = text.replace(url.as_str(), "***");
    for part in [url.path(), url.query().unwrap_or("")] {
        if part.len() > 1 {
            text = text.replace(part, "***");
        }
    }
    text
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_map_to_outcomes() {
        assert_eq!(Outcome::from_exit_code(0), Outcome::Success);
        assert_eq!(Outcome::from_exit_code(3), Outcome::Partial);
        assert_eq!(Outcome::from_exit_code(1), Outcome::Failure);
        assert_eq!(Outcome::from_exit_code(2), Outcome::Failure);
    }

    #[test]
    fn a_summary_of_many_failures_is_cut() {
        let failures: Vec<String> = (0..10_000)
            .map(|i| format!("acme/repo-{i}: cannot reach or read the repository"))
            .collect();
        let ending = Ending {
            exit_code: 3,
            seconds: 12.34,
            error: None,
            backup_run: None,
        };
        let text = summary("backup", "h", Outcome::Partial, &ending, &failures);
        assert!(
            text.starts_with("gitvault backup on h: partial (exit 3) after 12.3 s\nacme/repo-0: ")
        );
        assert!(text.len() <= SUMMARY_BYTES + 100, "{}", text.len());
        assert!(text.ends_with(" more\n"), "{}", &text[text.len() - 40..]);
    }
}
