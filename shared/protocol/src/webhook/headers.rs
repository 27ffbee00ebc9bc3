//! The three Standard Webhooks headers exactly as they arrived, every line of each kept.

use std::fmt;

/// One of the three headers a Standard Webhooks delivery carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookHeader {
    /// `webhook-id`: the event id, identical on every retry (PROTOCOL.md §10.4).
    Id,
    /// `webhook-timestamp`: unix seconds, regenerated on every attempt.
    Timestamp,
    /// `webhook-signature`: space-separated `<version>,<base64>` entries.
    Signature,
}

impl WebhookHeader {
    pub const ALL: [WebhookHeader; 3] = [
        WebhookHeader::Id,
        WebhookHeader::Timestamp,
        WebhookHeader::Signature,
    ];

    /// The lowercase header name.
    pub const fn as_str(self) -> &'static str {
        match self {
            WebhookHeader::Id => "webhook-id",
            WebhookHeader::Timestamp => "webhook-timestamp",
            WebhookHeader::Signature => "webhook-signature",
        }
    }

    /// Matches a header name case-insensitively (header names are, PROTOCOL.md §10.5 step 5).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|header| header.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for WebhookHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Raw values of the webhook headers of one request, one entry per header line.
///
/// Every line is kept, because a header sent twice must be rejected rather than reduced to its
/// first line (CATALOGUE W1; `http::HeaderMap::get` returns only the first). Values are bytes,
/// not `str`, since HTTP allows non-UTF-8 header values and refusing them is the verifier's job.
///
/// With an `http::HeaderMap`, build it as
/// `WebhookHeaders::from_pairs(map.iter().map(|(n, v)| (n.as_str(), v.as_bytes())))`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookHeaders<'a> {
    pub id: Vec<&'a [u8]>,
    pub timestamp: Vec<&'a [u8]>,
    pub signature: Vec<&'a [u8]>,
}

impl<'a> WebhookHeaders<'a> {
    /// One line of each header: what a well-behaved sender produces.
    pub fn single(id: &'a str, timestamp: &'a str, signature: &'a str) -> Self {
        Self {
            id: vec![id.as_bytes()],
            timestamp: vec![timestamp.as_bytes()],
            signature: vec![signature.as_bytes()],
        }
    }

    /// Collects the webhook headers out of all of a request's header lines; other headers are
    /// skipped. Names are matched case-insensitively.
    pub fn from_pairs<N: AsRef<str>>(pairs: impl IntoIterator<Item = (N, &'a [u8])>) -> Self {
        let mut headers = Self::default();
        for (name, value) in pairs {
            headers.push(name.as_ref(), value);
        }
        headers
    }

    /// Records one header line; returns false (and records nothing) if `name` is not one of the
    /// three webhook headers.
    pub fn push(&mut self, name: &str, value: &'a [u8]) -> bool {
        match WebhookHeader::from_name(name) {
            Some(header) => {
                self.values_mut(header).push(value);
                true
            }
            None => false,
        }
    }

    /// Every line received for `header`, in arrival order.
    pub fn values(&self, header: WebhookHeader) -> &[&'a [u8]] {
        match header {
            WebhookHeader::Id => &self.id,
            WebhookHeader::Timestamp => &self.timestamp,
            WebhookHeader::Signature => &self.signature,
        }
    }

    fn values_mut(&mut self, header: WebhookHeader) -> &mut Vec<&'a [u8]> {
        match header {
            WebhookHeader::Id => &mut self.id,
            WebhookHeader::Timestamp => &mut self.timestamp,
            WebhookHeader::Signature => &mut self.signature,
        }
    }
}
