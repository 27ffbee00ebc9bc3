//! Reading the raw body of a delivery, bounded in bytes (CATALOGUE W14).
//!
//! The bytes are kept exactly as received: verification runs on them, so nothing here may
//! decode, decompress or normalise. Frames are accumulated until the limit is passed, then
//! reading stops; the server caps hyper's read buffer at 64 KiB, so at most `limit + 64 KiB`
//! bytes are ever read from the socket.

use std::fmt::Display;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use hyper::body::Body as HttpBody;

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Declared or actual size above the limit.
    #[error("request body larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The client went away or sent a malformed chunked body.
    #[error("reading the request body failed: {0}")]
    Read(String),
}

/// True when the declared length alone proves the body is too large, so it need not be read at
/// all. hyper has already parsed `Content-Length` (refusing a malformed or contradictory one
/// before the handler runs) into the body's size hint, so no header is read again here; a
/// chunked body declares nothing and is bounded while read.
pub fn declared_too_large<B: HttpBody>(body: &B, limit: usize) -> bool {
    body.size_hint().lower() > limit as u64
}

/// Reads the whole body if it is at most `limit` bytes.
///
/// A body that arrives as one data frame (the usual case for a small delivery) is returned as
/// that frame, without a copy; bytes are copied into one buffer only from the second frame on.
pub async fn read_bounded<B>(mut body: B, limit: usize) -> Result<Bytes, BodyError>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Display,
{
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        // Trailers carry nothing we verify; only data frames count.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let held = first.as_ref().map_or(0, Bytes::len) + rest.len();
        if held.saturating_add(data.len()) > limit {
            return Err(BodyError::TooLarge { limit });
        }
        match &first {
            None if rest.is_empty() => first = Some(data),
            _ => {
                if let Some(head) = first.take() {
                    rest.extend_from_slice(&head);
                }
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok(match first {
        Some(only) => only,
        None => rest.freeze(),
    })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;

    use super::*;

    #[tokio::test]
    async fn reads_up_to_the_limit_and_refuses_one_byte_more() {
        let ok = read_bounded(Body::from(vec![b'a'; 10]), 10).await;
        assert_eq!(ok.map(|b| b.len()).ok(), Some(10));
        let over = read_bounded(Body::from(vec![b'a'; 11]), 10).await;
        assert!(matches!(over, Err(BodyError::TooLarge { limit: 10 })));
    }

    /// A body delivered in the given frames, one per poll.
    struct Frames(std::collections::VecDeque<&'static [u8]>);

    impl axum::body::HttpBody for Frames {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            let next = self.0.pop_front();
            std::task::Poll::Ready(
                next.map(|b| Ok(hyper::body::Frame::data(Bytes::from_static(b)))),
            )
        }
    }

    fn frames(parts: Vec<&'static [u8]>) -> Body {
        Body::new(Frames(parts.into()))
    }

    #[tokio::test]
    async fn frames_are_joined_in_order_and_the_limit_counts_them_all() {
        let got = read_bounded(frames(vec![b"ab", b"", b"cd", b"e"]), 5).await;
        assert_eq!(got.ok().as_deref(), Some(&b"abcde"[..]));
        let one = read_bounded(frames(vec![b"", b"xyz"]), 3).await;
        assert_eq!(one.ok().as_deref(), Some(&b"xyz"[..]));
        let over = read_bounded(frames(vec![b"abc", b"def"]), 5).await;
        assert!(matches!(over, Err(BodyError::TooLarge { limit: 5 })));
        let empty = read_bounded(frames(vec![]), 5).await;
        assert_eq!(empty.ok().as_deref(), Some(&b""[..]));
    }

    #[tokio::test]
    async fn bytes_are_kept_exactly_even_when_not_utf8() {
        let raw = vec![0xef, 0xbb, 0xbf, b'{', 0xff, b'\r', b'\n'];
        let got = read_bounded(Body::from(raw.clone()), 100).await.ok();
        assert_eq!(got.as_deref(), Some(raw.as_slice()));
    }

    #[test]
    fn declared_length_over_the_limit_is_caught_before_reading() {
        assert!(declared_too_large(&Body::from(vec![0_u8; 11]), 10));
        assert!(!declared_too_large(&Body::from(vec![0_u8; 10]), 10));
        // Frames of unknown total (chunked) declare nothing; reading bounds them.
        assert!(!declared_too_large(&frames(vec![b"abcdefghijkl"]), 10));
    }
}
