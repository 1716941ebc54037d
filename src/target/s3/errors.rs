//! How a failed request is told apart (missing, precondition failed, unsatisfiable range, or
//! anything else) and turned into a `TargetError` whose text names the endpoint and bucket,
//! hints at credentials, and never carries the secret key.

use super::*;

/// How a request failed, before it becomes a `TargetError`.
pub(super) enum Failure {
    NotFound,
    /// `If-None-Match: *` found an object of that name.
    PreconditionFailed,
    /// A range that starts at or past the end of the object.
    RangeNotSatisfiable,
    /// Object Lock keeps the object (until this date, when known).
    Locked(Option<std::time::SystemTime>),
    Other(io::ErrorKind, String),
}

impl S3Target {
    pub(super) fn target_error(
        &self,
        op: &'static str,
        key: &str,
        failure: Failure,
    ) -> TargetError {
        match failure {
            Failure::NotFound if matches!(op, "get" | "open") => TargetError::NotFound {
                target: self.name.clone(),
                key: key.to_string(),
            },
            Failure::NotFound => {
                self.io_error(op, key, io::ErrorKind::NotFound, "no such object".into())
            }
            Failure::PreconditionFailed => self.io_error(
                op,
                key,
                io::ErrorKind::AlreadyExists,
                "the object exists already (412 Precondition Failed)".into(),
            ),
            Failure::RangeNotSatisfiable => self.io_error(
                op,
                key,
                io::ErrorKind::UnexpectedEof,
                "range outside the object (416)".into(),
            ),
            Failure::Locked(until) => TargetError::Locked {
                target: self.name.clone(),
                key: key.to_string(),
                until,
            },
            Failure::Other(kind, message) => self.io_error(op, key, kind, message),
        }
    }

    pub(super) fn io_error(
        &self,
        op: &'static str,
        key: &str,
        kind: io::ErrorKind,
        message: String,
    ) -> TargetError {
        TargetError::Io {
            target: self.name.clone(),
            op,
            key: key.to_string(),
            source: io::Error::new(kind, self.scrub(message)),
        }
    }

    /// Last line of defence: server or transport text should never hold the secret key, but if
    /// it ever echoes it, it does not reach the user's terminal or logs.
    pub(super) fn scrub(&self, message: String) -> String {
        match &self.secret {
            Some(secret) if secret.len() >= 4 && message.contains(secret.as_str()) => {
                message.replace(secret.as_str(), "***")
            }
            _ => message,
        }
    }

    pub(super) fn endpoint_label(&self) -> &str {
        self.config
            .endpoint
            .as_deref()
            .unwrap_or("the AWS S3 endpoint")
    }

    /// A request's answer, with a missing object as `None`: for requests where absence is an
    /// answer rather than a failure.
    pub(super) fn unless_missing<T, E>(
        &self,
        result: Result<T, SdkError<E>>,
    ) -> Result<Option<T>, Failure>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match result {
            Ok(output) => Ok(Some(output)),
            Err(err) => match self.classify(err) {
                Failure::NotFound => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Sorts an SDK error into what the caller can act on, with a message saying what happened.
    pub(super) fn classify<E>(&self, err: SdkError<E>) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let attempts = self.config.max_attempts;
        let endpoint = self.endpoint_label();
        match &err {
            SdkError::TimeoutError(_) => {
                return Failure::Other(
                    io::ErrorKind::TimedOut,
                    format!("no answer from {endpoint} in time (up to {attempts} attempts)"),
                );
            }
            SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => {
                let kind = if d.is_timeout() {
                    io::ErrorKind::TimedOut
                } else {
                    io::ErrorKind::ConnectionRefused
                };
                return Failure::Other(
                    kind,
                    format!(
                        "cannot reach {endpoint} (up to {attempts} attempts): {}",
                        error_chain(&err)
                    ),
                );
            }
            SdkError::ServiceError(_) | SdkError::ResponseError(_) => {}
            _ => {
                return Failure::Other(
                    io::ErrorKind::Other,
                    format!("request to {endpoint} failed: {}", error_chain(&err)),
                );
            }
        }
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().unwrap_or_default().to_string();
        let message = err.message().unwrap_or_default().to_string();
        self.classify_service(status, &code, &message)
            .unwrap_or_else(|| {
                Failure::Other(
                    io::ErrorKind::Other,
                    format!(
                        "{endpoint} answered HTTP {}{}{}",
                        status.map_or("?".to_string(), |s| s.to_string()),
                        if code.is_empty() {
                            String::new()
                        } else {
                            format!(" {code}")
                        },
                        if message.is_empty() {
                            String::new()
                        } else {
                            format!(": {message}")
                        },
                    ),
                )
            })
    }

    pub(super) fn classify_service(
        &self,
        status: Option<u16>,
        code: &str,
        message: &str,
    ) -> Option<Failure> {
        let bucket = &self.config.bucket;
        let endpoint = self.endpoint_label();
        if code == "NoSuchBucket" {
            return Some(Failure::Other(
                io::ErrorKind::NotFound,
                format!("bucket {bucket} does not exist at {endpoint}"),
            ));
        }
        if matches!(code, "NoSuchKey" | "NotFound") || (status == Some(404) && code.is_empty()) {
            return Some(Failure::NotFound);
        }
        if status == Some(412) || code == "PreconditionFailed" {
            return Some(Failure::PreconditionFailed);
        }
        if status == Some(416) || code == "InvalidRange" {
            return Some(Failure::RangeNotSatisfiable);
        }
        let access_codes = [
            "AccessDenied",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "InvalidToken",
            "ExpiredToken",
            "AllAccessDisabled",
        ];
        if status == Some(403) || access_codes.contains(&code) {
            let what = if code.is_empty() { "403" } else { code };
            return Some(Failure::Other(
                io::ErrorKind::PermissionDenied,
                format!(
                    "access denied ({what}): check the credentials for target {}{}",
                    self.name,
                    self.credential_hint()
                ),
            ));
        }
        if code == "ConditionalRequestConflict" {
            // S3 refuses a conditional write that races another write of the same key.
            return Some(Failure::Other(
                io::ErrorKind::ResourceBusy,
                "another upload of this object was in progress (409 ConditionalRequestConflict); \
                 the next run or `gitvault sync` retries it"
                    .into(),
            ));
        }
        if status == Some(301)
            || matches!(code, "PermanentRedirect" | "AuthorizationHeaderMalformed")
        {
            return Some(Failure::Other(
                io::ErrorKind::Other,
                format!(
                    "bucket {bucket} is in another region ({code}{}): set region= in the target \
                     URL",
                    if message.is_empty() {
                        String::new()
                    } else {
                        format!(": {message}")
                    }
                ),
            ));
        }
        None
    }

    pub(super) fn credential_hint(&self) -> String {
        match &self.config.credential_env {
            Some((access, secret)) => format!(" (taken from ${access} and ${secret})"),
            None => " (from the AWS environment variables or profile)".into(),
        }
    }

    pub(super) fn other(message: impl Into<String>) -> Failure {
        Failure::Other(io::ErrorKind::Other, message.into())
    }
}

/// An error and its causes on one line ("dispatch failure: io error: … Connection refused"),
/// without the SDK's `Debug` dump of the whole response.
pub(super) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = e.source();
    }
    text
}

/// A 200 answer whose body did not parse (a real S3 error inside a 200 parses, with a code).
pub(super) fn answered_200_unreadably<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    let status = err.raw_response().map(|r| r.status().as_u16());
    status == Some(200) && err.code().is_none()
}
