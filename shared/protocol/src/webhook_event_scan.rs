//! A fast path for [`WebhookEventHead::parse`]: the bodies the sender actually produces (a flat
//! object of plain strings, PROTOCOL.md §10.3), read by a byte scanner instead of serde_json.
//!
//! It never refuses anything: it either returns the head serde_json would return for the same
//! body, or gives up (`None`) and leaves the decision, and the error text, to serde_json. It
//! gives up on everything whose handling needs care:
//! - a string with an escape (serde_json unescapes it, and keys are matched after unescaping);
//! - a number with a fraction or an exponent, or of more than [`MAX_INTEGER_DIGITS`] digits
//!   (serde_json's range rules decide those: CATALOGUE W15's numbers of 10^6 digits);
//! - nesting deeper than [`MAX_DEPTH`] (serde_json's recursion limit decides: W15);
//! - a repeated `type`, `id`, `created_at` or `data`, a missing one, a top-level `type` other
//!   than `"event"`, a value of the wrong kind (W18), and anything that is not JSON at all.
//!
//! Everything it does accept is checked as serde_json checks it: UTF-8 (the whole body, once:
//! serde_json refuses invalid UTF-8 wherever it is, inside a string or not, so such a body is
//! left to it), no control characters in strings, the JSON grammar of every value it skips,
//! nothing after the object but whitespace. A differential fuzz target
//! (`shared/protocol/fuzz`, `event_head`) and the unit tests compare the two on every input.

use std::borrow::Cow;

use crate::webhook_event::WebhookEventKind;
use crate::webhook_event_head::{WebhookEventDataHead, WebhookEventHead};

/// Deepest nesting of objects and arrays taken here, the event object itself counting as 1;
/// serde_json's limit is 127.
pub(crate) const MAX_DEPTH: usize = 16;

/// Longest integer taken here: 15 digits are exact in an `f64` and far inside every range
/// serde_json checks.
pub(crate) const MAX_INTEGER_DIGITS: usize = 15;

/// The head of `body` if it has the plain shape; `None` means "ask serde_json".
pub(crate) fn plain_head(body: &[u8]) -> Option<WebhookEventHead<'_>> {
    // Once for the whole body: every string is then cut out of it at `"` bytes, which are
    // char boundaries, so none needs checking again.
    let text = std::str::from_utf8(body).ok()?;
    let mut s = Scanner {
        text,
        bytes: body,
        pos: 0,
    };
    s.open(b'{')?;
    let (mut kind, mut id, mut created_at, mut data) = (None, None, None, None);
    s.members(|s, key| match key {
        "type" => {
            // The only variant of `WebhookEventKind`; serde_json refuses other strings.
            (s.string()? == "event").then_some(())?;
            first(&mut kind, WebhookEventKind::Event)
        }
        "id" => {
            let v = s.string()?;
            first(&mut id, v)
        }
        "created_at" => {
            let v = s.string()?;
            first(&mut created_at, v)
        }
        "data" => {
            let v = s.data_head()?;
            first(&mut data, v)
        }
        _ => s.value(1),
    })?;
    s.skip_whitespace();
    if s.pos != body.len() {
        return None;
    }
    Some(WebhookEventHead {
        kind: kind.unwrap_or_default(),
        id: Cow::Borrowed(id?),
        created_at: Cow::Borrowed(created_at?),
        data: data?,
    })
}

/// How many bytes at the start of `bytes` can stay in a string as they are (up to the first
/// `"`, `\` or control byte below 0x20). Eight bytes at a time: this loop is most of the
/// scanner's work.
fn plain_run(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    // The top bit of each byte of `w` that is below `n` (n <= 0x80). Only the lowest flag is
    // sure (a borrow can flag bytes above it), and the lowest is all that is used.
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH;
    let mut done = 0;
    let mut rest = bytes;
    while let Some((chunk, tail)) = rest.split_first_chunk::<8>() {
        let w = u64::from_le_bytes(*chunk);
        let stops = below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1)
            | below(w, 0x20);
        if stops != 0 {
            return done + (stops.trailing_zeros() / 8) as usize;
        }
        done += 8;
        rest = tail;
    }
    match rest
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
    {
        Some(i) => done + i,
        None => bytes.len(),
    }
}

/// Stores `value` unless the key was seen before (serde_json refuses a repeated field).
fn first<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

struct Scanner<'a> {
    /// The body, known to be UTF-8; `bytes` is the same, as bytes.
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// JSON's whitespace, the four bytes serde_json skips.
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Skips whitespace and takes `byte`.
    fn open(&mut self, byte: u8) -> Option<()> {
        self.skip_whitespace();
        (self.peek()? == byte).then(|| self.pos += 1)
    }

    /// A string without escapes, borrowed from the body.
    fn string(&mut self) -> Option<&'a str> {
        self.open(b'"')?;
        let start = self.pos;
        let len = plain_run(self.bytes.get(start..)?);
        let end = start + len;
        // The run ends at the closing quote, or at an escape or control byte: give up there.
        if self.bytes.get(end) != Some(&b'"') {
            return None;
        }
        self.pos = end + 1;
        // Both ends are next to a `"`, so on char boundaries: `get` cannot fail here.
        self.text.get(start..end)
    }

    /// The members of an object whose `{` was taken: `member` is called with each key, after
    /// its colon, and reads the value.
    fn members(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.skip_whitespace();
        if self.peek()? == b'}' {
            self.pos += 1;
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.open(b':')?;
            member(self, key)?;
            self.skip_whitespace();
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// `data`: an object with plain-string `type` and `id`; other members are skipped (checked).
    fn data_head(&mut self) -> Option<WebhookEventDataHead<'a>> {
        self.open(b'{')?;
        let (mut kind, mut id) = (None, None);
        self.members(|s, key| match key {
            "type" => {
                let v = s.string()?;
                first(&mut kind, v)
            }
            "id" => {
                let v = s.string()?;
                first(&mut id, v)
            }
            _ => s.value(2),
        })?;
        Some(WebhookEventDataHead {
            kind: Cow::Borrowed(kind?),
            id: Cow::Borrowed(id?),
        })
    }

    /// Any JSON value inside `depth` open containers, checked and dropped.
    fn value(&mut self, depth: usize) -> Option<()> {
        self.skip_whitespace();
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' | b'[' if depth >= MAX_DEPTH => None,
            b'{' => {
                self.pos += 1;
                self.members(|s, _| s.value(depth + 1))
            }
            b'[' => {
                self.pos += 1;
                self.elements(depth + 1)
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.integer(),
            _ => None,
        }
    }

    /// The elements of an array whose `[` was taken, at `depth`.
    fn elements(&mut self, depth: usize) -> Option<()> {
        self.skip_whitespace();
        if self.peek()? == b']' {
            self.pos += 1;
            return Some(());
        }
        loop {
            self.value(depth)?;
            self.skip_whitespace();
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.pos.checked_add(word.len())?;
        (self.bytes.get(self.pos..end)? == word).then(|| self.pos = end)
    }

    /// `-?(0|[1-9][0-9]*)` of at most [`MAX_INTEGER_DIGITS`] digits, and no fraction or
    /// exponent after it. A digit after a leading zero is left to serde_json (which refuses it).
    fn integer(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let start = self.pos;
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                while let Some(b'0'..=b'9') = self.peek() {
                    self.pos += 1;
                }
            }
            _ => return None,
        }
        let long = self.pos - start > MAX_INTEGER_DIGITS;
        let more = matches!(self.peek(), Some(b'.' | b'e' | b'E' | b'0'..=b'9'));
        (!long && !more).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SENT: &str = r#"{"type":"event","id":"whe_01TESTVECTOR000000000000","created_at":"2026-03-18T14:05:22Z","data":{"type":"session.status_run_started","id":"sesn_01TESTSESSION0000000000","organization_id":"org_01TESTORG","workspace_id":"wrkspc_01TESTWS","attempt":12}}"#;

    /// What serde_json alone makes of `body`, as comparable values.
    fn serde(body: &[u8]) -> Result<WebhookEventHead<'_>, String> {
        serde_json::from_slice(body).map_err(|e| e.to_string())
    }

    /// `parse` agrees with serde_json, and the fast path, when taken, too.
    fn agrees(body: &[u8]) {
        let shown = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
        let expected = serde(body);
        if let Some(fast) = plain_head(body) {
            assert_eq!(Ok(&fast), expected.as_ref(), "{shown}");
        }
        let got = WebhookEventHead::parse(body).map_err(|e| e.to_string());
        assert_eq!(got, expected, "{shown}");
    }

    fn nested(depth: usize) -> String {
        // The event object and `data` are 2 levels; the rest are arrays.
        let inner = depth - 2;
        format!(
            r#"{{"id":"w","created_at":"t","data":{{"type":"x","id":"y","n":{}0{}}}}}"#,
            "[".repeat(inner),
            "]".repeat(inner)
        )
    }

    #[test]
    fn plain_bodies_take_the_fast_path_with_serde_values() {
        let max_int = format!(
            r#"{{"id":"w","created_at":"t","data":{{"type":"x","id":"y","n":-{}}}}}"#,
            "9".repeat(MAX_INTEGER_DIGITS)
        );
        let deepest = nested(MAX_DEPTH);
        let bodies = [
            SENT,
            " \r\n\t{ \"id\" : \"whe_1\" , \"created_at\":\"t\",\"data\" :{\"id\":\"s\",\"type\":\"x\"} } \n",
            r#"{"type":"event","id":"","created_at":"","data":{"type":"","id":""}}"#,
            r#"{"x":{},"y":[],"z":[true,false,null,0,-0,12,{"a":[{}]}],"id":"w","created_at":"t","data":{"type":"x","id":"y","q":{"r":"s"}}}"#,
            r#"{"id":"whé_1","created_at":"🦀","data":{"type":"x","id":"y","note":"ünïcödé"}}"#,
            r#"{"id":"w","id2":"v","x":1,"x":2,"created_at":"t","data":{"type":"x","id":"y"}}"#,
            &max_int,
            &deepest,
        ];
        for body in bodies {
            assert!(plain_head(body.as_bytes()).is_some(), "{body}");
            agrees(body.as_bytes());
        }
        let head = plain_head(SENT.as_bytes()).unwrap();
        assert!(head.is_run_started());
        assert_eq!(head.id, "whe_01TESTVECTOR000000000000");
    }

    #[test]
    fn everything_else_is_left_to_serde() {
        let long_int = format!(
            r#"{{"id":"w","created_at":"t","data":{{"type":"x","id":"y","n":{}}}}}"#,
            "9".repeat(MAX_INTEGER_DIGITS + 1)
        );
        let too_deep = nested(MAX_DEPTH + 1);
        let huge = format!(
            r#"{{"id":"w","created_at":"t","data":{{"type":"x","id":"y","n":1{}}}}}"#,
            "0".repeat(1_000_000)
        );
        let very_deep = nested(10_000);
        let bodies: Vec<Vec<u8>> = [
            // Accepted by serde_json, but not plain.
            r#"{"id":"whe_\u0031","created_at":"t","data":{"type":"x","id":"y"}}"#,
            r#"{"i\u0064":"w","created_at":"t","data":{"type":"x","id":"y"}}"#,
            r#"{"id":"w","created_at":"t","data":{"type":"x","id":"y","s":"a\"b"}}"#,
            r#"{"id":"w","created_at":"t","data":{"type":"x","id":"y","n":1.5}}"#,
            r#"{"id":"w","created_at":"t","data":{"type":"x","id":"y","n":1e3}}"#,
            r#"{"id":"w","created_at":"t","data":{"type":"x","id":"y","n":-2E-3}}"#,
            &long_int,
            &too_deep,
            // Refused by serde_json.
            r#"{"type":"other","id":"w","created_at":"t","data":{"type":"x","id":"y"}}"#,
            r#"{"type":1,"id":"w","created_at":"t","data":{"type":"x","id":"y"}}"#,
            r#"{"id":"w","id":"w","created_at":"t","data":{"type":"x","id":"y"}}"#,
            r#"{"id":"w","created_at":"t","data":{"type":"x","type":"x","id":"y"}}"#,
            r#"{"id":"w","created_at":"t","data":{"type":"x","id":"y"},"data":{"type":"x","id":"y"}}"#,
            r#"{"id":"w","data":{"type":"x","id":"y"}}"#,
            r#"{"id":"w","created_at":"t","data":{"id":"y"}}"#,
            r#"{"id":7,"created_at":"t","data":{"type":"x","id":"y"}}"#,
            r#"{"id":"w","created_at":"t","data":[]}"#,
            r#"{"id":"w","created_at":"t","data":{"type":"x","id":"y",}}"#,
            r#"{"id":"w","created_at":"t","data":{"type":"x","id":"y","a":[1,]}}"#,
            r#"{"id":"w","created_at":"t","data":{"type":"x","id":"y","n":01}}"#,
            r#"{"id":"w","created_at":"t","data":{"type":"x","id":"y","n":-}}"#,
            r#"{"id":"w","created_at":"t","data":{"type":"x","id":"y","b":tru}}"#,
            r#"{"id":"w","created_at":"t","data":{"type":"x","id":"y","b":truex}}"#,
            r#"{"id":"w","created_at":"t","data":{"type":"x","id":"y"}}x"#,
            r#"{"id":"w","created_at":"t","data":{"type":"x","id":"y"}"#,
            r#"{"id":"w","created_at":"t","data":{"type":"x","id":"y"}}{}"#,
            "\u{feff}{\"id\":\"w\",\"created_at\":\"t\",\"data\":{\"type\":\"x\",\"id\":\"y\"}}",
            "{\"id\":\"w\u{1}\",\"created_at\":\"t\",\"data\":{\"type\":\"x\",\"id\":\"y\"}}",
            "{\"id\":\"w\",\"created_at\":\"t\",\"data\":{\"type\":\"x\",\"id\":\"y\",1:2}}",
            // JSON's whitespace is space, tab, line feed and carriage return only; a number
            // has no `+`, a fraction needs digits, an integer no leading zero.
            "\u{c}{\"id\":\"w\",\"created_at\":\"t\",\"data\":{\"type\":\"x\",\"id\":\"y\"}}",
            "{\"id\":\"w\",\"created_at\":\"t\",\"data\":{\"type\":\"x\",\"id\":\"y\"}}\u{b}",
            r#"{"id":"w","created_at":"t","data":{"type":"x","id":"y","n":+1}}"#,
            r#"{"id":"w","created_at":"t","data":{"type":"x","id":"y","n":1.}}"#,
            r#"{"id":"w","created_at":"t","data":{"type":"x","id":"y","n":-01}}"#,
            "[]",
            "",
            &huge,
            &very_deep,
        ]
        .iter()
        .map(|b| b.as_bytes().to_vec())
        .chain([
            // Invalid UTF-8 inside a string, and a lone continuation byte.
            b"{\"id\":\"w\xff\",\"created_at\":\"t\",\"data\":{\"type\":\"x\",\"id\":\"y\"}}".to_vec(),
            b"{\"id\":\"w\",\"created_at\":\"\x80\",\"data\":{\"type\":\"x\",\"id\":\"y\"}}".to_vec(),
        ])
        .collect();
        for body in &bodies {
            let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
            assert!(plain_head(body).is_none(), "{shown}");
            agrees(body);
        }
    }

    /// Bytes that matter to the grammar, for mutations.
    const ALPHABET: &[u8] = b"{}[]\":,\\ \t\n\r\x0b\x0c0123456789-+.eEtrufalsn\"typeidcreated_atdataevent\x00\x1f\x7f\xc3\xa9\xff";

    /// `plain_run` one byte at a time.
    fn plain_run_bytewise(bytes: &[u8]) -> usize {
        bytes
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            .unwrap_or(bytes.len())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// The eight-bytes-at-a-time run agrees with a byte loop, at every length and offset
        /// (mostly plain ASCII, some stops and high bytes anywhere).
        #[test]
        fn plain_run_matches_a_byte_loop(
            bytes in prop::collection::vec(prop_oneof![8 => 0x20_u8..0x80, 1 => any::<u8>()], 0..40)
        ) {
            prop_assert_eq!(plain_run(&bytes), plain_run_bytewise(&bytes));
        }

        /// The sender's body with a few bytes replaced, inserted or removed: the fast path
        /// either gives serde_json's value or gives up, and `parse` always matches serde_json.
        #[test]
        fn mutated_bodies_agree_with_serde(
            edits in prop::collection::vec((0usize..400, 0usize..ALPHABET.len(), 0u8..3), 1..6)
        ) {
            let mut body = SENT.as_bytes().to_vec();
            for (at, pick, how) in edits {
                let at = at % (body.len() + 1);
                let byte = ALPHABET[pick];
                match how {
                    0 if at < body.len() => body[at] = byte,
                    1 => body.insert(at, byte),
                    _ if at < body.len() => { body.remove(at); }
                    _ => body.push(byte),
                }
            }
            agrees(&body);
        }
    }
}
