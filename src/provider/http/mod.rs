//! The one HTTP client every provider uses, written for a server that may be hostile
//! (docs/SECURITY.md, "API and git servers"):
//!
//! - **Credentials stay with their origin** (DESIGN.md invariant 9): the credential header is
//!   attached per request, never as a default header, and only when the request's origin
//!   (scheme, host, port) is the configured API's. Redirects are followed here, hop by hop, so
//!   that every hop is judged the same way: an API answer may redirect only within its origin;
//!   an asset download may go to another origin (GitHub and Bitbucket hand out signed URLs on
//!   a storage host) and then travels without credentials. https → http is always refused.
//! - **Answers are bounded**: JSON answers are read up to a size limit, assets are streamed
//!   with a ceiling, lists stop at a page count or at the first URL seen twice, and the HTTP
//!   cache keeps small bodies only.
//! - **Stalls end**: a connect timeout, a read timeout (first byte and every later read) and a
//!   total deadline per request; resets and timeouts are retried with jittered backoff, and
//!   the error names the timeout that fired.
//! - **Rate limits pause the source**: `Retry-After` (seconds or an HTTP date), exhausted
//!   `X-RateLimit-*` and GitHub's header-less secondary limits close a gate shared by every
//!   client of the same origin in the process, so all workers wait, not just one.
//!
//! Conditional requests (ETag / If-None-Match, answers cached in the index) keep unchanged
//! runs cheap. URLs in messages are reduced to their path (download URLs may carry tokens).

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use age::secrecy::{ExposeSecret, SecretString};
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use reqwest::header::{
    ACCEPT, ETAG, HeaderMap, IF_NONE_MATCH, LINK, LOCATION, RETRY_AFTER, USER_AGENT,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ProviderError;

/// The limits and timeouts of a source's API client: `[source.http]` in config.toml, every
/// key optional. The defaults suit github.com and large self-hosted instances; see
/// docs/SECURITY.md, "API and git servers" for why each is what it is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct HttpSettings {
    /// Seconds to open a connection (TCP and TLS).
    pub connect_timeout: u64,
    /// Seconds without a byte: before the first byte of an answer and between later reads.
    pub read_timeout: u64,
    /// Seconds one API request (not an asset download) may take in all.
    pub request_deadline: u64,
    /// Seconds one asset download may take in all.
    pub asset_deadline: u64,
    /// Tries after the first on connection failures, resets, timeouts and 5xx.
    pub retries: u32,
    /// Bytes of one JSON answer (a list page or a single item).
    pub max_answer_bytes: u64,
    /// Bytes of one release asset or download.
    pub max_asset_bytes: u64,
    /// Answers larger than this are not kept in the HTTP cache (they are fetched again).
    pub max_cached_bytes: u64,
    /// Pages of one list.
    pub max_pages: usize,
    /// Bytes of one list, all its pages together (its items are held in memory at once).
    pub max_list_bytes: u64,
    /// Seconds of the first pause on a secondary rate limit (doubled each time it repeats).
    pub secondary_wait: u64,
    /// The longest pause a rate limit may cause before the source stops for this run.
    pub max_wait: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            connect_timeout: 15,
            read_timeout: 30,
            request_deadline: 120,
            asset_deadline: 3600,
            retries: 4,
            max_answer_bytes: 32 << 20,
            max_asset_bytes: 8 << 30,
            max_cached_bytes: 1 << 20,
            max_pages: 5_000,
            max_list_bytes: 1 << 30,
            secondary_wait: 60,
            max_wait: 900,
        }
    }
}

impl HttpSettings {
    pub fn is_default(&self) -> bool {
        *self == HttpSettings::default()
    }
}

/// Counts of what a run asked of an API (for reports and tests).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct RequestStats {
    pub requests: u64,
    pub not_modified: u64,
    pub retries: u64,
    /// Seconds spent waiting on rate limits.
    pub rate_limit_seconds: f64,
}

/// How requests authenticate: one header whose value is secret.
#[derive(Clone)]
pub struct Auth {
    name: &'static str,
    value: SecretString,
    /// The part of `value` that must never be shown (the token itself).
    secret: SecretString,
}

impl Auth {
    /// `Authorization: <scheme> <token>` (GitHub and GitLab `Bearer`, Gitea `token`).
    pub fn scheme(scheme: &str, token: &SecretString) -> Auth {
        Auth {
            name: "authorization",
            value: SecretString::from(format!("{scheme} {}", token.expose_secret())),
            secret: token.clone(),
        }
    }

    /// A header holding the bare token (GitLab's `PRIVATE-TOKEN`).
    pub fn header(name: &'static str, token: &SecretString) -> Auth {
        Auth {
            name,
            value: token.clone(),
            secret: token.clone(),
        }
    }

    /// HTTP Basic (Bitbucket app passwords and API tokens).
    pub fn basic(username: &str, secret: &SecretString) -> Auth {
        use base64::Engine;
        let raw = format!("{username}:{}", secret.expose_secret());
        Auth {
            name: "authorization",
            value: SecretString::from(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )),
            secret: secret.clone(),
        }
    }

    /// Replaces the secret (and its encodings in the header value) in a message.
    pub fn scrub(&self, text: &str) -> String {
        let mut text = text.to_string();
        for s in [self.secret.expose_secret(), self.value.expose_secret()] {
            if !s.is_empty() {
                text = text.replace(s, "***");
            }
        }
        text
    }
}

/// What a request is for: the origin rules differ (the table in docs/SECURITY.md, "API and git servers").
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// A JSON answer: must come from the API's origin, redirects included.
    Api,
    /// An asset's bytes: may be redirected to another origin, which gets no credentials.
    Asset,
}

/// An answer kept for conditional requests: its ETag, `Link` header and body.
#[derive(Debug, Clone)]
pub struct CachedAnswer {
    pub etag: String,
    pub link: Option<String>,
    pub body: Vec<u8>,
}

/// The HTTP cache failed.
#[derive(Debug, thiserror::Error)]
#[error("the HTTP cache failed: {0}")]
pub struct CacheError(pub String);

/// Where conditional requests keep ETags and bodies from one run to the next. The caller hands
/// one in (the vault's index: `vault` implements it), so providers need not know the index.
pub trait HttpCache: Sync {
    fn cached(&self, url: &str) -> Result<Option<CachedAnswer>, CacheError>;
    fn store(
        &self,
        url: &str,
        etag: &str,
        link: Option<&str>,
        body: &[u8],
    ) -> Result<(), CacheError>;
}

pub struct ApiClient<'i> {
    http: Client,
    /// The configured API's origin: the only one credentials are sent to.
    origin: url::Origin,
    auth: Option<Auth>,
    accept: &'static str,
    extra_headers: Vec<(&'static str, &'static str)>,
    cache: Option<&'i dyn HttpCache>,
    settings: HttpSettings,
    /// Consecutive secondary rate limits: each doubles the next pause.
    secondary_strikes: u32,
    /// Time this client spent paused by rate limits.
    waited: Duration,
    pub stats: RequestStats,
}

pub struct Page {
    pub body: Vec<u8>,
    pub next: Option<String>,
}

fn next_link(link: Option<&str>) -> Option<String> {
    // <https://api.github.com/...&page=2>; rel="next", <...>; rel="last"
    link?.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == "rel=\"next\"")
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The path part of a URL, for messages (never the query: download URLs may carry tokens).
pub fn shown(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.path().to_string())
        .unwrap_or_else(|_| "(unparsable url)".to_string())
}

/// `scheme://host:port` of a URL, for messages about origins.
pub fn shown_origin(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| "(unparsable url)".to_string())
}

/// Same scheme, host and port.
pub fn same_origin(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

/// Rate-limit pauses shared by every client of one origin in this process: a limit hit by
/// one worker holds back the others too (the limit is the account's, not the worker's).
static PAUSES: Mutex<BTreeMap<String, Instant>> = Mutex::new(BTreeMap::new());

/// Requests to one origin that failed for good on a timeout, in a row: an API that stopped
/// answering costs `STALLED_AFTER` full rounds of retries, not one per repository.
static STALLS: Mutex<BTreeMap<String, u32>> = Mutex::new(BTreeMap::new());

const STALLED_AFTER: u32 = 3;

fn stalls(origin: &str, update: impl FnOnce(&mut u32)) -> u32 {
    let mut stalls = STALLS.lock().unwrap_or_else(|e| e.into_inner());
    let count = stalls.entry(origin.to_string()).or_insert(0);
    update(count);
    *count
}

fn pause_origin(origin: &str, until: Instant) {
    let mut pauses = PAUSES.lock().unwrap_or_else(|e| e.into_inner());
    let entry = pauses.entry(origin.to_string()).or_insert(until);
    *entry = (*entry).max(until);
}

fn paused_until(origin: &str) -> Option<Instant> {
    let pauses = PAUSES.lock().unwrap_or_else(|e| e.into_inner());
    pauses.get(origin).copied().filter(|t| *t > Instant::now())
}

/// `Retry-After` as delay-seconds or as an HTTP date.
fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - Utc::now())
            .to_std()
            .unwrap_or_default(),
    )
}

/// Why a read of a body stopped early (kept apart from I/O errors to name it in the error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    TooLarge(u64),
    Deadline(u64),
}

/// A body reader with a ceiling and a deadline; every single read is bounded by the client's
/// read timeout already.
struct Bounded<R> {
    inner: R,
    read: u64,
    limit: u64,
    deadline: Instant,
    deadline_secs: u64,
    cut: Option<Cut>,
}

impl<R> Bounded<R> {
    /// `inner`, cut after `limit` bytes or `deadline_secs` after `started`.
    fn new(inner: R, limit: u64, started: Instant, deadline_secs: u64) -> Bounded<R> {
        Bounded {
            inner,
            read: 0,
            limit,
            deadline: started + Duration::from_secs(deadline_secs),
            deadline_secs,
            cut: None,
        }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if Instant::now() > self.deadline {
            self.cut = Some(Cut::Deadline(self.deadline_secs));
        } else if self.read > self.limit {
            self.cut = Some(Cut::TooLarge(self.limit));
        }
        if let Some(cut) = self.cut {
            return Err(std::io::Error::other(format!("{cut:?}")));
        }
        // One byte past the limit tells "too large" from "exactly at the limit".
        let room = (self.limit + 1 - self.read).min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..room])?;
        self.read += n as u64;
        if self.read > self.limit {
            self.cut = Some(Cut::TooLarge(self.limit));
            return Err(std::io::Error::other("too large"));
        }
        Ok(n)
    }
}

/// What went wrong on one try, and whether another try may help.
enum Failure {
    /// A rate limit closed the gate: try again once it opens (not counted as a retry).
    Paused,
    Retry(ProviderError),
    Fatal(ProviderError),
}

impl<'i> ApiClient<'i> {
    /// A client for the API at `base` (credentials go to its origin only), sending `accept`
    /// as the `Accept` header and `extra_headers` with every request.
    pub fn new(
        base: &str,
        auth: Option<Auth>,
        accept: &'static str,
        extra_headers: Vec<(&'static str, &'static str)>,
        cache: Option<&'i dyn HttpCache>,
        settings: &HttpSettings,
    ) -> Result<Self, ProviderError> {
        let base_url = url::Url::parse(base)
            .map_err(|e| ProviderError::BadResponse(format!("the API URL {base}: {e}")))?;
        if !matches!(base_url.scheme(), "http" | "https") {
            return Err(ProviderError::BadResponse(format!(
                "the API URL {base} is not http(s)"
            )));
        }
        let http = Client::builder()
            .connect_timeout(Duration::from_secs(settings.connect_timeout.max(1)))
            .timeout(Duration::from_secs(settings.read_timeout.max(1)))
            // Redirects are followed by `try_send`, which judges every hop's origin.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ProviderError::Network(e.to_string()))?;
        Ok(ApiClient {
            http,
            origin: base_url.origin(),
            auth,
            accept,
            extra_headers,
            cache,
            settings: settings.clone(),
            secondary_strikes: 0,
            waited: Duration::ZERO,
            stats: RequestStats::default(),
        })
    }

    /// Replaces the authentication (GitHub App installation tokens are renewed mid-run).
    pub fn set_auth(&mut self, auth: Option<Auth>) {
        self.auth = auth;
    }

    /// Hides the current secret in a message.
    pub fn scrub(&self, text: &str) -> String {
        match &self.auth {
            Some(a) => a.scrub(text),
            None => text.to_string(),
        }
    }

    /// Whether `url` is on the configured API's origin.
    pub fn is_api_origin(&self, url: &str) -> bool {
        url::Url::parse(url).is_ok_and(|u| u.origin() == self.origin)
    }

    fn origin_key(&self) -> String {
        self.origin.ascii_serialization()
    }

    /// Sleeps while the origin is paused by a rate limit some client of it met.
    fn wait_for_gate(&mut self) {
        while let Some(until) = paused_until(&self.origin_key()) {
            let wait = until.saturating_duration_since(Instant::now());
            self.waited += wait;
            self.stats.rate_limit_seconds = self.waited.as_secs_f64();
            std::thread::sleep(wait);
        }
    }

    /// Runs `once` until it succeeds, fails for good, or has failed `retries` more times;
    /// rate-limit pauses are waited out first and do not count as failures.
    fn retrying<T>(
        &mut self,
        mut once: impl FnMut(&mut Self) -> Result<T, Failure>,
    ) -> Result<T, ProviderError> {
        let origin = self.origin_key();
        let stalled = stalls(&origin, |_| {});
        if stalled >= STALLED_AFTER {
            return Err(ProviderError::Timeout(format!(
                "{origin} stopped answering ({stalled} requests in a row timed out); not asked again in this run"
            )));
        }
        let mut attempt = 0;
        loop {
            self.wait_for_gate();
            match once(self) {
                Ok(answer) => {
                    self.secondary_strikes = 0;
                    stalls(&origin, |n| *n = 0);
                    return Ok(answer);
                }
                Err(Failure::Paused) => {}
                Err(Failure::Retry(e)) if attempt < self.settings.retries => {
                    attempt += 1;
                    self.stats.retries += 1;
                    tracing::info!(error = %e, attempt, "retrying");
                    std::thread::sleep(backoff(attempt));
                }
                Err(Failure::Retry(e)) | Err(Failure::Fatal(e)) => {
                    if matches!(e, ProviderError::Timeout(_)) {
                        stalls(&origin, |n| *n += 1);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// One try of a request, redirects followed hop by hop under the origin rules. Returns a
    /// response whose status is a success or 304; the body is the caller's to read within
    /// its bounds.
    fn try_send(
        &mut self,
        method: reqwest::Method,
        first: &str,
        accept: &str,
        etag: Option<&str>,
        auth: Option<&Auth>,
        purpose: Purpose,
    ) -> Result<Response, Failure> {
        let fatal = |e| Failure::Fatal(e);
        let mut url = url::Url::parse(first).map_err(|e| {
            fatal(ProviderError::BadResponse(format!(
                "{}: not a URL: {e}",
                shown(first)
            )))
        })?;
        let deadline = Duration::from_secs(match purpose {
            Purpose::Api => self.settings.request_deadline,
            Purpose::Asset => self.settings.asset_deadline,
        });
        let started = Instant::now();
        for _hop in 0..10 {
            if !matches!(url.scheme(), "http" | "https") {
                return Err(fatal(ProviderError::Refused(format!(
                    "{}: the scheme {} is not http(s)",
                    shown(first),
                    url.scheme()
                ))));
            }
            let own = url.origin() == self.origin;
            if purpose == Purpose::Api && !own {
                return Err(fatal(ProviderError::Refused(format!(
                    "{}: an API request to another origin ({}); credentials stay with {}",
                    shown(first),
                    url.origin().ascii_serialization(),
                    self.origin.ascii_serialization()
                ))));
            }
            let remaining = deadline.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                return Err(Failure::Retry(ProviderError::Timeout(format!(
                    "{}: total deadline ({} s) passed",
                    shown(first),
                    deadline.as_secs()
                ))));
            }
            let mut request = self
                .http
                .request(method.clone(), url.as_str())
                .timeout(remaining.min(Duration::from_secs(self.settings.read_timeout.max(1))))
                .header(USER_AGENT, concat!("gitvault/", env!("CARGO_PKG_VERSION")))
                .header(ACCEPT, accept);
            for (name, value) in &self.extra_headers {
                request = request.header(*name, *value);
            }
            // Invariant 9: the credential goes only to the configured origin, whatever
            // header carries it and however the request got here.
            if own && let Some(auth) = auth.or(self.auth.as_ref()) {
                request = request.header(auth.name, auth.value.expose_secret());
            }
            if own && let Some(tag) = etag {
                request = request.header(IF_NONE_MATCH, tag);
            }
            self.stats.requests += 1;
            let response = request
                .send()
                .map_err(|e| Failure::Retry(self.transport_error(first, &e)))?;
            let status = response.status();
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let next = header(response.headers(), LOCATION.as_str())
                    .and_then(|l| url.join(l).ok())
                    .ok_or_else(|| {
                        fatal(ProviderError::BadResponse(format!(
                            "{}: a redirect without a usable Location",
                            shown(first)
                        )))
                    })?;
                if url.scheme() == "https" && next.scheme() != "https" {
                    return Err(fatal(ProviderError::Refused(format!(
                        "{}: a redirect from https to {} (a downgrade)",
                        shown(first),
                        next.scheme()
                    ))));
                }
                if purpose == Purpose::Api && next.origin() != self.origin {
                    return Err(fatal(ProviderError::Refused(format!(
                        "{}: the API redirected to another origin ({}); credentials stay with {}",
                        shown(first),
                        next.origin().ascii_serialization(),
                        self.origin.ascii_serialization()
                    ))));
                }
                url = next;
                continue;
            }
            if status.is_server_error() {
                return Err(Failure::Retry(ProviderError::Http {
                    path: shown(first),
                    status: status.as_u16(),
                    message: "server error".into(),
                }));
            }
            if status == StatusCode::FORBIDDEN || status == StatusCode::TOO_MANY_REQUESTS {
                return Err(self.limited(first, response));
            }
            if status.is_success() || status == StatusCode::NOT_MODIFIED {
                return Ok(response);
            }
            return Err(fatal(self.failed(first, response)));
        }
        Err(fatal(ProviderError::BadResponse(format!(
            "{}: more than 10 redirects",
            shown(first)
        ))))
    }

    /// A transport error, saying which timeout fired when one did.
    fn transport_error(&self, url: &str, e: &reqwest::Error) -> ProviderError {
        if e.is_timeout() {
            let which = if e.is_connect() {
                format!("connect timeout ({} s)", self.settings.connect_timeout)
            } else {
                format!(
                    "read timeout ({} s without a byte of the answer)",
                    self.settings.read_timeout
                )
            };
            return ProviderError::Timeout(format!("{}: {which}", shown(url)));
        }
        ProviderError::Network(format!("{}: {}", shown(url), error_chain(e)))
    }

    /// A 403 or 429: a rate limit to wait out (the gate closes for every client of the
    /// origin, then the request is tried again), or a plain refusal.
    fn limited(&mut self, url: &str, response: Response) -> Failure {
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_small(response);
        let max_wait = Duration::from_secs(self.settings.max_wait);
        let mut wait = header(&headers, RETRY_AFTER.as_str()).and_then(retry_after);
        // GitHub and Gitea say X-RateLimit-*, GitLab RateLimit-*; both give the reset as
        // epoch seconds.
        let remaining = header(&headers, "x-ratelimit-remaining")
            .or_else(|| header(&headers, "ratelimit-remaining"));
        if wait.is_none() && remaining == Some("0") {
            let reset = header(&headers, "x-ratelimit-reset")
                .or_else(|| header(&headers, "ratelimit-reset"))
                .and_then(|v| v.parse::<i64>().ok())
                .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0))
                .unwrap_or_else(Utc::now);
            wait = Some((reset - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(1));
        }
        // GitHub's secondary limits come as a 403 or 429 whose message says so, often with
        // no header at all: back off exponentially (GitHub asks for at least a minute). A
        // bare 429 is left to the provider (Gitea and Bitbucket stop the source on it).
        if wait.is_none() && body.to_ascii_lowercase().contains("secondary rate limit") {
            let factor = 2u64.saturating_pow(self.secondary_strikes.min(16));
            wait = Some(Duration::from_secs(
                self.settings.secondary_wait.saturating_mul(factor),
            ));
            self.secondary_strikes += 1;
        }
        let Some(wait) = wait else {
            return Failure::Fatal(self.error_from(url, status, &body));
        };
        // Pauses add up over the run: a limit that keeps coming back ends the source once
        // they would pass `max_wait`, with the time to come back.
        if self.waited + wait > max_wait {
            return Failure::Fatal(ProviderError::RateLimited {
                until: Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default(),
            });
        }
        tracing::warn!(
            seconds = wait.as_secs_f64(),
            "rate limited: pausing every request to this API"
        );
        pause_origin(&self.origin_key(), Instant::now() + wait);
        Failure::Paused
    }

    fn failed(&self, url: &str, response: Response) -> ProviderError {
        let status = response.status();
        let body = read_small(response);
        self.error_from(url, status, &body)
    }

    fn error_from(&self, url: &str, status: StatusCode, body: &str) -> ProviderError {
        let message = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| body.chars().take(200).collect());
        let message = self.scrub(&message);
        match status {
            StatusCode::UNAUTHORIZED => ProviderError::Unauthorized(message),
            StatusCode::NOT_FOUND => ProviderError::NotFound(shown(url)),
            _ => ProviderError::Http {
                path: shown(url),
                status: status.as_u16(),
                message,
            },
        }
    }

    /// Reads a JSON answer's body within the size limit and the request's deadline.
    fn read_answer(
        &self,
        url: &str,
        response: Response,
        started: Instant,
    ) -> Result<Vec<u8>, Failure> {
        let mut reader = Bounded::new(
            response,
            self.settings.max_answer_bytes,
            started,
            self.settings.request_deadline,
        );
        let mut body = Vec::new();
        match reader.read_to_end(&mut body) {
            Ok(_) => Ok(body),
            Err(e) => Err(self.read_failure(url, reader.cut, &e)),
        }
    }

    fn read_failure(&self, url: &str, cut: Option<Cut>, e: &std::io::Error) -> Failure {
        match cut {
            Some(Cut::TooLarge(limit)) => Failure::Fatal(ProviderError::TooLarge {
                path: shown(url),
                limit,
            }),
            Some(Cut::Deadline(secs)) => Failure::Retry(ProviderError::Timeout(format!(
                "{}: total deadline ({secs} s) passed while reading the answer",
                shown(url)
            ))),
            None if e.kind() == std::io::ErrorKind::TimedOut
                || error_chain(e).contains("timed out") =>
            {
                Failure::Retry(ProviderError::Timeout(format!(
                    "{}: read timeout ({} s without a byte) while reading the answer",
                    shown(url),
                    self.settings.read_timeout
                )))
            }
            None => Failure::Retry(ProviderError::Network(format!(
                "{}: the answer broke off: {}",
                shown(url),
                error_chain(e)
            ))),
        }
    }

    /// GET with a conditional request when a cached answer exists; the body is bounded, and
    /// a reset or stall while reading it is retried like one before the answer.
    pub fn get(&mut self, url: &str) -> Result<Page, ProviderError> {
        let cached = match self.cache {
            Some(cache) => cache.cached(url)?,
            None => None,
        };
        let etag = cached.as_ref().map(|c| c.etag.as_str());
        // A reset or a stall while the body is read is retried like one before the answer.
        let fresh = self.retrying(|c| {
            let started = Instant::now();
            let response = c.try_send(
                reqwest::Method::GET,
                url,
                c.accept,
                etag,
                None,
                Purpose::Api,
            )?;
            if response.status() == StatusCode::NOT_MODIFIED && etag.is_some() {
                return Ok(None);
            }
            let etag = header(response.headers(), ETAG.as_str()).map(str::to_string);
            let link = header(response.headers(), LINK.as_str()).map(str::to_string);
            let body = c.read_answer(url, response, started)?;
            Ok(Some((etag, link, body)))
        })?;
        let Some((etag, link, body)) = fresh else {
            self.stats.not_modified += 1;
            let (link, body) = cached.map(|c| (c.link, c.body)).unwrap_or_default();
            return Ok(Page {
                next: next_link(link.as_deref()),
                body,
            });
        };
        if let (Some(cache), Some(etag)) = (self.cache, etag)
            && body.len() as u64 <= self.settings.max_cached_bytes
        {
            cache.store(url, &etag, link.as_deref(), &body)?;
        }
        Ok(Page {
            next: next_link(link.as_deref()),
            body,
        })
    }

    pub fn get_json(&mut self, url: &str) -> Result<Value, ProviderError> {
        let page = self.get(url)?;
        serde_json::from_slice(&page.body)
            .map_err(|e| ProviderError::BadResponse(format!("{}: {e}", shown(url))))
    }

    /// A guard for following the pages of the list starting at `first`.
    pub fn pages(&self, first: &str) -> PageGuard {
        PageGuard {
            first: first.to_string(),
            seen: HashSet::new(),
            max: self.settings.max_pages,
            bytes: 0,
            max_bytes: self.settings.max_list_bytes,
        }
    }

    /// Every item of a paginated list, following `Link: rel="next"`.
    pub fn get_all(&mut self, first: &str) -> Result<Vec<Value>, ProviderError> {
        let mut items = Vec::new();
        let mut guard = self.pages(first);
        let mut next = Some(first.to_string());
        while let Some(url) = next {
            let page = guard.fetch(&url, self)?;
            match serde_json::from_slice::<Value>(&page.body) {
                Ok(Value::Array(list)) => items.extend(list),
                Ok(_) => {
                    return Err(ProviderError::BadResponse(format!(
                        "{}: expected a list",
                        shown(&url)
                    )));
                }
                Err(e) => return Err(ProviderError::BadResponse(format!("{}: {e}", shown(&url)))),
            }
            next = page.next;
        }
        Ok(items)
    }

    /// Streams a binary (release asset) into `out`, within the asset ceiling and deadline;
    /// not cached (the chunk store dedups). Credentials go along only on the API's origin;
    /// a redirect to another origin (a signed storage URL) is followed without them.
    pub fn download(
        &mut self,
        url: &str,
        out: &mut dyn FnMut(&mut dyn std::io::Read) -> Result<(), ProviderError>,
    ) -> Result<(), ProviderError> {
        let started = Instant::now();
        let response = self.retrying(|c| {
            c.try_send(
                reqwest::Method::GET,
                url,
                "application/octet-stream",
                None,
                None,
                Purpose::Asset,
            )
        })?;
        let mut reader = Bounded::new(
            response,
            self.settings.max_asset_bytes,
            started,
            self.settings.asset_deadline,
        );
        match out(&mut reader) {
            Ok(()) => Ok(()),
            Err(e) => match reader.cut {
                Some(Cut::TooLarge(limit)) => Err(ProviderError::TooLarge {
                    path: shown(url),
                    limit,
                }),
                Some(Cut::Deadline(secs)) => Err(ProviderError::Timeout(format!(
                    "{}: total deadline ({secs} s) passed while downloading",
                    shown(url)
                ))),
                None => Err(e),
            },
        }
    }

    /// A POST without a body, authenticated with `auth` instead of the client's own (GitHub
    /// App installation tokens are asked for with the app's JWT). Never cached.
    pub fn post_json(&mut self, url: &str, auth: &Auth) -> Result<Value, ProviderError> {
        self.json_as(reqwest::Method::POST, url, auth)
    }

    /// A GET authenticated with `auth` instead of the client's own, not cached.
    pub fn get_json_as(&mut self, url: &str, auth: &Auth) -> Result<Value, ProviderError> {
        self.json_as(reqwest::Method::GET, url, auth)
    }

    fn json_as(
        &mut self,
        method: reqwest::Method,
        url: &str,
        auth: &Auth,
    ) -> Result<Value, ProviderError> {
        let body = self.retrying(|c| {
            let started = Instant::now();
            let response = c.try_send(
                method.clone(),
                url,
                c.accept,
                None,
                Some(auth),
                Purpose::Api,
            )?;
            c.read_answer(url, response, started)
        })?;
        serde_json::from_slice(&body)
            .map_err(|e| ProviderError::BadResponse(format!("{}: {e}", shown(url))))
    }
}

/// The pages of one list: a page count limit, and a URL seen twice ends the list (a server
/// pointing `next` back at a page would otherwise be followed until the limit).
pub struct PageGuard {
    first: String,
    seen: HashSet<String>,
    max: usize,
    /// Bytes of the pages read so far, and the most the whole list may have: its items are
    /// held together in memory.
    bytes: u64,
    max_bytes: u64,
}

impl PageGuard {
    /// The page at `url`, once it passed the checks of [`PageGuard::visit`], counted against
    /// the list's size limit.
    pub fn fetch(&mut self, url: &str, api: &mut ApiClient<'_>) -> Result<Page, ProviderError> {
        self.visit(url, api)?;
        let page = api.get(url)?;
        self.bytes += page.body.len() as u64;
        if self.bytes > self.max_bytes {
            return Err(ProviderError::TooLarge {
                path: format!("{} (the whole list)", shown(&self.first)),
                limit: self.max_bytes,
            });
        }
        Ok(page)
    }

    fn visit(&mut self, url: &str, api: &ApiClient<'_>) -> Result<(), ProviderError> {
        if !api.is_api_origin(url) {
            return Err(ProviderError::Refused(format!(
                "{}: the next page is on another origin ({}); credentials stay with {}",
                shown(&self.first),
                shown_origin(url),
                api.origin.ascii_serialization()
            )));
        }
        if !self.seen.insert(url.to_string()) {
            return Err(ProviderError::BadResponse(format!(
                "{}: the list loops (page {} comes back after {} pages)",
                shown(&self.first),
                shown(url),
                self.seen.len()
            )));
        }
        if self.seen.len() > self.max {
            return Err(ProviderError::BadResponse(format!(
                "{}: more than {} pages (max_pages in [source.http])",
                shown(&self.first),
                self.max
            )));
        }
        Ok(())
    }
}

/// The first 64 KiB of an error answer, as text (error bodies are for messages only).
fn read_small(response: Response) -> String {
    let mut body = Vec::new();
    let _ = response.take(64 << 10).read_to_end(&mut body);
    String::from_utf8_lossy(&body).into_owned()
}

/// An error with its sources: reqwest's own message is often just "error sending request".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Exponential backoff with jitter (half to full of 250 ms × 2^attempt, at most 16 s), so
/// that workers retrying together do not come back together.
fn backoff(attempt: u32) -> Duration {
    let full = 250u64 * 2u64.pow(attempt.min(6));
    let jitter = getrandom::u64().unwrap_or(0) % (full / 2 + 1);
    Duration::from_millis(full / 2 + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link_is_found() {
        let h = r#"<https://api.github.com/orgs/x/repos?page=2>; rel="next", <https://api.github.com/orgs/x/repos?page=5>; rel="last""#;
        assert_eq!(
            next_link(Some(h)).as_deref(),
            Some("https://api.github.com/orgs/x/repos?page=2")
        );
        let last = r#"<https://x/?page=1>; rel="prev", <https://x/?page=1>; rel="first""#;
        assert_eq!(next_link(Some(last)), None);
        assert_eq!(next_link(None), None);
    }

    #[test]
    fn shown_urls_drop_queries() {
        assert_eq!(shown("https://h/a/b?token=secret"), "/a/b");
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(retry_after("7"), Some(Duration::from_secs(7)));
        let soon = (Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let soon = soon.replace("+0000", "GMT");
        let wait = retry_after(&soon).expect("an HTTP date");
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon"), None);
    }

    #[test]
    fn backoff_is_jittered_within_bounds() {
        for attempt in 1..8 {
            let d = backoff(attempt).as_millis() as u64;
            let full = 250 * 2u64.pow(attempt.min(6));
            assert!(d >= full / 2 && d <= full, "{attempt}: {d}");
        }
    }

    #[test]
    fn credentials_go_to_the_api_origin_only() {
        let api = ApiClient::new(
            "https://api.example.com/v3",
            None,
            "application/json",
            Vec::new(),
            None,
            &HttpSettings::default(),
        )
        .expect("a client");
        assert!(api.is_api_origin("https://api.example.com/repos?page=2"));
        assert!(api.is_api_origin("https://api.example.com:443/x"));
        assert!(!api.is_api_origin("http://api.example.com/x"));
        assert!(!api.is_api_origin("https://api.example.com:8443/x"));
        assert!(!api.is_api_origin("https://example.com/x"));
        assert!(!api.is_api_origin("file:///etc/passwd"));
        let mut guard = api.pages("https://api.example.com/list");
        guard
            .visit("https://api.example.com/list", &api)
            .expect("page 1");
        guard
            .visit("https://api.example.com/list?page=2", &api)
            .expect("page 2");
        let looped = guard.visit("https://api.example.com/list", &api);
        assert!(looped.is_err_and(|e| e.to_string().contains("loops")));
        let foreign = guard.visit("https://evil.example.net/list", &api);
        assert!(foreign.is_err_and(|e| e.to_string().contains("another origin")));
    }

    /// An HTTP/1.1 answer with `headers` (each ending in CRLF) and `body`.
    fn raw_answer(status: &str, headers: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    /// A tiny server on `host`: answers each connection with `answer(its origin)` and sends
    /// back the raw requests it received.
    fn serve(
        host: &str,
        answer: impl FnOnce(&str) -> String,
    ) -> (String, std::sync::mpsc::Receiver<String>) {
        use std::io::Write;
        let listener = std::net::TcpListener::bind((host, 0)).expect("bind");
        let origin = format!("http://{}", listener.local_addr().expect("address"));
        let answer = answer(&origin);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut stream = stream;
                let mut buf = [0u8; 8192];
                let n = stream.read(&mut buf).unwrap_or(0);
                let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        (origin, rx)
    }

    /// Every provider's way of carrying credentials (Bearer, Gitea's `token`, GitLab's
    /// `PRIVATE-TOKEN`, Bitbucket's Basic) stays on the API's origin across a redirect.
    #[test]
    fn no_credential_header_follows_a_redirect_to_another_origin() {
        let secret = SecretString::from("s3cr3t-token-value");
        for auth in [
            Auth::scheme("Bearer", &secret),
            Auth::scheme("token", &secret),
            Auth::header("PRIVATE-TOKEN", &secret),
            Auth::basic("alice", &secret),
        ] {
            let (foreign, seen_foreign) = serve("127.0.0.2", |_| raw_answer("200 OK", "", "ok"));
            let location = format!("Location: {foreign}/signed\r\n");
            let (home, seen_home) = serve("127.0.0.1", |_| raw_answer("302 Found", &location, ""));
            let mut api = ApiClient::new(
                &home,
                Some(auth.clone()),
                "application/json",
                Vec::new(),
                None,
                &HttpSettings::default(),
            )
            .expect("a client");
            // An asset may be fetched from the other origin, without the credential.
            let mut bytes = Vec::new();
            api.download(&format!("{home}/asset"), &mut |r| {
                r.read_to_end(&mut bytes)
                    .map(|_| ())
                    .map_err(|e| ProviderError::Store(e.to_string()))
            })
            .expect("the download");
            assert_eq!(bytes, b"ok");
            let name = auth.name.to_ascii_lowercase();
            let home_request = seen_home.recv().expect("a request at home");
            assert!(home_request.to_ascii_lowercase().contains(&name));
            let foreign_request = seen_foreign.recv().expect("a request elsewhere");
            assert!(
                !foreign_request.to_ascii_lowercase().contains(&name),
                "{foreign_request}"
            );
            assert!(!auth.scrub(&foreign_request).contains("***"));
            // An API answer may not come from there at all.
            let refused = api.get(&format!("{home}/list"));
            assert!(
                matches!(refused, Err(ProviderError::Refused(_))),
                "{:?}",
                refused.err()
            );
            assert!(seen_foreign.try_recv().is_err());
        }
    }

    /// A server that accepts connections and never answers: each request ends at the read
    /// timeout, and after `STALLED_AFTER` of them in a row the origin is not asked again.
    #[test]
    fn a_hung_api_is_given_up_after_a_few_timeouts() {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let home = format!("http://{}", listener.local_addr().expect("address"));
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                held.push(stream);
            }
        });
        let settings = HttpSettings {
            read_timeout: 1,
            retries: 0,
            ..HttpSettings::default()
        };
        let mut api = ApiClient::new(&home, None, "application/json", Vec::new(), None, &settings)
            .expect("a client");
        for _ in 0..STALLED_AFTER {
            let started = Instant::now();
            let e = api.get(&format!("{home}/x")).err().expect("a timeout");
            assert!(e.to_string().contains("read timeout (1 s"), "{e}");
            assert!(started.elapsed() < Duration::from_secs(5));
        }
        let started = Instant::now();
        let e = api.get(&format!("{home}/y")).err().expect("given up");
        assert!(e.to_string().contains("stopped answering"), "{e}");
        assert!(started.elapsed() < Duration::from_millis(500));
    }

    /// The HTTP cache keeps answers up to `max_cached_bytes`; larger ones are fetched again
    /// next time instead of growing the index.
    #[test]
    fn only_small_answers_are_cached() {
        #[derive(Default)]
        struct Memory(std::sync::Mutex<std::collections::HashMap<String, CachedAnswer>>);
        impl HttpCache for Memory {
            fn cached(&self, url: &str) -> Result<Option<CachedAnswer>, CacheError> {
                let map = self.0.lock().map_err(|e| CacheError(e.to_string()))?;
                Ok(map.get(url).cloned())
            }
            fn store(
                &self,
                url: &str,
                etag: &str,
                link: Option<&str>,
                body: &[u8],
            ) -> Result<(), CacheError> {
                let mut map = self.0.lock().map_err(|e| CacheError(e.to_string()))?;
                map.insert(
                    url.to_string(),
                    CachedAnswer {
                        etag: etag.to_string(),
                        link: link.map(str::to_string),
                        body: body.to_vec(),
                    },
                );
                Ok(())
            }
        }
        let index = Memory::default();
        let answer = |size: usize| {
            let body = format!("[\"{}\"]", "x".repeat(size));
            raw_answer("200 OK", &format!("ETag: \"e{size}\"\r\n"), &body)
        };
        let settings = HttpSettings {
            max_cached_bytes: 10_000,
            ..HttpSettings::default()
        };
        for (size, kept) in [(1_000, true), (20_000, false)] {
            let (home, _seen) = serve("127.0.0.1", |_| answer(size));
            let mut api = ApiClient::new(
                &home,
                None,
                "application/json",
                Vec::new(),
                Some(&index),
                &settings,
            )
            .expect("a client");
            let url = format!("{home}/list");
            let page = api.get(&url).expect("the answer");
            assert_eq!(page.body.len(), size + 4);
            let cached = index.cached(&url).expect("the cache");
            assert_eq!(cached.is_some(), kept, "{size} bytes");
        }
    }

    /// A list's pages together may not pass `max_list_bytes`: they are held in memory at once.
    #[test]
    fn a_list_is_bounded_as_a_whole() {
        let (home, _seen) = serve("127.0.0.1", |origin| {
            let body = format!("[\"{}\"]", "x".repeat(996));
            let link = format!("Link: <{origin}/list?page=2>; rel=\"next\"\r\n");
            raw_answer("200 OK", &link, &body)
        });
        let settings = HttpSettings {
            max_list_bytes: 1_500,
            ..HttpSettings::default()
        };
        let mut api = ApiClient::new(&home, None, "application/json", Vec::new(), None, &settings)
            .expect("a client");
        let e = api.get_all(&format!("{home}/list")).expect_err("too large");
        assert!(e.to_string().contains("the whole list"), "{e}");
        assert!(e.to_string().contains("1500 bytes"), "{e}");
    }
}
