//! `/metrics` over HTTP/1.1, served by us rather than by the exporter's own listener, so that it
//! has the same guards as the gRPC servers: a client gets `READ_TIMEOUT` to send its request
//! head (at most `MAX_HEAD` bytes) and `WRITE_TIMEOUT` to take the answer, one request per
//! connection, at most `MAX_PER_PEER` connections per address and `MAX_CONNECTIONS` in all
//! (more are closed at once). A scraper that stalls holds a slot for seconds, not forever.

use metrics_exporter_prometheus::PrometheusHandle;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_HEAD: usize = 8 << 10;
pub const MAX_CONNECTIONS: usize = 64;
pub const MAX_PER_PEER: usize = 8;

/// Serves `handle`'s exposition on `listener` until the runtime stops.
pub fn spawn(listener: TcpListener, handle: PrometheusHandle) {
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let peers: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
        loop {
            let Ok((io, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
            {
                let mut p = peers.lock().unwrap();
                let n = p.entry(peer.ip()).or_insert(0);
                if *n >= MAX_PER_PEER {
                    continue;
                }
                *n += 1;
            }
            let (peers, handle) = (peers.clone(), handle.clone());
            tokio::spawn(async move {
                let _ = answer(io, &handle).await;
                let mut p = peers.lock().unwrap();
                if let Some(n) = p.get_mut(&peer.ip()) {
                    *n -= 1;
                    if *n == 0 {
                        p.remove(&peer.ip());
                    }
                }
                drop(slot);
            });
        }
    });
}

/// Reads one request head within the deadline and answers it: the exposition for a GET,
/// 405 for any other method, 400 for something that is not HTTP.
async fn answer(mut io: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let read = async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = io.read(&mut buf).await?;
            if n == 0 || head.len() + n > MAX_HEAD {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    let ok = matches!(tokio::time::timeout(READ_TIMEOUT, read).await, Ok(Ok(())));
    let (status, body) = match (ok, head.starts_with(b"GET ")) {
        (true, true) => ("200 OK", handle.render()),
        (true, false) => ("405 Method Not Allowed", "only GET\n".to_string()),
        (false, _) => ("400 Bad Request", "no HTTP request head within the deadline\n".to_string()),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(WRITE_TIMEOUT, io.write_all(reply.as_bytes())).await;
    let _ = io.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    async fn serve() -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        spawn(l, metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder().handle());
        addr
    }

    async fn from(ip: &str, addr: std::net::SocketAddr) -> TcpStream {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        s.connect(addr).await.unwrap()
    }

    async fn scrape(mut s: TcpStream) -> String {
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await.unwrap().unwrap();
        out
    }

    /// Silent connections from one address fill its share only, and are closed at the read
    /// deadline; a scraper on another address is answered meanwhile.
    #[tokio::test]
    async fn a_silent_peer_holds_its_share_for_seconds_and_locks_no_one_out() {
        let addr = serve().await;
        let mut silent = Vec::new();
        for _ in 0..50 {
            silent.push(from("127.0.0.2", addr).await);
        }
        let reply = scrape(from("127.0.0.1", addr).await).await;
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
        let start = Instant::now();
        let mut closed = 0;
        for mut s in silent {
            let mut buf = Vec::new();
            if tokio::time::timeout(READ_TIMEOUT + Duration::from_secs(3), s.read_to_end(&mut buf)).await.is_ok() {
                closed += 1;
            }
        }
        assert_eq!(closed, 50, "silent connections still open after {:?}", start.elapsed());
        let reply = scrape(from("127.0.0.2", addr).await).await;
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "the peer's share was not given back: {reply}");
    }

    #[tokio::test]
    async fn other_methods_and_oversized_heads_are_refused() {
        let addr = serve().await;
        let mut s = from("127.0.0.1", addr).await;
        s.write_all(b"POST /metrics HTTP/1.1\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 405"), "{out}");
        let mut s = from("127.0.0.1", addr).await;
        let _ = s.write_all(&vec![b'a'; MAX_HEAD + 10]).await;
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        assert!(out.is_empty() || out.starts_with("HTTP/1.1 400"), "{out}");
    }
}
