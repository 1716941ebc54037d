//! A polite HTTP client for provider APIs: conditional requests (ETag / If-None-Match, answers
//! cached in the index), `Link` pagination, rate limits (`X-RateLimit-*`, `Retry-After`) and
//! retries of 5xx with backoff. The token goes only into the `Authorization` header; URLs,
//! bodies and errors never carry it.

use std::time::Duration;

use age::secrecy::{ExposeSecret, SecretString};
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use reqwest::header::{ACCEPT, ETAG, HeaderMap, IF_NONE_MATCH, LINK, RETRY_AFTER, USER_AGENT};
use serde_json::Value;

use super::ProviderError;
use crate::index::Index;

const RETRIES: u32 = 4;

/// Counts of what a run asked of an API (for reports and tests).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct RequestStats {
    pub requests: u64,
    pub not_modified: u64,
    pub retries: u64,
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

pub struct ApiClient<'i> {
    http: Client,
    auth: Option<Auth>,
    accept: &'static str,
    extra_headers: Vec<(&'static str, &'static str)>,
    cache: Option<&'i Index>,
    /// The longest a rate limit may make us wait before giving up for this run.
    pub max_wait: Duration,
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

impl<'i> ApiClient<'i> {
    /// A client sending `accept` as the `Accept` header (GitHub's media type, or
    /// `application/json`) and `extra_headers` with every request.
    pub fn new(
        auth: Option<Auth>,
        accept: &'static str,
        extra_headers: Vec<(&'static str, &'static str)>,
        cache: Option<&'i Index>,
    ) -> Result<Self, ProviderError> {
        let http = Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| ProviderError::Network(e.to_string()))?;
        Ok(ApiClient {
            http,
            auth,
            accept,
            extra_headers,
            cache,
            max_wait: Duration::from_secs(60),
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

    fn send(
        &mut self,
        method: reqwest::Method,
        url: &str,
        accept: &str,
        etag: Option<&str>,
        extra_auth: Option<&Auth>,
    ) -> Result<Response, ProviderError> {
        let mut attempt = 0;
        loop {
            let mut request = self
                .http
                .request(method.clone(), url)
                .header(USER_AGENT, concat!("gitvault/", env!("CARGO_PKG_VERSION")))
                .header(ACCEPT, accept);
            for (name, value) in &self.extra_headers {
                request = request.header(*name, *value);
            }
            if let Some(auth) = extra_auth.or(self.auth.as_ref()) {
                request = request.header(auth.name, auth.value.expose_secret());
            }
            if let Some(tag) = etag {
                request = request.header(IF_NONE_MATCH, tag);
            }
            self.stats.requests += 1;
            let response = match request.send() {
                Ok(r) => r,
                Err(e) if attempt < RETRIES && (e.is_timeout() || e.is_connect()) => {
                    attempt += 1;
                    self.stats.retries += 1;
                    std::thread::sleep(backoff(attempt));
                    continue;
                }
                Err(e) => {
                    return Err(ProviderError::Network(format!(
                        "{}: {}",
                        shown(url),
                        e.without_url()
                    )));
                }
            };
            let status = response.status();
            if status.is_server_error() && attempt < RETRIES {
                attempt += 1;
                self.stats.retries += 1;
                std::thread::sleep(backoff(attempt));
                continue;
            }
            if status == StatusCode::FORBIDDEN || status == StatusCode::TOO_MANY_REQUESTS {
                let headers = response.headers();
                if let Some(wait) =
                    header(headers, RETRY_AFTER.as_str()).and_then(|v| v.parse::<u64>().ok())
                {
                    let wait = Duration::from_secs(wait);
                    if wait <= self.max_wait && attempt < RETRIES {
                        tracing::info!(seconds = wait.as_secs(), "secondary rate limit: waiting");
                        attempt += 1;
                        self.stats.retries += 1;
                        std::thread::sleep(wait);
                        continue;
                    }
                    return Err(ProviderError::RateLimited {
                        until: Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default(),
                    });
                }
                // GitHub and Gitea say X-RateLimit-*, GitLab RateLimit-*; both give the reset
                // as epoch seconds.
                let remaining = header(headers, "x-ratelimit-remaining")
                    .or_else(|| header(headers, "ratelimit-remaining"));
                if remaining == Some("0") {
                    let reset = header(headers, "x-ratelimit-reset")
                        .or_else(|| header(headers, "ratelimit-reset"))
                        .and_then(|v| v.parse::<i64>().ok())
                        .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0))
                        .unwrap_or_else(Utc::now);
                    let wait =
                        (reset - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(1);
                    if wait <= self.max_wait && attempt < RETRIES {
                        tracing::info!(
                            seconds = wait.as_secs(),
                            "rate limit exhausted: waiting for the reset"
                        );
                        attempt += 1;
                        std::thread::sleep(wait);
                        continue;
                    }
                    return Err(ProviderError::RateLimited { until: reset });
                }
            }
            return Ok(response);
        }
    }

    fn check(&self, url: &str, response: Response) -> Result<Response, ProviderError> {
        let status = response.status();
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            return Ok(response);
        }
        let body = response.text().unwrap_or_default();
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| body.chars().take(200).collect());
        let message = self.scrub(&message);
        Err(match status {
            StatusCode::UNAUTHORIZED => ProviderError::Unauthorized(message),
            StatusCode::NOT_FOUND => ProviderError::NotFound(shown(url)),
            _ => ProviderError::Http {
                path: shown(url),
                status: status.as_u16(),
                message,
            },
        })
    }

    /// GET with a conditional request when a cached answer exists.
    pub fn get(&mut self, url: &str) -> Result<Page, ProviderError> {
        let cached = match self.cache {
            Some(index) => index.http_cached(url)?,
            None => None,
        };
        let response = self.send(
            reqwest::Method::GET,
            url,
            self.accept,
            cached.as_ref().map(|c| c.etag.as_str()),
            None,
        )?;
        let response = self.check(url, response)?;
        if response.status() == StatusCode::NOT_MODIFIED
            && let Some(c) = cached
        {
            self.stats.not_modified += 1;
            return Ok(Page {
                next: next_link(c.link.as_deref()),
                body: c.body,
            });
        }
        let etag = header(response.headers(), ETAG.as_str()).map(str::to_string);
        let link = header(response.headers(), LINK.as_str()).map(str::to_string);
        let body = response
            .bytes()
            .map_err(|e| ProviderError::Network(format!("{}: {}", shown(url), e.without_url())))?
            .to_vec();
        if let (Some(index), Some(etag)) = (self.cache, etag) {
            index.http_store(url, &etag, link.as_deref(), &body)?;
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

    /// Every item of a paginated list, following `Link: rel="next"`.
    pub fn get_all(&mut self, first: &str) -> Result<Vec<Value>, ProviderError> {
        let mut items = Vec::new();
        let mut next = Some(first.to_string());
        let mut pages = 0;
        while let Some(url) = next {
            pages += 1;
            if pages > 10_000 {
                return Err(ProviderError::BadResponse(format!(
                    "{}: endless pagination",
                    shown(first)
                )));
            }
            let page = self.get(&url)?;
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

    /// Streams a binary (release asset) into `out`; not cached (the chunk store dedups).
    pub fn download(
        &mut self,
        url: &str,
        out: &mut dyn FnMut(&mut dyn std::io::Read) -> Result<(), ProviderError>,
    ) -> Result<(), ProviderError> {
        let response = self.send(
            reqwest::Method::GET,
            url,
            "application/octet-stream",
            None,
            None,
        )?;
        let mut response = self.check(url, response)?;
        out(&mut response)
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
        let response = self.send(method, url, self.accept, None, Some(auth))?;
        let response = self.check(url, response)?;
        let body = response
            .bytes()
            .map_err(|e| ProviderError::Network(format!("{}: {}", shown(url), e.without_url())))?;
        serde_json::from_slice(&body)
            .map_err(|e| ProviderError::BadResponse(format!("{}: {e}", shown(url))))
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250 * 2u64.pow(attempt.min(6)))
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
}
