//! Accepting connections for our gRPC servers without letting a client hold them for free.
//!
//! Every phase of a connection has a deadline, each a `[transport]` key: the TLS handshake
//! (`handshake_timeout_ms`), the HTTP/2 preface and first frame after it
//! (`preface_timeout_ms`, counted in decrypted bytes, so a finished TLS handshake does not
//! clear it), and a connection with no stream open (`idle_timeout_ms`; pings do not count).
//! The first message of each stream has its own deadline in `framing`. Every accepted socket
//! needs a slot out of a fixed number per server and one of its peer address's
//! (`max_connections_per_peer`), so one host cannot lock out the others; a refused plaintext
//! connection is told why in an HTTP/2 GOAWAY before it is closed. Accept errors such as
//! running out of descriptors back off instead of spinning, and are logged at most once per
//! interval.

use crate::throttle::Throttled;
use crate::transport::{TransportConfig, TransportError};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;

/// The client connection preface (24 bytes) and one frame header (9): what a real HTTP/2
/// client sends before anything else.
const PREFACE_BYTES: usize = 24 + 9;
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

/// How a server accepts connections: its caps, deadlines and TLS.
#[derive(Clone)]
pub struct AcceptPolicy {
    pub max_connections: usize,
    pub max_per_peer: usize,
    pub handshake: Duration,
    pub preface: Duration,
    pub idle: Duration,
    tls: Option<TlsAcceptor>,
}

impl AcceptPolicy {
    /// The policy `[transport]` describes, with the TLS identity loaded (a missing or bad
    /// certificate fails here, before the server binds).
    pub fn new(t: &TransportConfig) -> Result<Self, TransportError> {
        Ok(AcceptPolicy {
            max_connections: max_connections(),
            max_per_peer: t.max_connections_per_peer.max(1),
            handshake: Duration::from_millis(t.handshake_timeout_ms.max(1)),
            preface: Duration::from_millis(t.preface_timeout_ms.max(1)),
            idle: Duration::from_millis(t.idle_timeout_ms.max(1)),
            tls: t.tls.acceptor()?,
        })
    }
}

/// What the server knows of a connection, handed to each request (`framing` counts the
/// streams open on it; services read the peer address for per-peer budgets).
#[derive(Clone)]
pub struct PeerInfo {
    pub remote: SocketAddr,
    conn: Arc<ConnState>,
}

impl PeerInfo {
    /// Counts a stream as open on this connection until the returned guard is dropped.
    pub(crate) fn open_stream(&self) -> OpenStream {
        self.conn.open.fetch_add(1, Ordering::AcqRel);
        OpenStream(self.conn.clone())
    }
}

/// The peer address a request came from, when it came through our accept loop.
pub fn peer_of<T>(req: &tonic::Request<T>) -> Option<IpAddr> {
    req.extensions().get::<PeerInfo>().map(|p| p.remote.ip())
}

#[derive(Default)]
struct ConnState {
    open: AtomicUsize,
    /// The connection's reader, woken when its last stream closes so the idle clock starts.
    reader: Mutex<Option<Waker>>,
}

/// One open stream on a connection (see `PeerInfo::open_stream`).
pub(crate) struct OpenStream(Arc<ConnState>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(w) = self.0.reader.lock().unwrap().take() {
                w.wake();
            }
        }
    }
}

/// A peer's share of the server's connections, given back when the connection closes.
struct PeerSlot {
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut peers = self.peers.lock().unwrap();
        if let Some(n) = peers.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                peers.remove(&self.ip);
            }
        }
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Phase {
    Preface { got: usize },
    Serving,
}

/// An accepted connection (after TLS, when on): its slots go back when it closes, and its
/// reads fail (hyper then drops it) once the preface or idle deadline passes.
pub struct Conn {
    io: Io,
    info: PeerInfo,
    phase: Phase,
    timer: Pin<Box<Sleep>>,
    /// When the idle clock started (no stream open since), while it runs.
    idle_since: Option<Instant>,
    policy_idle: Duration,
    server: &'static str,
    _slots: (OwnedSemaphorePermit, PeerSlot),
}

impl Conn {
    fn timed_out(&self, phase: &'static str, why: String) -> Poll<io::Result<()>> {
        metrics::counter!(crate::metric_names::GRPC_CONNECTIONS_TIMED_OUT, "server" => self.server, "phase" => phase)
            .increment(1);
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)))
    }

    /// The idle rule: with no stream open for `policy_idle` the connection is cut, whatever
    /// else (pings, settings) it sends.
    fn check_idle(&mut self, cx: &mut Context<'_>) -> Option<Poll<io::Result<()>>> {
        // registered first, so that the close of the last stream always wakes this reader
        *self.info.conn.reader.lock().unwrap() = Some(cx.waker().clone());
        if self.info.conn.open.load(Ordering::Acquire) > 0 {
            self.idle_since = None;
            return None;
        }
        let now = Instant::now();
        let since = *self.idle_since.get_or_insert(now);
        let deadline = since + self.policy_idle;
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        if self.timer.as_mut().poll(cx).is_ready() && self.info.conn.open.load(Ordering::Acquire) == 0 {
            let why = format!("no stream open for {:?} (transport.idle_timeout_ms)", self.policy_idle);
            return Some(self.timed_out("idle", why));
        }
        None
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        let got = buf.filled().len() - before;
        match this.phase {
            Phase::Preface { got: so_far } => {
                let total = so_far + got;
                if total >= PREFACE_BYTES {
                    this.phase = Phase::Serving;
                    return r;
                }
                this.phase = Phase::Preface { got: total };
                if r.is_pending() && this.timer.as_mut().poll(cx).is_ready() {
                    return this.timed_out(
                        "preface",
                        "no HTTP/2 preface within the deadline (transport.preface_timeout_ms)".into(),
                    );
                }
                r
            }
            Phase::Serving => {
                // only while nothing is to be read: bytes that came in (a new stream's
                // HEADERS, say) are handed on, never dropped by the cut
                if r.is_pending() {
                    if let Some(cut) = this.check_idle(cx) {
                        return cut;
                    }
                }
                r
            }
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

/// An HTTP/2 server preface (empty SETTINGS) and a GOAWAY with ENHANCE_YOUR_CALM whose debug
/// data says why: what a refused plaintext client is sent before the close.
fn goaway(why: &str) -> Vec<u8> {
    let debug = &why.as_bytes()[..why.len().min(512)];
    let mut f = vec![0, 0, 0, 0x4, 0, 0, 0, 0, 0];
    let len = 8 + debug.len();
    f.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, 0x7, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0xb]);
    f.extend_from_slice(debug);
    f
}

/// Accepts on `listener` until the receiver is dropped, handing on connections that got a
/// slot (and finished TLS, when on).
pub fn guarded_incoming(
    listener: TcpListener,
    policy: AcceptPolicy,
    what: &'static str,
) -> mpsc::Receiver<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(policy.max_connections));
        let peers: Arc<Mutex<HashMap<IpAddr, usize>>> = Default::default();
        let (mut refused_log, mut error_log) = (Throttled::new(LOG_EVERY), Throttled::new(LOG_EVERY));
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (io, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    metrics::counter!(crate::metric_names::GRPC_ACCEPT_ERRORS, "server" => what).increment(1);
                    error_log.warn(&format!("{what} cannot accept connections"), &e);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let _ = io.set_nodelay(true);
            let refusal = {
                let mut held = peers.lock().unwrap();
                let n = held.entry(peer.ip()).or_insert(0);
                if *n >= policy.max_per_peer {
                    Some((
                        "per_peer",
                        format!(
                            "{} connections from {} are open already (transport.max_connections_per_peer)",
                            n,
                            peer.ip()
                        ),
                    ))
                } else {
                    *n += 1;
                    None
                }
            };
            let peer_slot = match refusal {
                None => PeerSlot { peers: peers.clone(), ip: peer.ip() },
                Some((reason, why)) => {
                    refuse(&io, policy.tls.is_none(), what, reason, &why, &mut refused_log);
                    continue;
                }
            };
            let slot = match slots.clone().try_acquire_owned() {
                Ok(s) => s,
                Err(_) => {
                    let why = format!("{} connections are open already (from {peer})", policy.max_connections);
                    refuse(&io, policy.tls.is_none(), what, "total", &why, &mut refused_log);
                    continue;
                }
            };
            let (tx, policy) = (tx.clone(), policy.clone());
            // the TLS handshake runs beside the accept loop, so a slow one holds up no one else
            tokio::spawn(async move {
                let io = match &policy.tls {
                    None => Io::Plain(io),
                    Some(tls) => match tokio::time::timeout(policy.handshake, tls.accept(io)).await {
                        Ok(Ok(s)) => Io::Tls(Box::new(s)),
                        Ok(Err(e)) => {
                            tracing::debug!("{what}: TLS handshake with {peer} failed: {e}");
                            return;
                        }
                        Err(_) => {
                            metrics::counter!(crate::metric_names::GRPC_CONNECTIONS_TIMED_OUT, "server" => what, "phase" => "handshake")
                                .increment(1);
                            return;
                        }
                    },
                };
                let conn = Conn {
                    io,
                    info: PeerInfo { remote: peer, conn: Arc::default() },
                    phase: Phase::Preface { got: 0 },
                    timer: Box::pin(tokio::time::sleep(policy.preface)),
                    idle_since: None,
                    policy_idle: policy.idle,
                    server: what,
                    _slots: (slot, peer_slot),
                };
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    rx
}

/// Closes a connection the server has no room for, telling a plaintext client why (a TLS
/// client could not read plain bytes: it just sees the close).
fn refuse(io: &TcpStream, plaintext: bool, what: &'static str, reason: &'static str, why: &str, log: &mut Throttled) {
    metrics::counter!(crate::metric_names::GRPC_CONNECTIONS_REFUSED, "server" => what, "reason" => reason).increment(1);
    if plaintext {
        let _ = io.try_write(&goaway(why));
    }
    log.warn(&format!("{what} refused a connection"), &why);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

    fn policy(per_peer: usize, preface: Duration, idle: Duration) -> AcceptPolicy {
        AcceptPolicy { max_connections: 64, max_per_peer: per_peer, handshake: preface, preface, idle, tls: None }
    }

    async fn serve(p: AcceptPolicy) -> (SocketAddr, mpsc::Receiver<io::Result<Conn>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        (addr, guarded_incoming(l, p, "test"))
    }

    async fn read_until_err(s: &mut Conn) -> (usize, io::Error) {
        let mut buf = [0u8; 64];
        let mut got = 0;
        loop {
            match s.read(&mut buf).await {
                Ok(0) => panic!("the client closed first"),
                Ok(n) => got += n,
                Err(e) => return (got, e),
            }
        }
    }

    /// A peer that sends half a preface is cut at the deadline; one that sends the preface
    /// keeps its connection past it.
    #[tokio::test]
    async fn silent_connections_time_out_and_real_ones_stay() {
        let (addr, mut incoming) = serve(policy(8, Duration::from_millis(200), Duration::from_secs(60))).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        silent.write_all(b"PRI * HTTP/2.0").await.unwrap();
        let mut s = incoming.recv().await.unwrap().unwrap();
        let start = Instant::now();
        let (got, err) = read_until_err(&mut s).await;
        assert_eq!((err.kind(), got), (io::ErrorKind::TimedOut, 14));
        assert!(start.elapsed() >= Duration::from_millis(150), "cut before the deadline");

        let mut real = TcpStream::connect(addr).await.unwrap();
        real.write_all(PREFACE).await.unwrap();
        let mut s = incoming.recv().await.unwrap().unwrap();
        let _open = s.info.open_stream(); // a stream is open: the idle rule does not apply
        let mut preface = [0u8; 33];
        s.read_exact(&mut preface).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        real.write_all(b"more").await.unwrap();
        let mut more = [0u8; 4];
        s.read_exact(&mut more).await.expect("a connection past its preface is not timed out");
        assert_eq!(&more, b"more");
    }

    /// With no stream open the connection is cut at the idle deadline even while the peer
    /// keeps sending (pings); the clock starts again when its last stream closes.
    #[tokio::test]
    async fn connections_with_no_stream_are_cut_at_the_idle_deadline() {
        let (addr, mut incoming) = serve(policy(8, Duration::from_secs(5), Duration::from_millis(300))).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(PREFACE).await.unwrap();
        let mut s = incoming.recv().await.unwrap().unwrap();
        let stream = s.info.open_stream();
        let pinger = tokio::spawn(async move {
            loop {
                if client.write_all(b"ping").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let mut buf = [0u8; 64];
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(700) {
            let n = s.read(&mut buf).await.expect("an open stream keeps the connection");
            assert!(n > 0, "the client is still sending");
        }
        drop(stream);
        let closed = Instant::now();
        let (_, err) = read_until_err(&mut s).await;
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let waited = closed.elapsed();
        assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(3), "cut after {waited:?}");
        pinger.abort();
    }

    /// One address at its cap is refused (told why in a GOAWAY) while another is served.
    #[tokio::test]
    async fn one_peer_at_its_cap_does_not_lock_out_another() {
        let (addr, mut incoming) = serve(policy(2, Duration::from_secs(10), Duration::from_secs(60))).await;
        let from = |ip: &str| {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind(format!("{ip}:0").parse().unwrap()).unwrap();
            sock.connect(addr)
        };
        let _a = from("127.0.0.2").await.unwrap();
        let _b = from("127.0.0.2").await.unwrap();
        let held_a = incoming.recv().await.unwrap().unwrap();
        let _held_b = incoming.recv().await.unwrap().unwrap();
        let mut c = from("127.0.0.2").await.unwrap();
        let mut said = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut said)).await.unwrap().ok();
        let text = String::from_utf8_lossy(&said);
        assert!(text.contains("transport.max_connections_per_peer"), "the refused peer was told: {text:?}");
        assert_eq!(said[9 + 3], 0x7, "a GOAWAY frame follows the SETTINGS");

        let _other = from("127.0.0.1").await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), incoming.recv()).await;
        assert!(matches!(got, Ok(Some(Ok(_)))), "another address was not served");
        drop(held_a);
        let _d = from("127.0.0.2").await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), incoming.recv()).await;
        assert!(matches!(got, Ok(Some(Ok(_)))), "the freed slot was not given to the same peer's next connection");
    }
}
