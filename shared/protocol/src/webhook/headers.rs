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
        // The ingress calls this for every header of every delivery: the length rules out
        // nearly every other header before a byte is compared.
        let candidates: &[WebhookHeader] = match name.len() {
            10 => &[WebhookHeader::Id],
            17 => &[WebhookHeader::Timestamp, WebhookHeader::Signature],
            _ => return None,
        };
        candidates
            .iter()
            .copied()
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

/// What verification needs to know of each webhook header: how many lines it came on and the
/// first one. Unlike [`WebhookHeaders`] it is gathered without allocating, which matters to the
/// ingress, where every delivery does it (three `Vec`s were three allocations per delivery);
/// [`Verifier::verify`](super::Verifier::verify) on a [`WebhookHeaders`] goes through it too,
/// so both give the same answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookHeaderLines<'a> {
    id: Lines<'a>,
    timestamp: Lines<'a>,
    signature: Lines<'a>,
}

/// The lines of one header: how many, and the first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Lines<'a> {
    pub(super) count: usize,
    pub(super) first: &'a [u8],
}

impl<'a> WebhookHeaderLines<'a> {
    /// Gathers the webhook headers out of all of a request's header lines; other headers are
    /// skipped. Names are matched case-insensitively.
    pub fn from_pairs<N: AsRef<str>>(pairs: impl IntoIterator<Item = (N, &'a [u8])>) -> Self {
        let mut lines = Self::default();
        for (name, value) in pairs {
            lines.push(name.as_ref(), value);
        }
        lines
    }

    /// Records one header line; returns false (and records nothing) if `name` is not one of the
    /// three webhook headers.
    pub fn push(&mut self, name: &str, value: &'a [u8]) -> bool {
        let Some(header) = WebhookHeader::from_name(name) else {
            return false;
        };
        self.push_line(header, value);
        true
    }

    fn push_line(&mut self, header: WebhookHeader, value: &'a [u8]) {
        let lines = self.lines_mut(header);
        if lines.count == 0 {
            lines.first = value;
        }
        lines.count = lines.count.saturating_add(1);
    }

    pub(super) fn lines(&self, header: WebhookHeader) -> Lines<'a> {
        match header {
            WebhookHeader::Id => self.id,
            WebhookHeader::Timestamp => self.timestamp,
            WebhookHeader::Signature => self.signature,
        }
    }

    fn lines_mut(&mut self, header: WebhookHeader) -> &mut Lines<'a> {
        match header {
            WebhookHeader::Id => &mut self.id,
            WebhookHeader::Timestamp => &mut self.timestamp,
            WebhookHeader::Signature => &mut self.signature,
        }
    }
}

impl<'a> From<&WebhookHeaders<'a>> for WebhookHeaderLines<'a> {
    fn from(headers: &WebhookHeaders<'a>) -> Self {
        let lines = |values: &[&'a [u8]]| Lines {
            count: values.len(),
            first: values.first().copied().unwrap_or_default(),
        };
        Self {
            id: lines(&headers.id),
            timestamp: lines(&headers.timestamp),
            signature: lines(&headers.signature),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_case_insensitively_and_nothing_else_matches() {
        for header in WebhookHeader::ALL {
            let name = header.as_str();
            assert_eq!(WebhookHeader::from_name(name), Some(header));
            assert_eq!(
                WebhookHeader::from_name(&name.to_ascii_uppercase()),
                Some(header)
            );
            assert_eq!(WebhookHeader::from_name(&name[1..]), None);
            assert_eq!(WebhookHeader::from_name(&format!("{name}x")), None);
        }
        for other in [
            "",
            "host",
            "content-type",
            "webhook-ix",
            "webhook-signaturf",
        ] {
            assert_eq!(WebhookHeader::from_name(other), None, "{other}");
        }
    }

    #[test]
    fn lines_keep_the_count_and_the_first_line_of_each_header() {
        let pairs: [(&str, &[u8]); 7] = [
            ("Host", b"example.com"),
            ("WEBHOOK-ID", b"whe_1"),
            ("webhook-signature", b"v1,a"),
            ("webhook-timestamp", b""),
            ("Webhook-Signature", b"v1,b"),
            ("webhook-signature", b"v1,c"),
            ("content-length", b"2"),
        ];
        let lines = WebhookHeaderLines::from_pairs(pairs);
        assert_eq!(
            lines,
            WebhookHeaderLines::from(&WebhookHeaders::from_pairs(pairs))
        );
        let got = |h| (lines.lines(h).count, lines.lines(h).first);
        assert_eq!(got(WebhookHeader::Id), (1, &b"whe_1"[..]));
        assert_eq!(got(WebhookHeader::Timestamp), (1, &b""[..]));
        assert_eq!(got(WebhookHeader::Signature), (3, &b"v1,a"[..]));
        let none = WebhookHeaderLines::from_pairs([("host", &b"x"[..])]);
        assert_eq!(none.lines(WebhookHeader::Id).count, 0);
        assert_eq!(none, WebhookHeaderLines::from(&WebhookHeaders::default()));
    }
}
