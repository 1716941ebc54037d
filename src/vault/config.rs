//! `config.toml` and `gitvault.json`: what a vault is configured with, and the public
//! parameters every target carries.

use serde::{Deserialize, Serialize};

use crate::redact::RedactedUrl;
use crate::store::{CdcParams, StoreSettings};

/// `DIR/config.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub format: u32,
    pub vault_id: String,
    /// The vault's age X25519 recipient: every pack is encrypted to it.
    pub public_key: String,
    pub cdc: CdcParams,
    #[serde(default)]
    pub store: StoreConfig,
    /// The retention policy `forget` applies to repositories without one of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<crate::policy::Policy>,
    /// URLs pinged when commands start and end (docs/OPERATIONS.md, "Notifications").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifyConfig>,
    #[serde(default, rename = "target")]
    pub targets: Vec<TargetConfig>,
    /// Not written when empty: a `source = []` line would make a hand-added `[[source]]`
    /// table a duplicate key.
    #[serde(default, rename = "source", skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<crate::provider::SourceConfig>,
    /// What `gitvault daemon` runs, and when (docs/OPERATIONS.md, "The daemon").
    #[serde(default, rename = "job", skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<JobConfig>,
    /// Settings of `gitvault daemon` itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<DaemonConfig>,
    /// The mirror caches under DIR/cache (docs/CONFIG.md, "[cache]").
    #[serde(default, skip_serializing_if = "CacheConfig::is_default")]
    pub cache: CacheConfig,
}

/// `[cache]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CacheConfig {
    /// Keep each repository's mirror cache after its backup (the default). Off, the cache is
    /// removed after each successful backup and rebuilt from the vault when the next one has
    /// something to fetch: less disk, some CPU, the same network.
    pub keep: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { keep: true }
    }
}

impl CacheConfig {
    fn is_default(&self) -> bool {
        *self == CacheConfig::default()
    }
}

/// `[daemon]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DaemonConfig {
    /// Where the daemon serves Prometheus metrics over HTTP (`GET /metrics`), e.g.
    /// `127.0.0.1:9184`; none when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_address: Option<String>,
    /// The time zone whose wall clock the jobs' schedules are read on (an IANA name such as
    /// `Europe/Berlin`); UTC when unset. A job's own `timezone` wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// `[[job]]`: one scheduled job of `gitvault daemon`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobConfig {
    /// Names the job in logs, its state file and its metrics.
    pub name: String,
    pub kind: JobKind,
    /// A cron expression: 5 fields (minute first), or 6-7 with seconds first.
    pub schedule: String,
    /// The time zone of this job's schedule, instead of `[daemon] timezone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Each run starts up to this many seconds after its scheduled time, at random, so that
    /// many vaults on one schedule do not hit a provider at the same second.
    #[serde(default)]
    pub jitter: u64,
    /// `backup`: the configured sources to back up (all of them when neither this nor `urls`
    /// is given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// `backup`: repositories given by URL or path, as `gitvault backup URL…` takes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// `backup`: repositories backed up at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<usize>,
    /// `verify`: snapshots restored and checked with git fsck.
    #[serde(default)]
    pub restore_sample: usize,
    /// Prometheus metrics of each run, written there when it ends (textfile format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_file: Option<std::path::PathBuf>,
}

impl JobConfig {
    /// The job's schedule in its time zone (its own, else the daemon's, else UTC).
    pub fn timetable(
        &self,
        daemon: Option<&DaemonConfig>,
    ) -> Result<crate::timetable::Timetable, crate::timetable::TimetableError> {
        let zone = self
            .timezone
            .as_deref()
            .or_else(|| daemon.and_then(|d| d.timezone.as_deref()));
        crate::timetable::Timetable::parse(&self.schedule, zone)
    }
}

/// What a job does: the command it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// `gitvault backup` of the job's sources and URLs.
    Backup,
    /// `gitvault forget` by the configured retention policies, then `gitvault prune`.
    Maintenance,
    /// `gitvault verify --restore-sample N`.
    Verify,
}

impl JobKind {
    /// The command whose notifications (`[notify] commands`) the job's runs send.
    pub fn command(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Maintenance => "prune",
            JobKind::Verify => "verify",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreConfig {
    /// zstd level for packs (1-19; 3 is fast, 9 is about 15% smaller and 3x slower).
    pub compression_level: i32,
    /// Bytes of plaintext gathered into one zstd frame; large frames compress similar objects
    /// far better (docs/PERFORMANCE.md).
    pub frame_size: u64,
    /// A pack is closed when it holds this many compressed bytes.
    pub pack_size: u64,
    /// Targets that must hold a pack before a write counts (0: all).
    pub min_replicas: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        let d = StoreSettings::default();
        StoreConfig {
            compression_level: d.compression.level,
            frame_size: d.compression.frame_size as u64,
            pack_size: d.pack_size,
            min_replicas: d.min_replicas,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetConfig {
    pub name: String,
    pub url: String,
    /// S3 Object Lock: every object but the leases under `locks/` is written locked for this
    /// many days, and kept locked while it is needed (docs/OBJECT-LOCK.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_days: Option<u32>,
    /// `compliance` (the default: nobody can shorten or remove a lock) or `governance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_mode: Option<crate::target::LockMode>,
    /// Lets prune compact packs on a locked target, where the old packs stay (and cost) until
    /// their locks run out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_compaction: bool,
}

impl TargetConfig {
    pub fn new(name: &str, url: &str) -> TargetConfig {
        TargetConfig {
            name: name.to_string(),
            url: url.to_string(),
            lock_days: None,
            lock_mode: None,
            allow_compaction: false,
        }
    }

    /// The lock the target writes with (`GITVAULT_LOCK_SECONDS` overrides the days in tests).
    pub fn lock_policy(&self) -> Option<crate::target::LockPolicy> {
        self.lock_days.map(|days| {
            crate::target::LockPolicy::from_days(
                days,
                self.lock_mode
                    .unwrap_or(crate::target::LockMode::Compliance),
            )
        })
    }

    /// Opens the target this entry describes.
    pub fn open(&self) -> Result<Box<dyn crate::target::Target>, crate::target::TargetError> {
        if self.lock_days == Some(0) {
            // A lock of no time would be refused by the server on every upload.
            return Err(crate::target::TargetError::LockUnsupported {
                target: self.name.clone(),
                reason: "lock_days must be at least 1".into(),
            });
        }
        crate::target::open_locked_target(&self.name, &self.url, self.lock_policy())
    }
}

/// `[notify]`: where to report that a command started and how it ended. The URLs are kept as
/// written, `${VAR}` placeholders included: the secrets they stand for (a healthchecks.io
/// check's UUID, a webhook token) are filled in from the environment only when a request is
/// made, so config.toml, errors and logs never hold them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NotifyConfig {
    /// Pinged (GET) when a command starts: healthchecks.io's `…/start` measures run times and
    /// notices runs that never end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Pinged (POST with a one-line summary) when a command exits 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<String>,
    /// Pinged when a command exits 1 (or any status other than 0 and 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Pinged when a command exits 3 (some repositories failed); `failure` when not set, since
    /// a partial run still needs someone to look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<String>,
    /// Receives a JSON document (POST) when a command ends: outcome, exit code, duration,
    /// host, error and the backup run report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// The commands that notify ([`NotifyConfig::DEFAULT_COMMANDS`] when not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<Vec<String>>,
    /// Seconds one notification may take in all, its retry included
    /// ([`NotifyConfig::DEFAULT_TIMEOUT`] when not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}

/// Why a `[notify]` URL cannot be used. The URL is named as written (placeholders, not their
/// values) and redacted.
#[derive(Debug, thiserror::Error)]
pub enum NotifyUrlError {
    #[error("{url}: the variable {var} is not set")]
    UnsetVariable { url: RedactedUrl, var: String },
    #[error("{url}: a `${{` without its closing `}}`, or an empty variable name")]
    BadPlaceholder { url: RedactedUrl },
    #[error("{url} is not a URL: {reason}")]
    Unparsable { url: RedactedUrl, reason: String },
    #[error(
        "{url}: notifications go over https only (plain http to loopback, or anywhere with \
         GITVAULT_ALLOW_INSECURE_HTTP=1)"
    )]
    Insecure { url: RedactedUrl },
}

impl NotifyConfig {
    /// The commands worth a notification when `commands` is not set: the ones a schedule runs.
    pub const DEFAULT_COMMANDS: &[&str] = &["backup", "prune", "verify", "sync"];
    /// The commands that may notify: those that run unattended. Others are named by `config
    /// check`, since a typo there silently turns an alarm off.
    pub const KNOWN_COMMANDS: &[&str] = &[
        "backup", "forget", "prune", "verify", "sync", "recover", "restore", "status", "stats",
    ];
    pub const DEFAULT_TIMEOUT: u64 = 10;

    pub fn notifies(&self, command: &str) -> bool {
        match &self.commands {
            Some(list) => list.iter().any(|c| c == command),
            None => Self::DEFAULT_COMMANDS.contains(&command),
        }
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout.unwrap_or(Self::DEFAULT_TIMEOUT))
    }

    /// Every configured URL with its key, in the order they are documented.
    pub fn urls(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("start", &self.start),
            ("success", &self.success),
            ("failure", &self.failure),
            ("partial", &self.partial),
            ("webhook", &self.webhook),
        ]
        .into_iter()
        .filter_map(|(key, url)| Some((key, url.as_deref()?)))
    }

    /// What `gitvault config check` says of the table: each problem as `notify.KEY: …`.
    fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = self
            .urls()
            .filter_map(|(key, raw)| {
                resolve_notify_url(raw)
                    .err()
                    .map(|e| format!("notify.{key}: {e}"))
            })
            .collect();
        for command in self.commands.iter().flatten() {
            if !Self::KNOWN_COMMANDS.contains(&command.as_str()) {
                problems.push(format!(
                    "notify.commands: {command:?} is not a command that notifies (one of {})",
                    Self::KNOWN_COMMANDS.join(", ")
                ));
            }
        }
        if self.timeout == Some(0) {
            problems.push("notify.timeout: 0 seconds leaves no time to send anything".into());
        }
        problems
    }
}

/// A `[notify]` URL made ready to request: `${VAR}` placeholders replaced by the variables'
/// values (the only place they are read), parsed, and refused over plain http where
/// credentials would be (the URL itself is the credential: whoever sees a healthchecks.io
/// ping URL can ping it). The result holds secrets: never show it; show `raw` redacted.
pub fn resolve_notify_url(raw: &str) -> Result<url::Url, NotifyUrlError> {
    fill_and_parse(raw, &|var| std::env::var(var).ok())
}

/// [`resolve_notify_url`] with the variables from `lookup`, so that tests need not change the
/// process's environment.
fn fill_and_parse(
    raw: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<url::Url, NotifyUrlError> {
    let shown = || RedactedUrl::new(raw);
    let mut filled = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find("${") {
        filled.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let end = after
            .find('}')
            .filter(|&end| end > 0)
            .ok_or_else(|| NotifyUrlError::BadPlaceholder { url: shown() })?;
        let var = &after[..end];
        let value = lookup(var).ok_or_else(|| NotifyUrlError::UnsetVariable {
            url: shown(),
            var: var.to_string(),
        })?;
        filled.push_str(&value);
        rest = &after[end + 1..];
    }
    filled.push_str(rest);
    // The parser's message never quotes its input, so it cannot carry a filled-in secret.
    let url = url::Url::parse(&filled).map_err(|e| NotifyUrlError::Unparsable {
        url: shown(),
        reason: e.to_string(),
    })?;
    if !crate::git::transport_allows_credentials(&url) {
        return Err(NotifyUrlError::Insecure { url: shown() });
    }
    Ok(url)
}

/// `gitvault.json` on every target: what a reader needs before it has the key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublicParams {
    pub format: u32,
    pub vault_id: String,
    pub public_key: String,
    pub cdc: CdcParams,
    pub created: String,
}

/// What `gitvault config check` finds in a `config.toml`.
#[derive(Debug, Default, Serialize)]
pub struct ConfigCheck {
    /// Keys the program does not read, as dotted paths (`source.0.tokn_env`): a typo there is
    /// otherwise silently ignored, and a misspelt retention rule keeps nothing it was meant to.
    pub unknown_keys: Vec<String>,
    /// Settings the program would refuse (the same reasons `backup` or `forget` would give).
    pub problems: Vec<String>,
}

impl ConfigCheck {
    pub fn ok(&self) -> bool {
        self.unknown_keys.is_empty() && self.problems.is_empty()
    }
}

/// `config.toml`'s text as a `Config`, and the dotted paths of the keys it holds that no field
/// reads.
pub(crate) fn parse(text: &str) -> Result<(Config, Vec<String>), toml::de::Error> {
    let mut unknown = Vec::new();
    let de = toml::de::Deserializer::parse(text)?;
    let config = serde_ignored::deserialize(de, |path| unknown.push(dotted(&path)))?;
    Ok((config, unknown))
}

/// `retention.keep_dialy`, where serde_ignored's own display would say `retention.?.keep_dialy`
/// for the `Option` in between.
fn dotted(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    let join = |parent: &Path<'_>, part: String| match dotted(parent) {
        p if p.is_empty() => part,
        p => format!("{p}.{part}"),
    };
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => join(parent, index.to_string()),
        Path::Map { parent, key } => join(parent, key.clone()),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => dotted(parent),
    }
}

/// Reads `text` as a `config.toml` would be read, and names what would be ignored or refused.
pub fn check_config(text: &str) -> ConfigCheck {
    let mut check = ConfigCheck::default();
    let config = match parse(text) {
        Ok((config, unknown)) => {
            check.unknown_keys = unknown;
            config
        }
        Err(e) => {
            check.problems.push(e.to_string().trim_end().to_string());
            return check;
        }
    };
    if config.format != super::FORMAT_VERSION {
        check.problems.push(format!(
            "format {} is not the one this program reads ({})",
            config.format,
            super::FORMAT_VERSION
        ));
    }
    let twice = |kind: &str, names: &mut dyn Iterator<Item = &str>| {
        let mut seen = std::collections::BTreeSet::new();
        names
            .filter(|n| !seen.insert(*n))
            .map(|n| format!("{kind} {n}: the name is used twice"))
            .collect::<Vec<_>>()
    };
    check.problems.extend(twice(
        "target",
        &mut config.targets.iter().map(|t| t.name.as_str()),
    ));
    check.problems.extend(twice(
        "source",
        &mut config.sources.iter().map(|s| s.name.as_str()),
    ));
    for t in &config.targets {
        if let Err(e) = t.open() {
            check.problems.push(format!("target {}: {e}", t.name));
        }
        if t.lock_days.is_none() && (t.lock_mode.is_some() || t.allow_compaction) {
            check.problems.push(format!(
                "target {}: lock_mode and allow_compaction need lock_days",
                t.name
            ));
        }
    }
    check.problems.extend(twice(
        "job",
        &mut config.jobs.iter().map(|j| j.name.as_str()),
    ));
    if let Some(address) = config
        .daemon
        .as_ref()
        .and_then(|d| d.metrics_address.as_ref())
        && address.parse::<std::net::SocketAddr>().is_err()
    {
        check.problems.push(format!(
            "daemon.metrics_address: {address:?} is not an address and port such as 127.0.0.1:9184"
        ));
    }
    for job in &config.jobs {
        if let Err(e) = job.timetable(config.daemon.as_ref()) {
            check.problems.push(format!("job {}: {e}", job.name));
        }
        if let Some(missing) = job
            .sources
            .iter()
            .find(|s| !config.sources.iter().any(|c| &c.name == *s))
        {
            check
                .problems
                .push(format!("job {}: no source is named {missing}", job.name));
        }
    }
    for s in &config.sources {
        if let Err(e) = s.validate() {
            check.problems.push(e.to_string());
        }
    }
    if let Some(notify) = &config.notify {
        check.problems.extend(notify.problems());
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(var: &str) -> Option<String> {
        match var {
            "UUID" => Some("s3cr3t-uuid".into()),
            "TOKEN" => Some("tok en".into()),
            _ => None,
        }
    }

    #[test]
    fn placeholders_are_filled_and_never_shown() {
        let url = fill_and_parse("https://hc.example/${UUID}/start?t=${TOKEN}", &lookup).unwrap();
        assert_eq!(
            url.as_str(),
            "https://hc.example/s3cr3t-uuid/start?t=tok%20en"
        );
        let plain = fill_and_parse("http://127.0.0.1:8000/p", &lookup).unwrap();
        assert_eq!(plain.path(), "/p");

        for (raw, shown) in [
            (
                "https://h/${UUID}/${NOPE}",
                "https://h/${UUID}/${NOPE}: the variable NOPE is not set",
            ),
            ("https://h/${UUID", "https://h/${UUID: a `${` without"),
            ("https://h/${}/x", "https://h/${}/x: a `${` without"),
            ("${UUID}", "${UUID} is not a URL"),
            (
                "https://h:99999/${UUID}",
                "https://h:99999/${UUID} is not a URL: invalid port",
            ),
            (
                "http://example.com/${UUID}",
                "http://example.com/${UUID}: notifications go over https only",
            ),
            (
                "file:///tmp/${UUID}",
                "file:///tmp/${UUID}: notifications go over https only",
            ),
            (
                "https://u:${TOKEN}@h/x?k=${TOKEN}",
                "https://***@h/x?***: the variable",
            ),
        ] {
            let raw = raw.replace("${TOKEN}", "${MISSING}");
            let e = fill_and_parse(&raw, &lookup).unwrap_err().to_string();
            assert!(e.starts_with(shown), "{raw}: {e}");
            assert!(!e.contains("s3cr3t"), "{e}");
        }
    }

    #[test]
    fn commands_and_timeout_have_defaults() {
        let notify = NotifyConfig::default();
        assert!(notify.notifies("backup") && notify.notifies("sync"));
        assert!(!notify.notifies("snapshots"));
        assert_eq!(notify.timeout().as_secs(), NotifyConfig::DEFAULT_TIMEOUT);
        let only = NotifyConfig {
            commands: Some(vec!["forget".into()]),
            ..NotifyConfig::default()
        };
        assert!(only.notifies("forget") && !only.notifies("backup"));
        assert!(only.problems().is_empty());
    }
}
