//! Workspace snapshots in S3 (`HANDS_WORKSPACE_BUCKET`): one gzip'd tar per session, key
//! `workspaces/<session id>.tar.gz`, written at every hand-off and session end, read when a
//! continuation or the session's next turn starts (possibly in another execution environment).
//!
//! The archive is built from the workspace only after every tool process is gone, without
//! following symlinks (a link planted by tool code is stored as a link, never as what it
//! points to); sockets, FIFOs, devices and unreadable entries are skipped with a warning. A
//! save that fails anyway deletes the session's previous snapshot, so an older workspace is
//! never restored as if it were current. Archives are unpacked with the `tar` crate's confinement (no entry lands outside the
//! workspace). Bucket lifecycle rules expire old snapshots (infra/).

use std::path::{Path, PathBuf};

use aws_sdk_s3::primitives::ByteStream;
use hands_worker::{StoreError, WorkspaceStore};

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Saves and restores workspaces in one bucket.
#[derive(Clone, Debug)]
pub struct S3WorkspaceStore {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3WorkspaceStore {
    pub fn new(client: aws_sdk_s3::Client, bucket: String) -> Self {
        S3WorkspaceStore { client, bucket }
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
        let bytes = got
            .body
            .collect()
            .await
            .map_err(|e| StoreError(format!("read s3://{}/{key}: {e}", self.bucket)))?
            .into_bytes();
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || unpack(&bytes, &dir))
            .await
            .map_err(|e| StoreError(format!("unpack task: {e}")))??;
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
        let dir = dir.to_path_buf();
        let archive = tokio::task::spawn_blocking(move || pack(&dir))
            .await
            .map_err(|e| StoreError(format!("pack task: {e}")))??;
        let size = archive.len();
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(archive))
            .send()
            .await
            .map_err(|e| {
                StoreError(format!(
                    "put s3://{}/{key}: {}",
                    self.bucket,
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                ))
            })?;
        tracing::info!(bucket = %self.bucket, %key, bytes = size, "workspace saved");
        Ok(())
    }
}

/// Archives `dir` by walking it (not `tar`'s `append_dir_all`, which fails on the first socket
/// or unreadable file): regular files, directories, and symlinks stored as links, never
/// followed. Sockets, FIFOs, devices and entries that cannot be read are skipped with a
/// warning; tool code leaving a `*.sock` behind must not cost the whole snapshot.
fn pack(dir: &Path) -> Result<Vec<u8>, StoreError> {
    let io = |e: std::io::Error| StoreError(format!("archive {}: {e}", dir.display()));
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    // The root must be listable: a workspace that cannot be read is an error, not empty.
    std::fs::read_dir(dir).map_err(io)?;
    tar.append_dir(".", dir).map_err(io)?;
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let abs = dir.join(&rel);
        let entries = match std::fs::read_dir(&abs) {
            Ok(rd) => rd,
            Err(e) => {
                tracing::warn!(path = %abs.display(), error = %e,
                    "cannot list a workspace directory; its contents are left out of the snapshot");
                continue;
            }
        };
        let mut names: Vec<_> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for name in names {
            let rel = rel.join(&name);
            let abs = dir.join(&rel);
            if let Err(e) = append_entry(&mut tar, &abs, &rel, &mut pending) {
                tracing::warn!(path = %abs.display(), error = %e,
                    "cannot read a workspace entry; left out of the snapshot");
            }
        }
    }
    let gz = tar.into_inner().map_err(io)?;
    gz.finish().map_err(io)
}

/// Appends one entry; a directory is queued on `pending` for its contents. An `Err` comes from
/// reading the entry before any of it was written, so skipping it keeps the archive valid.
fn append_entry<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    abs: &Path,
    rel: &Path,
    pending: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(abs)?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = std::fs::read_link(abs)?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata(&meta);
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        tar.append_link(&mut header, rel, target)
    } else if kind.is_dir() {
        // Listed when popped; one that cannot be listed is still created, empty.
        tar.append_dir(rel, abs)?;
        pending.push(rel.to_path_buf());
        Ok(())
    } else if kind.is_file() {
        let mut file = std::fs::File::open(abs)?;
        tar.append_file(rel, &mut file)
    } else {
        tracing::warn!(path = %abs.display(), kind = ?kind,
            "not a file, directory or symlink (socket, FIFO or device); left out of the snapshot");
        Ok(())
    }
}

fn unpack(bytes: &[u8], dir: &Path) -> Result<(), StoreError> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    // `unpack` refuses entries that would land outside `dir` (absolute paths, `..`, links).
    archive
        .unpack(dir)
        .map_err(|e| StoreError(format!("unpack into {}: {e}", dir.display())))
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileTypeExt as _;

    use super::*;

    #[test]
    fn pack_and_unpack_keep_files_modes_and_links_as_links() {
        use std::os::unix::fs::PermissionsExt;
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("a/b")).unwrap();
        std::fs::write(src.path().join("a/b/f.txt"), "hello").unwrap();
        std::fs::write(src.path().join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            src.path().join("run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.path().join("link")).unwrap();
        let bytes = pack(src.path()).unwrap();
        let dst = tempfile::tempdir().unwrap();
        unpack(&bytes, dst.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dst.path().join("a/b/f.txt")).unwrap(),
            "hello"
        );
        let mode = std::fs::metadata(dst.path().join("run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(
            std::fs::symlink_metadata(dst.path().join("link"))
                .unwrap()
                .is_symlink()
        );
        assert_eq!(
            std::fs::read_link(dst.path().join("link")).unwrap(),
            Path::new("/etc/passwd")
        );
    }

    #[test]
    fn sockets_and_fifos_are_skipped_and_the_rest_is_kept() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("run")).unwrap();
        std::fs::write(src.path().join("run/keep.txt"), "kept").unwrap();
        let _listener =
            std::os::unix::net::UnixListener::bind(src.path().join("run/agent.sock")).unwrap();
        let fifo = src.path().join("pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        assert!(
            std::fs::symlink_metadata(&fifo)
                .unwrap()
                .file_type()
                .is_fifo()
        );
        let bytes = pack(src.path()).unwrap();
        let dst = tempfile::tempdir().unwrap();
        unpack(&bytes, dst.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dst.path().join("run/keep.txt")).unwrap(),
            "kept"
        );
        assert!(std::fs::symlink_metadata(dst.path().join("run/agent.sock")).is_err());
        assert!(std::fs::symlink_metadata(dst.path().join("pipe")).is_err());
    }

    #[test]
    fn a_missing_workspace_is_an_error_not_an_empty_snapshot() {
        let parent = tempfile::tempdir().unwrap();
        assert!(pack(&parent.path().join("gone")).is_err());
    }
}
