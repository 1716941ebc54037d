//! Object Lock on an `s3://` target (docs/OBJECT-LOCK.md): the lock headers of uploads, the
//! bucket check of `target add`, reading a lock (HeadObject: GetObjectRetention is missing or
//! broken on some servers), renewing locks in batches, and deletes that remove object versions
//! rather than hiding them behind a delete marker.

use std::time::SystemTime;

use aws_sdk_s3::primitives::DateTime;
use aws_sdk_s3::types::{
    ObjectLockEnabled, ObjectLockMode, ObjectLockRetention, ObjectLockRetentionMode,
};
use md5::{Digest, Md5};

use super::*;
use crate::target::{LockMode, LockPolicy, Retention, lock_applies, rfc3339};

/// Lock requests sent at once: each is a small request, and a vault has many packs.
const LOCK_BATCH: usize = 16;

impl S3Target {
    /// Makes every upload but the leases under `locks/` carry `lock`.
    pub fn with_lock(mut self, lock: Option<LockPolicy>) -> S3Target {
        self.lock = lock;
        self
    }

    /// The policy an upload of `full_key` is written with, if any.
    pub(super) fn lock_for(&self, full_key: &str) -> Option<LockPolicy> {
        let key = full_key.strip_prefix(self.config.prefix.as_str())?;
        self.lock.filter(|_| lock_applies(key))
    }

    /// The mode and date of an upload written now under `policy`.
    pub(super) fn lock_headers(policy: LockPolicy) -> (ObjectLockMode, DateTime) {
        let mode = match policy.mode {
            LockMode::Compliance => ObjectLockMode::Compliance,
            LockMode::Governance => ObjectLockMode::Governance,
        };
        (mode, DateTime::from(policy.retain_until(SystemTime::now())))
    }

    /// `target add --lock-days`: the bucket must have Object Lock enabled, or every locked
    /// upload would be refused (or, on a lax server, silently stored unlocked).
    pub(super) async fn check_lock_async(&self) -> Result<Result<(), String>, Failure> {
        let result = self
            .client
            .get_object_lock_configuration()
            .bucket(&self.config.bucket)
            .send()
            .await;
        let bucket = &self.config.bucket;
        let hint = "Object Lock can only be turned on when a bucket is created (on AWS also \
                    later, by support or the console); create a bucket with Object Lock enabled \
                    (`aws s3api create-bucket --object-lock-enabled-for-bucket`) or add this \
                    target without --lock-days";
        match result {
            Ok(out) => {
                let enabled = out
                    .object_lock_configuration()
                    .and_then(|c| c.object_lock_enabled())
                    == Some(&ObjectLockEnabled::Enabled);
                Ok(if enabled {
                    Ok(())
                } else {
                    Err(format!(
                        "bucket {bucket} does not have Object Lock enabled. {hint}"
                    ))
                })
            }
            Err(err) => {
                let code = err.code().unwrap_or_default().to_string();
                if code == "ObjectLockConfigurationNotFoundError" {
                    return Ok(Err(format!(
                        "bucket {bucket} has no Object Lock configuration. {hint}"
                    )));
                }
                match self.classify(err) {
                    Failure::Other(_, message) if code == "NotImplemented" => Ok(Err(format!(
                        "{} does not support Object Lock ({message})",
                        self.endpoint_label()
                    ))),
                    other => Err(other),
                }
            }
        }
    }

    /// The lock an object carries, read from HeadObject; `None` when it is missing.
    pub(super) async fn retention_async(
        &self,
        full_key: &str,
    ) -> Result<Option<Retention>, Failure> {
        Ok(self.head_object_async(full_key).await?.map(|out| {
            let mode = match out.object_lock_mode() {
                Some(ObjectLockMode::Compliance) => Some(LockMode::Compliance),
                Some(ObjectLockMode::Governance) => Some(LockMode::Governance),
                _ => None,
            };
            let time = |t: Option<&DateTime>| t.and_then(|t| SystemTime::try_from(*t).ok());
            Retention {
                mode,
                until: time(out.object_lock_retain_until_date()),
                written: time(out.last_modified()),
            }
        }))
    }

    /// Renews one object's lock when it needs it; the date it is kept until afterwards.
    async fn renew_async(
        &self,
        policy: LockPolicy,
        full_key: &str,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, Failure> {
        let Some(found) = self.retention_async(full_key).await? else {
            return Ok(None);
        };
        if let Some(until) = found.until
            && !policy.needs_renewal(until, now)
        {
            return Ok(Some(until));
        }
        // Only ever later: `needs_renewal` means the lock ends before now + period/2.
        let until = policy.retain_until(now);
        self.put_retention(policy, full_key, DateTime::from(until))
            .await?;
        tracing::debug!(target = %self.name, key = full_key, until = %rfc3339(until), "lock renewed");
        Ok(Some(until))
    }

    async fn put_retention(
        &self,
        policy: LockPolicy,
        full_key: &str,
        until: DateTime,
    ) -> Result<(), Failure> {
        let mode = match policy.mode {
            LockMode::Compliance => ObjectLockRetentionMode::Compliance,
            LockMode::Governance => ObjectLockRetentionMode::Governance,
        };
        self.client
            .put_object_retention()
            .bucket(&self.config.bucket)
            .key(full_key)
            .retention(
                ObjectLockRetention::builder()
                    .mode(mode)
                    .retain_until_date(until)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.classify(e))?;
        Ok(())
    }

    /// After a multipart upload: some servers (moto 5.2) drop the lock headers given when the
    /// upload started, so the lock is checked and set again where it is missing or shorter.
    pub(super) async fn ensure_locked(
        &self,
        full_key: &str,
        until: DateTime,
    ) -> Result<(), Failure> {
        let Some(policy) = self.lock_for(full_key) else {
            return Ok(());
        };
        let wanted = SystemTime::try_from(until).ok();
        let found = self.retention_async(full_key).await?.and_then(|r| r.until);
        if found.is_none() || found < wanted {
            tracing::debug!(target = %self.name, key = full_key, "the multipart upload came out unlocked; locking it");
            self.put_retention(policy, full_key, until).await?;
        }
        Ok(())
    }

    /// Runs `each` over `keys`, `LOCK_BATCH` requests at a time; answers in the keys' order.
    fn batched<T, F, Fut>(
        &self,
        op: &'static str,
        keys: &[String],
        each: F,
    ) -> Vec<Result<T, TargetError>>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut out = Vec::with_capacity(keys.len());
        for batch in keys.chunks(LOCK_BATCH) {
            if let Some(why) = &self.unusable {
                out.extend(
                    batch
                        .iter()
                        .map(|k| Err(self.io_error(op, k, io::ErrorKind::Other, why.clone()))),
                );
                continue;
            }
            let work = futures_util::future::join_all(batch.iter().map(|key| {
                let request = self.full_key(key).map(&each);
                async move {
                    request?
                        .await
                        .map_err(|failure| self.target_error(op, key, failure))
                }
            }));
            out.extend(self.runtime.block_on(work));
        }
        out
    }

    pub(super) fn retentions_batched(
        &self,
        keys: &[String],
    ) -> Vec<Result<Option<Retention>, TargetError>> {
        self.batched("head", keys, |full| async move {
            self.retention_async(&full).await
        })
    }

    pub(super) fn renew_batched(
        &self,
        keys: &[String],
    ) -> Vec<Result<Option<SystemTime>, TargetError>> {
        let Some(policy) = self.lock else {
            return keys.iter().map(|_| Ok(None)).collect();
        };
        let now = SystemTime::now();
        self.batched("renew lock", keys, |full| async move {
            self.renew_async(policy, &full, now).await
        })
    }

    /// A delete on a locked target: refused while the current version is locked; otherwise
    /// every version of the key (and delete marker) is removed. A plain DeleteObject on a
    /// versioned bucket would only hide the object behind a delete marker and keep paying for
    /// it.
    pub(super) async fn delete_versions_async(&self, full_key: &str) -> Result<(), Failure> {
        if let Some(found) = self.retention_async(full_key).await?
            && let Some(until) = found.until
            && until > SystemTime::now()
        {
            return Err(Failure::Locked(Some(until)));
        }
        let listed = self
            .client
            .list_object_versions()
            .bucket(&self.config.bucket)
            .prefix(full_key)
            .send()
            .await
            .map_err(|e| self.classify(e))?;
        let versions = listed
            .versions()
            .iter()
            .filter(|v| v.key() == Some(full_key))
            .filter_map(|v| v.version_id());
        let markers = listed
            .delete_markers()
            .iter()
            .filter(|m| m.key() == Some(full_key))
            .filter_map(|m| m.version_id());
        for version in versions.chain(markers) {
            let result = self
                .client
                .delete_object()
                .bucket(&self.config.bucket)
                .key(full_key)
                .version_id(version)
                .send()
                .await;
            match self.unless_missing(result) {
                Ok(_) => {}
                // An older version still locked (or no s3:DeleteObjectVersion permission).
                Err(Failure::Other(io::ErrorKind::PermissionDenied, _)) => {
                    return Err(Failure::Locked(None));
                }
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }
}

/// Content-MD5 of a locked upload: S3 requires it (or a checksum header) on every request that
/// carries a lock, and unlike the SDK's trailing checksums every S3-compatible server reads it.
pub(super) fn content_md5(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(bytes))
}
