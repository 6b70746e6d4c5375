//! Accepting connections for our gRPC servers without letting a client hold them for free.
//!
//! tonic guards a connection with HTTP/2 keepalives only once the HTTP/2 session exists; a
//! peer that opens TCP and sends nothing (or half the preface) was held forever, each one a
//! file descriptor and buffers. Here every accepted socket needs a slot out of a fixed number
//! per server (a full server refuses by closing at once) and must send the HTTP/2 preface and
//! first frame header within a deadline; accept errors such as running out of descriptors
//! back off instead of spinning, and are logged at most once per interval.

use crate::throttle::Throttled;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tonic::codegen::http;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The client connection preface (24 bytes) and one frame header (9): what a real HTTP/2
/// client sends before anything else. Over TLS these are counted in TLS records, whose own
/// handshake has its deadline in tonic's TLS config.
const HANDSHAKE_BYTES: usize = 24 + 9;
/// How long a new connection may take to send them.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent HTTP/2 streams one connection may open.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// Pause after a failed accept (out of descriptors, say) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one log line per this interval for refused connections and accept errors.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Connections one server holds at once: a quarter of the process's descriptor limit, so
/// that three servers in one process (`oni run`) still leave room for files and the
/// metrics endpoint; at least 64, at most 16 384.
pub fn max_connections() -> usize {
    let soft = fd_limit().unwrap_or(1024);
    (soft / 4).clamp(64, 16_384)
}

fn fd_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// An accepted connection: its slot goes back when it closes, and until the client has sent
/// `HANDSHAKE_BYTES` its reads fail once the deadline passes (hyper then drops it).
pub struct GuardedStream {
    io: TcpStream,
    _slot: OwnedSemaphorePermit,
    deadline: Option<Pin<Box<Sleep>>>,
    received: usize,
}

impl GuardedStream {
    fn new(io: TcpStream, slot: OwnedSemaphorePermit, handshake: Duration) -> Self {
        GuardedStream { io, _slot: slot, deadline: Some(Box::pin(tokio::time::sleep(handshake))), received: 0 }
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        let got = buf.filled().len() - before;
        let this = &mut *self;
        let Some(deadline) = this.deadline.as_mut() else { return r };
        this.received += got;
        if this.received >= HANDSHAKE_BYTES {
            this.deadline = None;
            return r;
        }
        if r.is_pending() && deadline.as_mut().poll(cx).is_ready() {
            metrics::counter!(crate::metric_names::GRPC_CONNECTIONS_TIMED_OUT).increment(1);
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no HTTP/2 preface within the deadline")));
        }
        r
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl Connected for GuardedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// How a server of ours answers a request it could not read (the body is not the protobuf
/// message, or too big): tonic's codec gives INTERNAL or OUT_OF_RANGE, but either way the
/// caller sent bad bytes. `limit_key` names the setting that bounds message size. `None`:
/// the stream broke (the client went away), nothing to answer.
pub fn inbound_refusal(st: &tonic::Status, limit_key: &str) -> Option<crate::Refusal> {
    let msg = st.message();
    if st.code() == tonic::Code::OutOfRange && msg.contains("too large") {
        return Some(crate::Refusal::Exhausted(format!("{msg} ({limit_key})")));
    }
    if st.code() == tonic::Code::Internal && (msg.contains("decode Protobuf") || msg.contains("compression flag")) {
        return Some(crate::Refusal::Unreadable(format!("the message could not be read: {msg}")));
    }
    None
}

/// The response side of `inbound_refusal` for unary calls, where tonic answers before our
/// handler runs: a trailers-only INTERNAL whose message is a decode failure becomes
/// INVALID_ARGUMENT (streams carry their status in trailers; their handlers map it).
pub type ResponseMap = fn(http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body>;

pub fn decode_failures_are_invalid_argument(
    mut resp: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let h = resp.headers_mut();
    let internal = h.get("grpc-status").is_some_and(|v| v == "13");
    // prost's "failed to decode Protobuf message", percent-encoded in the header
    let decode = |m: &str| m.contains("decode%20Protobuf") || m.contains("decode Protobuf");
    if internal && h.get("grpc-message").and_then(|m| m.to_str().ok()).is_some_and(decode) {
        h.insert("grpc-status", http::HeaderValue::from_static("3"));
    }
    resp
}

/// Accepts on `listener` until the receiver is dropped, handing on connections that got a
/// slot out of `max_connections`.
pub fn guarded_incoming(
    listener: TcpListener,
    max_connections: usize,
    handshake: Duration,
    what: &'static str,
) -> mpsc::Receiver<io::Result<GuardedStream>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(max_connections));
        let (mut refused_log, mut error_log) = (Throttled::new(LOG_EVERY), Throttled::new(LOG_EVERY));
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            match accepted {
                Ok((io, peer)) => {
                    let _ = io.set_nodelay(true);
                    match slots.clone().try_acquire_owned() {
                        Ok(slot) => {
                            if tx.send(Ok(GuardedStream::new(io, slot, handshake))).await.is_err() {
                                return;
                            }
                        }
                        Err(_) => {
                            metrics::counter!(crate::metric_names::GRPC_CONNECTIONS_REFUSED, "server" => what)
                                .increment(1);
                            refused_log.warn(
                                &format!("{what} refused a connection"),
                                &format_args!("{max_connections} connections are open already (from {peer})"),
                            );
                        }
                    }
                }
                Err(e) => {
                    metrics::counter!(crate::metric_names::GRPC_ACCEPT_ERRORS, "server" => what).increment(1);
                    error_log.warn(&format!("{what} cannot accept connections"), &e);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn serve(
        max: usize,
        handshake: Duration,
    ) -> (std::net::SocketAddr, mpsc::Receiver<io::Result<GuardedStream>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        (addr, guarded_incoming(l, max, handshake, "test"))
    }

    /// A peer that sends half a preface is cut at the deadline; one that sends the preface
    /// keeps its connection past it.
    #[tokio::test]
    async fn silent_connections_time_out_and_real_ones_stay() {
        let (addr, mut incoming) = serve(8, Duration::from_millis(200)).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        silent.write_all(b"PRI * HTTP/2.0").await.unwrap();
        let mut s = incoming.recv().await.unwrap().unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 64];
        let mut got = 0;
        let err = loop {
            match s.read(&mut buf).await {
                Ok(n) => got += n,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(got, 14);
        assert!(start.elapsed() >= Duration::from_millis(150), "cut before the deadline");

        let mut real = TcpStream::connect(addr).await.unwrap();
        real.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
        let mut s = incoming.recv().await.unwrap().unwrap();
        let mut preface = [0u8; 33];
        s.read_exact(&mut preface).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        real.write_all(b"more").await.unwrap();
        let mut more = [0u8; 4];
        s.read_exact(&mut more).await.expect("a connection past its handshake is not timed out");
        assert_eq!(&more, b"more");
    }

    /// Beyond the cap a connection is closed at once; closing one frees its slot.
    #[tokio::test]
    async fn connections_beyond_the_cap_are_refused_until_a_slot_frees() {
        let (addr, mut incoming) = serve(2, Duration::from_secs(10)).await;
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let held_a = incoming.recv().await.unwrap().unwrap();
        let _held_b = incoming.recv().await.unwrap().unwrap();
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await.unwrap();
        assert!(matches!(closed, Ok(0) | Err(_)), "the third connection was not closed: {closed:?}");
        drop(held_a);
        let _d = TcpStream::connect(addr).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), incoming.recv()).await;
        assert!(matches!(got, Ok(Some(Ok(_)))), "the freed slot was not given to the next connection");
    }
}
