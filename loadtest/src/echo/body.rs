//! Response bodies of the echo server: one buffered document, a paced stream of 1 KiB chunks,
//! or a fixed-length filler. All are served from shared or static bytes, without boxing the
//! body or copying the payload.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// Size of each chunk of a paced stream.
pub(super) const STREAM_CHUNK: usize = 1024;
/// Pause between two chunks of a paced stream.
pub(super) const STREAM_INTERVAL: Duration = Duration::from_millis(10);
/// Largest frame a filler body yields at once.
const FILLER_FRAME: usize = 64 * 1024;

static FILLER: [u8; FILLER_FRAME] = [b'x'; FILLER_FRAME];

/// The body of every echo response.
pub(crate) struct EchoBody(Kind);

enum Kind {
    Full(Option<Bytes>),
    Paced {
        remaining: u64,
        pause: Option<Pin<Box<Sleep>>>,
    },
    Filler {
        remaining: u64,
    },
}

impl EchoBody {
    /// No bytes at all.
    pub(crate) fn empty() -> Self {
        EchoBody(Kind::Full(None))
    }

    /// `bytes` in one frame, with an exact length (so HTTP/1.1 sends `content-length`).
    pub(crate) fn full(bytes: Bytes) -> Self {
        EchoBody(Kind::Full(Some(bytes).filter(|b| !b.is_empty())))
    }

    /// `chunks` frames of [`STREAM_CHUNK`] bytes, the first at once and the next ones
    /// [`STREAM_INTERVAL`] apart; no declared length, so HTTP/1.1 sends it chunked.
    pub(crate) fn paced(chunks: u64) -> Self {
        EchoBody(Kind::Paced {
            remaining: chunks,
            pause: None,
        })
    }

    /// `len` bytes of `x` with an exact length, yielded in frames of at most 64 KiB.
    pub(crate) fn filler(len: u64) -> Self {
        EchoBody(Kind::Filler { remaining: len })
    }
}

impl Body for EchoBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = match &mut self.get_mut().0 {
            Kind::Full(bytes) => bytes.take(),
            Kind::Paced { remaining: 0, .. } | Kind::Filler { remaining: 0 } => None,
            Kind::Paced { remaining, pause } => {
                match pause {
                    Some(pause) => {
                        ready!(pause.as_mut().poll(cx));
                        pause.as_mut().reset(Instant::now() + STREAM_INTERVAL);
                    }
                    None => *pause = Some(Box::pin(tokio::time::sleep(STREAM_INTERVAL))),
                }
                *remaining -= 1;
                Some(Bytes::from_static(&FILLER[..STREAM_CHUNK]))
            }
            Kind::Filler { remaining } => {
                let len = usize::try_from(*remaining).map_or(FILLER_FRAME, |r| r.min(FILLER_FRAME));
                *remaining -= len as u64;
                Some(Bytes::from_static(&FILLER[..len]))
            }
        };
        Poll::Ready(frame.map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Paced { remaining, .. } | Kind::Filler { remaining } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Paced { .. } => SizeHint::default(),
            Kind::Filler { remaining } => SizeHint::with_exact(*remaining),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn frame_lengths(mut body: EchoBody) -> Vec<usize> {
        let mut lengths = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map(Frame::into_data);
            lengths.push(data.map_or(0, |d| d.len()));
        }
        lengths
    }

    #[tokio::test]
    async fn filler_yields_exactly_its_length_in_bounded_frames() {
        let body = EchoBody::filler(150_000);
        assert_eq!(body.size_hint().exact(), Some(150_000));
        assert_eq!(
            frame_lengths(body).await,
            vec![65_536, 65_536, 150_000 - 131_072]
        );
        assert!(EchoBody::filler(0).is_end_stream());
    }

    #[tokio::test]
    async fn paced_stream_spaces_its_chunks() {
        let body = EchoBody::paced(3);
        assert_eq!(body.size_hint().exact(), None);
        let start = Instant::now();
        assert_eq!(frame_lengths(body).await, vec![STREAM_CHUNK; 3]);
        assert!(start.elapsed() >= STREAM_INTERVAL * 2);
    }

    #[tokio::test]
    async fn full_body_has_exact_length_and_one_frame() {
        let body = EchoBody::full(Bytes::from_static(b"{}"));
        assert_eq!(body.size_hint().exact(), Some(2));
        assert_eq!(frame_lengths(body).await, vec![2]);
        assert!(EchoBody::empty().is_end_stream());
        assert!(EchoBody::full(Bytes::new()).is_end_stream());
    }
}
