//! The resolved value: wrapped so `Debug` and `Display` cannot print it.

use std::fmt;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

/// A secret's text. Cheap to clone; `Debug` shows `SecretValue(<redacted>)` and there is no
/// `Display`. Read it with [`SecretValue::expose_secret`] only where it is used (a header, a
/// verifier key), never to log it.
#[derive(Clone)]
pub struct SecretValue(Arc<SecretString>);

impl SecretValue {
    pub fn new(text: impl Into<String>) -> Self {
        SecretValue(Arc::new(SecretString::from(text.into())))
    }

    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    /// Whether two values are the same secret (refresh uses this to tell a rotation).
    pub fn same_as(&self, other: &SecretValue) -> bool {
        self.expose_secret() == other.expose_secret()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_value() {
        let v = SecretValue::new("sk-canary");
        assert_eq!(format!("{v:?}"), "SecretValue(<redacted>)");
        assert_eq!(v.expose_secret(), "sk-canary");
        assert!(v.same_as(&v.clone()) && !v.same_as(&SecretValue::new("other")));
    }
}
