//! Strips secret values from responses to injected requests, so an upstream that echoes request
//! headers (or a token in an error page) cannot hand the secret to tool code.
//!
//! Streaming: each chunk is scanned together with a held-back tail one byte shorter than the
//! longest secret, so a value split across chunks is still caught. Exact byte matches only: a
//! server that re-encodes the value (percent-encoding, JSON escapes of unusual characters) is
//! not covered, which is why secrets are required to be at least [`MIN_SECRET_LEN`] bytes of
//! plain token text in practice.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

/// Shorter values cannot be stripped without mangling ordinary responses.
pub const MIN_SECRET_LEN: usize = 8;

/// What replaces a secret value.
pub const MARKER: &[u8] = b"[secret removed by hands egress proxy]";

/// The byte strings that must never reach tool code.
#[derive(Clone)]
pub struct Needles(Arc<Vec<Vec<u8>>>);

impl Needles {
    pub fn new(mut values: Vec<Vec<u8>>) -> Needles {
        values.retain(|v| !v.is_empty());
        // longest first, so a value containing another is removed whole
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Needles(Arc::new(values))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn longest(&self) -> usize {
        self.0.first().map_or(0, Vec::len)
    }

    /// Replaces every occurrence; `None` when nothing matched.
    pub fn replace_all(&self, haystack: &[u8]) -> Option<Vec<u8>> {
        let mut current: Option<Vec<u8>> = None;
        for needle in self.0.iter() {
            let src = current.as_deref().unwrap_or(haystack);
            if memchr::memmem::find(src, needle).is_none() {
                continue;
            }
            let mut out = Vec::with_capacity(src.len());
            let mut rest = src;
            while let Some(i) = memchr::memmem::find(rest, needle) {
                out.extend_from_slice(&rest[..i]);
                out.extend_from_slice(MARKER);
                rest = &rest[i + needle.len()..];
            }
            out.extend_from_slice(rest);
            current = Some(out);
        }
        current
    }
}

/// The streaming state for one response body.
pub struct Redactor {
    needles: Needles,
    held: BytesMut,
    /// How many values were removed, for the audit log.
    pub removed: u64,
}

impl Redactor {
    pub fn new(needles: Needles) -> Redactor {
        Redactor {
            needles,
            held: BytesMut::new(),
            removed: 0,
        }
    }

    /// Takes a chunk, returns what can safely be passed on now.
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        self.held.extend_from_slice(chunk);
        if let Some(replaced) = self.needles.replace_all(&self.held) {
            self.removed += 1;
            self.held = BytesMut::from(&replaced[..]);
        }
        let keep = self
            .needles
            .longest()
            .saturating_sub(1)
            .min(self.held.len());
        let ready = self.held.len() - keep;
        self.held.split_to(ready).freeze()
    }

    /// The held-back tail at the end of the body (it cannot start a secret any more).
    pub fn finish(&mut self) -> Bytes {
        self.held.split().freeze()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn run(needles: &[&str], chunks: &[&str]) -> String {
        let mut r = Redactor::new(Needles::new(
            needles.iter().map(|s| s.as_bytes().to_vec()).collect(),
        ));
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&r.push(c.as_bytes()));
        }
        out.extend_from_slice(&r.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn split_across_chunks() {
        let m = std::str::from_utf8(MARKER).unwrap();
        assert_eq!(
            run(&["supersecret"], &["a super", "sec", "ret b"]),
            format!("a {m} b")
        );
        assert_eq!(
            run(&["supersecret"], &["supersecretsupersecret"]),
            format!("{m}{m}")
        );
        assert_eq!(run(&["supersecret"], &["nothing here"]), "nothing here");
        assert_eq!(run(&["supersecret"], &["supersecre", "X"]), "supersecreX");
        assert_eq!(
            run(
                &["Basic eHl6OnN1cGVyc2VjcmV0", "supersecret"],
                &["h: Basic eHl6OnN1cGVyc2VjcmV0"]
            ),
            format!("h: {m}")
        );
    }
}
