//! Workspace snapshots in S3 (`HANDS_WORKSPACE_BUCKET`): one gzip'd tar per session, key
//! `workspaces/<session id>.tar.gz`, written at every hand-off and session end, read when a
//! continuation or the session's next turn starts (possibly in another execution environment).
//!
//! Nothing of the workspace is held in memory: the archive is written to a temporary file
//! (under the system's temp dir, `/tmp` on Lambda) and uploaded from it, in one `PutObject` up
//! to the part size and by multipart upload above it, each part streamed from the file; a
//! restore streams the object to a temporary file and unpacks from there. The archive is
//! capped (`HANDS_WORKSPACE_MAX_BYTES`): a bigger one is not saved, and the log says so.
//!
//! What goes in the archive and how it is unpacked: see [`crate::snapshot`]. A save that fails
//! deletes the session's previous snapshot, so an older workspace is never restored as if it
//! were current. Bucket lifecycle rules expire old snapshots (infra/).

use std::path::Path;

use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use hands_worker::{StoreError, WorkspaceStore};
use tokio::io::AsyncWriteExt as _;

use crate::snapshot::{CappedWriter, pack_into, unpack_from};

/// Parts of a multipart upload (S3 wants at least 5 MiB for every part but the last).
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;
const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// The default cap of a snapshot's compressed size (`HANDS_WORKSPACE_MAX_BYTES`): the archive
/// sits in `/tmp` beside the workspace while it is uploaded.
pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024 * 1024;

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Saves and restores workspaces in one bucket.
#[derive(Clone, Debug)]
pub struct S3WorkspaceStore {
    client: aws_sdk_s3::Client,
    bucket: String,
    part_size: u64,
    max_bytes: u64,
}

impl S3WorkspaceStore {
    pub fn new(client: aws_sdk_s3::Client, bucket: String) -> Self {
        S3WorkspaceStore {
            client,
            bucket,
            part_size: DEFAULT_PART_SIZE,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }

    /// The multipart part size (raised to S3's 5 MiB minimum).
    pub fn with_part_size(mut self, bytes: u64) -> Self {
        self.part_size = bytes.max(MIN_PART_SIZE);
        self
    }

    /// The cap of a snapshot's compressed size, for saving and restoring.
    pub fn with_max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    pub fn from_sdk_config(config: &aws_config::SdkConfig, bucket: String) -> Self {
        let mut builder = aws_sdk_s3::config::Builder::from(config);
        if crate::aws::s3_endpoint_overridden() {
            builder = builder.force_path_style(true);
        }
        Self::new(aws_sdk_s3::Client::from_conf(builder.build()), bucket)
    }

    pub fn key(session_id: &str) -> String {
        format!("workspaces/{session_id}.tar.gz")
    }

    /// Where a result too big for a continuation's payload waits for the successor. Under
    /// `workspaces/`, so the role's grant and the bucket's lifecycle rule cover it.
    pub fn result_key(session_id: &str, tool_use_id: &str) -> String {
        let safe = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        format!(
            "workspaces/{}/results/{}.json",
            safe(session_id),
            safe(tool_use_id)
        )
    }

    /// Stores one JSON object under `key`.
    pub async fn put_json(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| {
                StoreError(format!(
                    "put s3://{}/{key}: {}",
                    self.bucket,
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                ))
            })?;
        Ok(())
    }

    /// Reads one object whole (results are bounded by the tools' own limits).
    pub async fn get_bytes(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let got = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                StoreError(format!(
                    "get s3://{}/{key}: {}",
                    self.bucket,
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                ))
            })?;
        let bytes = got
            .body
            .collect()
            .await
            .map_err(|e| StoreError(format!("read s3://{}/{key}: {e}", self.bucket)))?;
        Ok(bytes.into_bytes().to_vec())
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                StoreError(format!(
                    "delete s3://{}/{key}: {}",
                    self.bucket,
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                ))
            })?;
        Ok(())
    }

    async fn restore_inner(&self, session_id: &str, dir: &Path) -> Result<bool, StoreError> {
        let key = Self::key(session_id);
        let got = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) => {
                if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                    return Ok(false);
                }
                return Err(StoreError(format!(
                    "get s3://{}/{key}: {}",
                    self.bucket,
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                )));
            }
        };
        let over = |n: u64| {
            StoreError(format!(
                "s3://{}/{key} is over HANDS_WORKSPACE_MAX_BYTES ({} bytes, the object has at least {n}); not restored",
                self.bucket, self.max_bytes
            ))
        };
        if let Some(n) = got.content_length().and_then(|n| u64::try_from(n).ok())
            && n > self.max_bytes
        {
            return Err(over(n));
        }
        // Chunk by chunk to a temporary file: memory does not grow with the snapshot.
        let tmp = temp_file()?;
        let local = |e: std::io::Error| StoreError(format!("temporary file for {key}: {e}"));
        let mut file = tokio::fs::File::from_std(tmp.reopen().map_err(local)?);
        let mut body = got.body;
        let mut received: u64 = 0;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| StoreError(format!("read s3://{}/{key}: {e}", self.bucket)))?
        {
            received += chunk.len() as u64;
            if received > self.max_bytes {
                return Err(over(received));
            }
            file.write_all(&chunk).await.map_err(local)?;
        }
        file.flush().await.map_err(local)?;
        drop(file);
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let input = tmp
                .reopen()
                .map_err(|e| StoreError(format!("reopen the downloaded snapshot: {e}")))?;
            unpack_from(std::io::BufReader::new(input), &dir)
        })
        .await
        .map_err(|e| StoreError(format!("unpack task: {e}")))??;
        tracing::info!(bucket = %self.bucket, %key, bytes = received, "workspace snapshot downloaded and unpacked");
        Ok(true)
    }

    async fn save_inner(&self, session_id: &str, dir: &Path) -> Result<(), StoreError> {
        let key = Self::key(session_id);
        match self.put_snapshot(&key, dir).await {
            Ok(()) => Ok(()),
            Err(e) => {
                // The previous snapshot is older than this workspace: restoring it later as if
                // it were current would silently lose work. Better no snapshot at all.
                match self
                    .client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .send()
                    .await
                {
                    Ok(_) => tracing::error!(bucket = %self.bucket, %key, error = %e,
                        "workspace save failed; the previous snapshot was deleted so it is never restored as current"),
                    Err(d) => tracing::error!(bucket = %self.bucket, %key, error = %e,
                        delete_error = %aws_sdk_s3::error::DisplayErrorContext(&d),
                        "workspace save failed AND the previous snapshot could not be deleted: the next invocation may restore an OLDER workspace"),
                }
                Err(e)
            }
        }
    }

    async fn put_snapshot(&self, key: &str, dir: &Path) -> Result<(), StoreError> {
        let tmp = temp_file()?;
        let dir = dir.to_path_buf();
        let cap = self.max_bytes;
        let file = tmp
            .reopen()
            .map_err(|e| StoreError(format!("temporary file for the snapshot: {e}")))?;
        let (tmp, size) = tokio::task::spawn_blocking(move || {
            let out = CappedWriter::new(std::io::BufWriter::new(file), cap);
            let mut out = pack_into(&dir, out)?;
            std::io::Write::flush(&mut out)
                .map_err(|e| StoreError(format!("write the snapshot: {e}")))?;
            Ok::<_, StoreError>((tmp, out.written()))
        })
        .await
        .map_err(|e| StoreError(format!("pack task: {e}")))??;
        let parts = if size <= self.part_size {
            let body = self.file_part(tmp.path(), 0, size).await?;
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_length(size as i64)
                .body(body)
                .send()
                .await
                .map_err(|e| {
                    StoreError(format!(
                        "put s3://{}/{key}: {}",
                        self.bucket,
                        aws_sdk_s3::error::DisplayErrorContext(&e)
                    ))
                })?;
            1
        } else {
            self.put_multipart(key, tmp.path(), size).await?
        };
        tracing::info!(bucket = %self.bucket, %key, bytes = size, parts, "workspace saved");
        Ok(())
    }

    /// `len` bytes of `path` from `offset`, read from the file as they are sent.
    async fn file_part(
        &self,
        path: &Path,
        offset: u64,
        len: u64,
    ) -> Result<ByteStream, StoreError> {
        ByteStream::read_from()
            .path(path)
            .offset(offset)
            .length(Length::Exact(len))
            .build()
            .await
            .map_err(|e| StoreError(format!("read the snapshot file: {e}")))
    }

    /// Uploads the file in `part_size` parts; a failure aborts the upload (no orphaned parts).
    async fn put_multipart(&self, key: &str, path: &Path, size: u64) -> Result<u64, StoreError> {
        let err =
            |what: &str, e: String| StoreError(format!("{what} s3://{}/{key}: {e}", self.bucket));
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                err(
                    "create multipart upload",
                    aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
                )
            })?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| err("create multipart upload", "no upload id".into()))?
            .to_owned();
        let result = async {
            let mut parts = Vec::new();
            let mut offset = 0;
            let mut number = 1;
            while offset < size {
                let len = self.part_size.min(size - offset);
                let body = self.file_part(path, offset, len).await?;
                let out = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .content_length(len as i64)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| {
                        err(
                            &format!("upload part {number} of"),
                            aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
                        )
                    })?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(str::to_owned))
                        .build(),
                );
                offset += len;
                number += 1;
            }
            let count = parts.len() as u64;
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| {
                    err(
                        "complete multipart upload",
                        aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
                    )
                })?;
            Ok::<_, StoreError>(count)
        }
        .await;
        if result.is_err()
            && let Err(e) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await
        {
            tracing::warn!(%key, error = %aws_sdk_s3::error::DisplayErrorContext(&e),
                "cannot abort a failed multipart upload; the bucket's lifecycle rule should remove incomplete uploads");
        }
        result
    }
}

/// A temporary file in the system's temp dir (`/tmp` on Lambda), removed when dropped.
fn temp_file() -> Result<tempfile::NamedTempFile, StoreError> {
    tempfile::Builder::new()
        .prefix("hands-snapshot-")
        .tempfile()
        .map_err(|e| {
            StoreError(format!(
                "cannot create a temporary file for the snapshot: {e}"
            ))
        })
}

impl WorkspaceStore for S3WorkspaceStore {
    fn restore<'a>(
        &'a self,
        session_id: &'a str,
        dir: &'a Path,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.restore_inner(session_id, dir))
    }

    fn save<'a>(
        &'a self,
        session_id: &'a str,
        dir: &'a Path,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.save_inner(session_id, dir))
    }
}
