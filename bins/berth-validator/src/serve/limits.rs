//! What one call may cost the server: message size, resources per request, time, and how many
//! calls run at once.
//!
//! The message size is checked on the wire, from each gRPC message's 5-byte prefix (a flag and
//! a big-endian length), before the message is buffered: a request announcing more than
//! [`Limits::max_request_bytes`] fails with RESOURCE_EXHAUSTED and is never read
//! ([`FrameScanner`], applied to every request body by [`limit_body`]).

use std::time::Duration;

use http_body_util::{BodyStream, StreamBody};
use tokio_stream::StreamExt as _;
use tonic::Status;

/// The server's bounds on a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest request message (one `Validate`/`Apply` request, one `Batch` line), in bytes.
    pub max_request_bytes: usize,
    /// The most resource objects one request may hold, all lists together.
    pub max_resources: usize,
    /// How long a call (one `Batch` line) may take, waiting for a slot included.
    pub call_timeout: Duration,
    /// How many calls (`Batch` lines) are answered at once; more wait for a slot.
    pub max_concurrent_calls: usize,
}

/// 4 MiB, gRPC's customary default.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 << 20;
/// Far above any real offer (Mesos agents offer tens of resources), far below what makes a
/// request slow.
pub const DEFAULT_MAX_RESOURCES: usize = 10_000;
/// Generous for any request within the other bounds.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Validation is CPU work: more slots than this only queue work inside the server.
pub const DEFAULT_MAX_CONCURRENT_CALLS: usize = 64;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_resources: DEFAULT_MAX_RESOURCES,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS,
        }
    }
}

/// Follows the gRPC message framing of a request body and refuses a message whose announced
/// length is past `max`, before any of it is buffered.
#[derive(Clone, Debug)]
pub struct FrameScanner {
    max: usize,
    header: [u8; 5],
    /// Bytes of the current prefix seen so far.
    have: usize,
    /// Bytes of the current message still to pass.
    skip: usize,
}

impl FrameScanner {
    /// A scanner for messages of at most `max` bytes.
    #[must_use]
    pub fn new(max: usize) -> FrameScanner {
        FrameScanner {
            max,
            header: [0; 5],
            have: 0,
            skip: 0,
        }
    }

    /// Feeds the next chunk of the body.
    ///
    /// # Errors
    /// RESOURCE_EXHAUSTED once a message's prefix announces more than the bound.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = data.get(n..).unwrap_or_default();
                continue;
            }
            let want = self.header.len() - self.have;
            let (head, rest) = data.split_at(want.min(data.len()));
            if let Some(slot) = self.header.get_mut(self.have..self.have + head.len()) {
                slot.copy_from_slice(head);
            }
            self.have += head.len();
            data = rest;
            if self.have == self.header.len() {
                self.have = 0;
                let [_, a, b, c, d] = self.header;
                let len = u32::from_be_bytes([a, b, c, d]);
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                if len > self.max {
                    return Err(Status::resource_exhausted(format!(
                        "the request message has {len} bytes; this server accepts at most {} \
                         (--max-request-bytes)",
                        self.max
                    )));
                }
                self.skip = len;
            }
        }
        Ok(())
    }
}

/// The request body behind `body`, failing with RESOURCE_EXHAUSTED (which tonic reports as the
/// call's status) at the first message past `max` bytes.
pub fn limit_body(body: tonic::body::Body, max: usize) -> tonic::body::Body {
    let mut scanner = FrameScanner::new(max);
    let frames = BodyStream::new(body).map(move |frame| {
        let frame = frame?;
        if let Some(data) = frame.data_ref() {
            scanner.feed(data)?;
        }
        Ok::<_, Status>(frame)
    });
    tonic::body::Body::new(StreamBody::new(frames))
}

/// `limit_body` over a request.
pub fn limit_request(
    max: usize,
) -> impl Fn(http::Request<tonic::body::Body>) -> http::Request<tonic::body::Body> + Clone {
    move |request| request.map(|body| limit_body(body, max))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn frame(len: u32) -> Vec<u8> {
        let mut out = vec![0];
        out.extend(len.to_be_bytes());
        out.extend(std::iter::repeat_n(7u8, usize::try_from(len).unwrap()));
        out
    }

    #[test]
    fn messages_within_the_bound_pass_in_any_chunking() {
        let body: Vec<u8> = [frame(10), frame(0), frame(100), frame(3)].concat();
        for chunk in [1, 2, 4, 5, 6, 7, 64, 1000] {
            let mut scanner = FrameScanner::new(100);
            for piece in body.chunks(chunk) {
                scanner.feed(piece).unwrap();
            }
            assert_eq!((scanner.have, scanner.skip), (0, 0), "chunk {chunk}");
        }
    }

    #[test]
    fn a_message_past_the_bound_fails_at_its_prefix() {
        let body: Vec<u8> = [frame(10), frame(101)].concat();
        for chunk in [1, 3, 5, 16, 1000] {
            let mut scanner = FrameScanner::new(100);
            let mut fed = 0;
            let err = body
                .chunks(chunk)
                .find_map(|piece| {
                    fed += piece.len();
                    scanner.feed(piece).err()
                })
                .unwrap();
            assert_eq!(err.code(), tonic::Code::ResourceExhausted);
            // Refused as soon as the prefix is complete, not after the message.
            assert!(fed <= 15 + 5 + chunk, "chunk {chunk}: fed {fed}");
        }
        let mut scanner = FrameScanner::new(usize::MAX);
        scanner.feed(&[0, 0xff, 0xff, 0xff, 0xff]).unwrap();
    }
}
