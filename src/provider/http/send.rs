//! One request, tried again while trying again may help: the gate of a rate-limited origin is
//! waited out, resets and timeouts are retried with backoff, redirects are followed hop by hop
//! under the credential rules of `mod.rs`, and failures become errors that name their cause.

use super::limits::*;
use super::*;

/// What went wrong on one try, and whether another try may help.
pub(super) enum Failure {
    /// A rate limit closed the gate: try again once it opens (not counted as a retry).
    Paused,
    Retry(ProviderError),
    Fatal(ProviderError),
}

impl ApiClient<'_> {
    /// Sleeps while the origin is paused by a rate limit some client of it met.
    pub(super) fn wait_for_gate(&mut self) {
        while let Some(until) = paused_until(&self.origin_key()) {
            let wait = until.saturating_duration_since(Instant::now());
            self.waited += wait;
            self.stats.rate_limit_seconds = self.waited.as_secs_f64();
            std::thread::sleep(wait);
        }
    }

    /// Runs `once` until it succeeds, fails for good, or has failed `retries` more times;
    /// rate-limit pauses are waited out first and do not count as failures.
    pub(super) fn retrying<T>(
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
    pub(super) fn try_send(
        &mut self,
        method: reqwest::Method,
        first: &str,
        accept: &str,
        extra: Extra<'_>,
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
        // An upload sends an asset's bytes: it has an asset's time, and no answer comes
        // before they are all sent, so the read timeout cannot bound it.
        let upload = matches!(extra, Extra::Upload(..));
        let deadline = Duration::from_secs(match purpose {
            Purpose::Api if !upload => self.settings.request_deadline,
            _ => self.settings.asset_deadline,
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
                .timeout(if upload {
                    remaining
                } else {
                    remaining.min(Duration::from_secs(self.settings.read_timeout.max(1)))
                })
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
            match extra {
                Extra::IfNoneMatch(tag) if own => request = request.header(IF_NONE_MATCH, tag),
                Extra::Json(body) => {
                    request = request
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.to_vec());
                }
                Extra::Upload(path, content_type) => {
                    let file = std::fs::File::open(path).map_err(|e| {
                        fatal(ProviderError::Store(format!("{}: {e}", path.display())))
                    })?;
                    request = request
                        .header(reqwest::header::CONTENT_TYPE, content_type)
                        .body(reqwest::blocking::Body::from(file));
                }
                _ => {}
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
    pub(super) fn transport_error(&self, url: &str, e: &reqwest::Error) -> ProviderError {
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
    pub(super) fn limited(&mut self, url: &str, response: Response) -> Failure {
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

    pub(super) fn failed(&self, url: &str, response: Response) -> ProviderError {
        let status = response.status();
        let body = read_small(response);
        self.error_from(url, status, &body)
    }

    pub(super) fn error_from(&self, url: &str, status: StatusCode, body: &str) -> ProviderError {
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
    pub(super) fn read_answer(
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

    pub(super) fn read_failure(&self, url: &str, cut: Option<Cut>, e: &std::io::Error) -> Failure {
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
}

/// The first 64 KiB of an error answer, as text (error bodies are for messages only).
pub(super) fn read_small(response: Response) -> String {
    let mut body = Vec::new();
    let _ = response.take(64 << 10).read_to_end(&mut body);
    String::from_utf8_lossy(&body).into_owned()
}

/// An error with its sources: reqwest's own message is often just "error sending request".
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
