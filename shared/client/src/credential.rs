//! The bearer a request carries: the environment key or a work item's sessions token.
//!
//! Both are secrets: `Debug` never prints them and the header value is marked sensitive so
//! HTTP-level logging cannot print it either.

use std::fmt;
use std::sync::Arc;

use hands_protocol::secret::SessionsToken;
use secrecy::{ExposeSecret, SecretString};

/// A bearer credential, cheap to clone.
#[derive(Clone)]
pub struct Credential {
    kind: CredentialKind,
    value: Arc<SecretString>,
}

/// Which credential this is, for logs (never the value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    EnvironmentKey,
    SessionsToken,
}

impl Credential {
    pub fn environment_key(key: impl Into<String>) -> Self {
        Credential {
            kind: CredentialKind::EnvironmentKey,
            value: Arc::new(SecretString::from(key.into())),
        }
    }

    pub fn sessions_token(token: &SessionsToken) -> Self {
        Credential {
            kind: CredentialKind::SessionsToken,
            value: Arc::new(SecretString::from(token.expose().to_owned())),
        }
    }

    pub fn kind(&self) -> CredentialKind {
        self.kind
    }

    /// The `Authorization` header value, marked sensitive.
    pub(crate) fn header_value(&self) -> Option<reqwest::header::HeaderValue> {
        let mut v = reqwest::header::HeaderValue::try_from(format!(
            "Bearer {}",
            self.value.expose_secret()
        ))
        .ok()?;
        v.set_sensitive(true);
        Some(v)
    }

    /// For redaction: error texts are scrubbed of this value before they are logged.
    pub(crate) fn expose_for_redaction(&self) -> &str {
        self.value.expose_secret()
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({:?}, <redacted>)", self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_value() {
        let c = Credential::environment_key("sk-ant-oat01-canary");
        assert!(!format!("{c:?}").contains("canary"));
        let h = c.header_value().unwrap();
        assert!(h.is_sensitive());
        assert_eq!(h.to_str().unwrap(), "Bearer sk-ant-oat01-canary");
    }
}
