//! The batch API client: where to download objects from, downloads streamed to a file while
//! their SHA-256 is checked, and uploads (PUT, then the optional verify POST) for `--push`.
//! Credentials are attached per request by [`Client::authorize`], only for their own origin.

use super::*;

#[derive(Deserialize)]
struct BatchResponse {
    #[serde(default)]
    objects: Vec<BatchObject>,
}

#[derive(Deserialize)]
struct BatchObject {
    oid: String,
    #[serde(default)]
    actions: Option<Actions>,
    #[serde(default)]
    error: Option<BatchError>,
}

#[derive(Deserialize)]
struct Actions {
    download: Option<Action>,
    upload: Option<Action>,
    verify: Option<Action>,
}

#[derive(Deserialize)]
struct Action {
    href: String,
    #[serde(default)]
    header: std::collections::HashMap<String, String>,
}

#[derive(Deserialize)]
struct BatchError {
    code: u16,
    message: String,
}

/// Where to fetch one object from.
pub struct Download {
    pub pointer: Pointer,
    href: String,
    header: Vec<(String, String)>,
}

/// One object of a batch answer: where to download it, or why the server will not give it.
pub type BatchAnswer = (Pointer, Result<Download, String>);

/// An LFS server, asked with the repository's credentials where their origin allows.
pub struct Client {
    http: reqwest::blocking::Client,
    endpoint: String,
    credentials: Option<BoundCredentials>,
}

impl Client {
    /// `credentials` were given for `home` (the repository's URL) and go only to its origin.
    pub fn new(
        endpoint: &str,
        credentials: Option<Credentials>,
        home: &str,
    ) -> Result<Client, LfsError> {
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(15))
            // Credentials are attached per request after the origin check; reqwest drops the
            // Authorization header when a redirect changes scheme, host or port. A redirect
            // from https to plain http is not followed at all.
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let downgrade = attempt.url().scheme() == "http"
                    && attempt.previous().iter().any(|u| u.scheme() == "https");
                if downgrade || attempt.previous().len() >= 10 {
                    attempt.stop()
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .map_err(|e| LfsError::Endpoint {
                endpoint: shown(endpoint),
                reason: e.to_string(),
            })?;
        Ok(Client {
            http,
            endpoint: endpoint.to_string(),
            credentials: credentials.and_then(|c| BoundCredentials::new(c, home)),
        })
    }

    /// Adds the credentials to a request for `url` if, and only if, `url` is on their origin
    /// and the transport may carry them.
    /// Sends `request` for one of a batch answer's actions: with the headers the server gave
    /// for it, or with our own credentials when it gave none. `step` names the action in the
    /// error.
    fn send_action(
        &self,
        mut request: reqwest::blocking::RequestBuilder,
        action: &Action,
        step: &str,
    ) -> Result<(), String> {
        if action.header.is_empty() {
            request = self.authorize(request, &action.href);
        }
        for (k, v) in &action.header {
            request = request.header(k, v);
        }
        let answer = request.send().map_err(|e| e.without_url().to_string())?;
        if !answer.status().is_success() {
            return Err(format!("{step} answered HTTP {}", answer.status()));
        }
        Ok(())
    }

    fn authorize(
        &self,
        request: reqwest::blocking::RequestBuilder,
        url: &str,
    ) -> reqwest::blocking::RequestBuilder {
        match self.credentials.as_ref().and_then(|b| b.for_url(url)) {
            Some(c) => request.basic_auth(&c.username, Some(c.secret.expose_secret())),
            None => request,
        }
    }

    /// Why a refused request may have failed: credentials exist but were kept from this URL.
    fn withheld_hint(&self, url: &str) -> String {
        match &self.credentials {
            Some(b) if b.for_url(url).is_none() => format!(
                " (credentials were not sent: they go only to {} over https or to loopback)",
                b.origin()
            ),
            _ => String::new(),
        }
    }

    /// One batch API request for `operation` (`download` or `upload`) on `pointers`.
    fn batch_request(
        &self,
        operation: &str,
        pointers: &[Pointer],
    ) -> Result<BatchResponse, LfsError> {
        let body = serde_json::json!({
            "operation": operation,
            "transfers": ["basic"],
            "hash_algo": "sha256",
            "objects": pointers.iter().map(|p| serde_json::json!({"oid": p.oid_hex(), "size": p.size})).collect::<Vec<_>>(),
        });
        let url = format!("{}/objects/batch", self.endpoint);
        let err = |reason: String| LfsError::Endpoint {
            endpoint: shown(&self.endpoint),
            reason,
        };
        let response = self
            .authorize(self.http.post(&url), &url)
            .header("Accept", "application/vnd.git-lfs+json")
            .header("Content-Type", "application/vnd.git-lfs+json")
            .body(body.to_string())
            .send()
            .map_err(|e| err(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            // The download request has always been "the batch request" in messages.
            let request = match operation {
                "upload" => "the upload batch request",
                _ => "the batch request",
            };
            return Err(err(format!(
                "{request} answered HTTP {status}{}",
                self.withheld_hint(&url)
            )));
        }
        response
            .json()
            .map_err(|e| err(format!("unreadable batch answer: {}", e.without_url())))
    }

    /// Asks where to download `pointers` from. Per object: where to get it, or why not.
    pub fn batch(&self, pointers: &[Pointer]) -> Result<Vec<BatchAnswer>, LfsError> {
        let mut out = Vec::new();
        // The spec lets servers cap a batch; 100 is what git-lfs sends.
        for group in pointers.chunks(100) {
            let answer = self.batch_request("download", group)?;
            for p in group {
                let hex_oid = p.oid_hex();
                let found = answer.objects.iter().find(|o| o.oid == hex_oid);
                let result = match found {
                    None => Err("the server did not answer for it".to_string()),
                    Some(o) => match (
                        &o.error,
                        o.actions.as_ref().and_then(|a| a.download.as_ref()),
                    ) {
                        (Some(e), _) => Err(format!("{} {}", e.code, e.message)),
                        (None, Some(a)) => Ok(Download {
                            pointer: *p,
                            href: a.href.clone(),
                            header: a
                                .header
                                .iter()
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect(),
                        }),
                        (None, None) => Err("no download action offered".to_string()),
                    },
                };
                out.push((*p, result));
            }
        }
        Ok(out)
    }

    /// Uploads objects from files (batch API `upload`, basic transfer: PUT, then the optional
    /// verify POST). Objects the server already has come back without actions and are skipped.
    /// Returns how many were sent; the first failure stops it. `sent` is told the size of
    /// each object as it is sent or found on the server.
    pub(crate) fn upload(
        &self,
        objects: &[(Pointer, std::path::PathBuf)],
        sent_bytes: &dyn Fn(u64),
    ) -> Result<u64, LfsError> {
        let mut sent = 0;
        for group in objects.chunks(100) {
            let pointers: Vec<Pointer> = group.iter().map(|(p, _)| *p).collect();
            let answer = self.batch_request("upload", &pointers)?;
            for (p, path) in group {
                let fail = |reason: String| LfsError::Object {
                    oid: p.oid_hex(),
                    reason,
                };
                let Some(o) = answer.objects.iter().find(|o| o.oid == p.oid_hex()) else {
                    return Err(fail("the server did not answer for it".into()));
                };
                if let Some(e) = &o.error {
                    return Err(fail(format!("{} {}", e.code, e.message)));
                }
                let Some(upload) = o.actions.as_ref().and_then(|a| a.upload.as_ref()) else {
                    sent_bytes(p.size);
                    continue;
                };
                let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
                let request = self
                    .http
                    .put(&upload.href)
                    .header("Content-Type", "application/octet-stream")
                    .body(reqwest::blocking::Body::sized(file, p.size));
                self.send_action(request, upload, "upload").map_err(fail)?;
                if let Some(verify) = o.actions.as_ref().and_then(|a| a.verify.as_ref()) {
                    let request = self
                        .http
                        .post(&verify.href)
                        .header("Content-Type", "application/vnd.git-lfs+json")
                        .body(serde_json::json!({"oid": p.oid_hex(), "size": p.size}).to_string());
                    self.send_action(request, verify, "verify").map_err(fail)?;
                }
                sent += 1;
                sent_bytes(p.size);
            }
        }
        Ok(sent)
    }

    /// Downloads one object into `dest`, checking its size and SHA-256 as it streams;
    /// `received` is told of the bytes as they come.
    pub fn download(
        &self,
        d: &Download,
        dest: &Path,
        received: &dyn Fn(u64),
    ) -> Result<(), LfsError> {
        let fail = |reason: String| LfsError::Object {
            oid: d.pointer.oid_hex(),
            reason,
        };
        let mut request = self.http.get(&d.href);
        if d.header.is_empty() {
            // Servers that need no per-action header expect the repository's credentials, if
            // the href is on their origin; any other host gets none.
            request = self.authorize(request, &d.href);
        }
        for (k, v) in &d.header {
            request = request.header(k, v);
        }
        // The href may carry a token in its query: errors never show it.
        let mut response = request
            .send()
            .map_err(|e| fail(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(fail(format!(
                "download answered HTTP {}{}",
                response.status(),
                if d.header.is_empty() {
                    self.withheld_hint(&d.href)
                } else {
                    String::new()
                }
            )));
        }
        let mut file = std::fs::File::create(dest).map_err(|e| fail(e.to_string()))?;
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = response
                .read(&mut buf)
                .map_err(|e| fail(format!("download interrupted: {e}")))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(|e| fail(e.to_string()))?;
            total += n as u64;
            received(n as u64);
            if total > d.pointer.size {
                return Err(fail(format!(
                    "the server sent more than the {} bytes the pointer says",
                    d.pointer.size
                )));
            }
        }
        file.sync_all().map_err(|e| fail(e.to_string()))?;
        if total != d.pointer.size {
            return Err(fail(format!(
                "the server sent {total} bytes where the pointer says {}",
                d.pointer.size
            )));
        }
        if hasher.finalize().as_slice() != d.pointer.sha256 {
            return Err(fail(
                "the bytes the server sent do not have the pointer's SHA-256: rejected".into(),
            ));
        }
        Ok(())
    }
}

/// A URL for messages: never userinfo or query (hrefs may carry tokens).
fn shown(url: &str) -> RedactedUrl {
    RedactedUrl::new(url)
}
