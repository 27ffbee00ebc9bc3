//! Downloading the agent's skills into `<workdir>/skills/<name>` (PROTOCOL.md §9.6).
//!
//! A skill that cannot be fetched or unpacked is logged and skipped; the session still runs.
//! The archive is streamed to a temporary file (bounded), then unpacked off the async runtime by
//! [`crate::archive::install_skill`], which never writes outside the skill's directory.

use std::path::{Path, PathBuf};

use hands_client::{ApiError, ControlPlane, Credential};
use hands_protocol::session::{Session, SkillRef};

use crate::archive::{Limits, install_skill};

/// Largest archive downloaded (compressed bytes).
pub const MAX_ARCHIVE_BYTES: u64 = 256 << 20;

/// Installs every skill of the session's agent; returns the directories created (removed at
/// teardown).
pub async fn install_skills(
    cp: &ControlPlane,
    credential: &Credential,
    session: &Session,
    workdir: &Path,
) -> Vec<PathBuf> {
    let mut installed = Vec::new();
    for skill in &session.agent.skills {
        match install_one(cp, credential, skill, workdir).await {
            Ok(dir) => installed.push(dir),
            Err(e) => tracing::warn!(skill_id = %skill.skill_id, version = %skill.version,
                error = %e, "skill skipped"),
        }
    }
    installed
}

#[derive(Debug, thiserror::Error)]
enum SkillError {
    #[error("{0}")]
    Api(#[from] ApiError),
    #[error("skill name {0:?} cannot be a directory name")]
    BadName(String),
    #[error("temporary file: {0}")]
    Temp(std::io::Error),
    #[error("unpacking: {0}")]
    Archive(String),
}

async fn install_one(
    cp: &ControlPlane,
    credential: &Credential,
    skill: &SkillRef,
    workdir: &Path,
) -> Result<PathBuf, SkillError> {
    let version = cp
        .skill_version(credential, &skill.skill_id, &skill.version)
        .await?;
    if !is_safe_name(&version.name) {
        return Err(SkillError::BadName(version.name));
    }
    let tmp = tempfile::NamedTempFile::new().map_err(SkillError::Temp)?;
    let mut file = tokio::fs::File::from_std(tmp.reopen().map_err(SkillError::Temp)?);
    let bytes = cp
        .download_skill(
            credential,
            &skill.skill_id,
            &version.id,
            &mut file,
            MAX_ARCHIVE_BYTES,
        )
        .await?;
    drop(file);
    let dest = workdir.join("skills").join(&version.name);
    let archive = tmp.path().to_path_buf();
    let dest2 = dest.clone();
    let result =
        tokio::task::spawn_blocking(move || install_skill(&archive, &dest2, &Limits::default()))
            .await
            .map_err(|e| SkillError::Archive(e.to_string()))?;
    drop(tmp);
    let report = result.map_err(|e| SkillError::Archive(e.to_string()))?;
    tracing::info!(skill = %version.name, bytes, files = report.files,
        skipped = report.skipped.len(), "skill installed");
    Ok(dest)
}

/// One path component a server cannot use to escape `skills/`.
fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 255
        && !name.contains(['/', '\\', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skill_names_cannot_escape() {
        assert!(is_safe_name("pdf-tools"));
        for bad in ["", ".", "..", "a/b", "..\\x", "a\0b"] {
            assert!(!is_safe_name(bad), "{bad:?}");
        }
    }
}
