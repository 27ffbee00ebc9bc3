//! Workspace snapshots in S3 (`HANDS_WORKSPACE_BUCKET`): one gzip'd tar per session, key
//! `workspaces/<session id>.tar.gz`, written at every hand-off and session end, read when a
//! continuation or the session's next turn starts (possibly in another execution environment).
//!
//! The archive is built from the workspace only after every tool process is gone, without
//! following symlinks (a link planted by tool code is stored as a link, never as what it
//! points to), and unpacked with the `tar` crate's confinement (no entry lands outside the
//! workspace). Bucket lifecycle rules expire old snapshots (infra/).

use std::path::Path;

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
        let dir = dir.to_path_buf();
        let archive = tokio::task::spawn_blocking(move || pack(&dir))
            .await
            .map_err(|e| StoreError(format!("pack task: {e}")))??;
        let size = archive.len();
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
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

fn pack(dir: &Path) -> Result<Vec<u8>, StoreError> {
    let io = |e: std::io::Error| StoreError(format!("archive {}: {e}", dir.display()));
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    tar.append_dir_all(".", dir).map_err(io)?;
    let gz = tar.into_inner().map_err(io)?;
    gz.finish().map_err(io)
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
    }
}
