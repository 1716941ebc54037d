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
use address::{S3Url, redact_url};
use errors::{Failure, answered_200_unreadably, error_chain};

mod address;
mod errors;
mod retention;
mod upload;

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
    /// Object Lock for every upload but the leases under `locks/` (docs/OBJECT-LOCK.md).
    lock: Option<crate::target::LockPolicy>,
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
            lock: None,
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
        self.unless_missing(result)
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
        // Deleting what is not there leaves what was asked for.
        self.unless_missing(result).map(|_| ())
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
        // On a locked (versioned) bucket a plain delete only adds a delete marker: the data,
        // a lease under `locks/` included, would stay and be paid for forever.
        if self.lock.is_some() {
            return self.run("delete", key, self.delete_versions_async(&full));
        }
        self.run("delete", key, self.delete_async(&full))
    }

    fn lock_policy(&self) -> Option<crate::target::LockPolicy> {
        self.lock
    }

    fn check_lock_support(&self) -> Result<(), TargetError> {
        self.run("check Object Lock of", "", self.check_lock_async())?
            .map_err(|reason| TargetError::LockUnsupported {
                target: self.name.clone(),
                reason,
            })
    }

    fn retentions(
        &self,
        keys: &[String],
    ) -> Vec<Result<Option<crate::target::Retention>, TargetError>> {
        self.retentions_batched(keys)
    }

    fn renew_locks(
        &self,
        keys: &[String],
    ) -> Vec<Result<Option<std::time::SystemTime>, TargetError>> {
        self.renew_batched(keys)
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

/// Uploads carry up to a part's worth of bytes per attempt: they get a longer attempt timeout.
fn upload_timeouts() -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default().timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(UPLOAD_ATTEMPT_TIMEOUT)
            .build(),
    )
}
