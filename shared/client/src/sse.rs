//! An incremental Server-Sent Events decoder (the WHATWG framing) for the session event stream
//! (PROTOCOL.md §7.2).
//!
//! Bytes arrive in arbitrary chunks: a line, a UTF-8 character or a `\r\n` pair may be split
//! between two chunks. Frames are bounded (CATALOGUE C13): a server that never ends a frame gets
//! an error, not an ever-growing buffer.

/// One dispatched frame: its `event:` name (if any) and its `data:` lines joined by `\n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseFrame {
    pub event: Option<String>,
    pub data: String,
}

/// The stream broke the framing rules or the size bound.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("server-sent event larger than {0} bytes")]
    FrameTooLarge(usize),
}

/// Feeds on byte chunks, yields complete frames.
#[derive(Debug)]
pub struct SseDecoder {
    line: Vec<u8>,
    event: Option<String>,
    data: String,
    has_data: bool,
    frame_bytes: usize,
    max_frame_bytes: usize,
    /// The previous chunk ended with `\r`: a leading `\n` of the next one belongs to it.
    after_cr: bool,
}

impl SseDecoder {
    pub fn new(max_frame_bytes: usize) -> Self {
        SseDecoder {
            line: Vec::new(),
            event: None,
            data: String::new(),
            has_data: false,
            frame_bytes: 0,
            max_frame_bytes,
            after_cr: false,
        }
    }

    /// Consumes one chunk and returns the frames it completed.
    ///
    /// Line ends are found with `memchr` and the bytes between them copied in one go: a tool
    /// result echoed on the stream can be hundreds of KiB, and a byte-at-a-time loop was a
    /// visible share of a round trip.
    pub fn push(&mut self, mut chunk: &[u8]) -> Result<Vec<SseFrame>, SseError> {
        let mut frames = Vec::new();
        if let Some(&first) = chunk.first()
            && std::mem::take(&mut self.after_cr)
            && first == b'\n'
        {
            chunk = &chunk[1..]; // the `\n` of a `\r\n` split between two chunks
        }
        while let Some(at) = memchr::memchr2(b'\n', b'\r', chunk) {
            self.extend_line(&chunk[..at])?;
            let cr = chunk[at] == b'\r';
            chunk = &chunk[at + 1..];
            if cr {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            if let Some(frame) = self.end_line() {
                frames.push(frame);
            }
        }
        self.extend_line(chunk)?;
        Ok(frames)
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        self.frame_bytes += bytes.len();
        if self.frame_bytes > self.max_frame_bytes {
            return Err(SseError::FrameTooLarge(self.max_frame_bytes));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn end_line(&mut self) -> Option<SseFrame> {
        // The line buffer keeps its allocation from line to line.
        let mut line = std::mem::take(&mut self.line);
        let frame = self.take_line(&line);
        line.clear();
        self.line = line;
        frame
    }

    fn take_line(&mut self, line: &[u8]) -> Option<SseFrame> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line.first() == Some(&b':') {
            return None; // comment / keep-alive
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&line[..], ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            // `id` and `retry` carry nothing this protocol uses (no resume token, §7.2).
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseFrame> {
        self.frame_bytes = 0;
        let event = self.event.take();
        if !self.has_data {
            return None;
        }
        self.has_data = false;
        Some(SseFrame {
            event,
            data: std::mem::take(&mut self.data),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STREAM: &str = "event: agent.tool_use\ndata: {\"a\":1}\n\n: keep-alive\n\nevent: ping\ndata: {}\r\n\r\ndata: first\ndata: second\n\n";

    fn line() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just(String::new()),
            Just(": keep-alive".to_owned()),
            Just("event: agent.tool_use".to_owned()),
            Just("event:ping".to_owned()),
            Just("id: 7".to_owned()),
            Just("data".to_owned()),
            "data: [ -~é]{0,40}",
            "data:[ -~]{0,5}",
            "[a-z]{0,6}(: ?[ -~]{0,6})?",
        ]
    }

    /// Splits into lines first (`\r\n`, `\r` or `\n`; an unended last line is not a line),
    /// then interprets them: a frame ends at an empty line and needs at least one `data` line.
    fn oracle(text: &str) -> Vec<SseFrame> {
        let (mut lines, mut current) = (vec![], String::new());
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\r' | '\n' => {
                    if c == '\r' && chars.peek() == Some(&'\n') {
                        chars.next();
                    }
                    lines.push(std::mem::take(&mut current));
                }
                _ => current.push(c),
            }
        }
        let (mut frames, mut event, mut data) = (vec![], None, None::<String>);
        for line in &lines {
            if line.is_empty() {
                if let Some(data) = data.take() {
                    frames.push(SseFrame {
                        event: event.take(),
                        data,
                    });
                } else {
                    event = None;
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match field {
                "event" => event = Some(value.to_owned()),
                "data" => match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => data = Some(value.to_owned()),
                },
                _ => {}
            }
        }
        frames
    }

    /// `bytes` in chunks ending at each cut (cuts within `0..=bytes.len()`, in any order).
    fn cut(bytes: &[u8], mut cuts: Vec<usize>) -> Vec<&[u8]> {
        cuts.sort_unstable();
        let mut chunks = vec![];
        let mut start = 0;
        for c in cuts {
            chunks.push(&bytes[start..c]);
            start = c;
        }
        chunks.push(&bytes[start..]);
        chunks
    }

    fn decode_all(chunks: &[&[u8]]) -> Vec<SseFrame> {
        let mut d = SseDecoder::new(1 << 20);
        chunks.iter().flat_map(|c| d.push(c).unwrap()).collect()
    }

    #[test]
    fn frames_names_and_multiline_data() {
        let frames = decode_all(&[STREAM.as_bytes()]);
        assert_eq!(
            frames,
            vec![
                SseFrame {
                    event: Some("agent.tool_use".into()),
                    data: "{\"a\":1}".into()
                },
                SseFrame {
                    event: Some("ping".into()),
                    data: "{}".into()
                },
                SseFrame {
                    event: None,
                    data: "first\nsecond".into()
                },
            ]
        );
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut d = SseDecoder::new(16);
        assert_eq!(
            d.push(b"data: 0123456789abcdef"),
            Err(SseError::FrameTooLarge(16))
        );
    }

    #[test]
    fn the_bound_is_per_frame_and_exact() {
        // "data: " and ten digits: 16 bytes of frame, line ends not counted.
        let mut d = SseDecoder::new(16);
        let frames = d
            .push(b"data: 0123456789\n\ndata: 9876543210\r\n\r\n")
            .unwrap();
        assert_eq!(
            frames.len(),
            2,
            "two frames of 16 bytes each fit a bound of 16"
        );
        let mut d = SseDecoder::new(16);
        assert_eq!(
            d.push(b"data: 0123456789a\n\n"),
            Err(SseError::FrameTooLarge(16))
        );
        // Split across chunks, lines of one frame add up.
        let mut d = SseDecoder::new(16);
        assert!(d.push(b"data: 0123").unwrap().is_empty());
        assert!(d.push(b"\ndata:").unwrap().is_empty());
        assert_eq!(d.push(b"12"), Err(SseError::FrameTooLarge(16)));
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_frames(cuts in proptest::collection::vec(0usize..STREAM.len(), 0..8)) {
            let bytes = STREAM.as_bytes();
            prop_assert_eq!(decode_all(&cut(bytes, cuts)), decode_all(&[bytes]));
        }

        /// Random streams of lines with every kind of line end, cut anywhere, against a
        /// decoder written the plainest way (split into lines first, then interpret).
        #[test]
        fn random_streams_match_a_line_by_line_oracle(
            lines in proptest::collection::vec((line(), prop_oneof![Just("\n"), Just("\r"), Just("\r\n")]), 0..24),
            cuts in proptest::collection::vec(0usize..4096, 0..8),
        ) {
            let text: String = lines.iter().map(|(l, end)| format!("{l}{end}")).collect();
            let bytes = text.as_bytes();
            let cuts = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            prop_assert_eq!(decode_all(&cut(bytes, cuts)), oracle(&text));
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut d = SseDecoder::new(64);
            let _ = d.push(&data);
        }
    }
}
