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

use std::collections::HashSet;
use std::io::Read;
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
use limits::{Bounded, Cut};

mod limits;
mod send;
mod write;

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
    /// Milliseconds between two writes when restoring into an account (GitHub asks for a
    /// second between content-creating requests).
    pub create_interval_ms: u64,
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
            create_interval_ms: 1000,
        }
    }
}

impl HttpSettings {
    pub(crate) fn is_default(&self) -> bool {
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

/// What a request carries besides its headers: a cached answer's ETag (a conditional GET) or
/// a JSON body (a write).
#[derive(Clone, Copy)]
enum Extra<'a> {
    Nothing,
    IfNoneMatch(&'a str),
    Json(&'a [u8]),
    /// A file's bytes with their content type (a release asset upload).
    Upload(&'a std::path::Path, &'a str),
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
    fn store(&self, url: &str, answer: &CachedAnswer) -> Result<(), CacheError>;
}

/// The cache a provider is given, if any (tests and one-off runs go without).
pub type Cache<'i> = Option<&'i dyn HttpCache>;

pub struct ApiClient<'i> {
    http: Client,
    /// The API's base URL, without a trailing `/`.
    base: String,
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
    /// When the last write ended, for pacing the next.
    last_write: Option<Instant>,
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
            base: base.trim_end_matches('/').to_string(),
            origin: base_url.origin(),
            auth,
            accept,
            extra_headers,
            cache,
            settings: settings.clone(),
            secondary_strikes: 0,
            waited: Duration::ZERO,
            last_write: None,
            stats: RequestStats::default(),
        })
    }

    /// The API's base URL, without a trailing `/`.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// The URL of `path` (`/repos/…`) on the API.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
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
                etag.map_or(Extra::Nothing, Extra::IfNoneMatch),
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
            let answer = CachedAnswer { etag, link, body };
            cache.store(url, &answer)?;
            return Ok(Page {
                next: next_link(answer.link.as_deref()),
                body: answer.body,
            });
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
                Extra::Nothing,
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
                Extra::Nothing,
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

#[cfg(test)]
mod tests;
