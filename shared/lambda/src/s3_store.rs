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
//! What goes in the archive and how it is unpacked: see [`crate::snapshot`]. A save deletes the
//! session's previous snapshot before writing the new one, so a save that fails, is abandoned
//! or is killed never leaves an older workspace to be restored as if it were current. Bucket lifecycle rules expire old snapshots (infra/).

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
/// sits in `/tmp` beside the workspace while it is uploaded, so workspace + archive must fit in
/// the function's ephemeral storage (2048 MB in infra/); a quarter of that leaves the workspace
/// most of it. Raise it with the ephemeral storage.
pub const DEFAULT_MAX_BYTES: u64 = 512 * 1024 * 1024;

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
        // The previous snapshot goes first: it is older than this workspace, and restoring it
        // later as if it were current would silently lose work. Deleted before the write, a
        // save that fails, is abandoned at a hand-off or is killed with the invocation leaves
        // no snapshot rather than an older one.
        let deleted = self.delete_snapshot(&key).await;
        match self.put_snapshot(&key, dir).await {
            Ok(()) => Ok(()),
            Err(e) => {
                match deleted {
                    Ok(()) => tracing::error!(bucket = %self.bucket, %key, error = %e,
                        "workspace save failed; the previous snapshot was deleted so it is never restored as current"),
                    Err(d) => tracing::error!(bucket = %self.bucket, %key, error = %e,
                        delete_error = %d,
                        "workspace save failed AND the previous snapshot could not be deleted: the next invocation may restore an OLDER workspace"),
                }
                Err(e)
            }
        }
    }

    async fn delete_snapshot(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| StoreError(aws_sdk_s3::error::DisplayErrorContext(&e).to_string()))
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
                .map_err(|e| crate::snapshot::write_error(&e, "write the snapshot"))?;
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

/// The name prefix of the snapshot's temporary files, swept by [`sweep_temp_files`].
pub const TEMP_FILE_PREFIX: &str = "hands-snapshot-";

/// A temporary file in the system's temp dir (`/tmp` on Lambda), removed when dropped.
fn temp_file() -> Result<tempfile::NamedTempFile, StoreError> {
    temp_file_in(&std::env::temp_dir())
}

/// A temporary snapshot file in `dir`, holding an exclusive `flock` for as long as it lives, so
/// that [`sweep_temp_files`] tells it from a dead invocation's leftover: the lock belongs to the
/// file's own descriptor (not to the `reopen`ed ones), is dropped with it, and dies with the
/// process. A sweep can run between the file's creation and its lock; the file is then checked to
/// be still under its name, and made again if the sweep took it.
fn temp_file_in(dir: &Path) -> Result<tempfile::NamedTempFile, StoreError> {
    let made = |e: std::io::Error| {
        StoreError(format!(
            "cannot create a temporary file for the snapshot in {}: {e}",
            dir.display()
        ))
    };
    for _ in 0..3 {
        let tmp = tempfile::Builder::new()
            .prefix(TEMP_FILE_PREFIX)
            .tempfile_in(dir)
            .map_err(made)?;
        match tmp.as_file().try_lock() {
            Ok(()) => {}
            // A sweep holds it this instant and is about to remove it.
            Err(std::fs::TryLockError::WouldBlock) => continue,
            // A file system without `flock`: the sweep cannot lock it either, so it keeps it.
            Err(std::fs::TryLockError::Error(e)) => {
                tracing::debug!(error = %e, "the snapshot's temporary file cannot be locked");
            }
        }
        if still_named(&tmp).map_err(made)? {
            return Ok(tmp);
        }
    }
    Err(made(std::io::Error::other(
        "it was removed as soon as it was made, three times (is something else sweeping the temp dir?)",
    )))
}

/// Whether `tmp`'s name still leads to its own file (a sweep may have unlinked it).
fn still_named(tmp: &tempfile::NamedTempFile) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt as _;
    let own = tmp.as_file().metadata()?;
    Ok(match std::fs::symlink_metadata(tmp.path()) {
        Ok(named) => (named.dev(), named.ino()) == (own.dev(), own.ino()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e),
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

    fn discard<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { self.delete_snapshot(&Self::key(session_id)).await })
    }
}

/// Removes the snapshot temporary files (`hands-snapshot-*`) in `dir` (the system's temp dir
/// in the function) that no live save or restore holds. A file is removed when dropped, but an
/// invocation Lambda killed at its deadline never drops it: in a warm execution environment it
/// would keep filling `/tmp`, and a later session's tools (tier 0) could read another session's
/// archive. A live file holds its `flock` (see [`temp_file_in`]), in this process or another,
/// and is left alone, so the sweep is safe while other invocations or processes save; so is a
/// file whose lock cannot be tried (a file system without `flock`), logged. Symlinks and other
/// non-regular entries of that name are removed (the store never makes them), never followed;
/// directories of that name are left alone. Returns the paths removed.
pub fn sweep_temp_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(TEMP_FILE_PREFIX) {
            continue;
        }
        let path = entry.path();
        let lock = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => continue,
            Ok(m) if m.is_file() => match try_lock_leftover(&path) {
                Leftover::Dead(lock) => Some(lock),
                Leftover::Live | Leftover::Gone => continue,
                Leftover::Unlockable(e) => {
                    tracing::warn!(path = %path.display(), error = %e,
                        "a snapshot file left in place: its lock cannot be tried, so a live save's cannot be told from a dead one's");
                    continue;
                }
                Leftover::Unopenable => None,
            },
            Ok(_) => None,
            Err(_) => continue,
        };
        // Unlinked while the lock is held: a save that made the file a moment ago and has not
        // locked it yet finds it locked or gone, and makes another.
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a leftover snapshot file")
            }
        }
        drop(lock);
    }
    if !removed.is_empty() {
        tracing::info!(count = removed.len(), dir = %dir.display(),
            "removed snapshot files an earlier invocation left behind");
    }
    removed
}

/// What a sweep found a regular `hands-snapshot-*` file to be.
enum Leftover {
    /// Nobody holds its lock: the sweep now does (until the file is unlinked).
    Dead(std::fs::File),
    /// A live save or restore holds it.
    Live,
    /// Removed since it was listed.
    Gone,
    /// Its file system cannot lock: it may be live.
    Unlockable(std::io::Error),
    /// It cannot be opened (its mode was changed, by tool code at tier 0): the store's own
    /// files are always readable by their owner while they live, so it is a leftover.
    Unopenable,
}

fn try_lock_leftover(path: &Path) -> Leftover {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        // Replaced by a link since it was looked at: not followed.
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Leftover::Gone,
        Err(_) => return Leftover::Unopenable,
    };
    match file.try_lock() {
        Ok(()) => Leftover::Dead(file),
        Err(std::fs::TryLockError::WouldBlock) => Leftover::Live,
        Err(std::fs::TryLockError::Error(e)) => Leftover::Unlockable(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_removes_leftover_snapshot_files_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let left = tempfile::Builder::new()
            .prefix(TEMP_FILE_PREFIX)
            .tempfile_in(dir.path())
            .unwrap();
        // What a killed invocation leaves: the file without its guard.
        let (_, left) = left.keep().unwrap();
        std::fs::write(dir.path().join("other.txt"), "not ours").unwrap();
        std::fs::create_dir(dir.path().join("hands-snapshot-dir")).unwrap();
        let target = dir.path().join("target.txt");
        std::fs::write(&target, "kept").unwrap();
        let link = dir.path().join("hands-snapshot-link");
        std::os::unix::fs::symlink(&target, &link).unwrap();

        let mut removed = sweep_temp_files(dir.path());
        removed.sort();
        let mut expected = vec![left.clone(), link.clone()];
        expected.sort();
        assert_eq!(removed, expected);
        assert!(!left.exists());
        assert!(std::fs::symlink_metadata(&link).is_err());
        // The link's target, other files and a directory of that name stay.
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "kept");
        assert!(dir.path().join("other.txt").exists());
        assert!(dir.path().join("hands-snapshot-dir").is_dir());
        assert!(sweep_temp_files(dir.path()).is_empty());
    }

    #[test]
    fn the_sweep_leaves_a_live_snapshot_file_and_takes_it_once_dropped() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let live = temp_file_in(dir.path()).unwrap();
        std::fs::write(live.path(), "being packed").unwrap();
        // Held by another process: its lock is on another open file description.
        let other = dir.path().join("hands-snapshot-other");
        let held = std::fs::File::create(&other).unwrap();
        held.lock().unwrap();
        // Dead, made unreadable by tool code.
        let closed = dir.path().join("hands-snapshot-closed");
        std::fs::write(&closed, "old").unwrap();
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o000)).unwrap();

        assert_eq!(sweep_temp_files(dir.path()), vec![closed.clone()]);
        assert_eq!(
            std::fs::read_to_string(live.path()).unwrap(),
            "being packed"
        );
        assert!(other.exists());
        // A reopened descriptor closing does not drop the lock; the file's own does.
        drop(live.reopen().unwrap());
        assert!(sweep_temp_files(dir.path()).is_empty());
        let kept = live.into_temp_path().keep().unwrap();
        drop(held);
        let mut removed = sweep_temp_files(dir.path());
        removed.sort();
        let mut expected = vec![kept, other];
        expected.sort();
        assert_eq!(removed, expected);
    }

    #[test]
    fn a_snapshot_file_swept_before_it_was_locked_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = temp_file_in(dir.path()).unwrap();
        assert!(still_named(&tmp).unwrap());
        std::fs::remove_file(tmp.path()).unwrap();
        assert!(!still_named(&tmp).unwrap());
        // Another file under its name is not it either.
        std::fs::write(tmp.path(), "someone else's").unwrap();
        assert!(!still_named(&tmp).unwrap());
    }
}
