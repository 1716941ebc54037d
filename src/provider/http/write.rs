//! Writes (POST, PATCH) for restoring into an account: JSON in, JSON out, paced as GitHub asks
//! of content-creating requests (one at a time, at least `create_interval_ms` apart), and never
//! retried after a failure that may have reached the server: a write sent twice creates twice.
//! A rate limit is a refusal (nothing was created), so it is waited out like any request's.

use super::send::Failure;
use super::*;

impl ApiClient<'_> {
    /// Sends `body` with `method` to `url` on the API and reads the JSON answer (201, 200).
    pub fn send_json(
        &mut self,
        method: reqwest::Method,
        url: &str,
        body: &Value,
    ) -> Result<Value, ProviderError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| ProviderError::BadResponse(format!("{}: {e}", shown(url))))?;
        self.send(method, url, Extra::Json(&bytes))
    }

    /// POSTs the bytes of the file at `path` as `content_type` (an upload) and reads the
    /// JSON answer.
    pub fn send_file(
        &mut self,
        url: &str,
        path: &std::path::Path,
        content_type: &str,
    ) -> Result<Value, ProviderError> {
        self.send(
            reqwest::Method::POST,
            url,
            Extra::Upload(path, content_type),
        )
    }

    fn send(
        &mut self,
        method: reqwest::Method,
        url: &str,
        extra: Extra<'_>,
    ) -> Result<Value, ProviderError> {
        self.pace();
        let answer = loop {
            self.wait_for_gate();
            let started = Instant::now();
            let once = self
                .try_send(method.clone(), url, self.accept, extra, None, Purpose::Api)
                .and_then(|response| self.read_answer(url, response, started));
            match once {
                Ok(body) => break body,
                Err(Failure::Paused) => continue,
                Err(Failure::Retry(e)) | Err(Failure::Fatal(e)) => return Err(e),
            }
        };
        self.last_write = Some(Instant::now());
        // 204 No Content (Gitea's answer to a PUT of topics) has nothing to read.
        if answer.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&answer)
            .map_err(|e| ProviderError::BadResponse(format!("{}: {e}", shown(url))))
    }

    /// Sleeps until `create_interval_ms` has passed since the last write.
    fn pace(&mut self) {
        let interval = Duration::from_millis(self.settings.create_interval_ms);
        if let Some(last) = self.last_write {
            let wait = interval.saturating_sub(last.elapsed());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
    }
}
