//! The signing secrets the ingress verifies against: parsed from configuration, swappable at
//! run time so an operator can start the server, register its URL, then add the key (until
//! then deliveries are answered 503 "not configured", which the sender retries).

use std::sync::{Arc, RwLock};

use hands_protocol::webhook::{SecretError, SigningSecret, Verifier};

/// Why a configured list of secrets was refused. Never contains secret material.
#[derive(Debug, thiserror::Error)]
pub enum SecretListError {
    /// Entry `index` (0-based, in configuration order) did not parse.
    #[error("webhook signing secret #{index}: {source}")]
    Secret { index: usize, source: SecretError },
    /// The list as a whole was refused (none, or too many).
    #[error(transparent)]
    List(SecretError),
}

/// Parses `ANTHROPIC_WEBHOOK_SIGNING_KEY`: one or more `whsec_…` secrets separated by spaces,
/// commas or newlines (several during a key rotation, CATALOGUE W7). An empty text means "not
/// configured yet" and gives `Ok(None)`.
pub fn parse_secret_list(text: &str) -> Result<Option<Verifier>, SecretListError> {
    let parts: Vec<&str> = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        return Ok(None);
    }
    let secrets = parts
        .iter()
        .enumerate()
        .map(|(index, p)| {
            SigningSecret::parse(p).map_err(|source| SecretListError::Secret { index, source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Verifier::new(secrets)
        .map(Some)
        .map_err(SecretListError::List)
}

/// The current verifier, if any. Reads vastly outnumber writes; a write happens when the key
/// file changes.
#[derive(Default)]
pub struct SecretSlot {
    verifier: RwLock<Option<Arc<Verifier>>>,
}

impl SecretSlot {
    pub fn get(&self) -> Option<Arc<Verifier>> {
        match self.verifier.read() {
            Ok(g) => g.clone(),
            // A writer panicked mid-swap; the value itself is a whole `Option<Arc>`, still sound.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn set(&self, verifier: Option<Verifier>) {
        let verifier = verifier.map(Arc::new);
        match self.verifier.write() {
            Ok(mut g) => *g = verifier,
            Err(poisoned) => *poisoned.into_inner() = verifier,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const B: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYqr";

    #[test]
    fn lists_split_on_spaces_commas_and_newlines() {
        assert!(parse_secret_list("").unwrap().is_none());
        assert!(parse_secret_list(" ,\n").unwrap().is_none());
        assert!(parse_secret_list(A).unwrap().is_some());
        assert!(parse_secret_list(&format!("{A}, {B}\n")).unwrap().is_some());
        assert!(parse_secret_list(&format!("{A} {B}")).unwrap().is_some());
    }

    #[test]
    fn a_bad_entry_is_named_by_position_without_its_value() {
        let err = parse_secret_list(&format!("{A},whsec_c2VjcmV0Cg==")).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("webhook signing secret #1:"), "{text}");
        assert!(!text.contains("c2VjcmV0"), "{text}");
    }
}
