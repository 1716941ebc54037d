//! Uploads: one request below `MULTIPART_THRESHOLD`, parts above it (a failed part is
//! retried alone, `PARTS_IN_FLIGHT` at a time). Create-only puts send `If-None-Match: *` on the
//! single put or on the multipart completion, so a name is written at most once.

use std::path::Path;

use super::*;

impl S3Target {
    /// An upload of a whole body in one request, create-only or not.
    pub(super) async fn put_single(
        &self,
        full_key: &str,
        body: Body<'_>,
        create_only: bool,
    ) -> Result<PutOutcome, Failure> {
        let lock = self.lock_for(full_key);
        let (stream, md5) = match (body, lock) {
            (Body::Bytes(bytes), None) => (ByteStream::from(bytes.to_vec()), None),
            // Streams from disk, and can be reopened when the SDK retries.
            (Body::File(path), None) => (
                ByteStream::from_path(path)
                    .await
                    .map_err(|e| Self::other(format!("reading {}: {e}", path.display())))?,
                None,
            ),
            // A locked upload needs its MD5 first; single uploads are at most 16 MiB.
            (body, Some(_)) => {
                let bytes = match body {
                    Body::Bytes(bytes) => bytes.to_vec(),
                    Body::File(path) => tokio::fs::read(path)
                        .await
                        .map_err(|e| Self::other(format!("reading {}: {e}", path.display())))?,
                };
                let md5 = retention::content_md5(&bytes);
                (ByteStream::from(bytes), Some(md5))
            }
        };
        let mut request = self
            .client
            .put_object()
            .bucket(&self.config.bucket)
            .key(full_key)
            .set_content_md5(md5)
            .body(stream);
        if let Some(policy) = lock {
            let (mode, until) = Self::lock_headers(policy);
            request = request
                .object_lock_mode(mode)
                .object_lock_retain_until_date(until);
        }
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
            Err(err) => self.refused_put(err, create_only),
        }
    }

    /// A multipart upload; aborted on any failure so that no orphaned parts keep costing money.
    pub(super) async fn put_multipart(
        &self,
        full_key: &str,
        body: Body<'_>,
        size: u64,
        create_only: bool,
    ) -> Result<PutOutcome, Failure> {
        let mut request = self
            .client
            .create_multipart_upload()
            .bucket(&self.config.bucket)
            .key(full_key);
        let lock = self.lock_for(full_key).map(Self::lock_headers);
        if let Some((mode, until)) = &lock {
            request = request
                .object_lock_mode(mode.clone())
                .object_lock_retain_until_date(*until);
        }
        let created = request.send().await.map_err(|e| self.classify(e))?;
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
        if let (Ok(PutOutcome::Created), Some((_, until))) = (&result, lock) {
            self.ensure_locked(full_key, until).await?;
        }
        result
    }

    pub(super) async fn upload_parts_and_complete(
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
            let locked = self.lock_for(full_key).is_some();
            let request = self
                .client
                .upload_part()
                .bucket(&self.config.bucket)
                .key(full_key)
                .upload_id(upload_id)
                .part_number((index + 1) as i32);
            in_flight.spawn(async move {
                let (stream, md5) = source.stream(locked).await?;
                let output = request
                    .set_content_md5(md5)
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
            Err(err) => self.refused_put(err, create_only),
        }
    }

    /// A put that failed: for a create-only put, a failed precondition means the name is taken
    /// (also what a retried create sees when its first attempt landed).
    fn refused_put<E>(&self, err: SdkError<E>, create_only: bool) -> Result<PutOutcome, Failure>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match self.classify(err) {
            Failure::PreconditionFailed if create_only => Ok(PutOutcome::AlreadyPresent),
            other => Err(other),
        }
    }

    /// Some servers (moto 5.2) answer a successful completion with a body the SDK cannot parse
    /// (`<CompleteMultipartUploadResponse>` where S3 sends `<CompleteMultipartUploadResult>`).
    /// A 200 means the object was assembled; the object's size confirms it.
    pub(super) async fn confirm_completed(
        &self,
        full_key: &str,
        size: u64,
    ) -> Result<PutOutcome, Failure> {
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
    pub(super) async fn next_part(
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

    pub(super) async fn put_any(
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
}

pub(super) fn part_size(size: u64) -> u64 {
    let needed = size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20);
    PART_SIZE.max(needed)
}

pub(super) fn body_size(body: Body<'_>) -> Result<u64, Failure> {
    match body {
        Body::Bytes(bytes) => Ok(bytes.len() as u64),
        Body::File(path) => std::fs::metadata(path)
            .map(|m| m.len())
            .map_err(|e| Failure::Other(e.kind(), format!("reading {}: {e}", path.display()))),
    }
}

/// The bytes of one part, owned so that the upload can run as its own task.
pub(super) enum PartSource {
    Bytes(Vec<u8>),
    File {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
}

impl PartSource {
    pub(super) fn new(body: Body<'_>, offset: u64, len: u64) -> PartSource {
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

    /// Reads a file part straight from disk (and again on a retry), never the whole file. A
    /// part of a locked upload is read into memory first: it needs its Content-MD5.
    pub(super) async fn stream(
        self,
        locked: bool,
    ) -> Result<(ByteStream, Option<String>), PartError> {
        let read_error = |path: &Path, e: &dyn std::fmt::Display| {
            PartError::Read(format!("reading {}: {e}", path.display()))
        };
        match self {
            PartSource::Bytes(bytes) => {
                let md5 = locked.then(|| retention::content_md5(&bytes));
                Ok((ByteStream::from(bytes), md5))
            }
            PartSource::File { path, offset, len } if locked => {
                use tokio::io::{AsyncReadExt, AsyncSeekExt};
                let mut file = tokio::fs::File::open(&path)
                    .await
                    .map_err(|e| read_error(&path, &e))?;
                file.seek(std::io::SeekFrom::Start(offset))
                    .await
                    .map_err(|e| read_error(&path, &e))?;
                let mut bytes = vec![0; usize::try_from(len).unwrap_or(usize::MAX)];
                file.read_exact(&mut bytes)
                    .await
                    .map_err(|e| read_error(&path, &e))?;
                let md5 = retention::content_md5(&bytes);
                Ok((ByteStream::from(bytes), Some(md5)))
            }
            PartSource::File { path, offset, len } => ByteStream::read_from()
                .path(&path)
                .offset(offset)
                .length(Length::Exact(len))
                .build()
                .await
                .map(|stream| (stream, None))
                .map_err(|e| read_error(&path, &e)),
        }
    }
}

pub(super) enum PartError {
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
    fn part_sizes_respect_the_part_limit() {
        assert_eq!(part_size(20 << 20), PART_SIZE);
        let huge = 5u64 << 40;
        assert!(huge.div_ceil(part_size(huge)) <= MAX_PARTS);
    }
}
