//! Why a secret could not be had. No variant carries secret material: errors name variables,
//! paths, ARNs and JSON keys, which are configuration, never values.

use std::path::PathBuf;

/// A configuration or retrieval failure for one named secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Two sources were set for one secret; exactly one is allowed.
    #[error("both {first} and {second} are set; set exactly one of them")]
    Conflict { first: String, second: String },

    /// No source was set for a secret that is required.
    #[error("{name} is not set (nor {name}_FILE, {name}_SECRET_ARN or {name}_SSM_PARAMETER)")]
    NotSet { name: String },

    /// The file could not be opened or read.
    #[error("{var}: cannot read {}: {source}", path.display())]
    FileUnreadable {
        var: String,
        path: PathBuf,
        source: std::io::Error,
    },

    /// The file is larger than any secret this crate accepts.
    #[error("{var}: {} is larger than {limit} bytes; is it the right file?", path.display())]
    FileTooLarge {
        var: String,
        path: PathBuf,
        limit: usize,
    },

    /// The value is not UTF-8 text.
    #[error("{var}: the secret ({from}) is not UTF-8 text")]
    NotText { var: String, from: String },

    /// Nothing but whitespace.
    #[error("{var}: the secret ({from}) is empty")]
    Empty { var: String, from: String },

    /// `*_SECRET_ARN` or `*_SSM_PARAMETER` does not have a form this crate understands.
    #[error("{var}: {reason}")]
    BadReference { var: String, reason: String },

    /// An AWS source was configured in a binary built without the `aws` feature.
    #[error(
        "{var} is set but this binary was built without AWS support (cargo feature `aws`); \
         use {name} or {name}_FILE, or rebuild with `--features aws`"
    )]
    NoAwsSupport { var: String, name: String },

    /// The AWS call failed (credentials, permissions, not found, network). The message is the
    /// SDK's error chain, which never contains the secret value.
    #[error("{var}: {what} {reference}: {message}")]
    Aws {
        var: String,
        what: &'static str,
        reference: String,
        message: String,
    },

    /// A JSON key was asked for but the secret is not a JSON object holding it as a string.
    #[error("{var}: JSON key {key:?} of {reference}: {problem}")]
    JsonKey {
        var: String,
        reference: String,
        key: String,
        problem: String,
    },
}

impl SecretError {
    /// The secret's source was set but holds nothing (an empty file, an empty parameter). Some
    /// callers treat that as "not configured yet" rather than an error.
    pub fn is_empty_value(&self) -> bool {
        matches!(self, SecretError::Empty { .. })
    }
}
