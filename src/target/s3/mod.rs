//! `s3://` target: a bucket (and optional key prefix) on Amazon S3 or an S3-compatible service.
//!
//! URL: `s3://BUCKET/PREFIX?endpoint=URL&region=R&path_style=true&access_key_env=VAR&secret_key_env=VAR&max_attempts=N`
//! (every query parameter is optional; unknown ones are refused so that a typo cannot silently
//! fall back to defaults). The URL never holds a secret: it names the environment variables that
//! do, or leaves credentials to the standard AWS chain (environment, profile files).
//!
//! The `Target` trait is blocking, so each target owns a small tokio runtime and blocks on it
//! for every call. Several threads may call at once (one pack is uploaded to several targets on
//! scoped threads); `Runtime::block_on` allows that. The trait must not be called from inside
//! another tokio runtime.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::task::JoinSet;
use zeroize::Zeroizing;

use super::{Body, Listed, PutOutcome, Target, TargetError, check_key};

/// Bodies larger than this go up in parts: a failed part is retried alone, and no single request
/// runs for minutes.
const MULTIPART_THRESHOLD: u64 = 16 << 20;
/// Part size; grows for huge bodies because S3 allows at most 10,000 parts.
const PART_SIZE: u64 = 16 << 20;
const MAX_PARTS: u64 = 10_000;
/// Parts uploaded at once (the runtime has two workers; the waiting is on the network).
const PARTS_IN_FLIGHT: usize = 4;
/// S3's own maximum page size.
const LIST_PAGE_SIZE: i32 = 1000;
const DEFAULT_MAX_ATTEMPTS: u32 = 5;
const DEFAULT_REGION: &str = "us-east-1";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Small requests (head, list, delete, the start of a download) should answer quickly; a server
/// that accepts connections but never answers must not hang a backup for long.
const SMALL_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);
/// An upload attempt carries at most one part (16 MiB): generous for slow links.
const UPLOAD_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(300);

/// What an `s3://` URL says, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct S3Url {
    bucket: String,
    /// Empty, or ends with `/`.
    prefix: String,
    endpoint: Option<String>,
    region: Option<String>,
    path_style: bool,
    /// Names of environment variables (never their values).
    credential_env: Option<(String, String)>,
    max_attempts: u32,
}

impl S3Url {
    fn parse(url: &str) -> Result<S3Url, String> {
        let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
        if parsed.scheme() != "s3" {
            return Err("not an s3:// URL".into());
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(
                "credentials do not belong in the URL: name environment variables with \
                 access_key_env= and secret_key_env=, or use the AWS environment or profile"
                    .into(),
            );
        }
        if parsed.port().is_some() {
            return Err("the bucket cannot have a port: use endpoint= for the server".into());
        }
        let bucket = parsed.host_str().unwrap_or_default().to_string();
        if !valid_bucket(&bucket) {
            return Err(format!(
                "`{bucket}` is not a valid bucket name (3-63 lowercase letters, digits, dots and \
                 hyphens)"
            ));
        }
        let prefix = parse_prefix(parsed.path())?;

        let mut endpoint = None;
        let mut region = None;
        let mut path_style = None;
        let mut access_key_env = None;
        let mut secret_key_env = None;
        let mut max_attempts = None;
        for (name, value) in parsed.query_pairs() {
            let value = value.into_owned();
            let slot_taken = match name.as_ref() {
                "endpoint" => endpoint.replace(parse_endpoint(&value)?).is_some(),
                "region" => region.replace(value).is_some(),
                "path_style" => path_style.replace(parse_bool(&value)?).is_some(),
                "access_key_env" => access_key_env.replace(env_name(&value)?).is_some(),
                "secret_key_env" => secret_key_env.replace(env_name(&value)?).is_some(),
                "max_attempts" => max_attempts.replace(parse_attempts(&value)?).is_some(),
                other => {
                    return Err(format!(
                        "unknown parameter `{other}` (known: endpoint, region, path_style, \
                         access_key_env, secret_key_env, max_attempts)"
                    ));
                }
            };
            if slot_taken {
                return Err(format!("parameter `{name}` is given twice"));
            }
        }
        let credential_env = match (access_key_env, secret_key_env) {
            (Some(a), Some(s)) => Some((a, s)),
            (None, None) => None,
            _ => return Err("give both access_key_env= and secret_key_env=, or neither".into()),
        };
        if region.as_deref() == Some("") {
            return Err("region= is empty".into());
        }
        Ok(S3Url {
            bucket,
            prefix,
            // S3-compatible servers rarely have wildcard DNS for virtual-hosted buckets.
            path_style: path_style.unwrap_or(endpoint.is_some()),
            endpoint,
            region,
            credential_env,
            max_attempts: max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
        })
    }
}

fn valid_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !name.starts_with(['.', '-'])
        && !name.ends_with(['.', '-'])
}

/// The URL path as a key prefix: `""` or `a/b/`. Its parts follow the object-name rules, so a
/// prefix cannot smuggle `..` or odd characters into keys.
fn parse_prefix(path: &str) -> Result<String, String> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    check_key("", trimmed).map_err(|_| {
        format!("prefix `{trimmed}` may only hold letters, digits, `.`, `-`, `_` and `/`")
    })?;
    Ok(format!("{trimmed}/"))
}

fn parse_endpoint(value: &str) -> Result<String, String> {
    let url = url::Url::parse(value).map_err(|e| format!("endpoint= is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("endpoint= must be an http:// or https:// URL".into());
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
        return Err("endpoint= must not carry credentials or a query".into());
    }
    Ok(value.trim_end_matches('/').to_string())
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("path_style= takes true or false, not `{value}`")),
    }
}

fn env_name(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(value.to_string())
    } else {
        Err(format!(
            "`{value}` is not an environment variable name (the URL names the variables that \
             hold credentials, never the credentials themselves)"
        ))
    }
}

fn parse_attempts(value: &str) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(n) if (1..=10).contains(&n) => Ok(n),
        _ => Err(format!("max_attempts= takes 1 to 10, not `{value}`")),
    }
}

/// `s3://user:password@…` must not reach an error message verbatim.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

/// How a request failed, before it becomes a `TargetError`.
enum Failure {
    NotFound,
    /// `If-None-Match: *` found an object of that name.
    PreconditionFailed,
    /// A range that starts at or past the end of the object.
    RangeNotSatisfiable,
    Other(io::ErrorKind, String),
}

pub struct S3Target {
    name: String,
    url: String,
    config: S3Url,
    client: Client,
    /// Why every request will fail (credentials named in the URL are missing from the
    /// environment). Kept rather than refused at open, so that a vault with this target still
    /// opens for work that does not touch it.
    unusable: Option<String>,
    /// The secret key when we read it ourselves, only to scrub it from error text.
    secret: Option<Zeroizing<String>>,
    list_page_size: i32,
    runtime: tokio::runtime::Runtime,
}

impl S3Target {
    /// Opens the target an `s3://` URL names. Does no network I/O: a missing bucket or wrong
    /// credentials show on the first request.
    pub fn open(name: &str, url: &str) -> Result<S3Target, TargetError> {
        let config = S3Url::parse(url).map_err(|reason| TargetError::BadUrl {
            url: redact_url(url),
            reason,
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("gitvault-s3")
            .enable_all()
            .build()
            .map_err(|source| TargetError::Io {
                target: name.to_string(),
                op: "open",
                key: String::new(),
                source,
            })?;
        let (credentials, unusable, secret) = match &config.credential_env {
            Some((access_var, secret_var)) => match credentials_from_env(access_var, secret_var) {
                Ok((creds, secret)) => (Some(creds), None, Some(secret)),
                Err(why) => (None, Some(why), None),
            },
            None => (None, None, None),
        };
        let client = runtime.block_on(build_client(&config, credentials));
        Ok(S3Target {
            name: name.to_string(),
            url: url.to_string(),
            config,
            client,
            unusable,
            secret,
            list_page_size: LIST_PAGE_SIZE,
            runtime,
        })
    }

    /// For tests: a small page size exercises ListObjectsV2 pagination with few objects.
    #[doc(hidden)]
    pub fn set_list_page_size(&mut self, size: i32) {
        self.list_page_size = size.clamp(1, LIST_PAGE_SIZE);
    }

    fn full_key(&self, key: &str) -> Result<String, TargetError> {
        check_key(&self.name, key)?;
        Ok(format!("{}{key}", self.config.prefix))
    }

    /// Runs one request on the runtime and turns its failure into a `TargetError`.
    fn run<T>(
        &self,
        op: &'static str,
        key: &str,
        work: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, TargetError> {
        if let Some(why) = &self.unusable {
            return Err(self.io_error(op, key, io::ErrorKind::Other, why.clone()));
        }
        self.runtime
            .block_on(work)
            .map_err(|failure| self.target_error(op, key, failure))
    }

    fn target_error(&self, op: &'static str, key: &str, failure: Failure) -> TargetError {
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
            Failure::Other(kind, message) => self.io_error(op, key, kind, message),
        }
    }

    fn io_error(
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
    fn scrub(&self, message: String) -> String {
        match &self.secret {
            Some(secret) if secret.len() >= 4 && message.contains(secret.as_str()) => {
                message.replace(secret.as_str(), "***")
            }
            _ => message,
        }
    }

    fn endpoint_label(&self) -> &str {
        self.config
            .endpoint
            .as_deref()
            .unwrap_or("the AWS S3 endpoint")
    }

    /// Sorts an SDK error into what the caller can act on, with a message saying what happened.
    fn classify<E>(&self, err: SdkError<E>) -> Failure
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

    fn classify_service(&self, status: Option<u16>, code: &str, message: &str) -> Option<Failure> {
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

    fn credential_hint(&self) -> String {
        match &self.config.credential_env {
            Some((access, secret)) => format!(" (taken from ${access} and ${secret})"),
            None => " (from the AWS environment variables or profile)".into(),
        }
    }

    fn other(message: impl Into<String>) -> Failure {
        Failure::Other(io::ErrorKind::Other, message.into())
    }

    /// An upload of a whole body in one request, create-only or not.
    async fn put_single(
        &self,
        full_key: &str,
        body: Body<'_>,
        create_only: bool,
    ) -> Result<PutOutcome, Failure> {
        let stream = match body {
            Body::Bytes(bytes) => ByteStream::from(bytes.to_vec()),
            // Streams from disk, and can be reopened when the SDK retries.
            Body::File(path) => ByteStream::from_path(path)
                .await
                .map_err(|e| Self::other(format!("reading {}: {e}", path.display())))?,
        };
        let mut request = self
            .client
            .put_object()
            .bucket(&self.config.bucket)
            .key(full_key)
            .body(stream);
        if create_only {
            request = request.if_none_match("*");
        }
        match request
            .customize()
            .config_override(upload_timeouts())
            .send()
            .await
        {
            Ok(_) => Ok(PutOutcome::Created),
            Err(err) => match self.classify(err) {
                // Also what a retried create sees when its first attempt landed.
                Failure::PreconditionFailed if create_only => Ok(PutOutcome::AlreadyPresent),
                other => Err(other),
            },
        }
    }

    /// A multipart upload; aborted on any failure so that no orphaned parts keep costing money.
    async fn put_multipart(
        &self,
        full_key: &str,
        body: Body<'_>,
        size: u64,
        create_only: bool,
    ) -> Result<PutOutcome, Failure> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.config.bucket)
            .key(full_key)
            .send()
            .await
            .map_err(|e| self.classify(e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| Self::other("the server started a multipart upload without an id"))?
            .to_string();
        let result = self
            .upload_parts_and_complete(full_key, &upload_id, body, size, create_only)
            .await;
        if !matches!(result, Ok(PutOutcome::Created)) {
            // Best effort: a failed abort leaves parts that a bucket lifecycle rule can expire.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.config.bucket)
                .key(full_key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    async fn upload_parts_and_complete(
        &self,
        full_key: &str,
        upload_id: &str,
        body: Body<'_>,
        size: u64,
        create_only: bool,
    ) -> Result<PutOutcome, Failure> {
        let part_size = part_size(size);
        let part_count = size.div_ceil(part_size).max(1);
        let mut in_flight = JoinSet::new();
        let mut done: Vec<CompletedPart> = Vec::with_capacity(part_count as usize);
        for index in 0..part_count {
            if in_flight.len() >= PARTS_IN_FLIGHT {
                done.push(self.next_part(&mut in_flight).await?);
            }
            let offset = index * part_size;
            let len = part_size.min(size - offset);
            let source = PartSource::new(body, offset, len);
            let request = self
                .client
                .upload_part()
                .bucket(&self.config.bucket)
                .key(full_key)
                .upload_id(upload_id)
                .part_number((index + 1) as i32);
            in_flight.spawn(async move {
                let stream = source.stream().await?;
                let output = request
                    .body(stream)
                    .customize()
                    .config_override(upload_timeouts())
                    .send()
                    .await?;
                Ok::<_, PartError>(
                    CompletedPart::builder()
                        .part_number((index + 1) as i32)
                        .set_e_tag(output.e_tag().map(str::to_string))
                        .build(),
                )
            });
        }
        while !in_flight.is_empty() {
            done.push(self.next_part(&mut in_flight).await?);
        }
        done.sort_by_key(|p| p.part_number());

        let mut complete = self
            .client
            .complete_multipart_upload()
            .bucket(&self.config.bucket)
            .key(full_key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            );
        if create_only {
            // S3 (since 2024), moto and s3s-fs check the condition at completion.
            complete = complete.if_none_match("*");
        }
        match complete.send().await {
            Ok(_) => Ok(PutOutcome::Created),
            Err(err) if answered_200_unreadably(&err) => {
                self.confirm_completed(full_key, size).await
            }
            Err(err) => match self.classify(err) {
                Failure::PreconditionFailed if create_only => Ok(PutOutcome::AlreadyPresent),
                other => Err(other),
            },
        }
    }

    /// Some servers (moto 5.2) answer a successful completion with a body the SDK cannot parse
    /// (`<CompleteMultipartUploadResponse>` where S3 sends `<CompleteMultipartUploadResult>`).
    /// A 200 means the object was assembled; the object's size confirms it.
    async fn confirm_completed(&self, full_key: &str, size: u64) -> Result<PutOutcome, Failure> {
        match self.head_async(full_key).await? {
            Some(stored) if stored == size => Ok(PutOutcome::Created),
            stored => Err(Self::other(format!(
                "{} answered the multipart completion with an unreadable body, and the object \
                 holds {stored:?} bytes where {size} were uploaded",
                self.endpoint_label()
            ))),
        }
    }

    /// Waits for one part; on failure the remaining parts are cancelled when `in_flight` drops.
    async fn next_part(
        &self,
        in_flight: &mut JoinSet<Result<CompletedPart, PartError>>,
    ) -> Result<CompletedPart, Failure> {
        match in_flight.join_next().await {
            Some(Ok(Ok(part))) => Ok(part),
            Some(Ok(Err(PartError::Read(message)))) => Err(Self::other(message)),
            Some(Ok(Err(PartError::Request(err)))) => Err(self.classify(*err)),
            Some(Err(join)) => Err(Self::other(format!("part upload task failed: {join}"))),
            None => Err(Self::other("no part upload was running")),
        }
    }

    async fn put_any(
        &self,
        full_key: &str,
        body: Body<'_>,
        create_only: bool,
    ) -> Result<PutOutcome, Failure> {
        let size = body_size(body)?;
        if size <= MULTIPART_THRESHOLD {
            return self.put_single(full_key, body, create_only).await;
        }
        // Uploading a big pack that is already there would be wasted time; the conditional
        // completion below still guards against a race with another writer.
        if create_only && self.head_async(full_key).await?.is_some() {
            return Ok(PutOutcome::AlreadyPresent);
        }
        self.put_multipart(full_key, body, size, create_only).await
    }

    /// A HEAD answer has no body, so a missing bucket (404 without a code) reads as a missing
    /// object here; the next upload or listing names the bucket.
    async fn head_object_async(
        &self,
        full_key: &str,
    ) -> Result<Option<aws_sdk_s3::operation::head_object::HeadObjectOutput>, Failure> {
        let result = self
            .client
            .head_object()
            .bucket(&self.config.bucket)
            .key(full_key)
            .send()
            .await;
        match result {
            Ok(output) => Ok(Some(output)),
            Err(err) => match self.classify(err) {
                Failure::NotFound => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn modified_async(
        &self,
        full_key: &str,
    ) -> Result<Option<std::time::SystemTime>, Failure> {
        Ok(self.head_object_async(full_key).await?.and_then(|output| {
            output
                .last_modified()
                .and_then(|t| std::time::SystemTime::try_from(*t).ok())
        }))
    }

    async fn head_async(&self, full_key: &str) -> Result<Option<u64>, Failure> {
        Ok(self.head_object_async(full_key).await?.map(|output| {
            output
                .content_length()
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0)
        }))
    }

    /// GET of a whole object or a byte range. A body cut off mid-transfer is not retried by the
    /// SDK (its retries end when the headers arrive), so the whole request is retried here.
    async fn get_async(&self, full_key: &str, range: Option<String>) -> Result<Vec<u8>, Failure> {
        let mut attempt = 1;
        loop {
            let output = self
                .client
                .get_object()
                .bucket(&self.config.bucket)
                .key(full_key)
                .set_range(range.clone())
                .send()
                .await
                .map_err(|e| self.classify(e))?;
            match output.body.collect().await {
                Ok(bytes) => return Ok(bytes.to_vec()),
                Err(e) if attempt < self.config.max_attempts => {
                    tracing::debug!(target = %self.name, key = full_key, error = %e, attempt, "download cut off; retrying");
                    tokio::time::sleep(Duration::from_millis(250 << attempt.min(6))).await;
                    attempt += 1;
                }
                Err(e) => {
                    return Err(Failure::Other(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "download from {} cut off after {attempt} attempts: {}",
                            self.endpoint_label(),
                            error_chain(&e)
                        ),
                    ));
                }
            }
        }
    }

    async fn list_async(&self, prefix: &str) -> Result<Vec<Listed>, Failure> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.config.bucket)
                .prefix(format!("{}{prefix}", self.config.prefix))
                .max_keys(self.list_page_size)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.classify(e))?;
            for object in page.contents() {
                let Some(key) = object
                    .key()
                    .and_then(|k| k.strip_prefix(self.config.prefix.as_str()))
                else {
                    continue;
                };
                out.push(Listed {
                    key: key.to_string(),
                    size: object
                        .size()
                        .and_then(|n| u64::try_from(n).ok())
                        .unwrap_or(0),
                });
            }
            token = page.next_continuation_token().map(str::to_string);
            // Some servers leave `IsTruncated` out; a token is what lets us go on.
            if !page.is_truncated().unwrap_or(false) || token.is_none() {
                break;
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete_async(&self, full_key: &str) -> Result<(), Failure> {
        let result = self
            .client
            .delete_object()
            .bucket(&self.config.bucket)
            .key(full_key)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) => match self.classify(err) {
                Failure::NotFound => Ok(()),
                other => Err(other),
            },
        }
    }
}

impl Target for S3Target {
    fn name(&self) -> &str {
        &self.name
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn put_if_absent(&self, key: &str, body: Body<'_>) -> Result<PutOutcome, TargetError> {
        let full = self.full_key(key)?;
        self.run("put", key, self.put_any(&full, body, true))
    }

    fn put(&self, key: &str, body: Body<'_>) -> Result<(), TargetError> {
        let full = self.full_key(key)?;
        self.run("put", key, self.put_any(&full, body, false))
            .map(|_| ())
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, TargetError> {
        let full = self.full_key(key)?;
        self.run("get", key, self.get_async(&full, None))
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, TargetError> {
        let full = self.full_key(key)?;
        if len == 0 {
            // `bytes=a-(a-1)` is not a valid range; an empty read needs no request.
            return Ok(Vec::new());
        }
        let last = offset.saturating_add(len - 1);
        let range = Some(format!("bytes={offset}-{last}"));
        let work = async {
            match self.get_async(&full, range).await {
                // Like a file read past the end: nothing, rather than an error.
                Err(Failure::RangeNotSatisfiable) => Ok(Vec::new()),
                other => other,
            }
        };
        self.run("get", key, work)
    }

    fn head(&self, key: &str) -> Result<Option<u64>, TargetError> {
        let full = self.full_key(key)?;
        self.run("head", key, self.head_async(&full))
    }

    fn list(&self, prefix: &str) -> Result<Vec<Listed>, TargetError> {
        self.run("list", prefix, self.list_async(prefix))
    }

    fn modified(&self, key: &str) -> Result<Option<std::time::SystemTime>, TargetError> {
        let full = self.full_key(key)?;
        self.run("head", key, self.modified_async(&full))
    }

    fn delete(&self, key: &str) -> Result<(), TargetError> {
        let full = self.full_key(key)?;
        self.run("delete", key, self.delete_async(&full))
    }
}

/// Reads the credentials the URL names. Returns a reason (naming only the variables) when one
/// is missing.
fn credentials_from_env(
    access_var: &str,
    secret_var: &str,
) -> Result<(Credentials, Zeroizing<String>), String> {
    let read = |var: &str| match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(Zeroizing::new(v)),
        _ => Err(format!(
            "environment variable {var} (named in the target URL) is not set"
        )),
    };
    let access = read(access_var)?;
    let secret = read(secret_var)?;
    let creds = Credentials::new(
        access.as_str(),
        secret.as_str(),
        None,
        None,
        "gitvault-url-env",
    );
    Ok((creds, secret))
}

async fn build_client(config: &S3Url, credentials: Option<Credentials>) -> Client {
    // Region: the URL, else AWS_REGION or the profile, else us-east-1. Not the full default
    // chain: it asks the EC2 metadata service, which costs seconds off EC2.
    let region = RegionProviderChain::first_try(config.region.clone().map(Region::new))
        .or_else(aws_config::environment::region::EnvironmentVariableRegionProvider::new())
        .or_else(aws_config::profile::ProfileFileRegionProvider::new())
        .or_else(Region::from_static(DEFAULT_REGION));
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(region);
    if let Some(creds) = credentials {
        loader = loader.credentials_provider(creds);
    }
    let shared = loader.load().await;
    let mut builder = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(config.path_style)
        // The default (checksums "when supported") frames bodies as aws-chunked with trailing
        // checksums, which some S3-compatible servers store verbatim: silent corruption.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .retry_config(RetryConfig::standard().with_max_attempts(config.max_attempts))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(SMALL_ATTEMPT_TIMEOUT)
                .build(),
        );
    if let Some(endpoint) = &config.endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    Client::from_conf(builder.build())
}

/// An error and its causes on one line ("dispatch failure: io error: … Connection refused"),
/// without the SDK's `Debug` dump of the whole response.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
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
fn answered_200_unreadably<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    let status = err.raw_response().map(|r| r.status().as_u16());
    status == Some(200) && err.code().is_none()
}

/// Uploads carry up to a part's worth of bytes per attempt: they get a longer attempt timeout.
fn upload_timeouts() -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default().timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(UPLOAD_ATTEMPT_TIMEOUT)
            .build(),
    )
}

fn part_size(size: u64) -> u64 {
    let needed = size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20);
    PART_SIZE.max(needed)
}

fn body_size(body: Body<'_>) -> Result<u64, Failure> {
    match body {
        Body::Bytes(bytes) => Ok(bytes.len() as u64),
        Body::File(path) => std::fs::metadata(path)
            .map(|m| m.len())
            .map_err(|e| Failure::Other(e.kind(), format!("reading {}: {e}", path.display()))),
    }
}

/// The bytes of one part, owned so that the upload can run as its own task.
enum PartSource {
    Bytes(Vec<u8>),
    File {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
}

impl PartSource {
    fn new(body: Body<'_>, offset: u64, len: u64) -> PartSource {
        match body {
            Body::Bytes(bytes) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let end = usize::try_from(offset + len)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                PartSource::Bytes(bytes[start..end].to_vec())
            }
            Body::File(path) => PartSource::File {
                path: path.to_path_buf(),
                offset,
                len,
            },
        }
    }

    /// Reads a file part straight from disk (and again on a retry), never the whole file.
    async fn stream(self) -> Result<ByteStream, PartError> {
        match self {
            PartSource::Bytes(bytes) => Ok(ByteStream::from(bytes)),
            PartSource::File { path, offset, len } => ByteStream::read_from()
                .path(&path)
                .offset(offset)
                .length(Length::Exact(len))
                .build()
                .await
                .map_err(|e| PartError::Read(format!("reading {}: {e}", path.display()))),
        }
    }
}

enum PartError {
    Read(String),
    Request(Box<SdkError<aws_sdk_s3::operation::upload_part::UploadPartError>>),
}

impl From<SdkError<aws_sdk_s3::operation::upload_part::UploadPartError>> for PartError {
    fn from(err: SdkError<aws_sdk_s3::operation::upload_part::UploadPartError>) -> PartError {
        PartError::Request(Box::new(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_url() {
        let u = S3Url::parse(
            "s3://my-bucket/backups/vault1/?endpoint=http://127.0.0.1:9000&region=eu-west-1\
             &path_style=false&access_key_env=AK&secret_key_env=SK&max_attempts=2",
        )
        .unwrap();
        assert_eq!(u.bucket, "my-bucket");
        assert_eq!(u.prefix, "backups/vault1/");
        assert_eq!(u.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(u.region.as_deref(), Some("eu-west-1"));
        assert!(!u.path_style);
        assert_eq!(u.credential_env, Some(("AK".into(), "SK".into())));
        assert_eq!(u.max_attempts, 2);
    }

    #[test]
    fn defaults() {
        let u = S3Url::parse("s3://bucket").unwrap();
        assert_eq!(u.prefix, "");
        assert!(!u.path_style);
        assert_eq!(u.max_attempts, DEFAULT_MAX_ATTEMPTS);
        let u = S3Url::parse("s3://bucket/?endpoint=http://localhost:1").unwrap();
        assert!(u.path_style, "an endpoint implies path style");
    }

    #[test]
    fn refuses_bad_urls() {
        for url in [
            "s3://bucket/?color=red",
            "s3://bucket/?region=a&region=b",
            "s3://bucket/?access_key_env=A",
            "s3://bucket/?access_key_env=A&secret_key_env=not%20a%20name",
            "s3://bucket/a%20b",
            "s3://bucket/?endpoint=ftp://x",
            "s3://bucket/?path_style=maybe",
            "s3://bucket/?max_attempts=0",
            "s3://BadBucket/",
            "s3://ab/",
            "s3://bucket:9000/",
        ] {
            assert!(S3Url::parse(url).is_err(), "{url}");
        }
    }

    #[test]
    fn secrets_in_urls_are_refused_and_redacted() {
        let err = S3Target::open("t", "s3://AKID:supersecret@bucket/")
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(!text.contains("supersecret"), "{text}");
        assert!(text.contains("credentials do not belong"), "{text}");
    }

    #[test]
    fn part_sizes_respect_the_part_limit() {
        assert_eq!(part_size(20 << 20), PART_SIZE);
        let huge = 5u64 << 40;
        assert!(huge.div_ceil(part_size(huge)) <= MAX_PARTS);
    }
}
