//! Every request body our servers receive is read as gRPC framing here, before tonic's codec
//! sees it, so that a broken request ends with a status that says what the client did,
//! decided from the bytes rather than from the wording of tonic's errors:
//!
//! | what came in | status |
//! |---|---|
//! | a flag byte other than 0 or 1, or 1 without a `grpc-encoding` header | INVALID_ARGUMENT |
//! | a length prefix above the server's limit | RESOURCE_EXHAUSTED naming the setting |
//! | the body ended inside a message (a cut stream) | INVALID_ARGUMENT |
//! | no whole message within `transport.first_message_timeout_ms` of the stream opening (for a unary call: not the whole request) | DEADLINE_EXCEEDED |
//! | a second message on a unary call | INVALID_ARGUMENT |
//! | the client reset the stream, or its connection broke | CANCELLED |
//!
//! Bytes inside a well-framed message that are not the method's protobuf are the codec's
//! business (`codec::Codec`, INVALID_ARGUMENT). The layer also counts the streams open on each
//! connection, which the connection's idle deadline reads (`serve`).

use crate::serve::PeerInfo;
use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::Status;

/// gRPC's message header: the compressed flag, then a big-endian u32 length.
const HEADER: usize = 5;

/// The methods whose client sends a stream of messages (from the protos); every other method
/// takes exactly one, and tonic calls its handler only once the body has ended, so for those
/// the deadline runs until the end of the body.
const CLIENT_STREAMING: [&str; 3] =
    ["/oni.v1.Learner/StreamRollouts", "/oni.v1.Inference/Act", "/oni.v1.EnvHub/Attach"];

/// What one server accepts in a request body.
#[derive(Debug, Clone)]
pub struct MessageLimit {
    /// Largest message, in bytes.
    pub bytes: usize,
    /// The setting a client that hits it can look up (or change, for the operator).
    pub key: &'static str,
}

#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub limit: MessageLimit,
    pub first_message: Duration,
    pub server: &'static str,
}

/// Where the reader stands in the byte stream.
enum State {
    /// Collecting a header; `got` bytes of it so far.
    Header { buf: [u8; HEADER], got: usize },
    /// Inside a message: this many bytes still to come.
    Message { left: usize, len: usize },
    /// A status was returned: the body yields nothing more.
    Failed,
}

/// A request body checked frame by frame; the data passes through unchanged.
pub struct FramedBody {
    inner: Body,
    policy: Arc<Policy>,
    compressed_ok: bool,
    state: State,
    /// Until the first whole message: the deadline for it.
    first: Option<Pin<Box<Sleep>>>,
    /// Set when the body ended cleanly without a single message.
    empty: Arc<AtomicBool>,
    /// A unary call: one message, and the deadline holds until the body ends.
    unary: bool,
    messages: usize,
    _stream: Option<crate::serve::OpenStream>,
}

impl FramedBody {
    fn new(inner: Body, policy: Arc<Policy>, compressed_ok: bool, stream: Option<crate::serve::OpenStream>) -> Self {
        let first = Some(Box::pin(tokio::time::sleep(policy.first_message)));
        let state = State::Header { buf: [0; HEADER], got: 0 };
        FramedBody {
            inner,
            policy,
            compressed_ok,
            state,
            first,
            empty: Arc::default(),
            unary: false,
            messages: 0,
            _stream: stream,
        }
    }

    /// Whether the body ended cleanly without a message, readable after it is gone.
    fn empty_flag(&self) -> Arc<AtomicBool> {
        self.empty.clone()
    }

    fn fail(&mut self, reason: &'static str, st: Status) -> Status {
        metrics::counter!(crate::metric_names::GRPC_BROKEN_REQUESTS, "server" => self.policy.server, "reason" => reason)
            .increment(1);
        self.state = State::Failed;
        self.first = None;
        st
    }

    /// Walks `data` through the framing; `Err` on the first rule it breaks.
    fn check(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            match &mut self.state {
                State::Header { buf, got } => {
                    let take = (HEADER - *got).min(data.len());
                    buf[*got..*got + take].copy_from_slice(&data[..take]);
                    *got += take;
                    data = &data[take..];
                    if *got < HEADER {
                        continue;
                    }
                    let (flag, len) = (buf[0], u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize);
                    if self.unary && self.messages > 0 {
                        let st = Status::invalid_argument("a unary call carries one message; this one sent more");
                        return Err(self.fail("second_message", st));
                    }
                    match flag {
                        0 => {}
                        1 if self.compressed_ok => {}
                        1 => {
                            return Err(self.fail(
                                "compressed_flag",
                                Status::invalid_argument(
                                    "a message has its compressed flag set but the request names no grpc-encoding",
                                ),
                            ))
                        }
                        f => {
                            return Err(self.fail(
                                "flag_byte",
                                Status::invalid_argument(format!(
                                    "a message starts with flag byte {f}: gRPC messages start with 0 (or 1 when compressed)"
                                )),
                            ))
                        }
                    }
                    if len > self.policy.limit.bytes {
                        let msg = format!(
                            "a {len}-byte message is above this server's limit of {} bytes ({})",
                            self.policy.limit.bytes, self.policy.limit.key
                        );
                        return Err(self.fail("too_large", Status::resource_exhausted(msg)));
                    }
                    self.state = if len == 0 {
                        self.message_done();
                        State::Header { buf: [0; HEADER], got: 0 }
                    } else {
                        State::Message { left: len, len }
                    };
                }
                State::Message { left, .. } => {
                    let take = (*left).min(data.len());
                    *left -= take;
                    data = &data[take..];
                    if *left == 0 {
                        self.state = State::Header { buf: [0; HEADER], got: 0 };
                        self.message_done();
                    }
                }
                State::Failed => return Ok(()),
            }
        }
        Ok(())
    }

    /// A whole message arrived: a stream's deadline is met; a unary call's holds until its
    /// body ends.
    fn message_done(&mut self) {
        self.messages += 1;
        if !self.unary {
            self.first = None;
        }
    }

    /// The body ended: fine between messages, a cut stream inside one.
    fn at_end(&mut self) -> Option<Status> {
        let cut = match self.state {
            State::Header { got: 0, .. } => {
                self.empty.store(self.messages == 0, Ordering::Release);
                self.first = None;
                return None;
            }
            State::Failed => return None,
            State::Header { got, .. } => format!("the request ended {got} bytes into a message header"),
            State::Message { left, len } => {
                format!("the request ended {} bytes into a {len}-byte message", len - left)
            }
        };
        Some(self.fail("cut", Status::invalid_argument(cut)))
    }
}

impl HttpBody for FramedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if let State::Failed = this.state {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.check(data.chunk())?;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(_))) => {
                // hyper's error for a reset stream or a dropped connection: the client is gone
                let st = Status::cancelled("the client reset the stream or its connection broke");
                Poll::Ready(Some(Err(this.fail("reset", st))))
            }
            Poll::Ready(None) => Poll::Ready(this.at_end().map(Err)),
            Poll::Pending => {
                if let Some(deadline) = this.first.as_mut() {
                    if deadline.as_mut().poll(cx).is_ready() {
                        let what = if this.unary { "the whole request" } else { "no whole message" };
                        let msg = format!(
                            "{what} within {:?} of opening the stream (transport.first_message_timeout_ms)",
                            this.policy.first_message
                        );
                        return Poll::Ready(Some(Err(this.fail("first_message", Status::deadline_exceeded(msg)))));
                    }
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Failed) || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The service wrapper that puts every request body through `FramedBody` and counts the
/// request as a stream open on its connection until its response body is gone.
#[derive(Clone)]
pub struct Framing<S> {
    inner: S,
    policy: Arc<Policy>,
}

/// Builds `Framing` around the router (`Server::layer`).
#[derive(Clone)]
pub struct FramingLayer {
    policy: Arc<Policy>,
}

impl FramingLayer {
    pub(crate) fn new(policy: Policy) -> Self {
        FramingLayer { policy: Arc::new(policy) }
    }
}

impl<S> tower::Layer<S> for FramingLayer {
    type Service = Framing<S>;

    fn layer(&self, inner: S) -> Framing<S> {
        Framing { inner, policy: self.policy.clone() }
    }
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> tower::Service<http::Request<Body>> for Framing<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<http::Response<Body>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        // the stream stays counted as long as either side of it lives
        let peer = req.extensions().get::<PeerInfo>();
        let (stream, held) = (peer.map(|p| p.open_stream()), peer.map(|p| p.open_stream()));
        let compressed_ok = req.headers().get("grpc-encoding").is_some_and(|v| v != "identity");
        let policy = self.policy.clone();
        let (parts, body) = req.into_parts();
        let mut body = FramedBody::new(body, policy, compressed_ok, stream);
        body.unary = !CLIENT_STREAMING.contains(&parts.uri.path());
        let empty = body.empty_flag();
        let req = http::Request::from_parts(parts, Body::new(body));
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            // tonic answers a unary call whose body held no message with INTERNAL; the
            // client sent nothing to read, so it is INVALID_ARGUMENT
            let h = resp.headers_mut();
            if empty.load(Ordering::Acquire) && h.get("grpc-status").is_some_and(|v| v == "13") {
                h.insert("grpc-status", http::HeaderValue::from_static("3"));
                h.insert("grpc-message", http::HeaderValue::from_static("the request carried no message"));
            }
            Ok(resp.map(|b| Body::new(HeldBody { inner: b, _stream: held })))
        })
    }
}

/// A response body that keeps its stream counted as open until it is dropped.
struct HeldBody {
    inner: Body,
    _stream: Option<crate::serve::OpenStream>,
}

impl HttpBody for HeldBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(limit: usize) -> FramedBody {
        let policy = Policy {
            limit: MessageLimit { bytes: limit, key: "test.limit" },
            first_message: Duration::from_secs(60),
            server: "test",
        };
        FramedBody::new(Body::empty(), Arc::new(policy), false, None)
    }

    fn msg(flag: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![flag];
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[tokio::test]
    async fn whole_messages_in_any_split_pass_and_the_end_between_messages_is_clean() {
        let mut two = msg(0, b"hello");
        two.extend(msg(0, b""));
        two.extend(msg(0, b"world!"));
        for split in 0..two.len() {
            let mut b = body(64);
            b.check(&two[..split]).unwrap();
            b.check(&two[split..]).unwrap();
            assert!(b.first.is_none(), "a whole message arrived");
            assert!(b.at_end().is_none(), "split at {split}");
        }
    }

    #[tokio::test]
    async fn each_broken_framing_gets_its_own_status() {
        let mut b = body(64);
        let st = b.check(&msg(1, b"x")).unwrap_err();
        assert_eq!(st.code(), tonic::Code::InvalidArgument);
        assert!(st.message().contains("grpc-encoding"), "{}", st.message());
        assert!(b.check(b"more").is_ok(), "a failed body checks nothing more");

        let st = body(64).check(&msg(7, b"x")).unwrap_err();
        assert_eq!((st.code(), st.message().contains("flag byte 7")), (tonic::Code::InvalidArgument, true));

        let st = body(4).check(&msg(0, b"12345")[..5]).unwrap_err();
        assert_eq!(st.code(), tonic::Code::ResourceExhausted);
        assert!(st.message().contains("5-byte") && st.message().contains("test.limit"), "{}", st.message());

        let mut cut = body(64);
        cut.check(&msg(0, b"hello")[..7]).unwrap();
        let st = cut.at_end().expect("a cut message");
        assert_eq!(st.code(), tonic::Code::InvalidArgument);
        assert_eq!(st.message(), "the request ended 2 bytes into a 5-byte message");

        let mut half_header = body(64);
        half_header.check(&[0, 0]).unwrap();
        assert_eq!(half_header.at_end().unwrap().message(), "the request ended 2 bytes into a message header");
    }

    #[tokio::test]
    async fn a_unary_call_takes_one_message_and_its_deadline_holds_until_the_body_ends() {
        let mut b = body(64);
        b.unary = true;
        b.check(&msg(0, b"one")).unwrap();
        assert!(b.first.is_some(), "a unary call's deadline runs until the body ends");
        let st = b.check(&msg(0, b"two")).unwrap_err();
        assert_eq!(st.code(), tonic::Code::InvalidArgument);
        let mut ok = body(64);
        ok.unary = true;
        ok.check(&msg(0, b"one")).unwrap();
        assert!(ok.at_end().is_none() && ok.first.is_none());
    }

    #[tokio::test]
    async fn a_compressed_message_passes_when_the_request_names_an_encoding() {
        let mut b = body(64);
        b.compressed_ok = true;
        b.check(&msg(1, b"zz")).unwrap();
        assert!(b.at_end().is_none());
    }
}
