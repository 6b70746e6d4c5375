use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("invalid address `{0}`: {1}")]
    BadAddress(String, String),
    #[error("cannot read TLS file {path}: {source}")]
    TlsFile { path: PathBuf, source: std::io::Error },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("token contains characters not allowed in a header")]
    BadToken,
    #[error("the {what} gRPC server failed: {why}")]
    Served { what: &'static str, why: String },
}

/// Optional TLS (rustls). Servers need `cert` and `key`; clients need `ca` (and
/// `domain` when the certificate's name differs from the host they dial).
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// TLS on every endpoint and client.
    pub enabled: bool,
    /// The servers' certificate (PEM), e.g. `cert.pem` from `oni certs`.
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
    /// The CA clients trust (PEM); a server whose certificate it did not sign is refused.
    pub ca: Option<PathBuf>,
    /// The name to check in the server's certificate, when clients dial another name.
    pub domain: Option<String>,
}

fn read(path: &Option<PathBuf>, what: &str) -> Result<Vec<u8>, TransportError> {
    let path = path.as_ref().ok_or_else(|| TransportError::Tls(format!("tls.{what} is not set")))?;
    std::fs::read(path).map_err(|source| TransportError::TlsFile { path: path.clone(), source })
}

impl TlsConfig {
    /// The servers' side: our accept loop runs the handshake itself (under its own
    /// deadline), offering HTTP/2 only.
    pub fn acceptor(&self) -> Result<Option<tokio_rustls::TlsAcceptor>, TransportError> {
        use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
        if !self.enabled {
            return Ok(None);
        }
        let (cert_pem, key_pem) = (read(&self.cert, "cert")?, read(&self.key, "key")?);
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TransportError::Tls(format!("tls.cert: {e}")))?;
        if certs.is_empty() {
            return Err(TransportError::Tls("tls.cert holds no PEM certificate".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TransportError::Tls(format!("tls.key: {e}")))?;
        let mut config = tokio_rustls::rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| TransportError::Tls(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Some(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))))
    }

    pub fn client(&self) -> Result<Option<ClientTlsConfig>, TransportError> {
        if !self.enabled {
            return Ok(None);
        }
        let mut c = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&self.ca, "ca")?));
        if let Some(d) = &self.domain {
            c = c.domain_name(d.clone());
        }
        Ok(Some(c))
    }
}

/// `[transport]`: how every endpoint is secured and how every client dials, set once for
/// the learner, its inference service, the annotator (captions and reward-model pulls) and
/// the env hub.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TransportConfig {
    /// Shared secret every service requires (`ONI_TOKEN` overrides); `""`: none.
    #[serde(with = "crate::off")]
    #[schemars(with = "String")]
    pub token: Option<String>,
    /// Servers present `cert` and `key`; clients trust `ca` (checking `domain` when the
    /// certificate names another host than the one dialled).
    pub tls: TlsConfig,
    /// A connection not made within this fails (and is retried with backoff).
    pub connect_timeout_ms: u64,
    /// Deadline of each unary call (streams are guarded by the keepalive instead).
    pub request_timeout_ms: u64,
    /// HTTP/2 pings on idle connections, so that a vanished peer is noticed.
    pub keepalive_interval_ms: u64,
    /// A peer that does not answer a keepalive ping within this is dropped.
    pub keepalive_timeout_ms: u64,
    /// Servers: a TLS handshake not finished within this closes the connection.
    pub handshake_timeout_ms: u64,
    /// Servers: a connection that has not sent the HTTP/2 preface and its first frame
    /// within this (after TLS) is closed.
    pub preface_timeout_ms: u64,
    /// Servers: a stream whose first whole message does not arrive within this ends with
    /// DEADLINE_EXCEEDED.
    pub first_message_timeout_ms: u64,
    /// Servers: a connection with no stream open for this long is closed (pings do not
    /// count); clients reconnect when they next call.
    pub idle_timeout_ms: u64,
    /// Servers: connections one peer address may hold on each server; more are refused, so
    /// one host cannot lock out the others.
    pub max_connections_per_peer: usize,
    /// Servers: streams one connection may have open at once.
    pub max_streams_per_connection: u32,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            token: None,
            tls: TlsConfig::default(),
            connect_timeout_ms: 3000,
            request_timeout_ms: 10_000,
            keepalive_interval_ms: 5000,
            keepalive_timeout_ms: 10_000,
            handshake_timeout_ms: 10_000,
            preface_timeout_ms: 10_000,
            first_message_timeout_ms: 60_000,
            idle_timeout_ms: 300_000,
            max_connections_per_peer: 256,
            max_streams_per_connection: 256,
        }
    }
}

impl TransportConfig {
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            keepalive_interval: Duration::from_millis(self.keepalive_interval_ms),
            keepalive_timeout: Duration::from_millis(self.keepalive_timeout_ms),
            tls: self.tls.clone(),
        }
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

/// How a client dials a peer: every call gets a deadline, the connection HTTP/2 keepalives,
/// so a vanished peer is noticed instead of waited on forever.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    pub tls: TlsConfig,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(10),
            tls: TlsConfig::default(),
        }
    }
}

impl ClientOptions {
    /// An endpoint for `addr` (`host:port` or a URL). Streams are not bounded by
    /// `request_timeout` (tonic applies it per call); the keepalive guards them.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, TransportError> {
        let scheme = if self.tls.enabled { "https" } else { "http" };
        let url = if addr.contains("://") { addr.to_string() } else { format!("{scheme}://{addr}") };
        let mut ep = Endpoint::from_shared(url.clone())
            .map_err(|e| TransportError::BadAddress(url.clone(), e.to_string()))?
            .connect_timeout(self.connect_timeout)
            .http2_keep_alive_interval(self.keepalive_interval)
            .keep_alive_timeout(self.keepalive_timeout)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        if let Some(tls) = self.tls.client()? {
            ep = ep.tls_config(tls).map_err(|e| TransportError::Tls(e.to_string()))?;
        }
        Ok(ep)
    }

    pub async fn connect(&self, addr: &str) -> Result<Channel, TransportError> {
        let ep = self.endpoint(addr)?;
        ep.connect().await.map_err(|e| TransportError::Connect(addr.to_string(), error_chain(&e)))
    }
}

/// Our gRPC servers' builder and router types (with the framing layer).
pub type ServerBuilder =
    tonic::transport::Server<tower::layer::util::Stack<crate::framing::FramingLayer, tower::layer::util::Identity>>;
pub type Router = tonic::transport::server::Router<
    tower::layer::util::Stack<crate::framing::FramingLayer, tower::layer::util::Identity>,
>;

/// `serve_until` on a task of its own, logging a failure.
pub fn spawn_server(
    router: Router,
    listener: tokio::net::TcpListener,
    stop: crate::tasks::CancellationToken,
    what: &'static str,
    t: &TransportConfig,
) -> Result<tokio::task::JoinHandle<()>, TransportError> {
    let serving = serve_until(router, listener, stop, what, t)?;
    Ok(tokio::spawn(async move {
        if let Err(e) = serving.await {
            tracing::error!("{e}");
        }
    }))
}

/// Serves `router` on `listener` until `stop` is cancelled, accepting connections as `t`'s
/// caps, deadlines and TLS say (a TLS identity that cannot be loaded fails here, before
/// serving). The future ends when the server has stopped, or failed (a `TaskGroup` task).
pub fn serve_until(
    router: Router,
    listener: tokio::net::TcpListener,
    stop: crate::tasks::CancellationToken,
    what: &'static str,
    t: &TransportConfig,
) -> Result<impl std::future::Future<Output = Result<(), TransportError>> + Send + 'static, TransportError> {
    let policy = crate::serve::AcceptPolicy::new(t)?;
    Ok(async move {
        let incoming =
            tokio_stream::wrappers::ReceiverStream::new(crate::serve::guarded_incoming(listener, policy, what));
        let stopped = stop.clone();
        let shutdown = async move { stop.cancelled().await };
        let serving = router.serve_with_incoming_shutdown(incoming, shutdown);
        tokio::pin!(serving);
        // a graceful shutdown waits for every open stream (an actor's rollout stream lasts
        // as long as the actor): after the grace period the rest are cut
        let grace = async move {
            stopped.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            r = &mut serving => r.map_err(|e| TransportError::Served { what, why: error_chain(&e) }),
            _ = grace => {
                tracing::info!("{what}: streams still open {SHUTDOWN_GRACE:?} after shutdown began; closing them");
                Ok(())
            }
        }
    })
}

/// How long a stopping server waits for open calls and streams to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Server settings every gRPC server of ours uses; `limit` is the largest request message
/// (the services' own decoding limits should match it). TLS is done by the accept loop
/// (`spawn_server`), not by tonic.
pub fn server_builder(
    t: &TransportConfig,
    limit: crate::framing::MessageLimit,
    what: &'static str,
) -> Result<ServerBuilder, TransportError> {
    let policy = crate::framing::Policy {
        limit,
        first_message: Duration::from_millis(t.first_message_timeout_ms.max(1)),
        server: what,
    };
    Ok(tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(t.max_streams_per_connection.max(1))
        .layer(crate::framing::FramingLayer::new(policy)))
}

/// Compares a presented secret with the expected one in time that depends on their lengths
/// only, not on where they first differ.
pub fn secret_eq(got: &[u8], expected: &[u8]) -> bool {
    let mut diff = (got.len() != expected.len()) as u8;
    for (i, e) in expected.iter().enumerate() {
        diff |= e ^ got.get(i).copied().unwrap_or(!e);
    }
    std::hint::black_box(diff) == 0
}

fn bearer(token: &str) -> Result<MetadataValue<Ascii>, TransportError> {
    format!("Bearer {token}").parse().map_err(|_| TransportError::BadToken)
}

/// Client side: adds the shared token to every call.
#[derive(Clone)]
pub struct AuthInterceptor {
    header: Option<MetadataValue<Ascii>>,
}

impl AuthInterceptor {
    pub fn new(token: Option<&str>) -> Result<Self, TransportError> {
        Ok(AuthInterceptor { header: token.filter(|t| !t.is_empty()).map(bearer).transpose()? })
    }
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

/// Server side: rejects calls without the shared token (when one is configured).
#[derive(Clone)]
pub struct TokenCheck {
    expected: Option<MetadataValue<Ascii>>,
}

impl TokenCheck {
    pub fn new(token: Option<&str>) -> Result<Self, TransportError> {
        Ok(TokenCheck { expected: token.filter(|t| !t.is_empty()).map(bearer).transpose()? })
    }
}

impl Interceptor for TokenCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else { return Ok(req) };
        match req.metadata().get("authorization") {
            Some(got) if secret_eq(got.as_bytes(), expected.as_bytes()) => Ok(req),
            Some(_) => Err(Status::unauthenticated("wrong token (check `transport.token` / ONI_TOKEN)")),
            None => Err(Status::unauthenticated(
                "missing token: this server requires `authorization: Bearer <token>` (set `transport.token` or ONI_TOKEN)",
            )),
        }
    }
}

/// An error with its sources, since tonic's transport errors say little at the top level.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::secret_eq;

    #[test]
    fn secrets_match_only_when_equal() {
        assert!(secret_eq(b"Bearer abc", b"Bearer abc"));
        assert!(!secret_eq(b"Bearer abd", b"Bearer abc"));
        assert!(!secret_eq(b"Bearer ab", b"Bearer abc"));
        assert!(!secret_eq(b"Bearer abcd", b"Bearer abc"));
        assert!(!secret_eq(b"", b"x"));
        assert!(secret_eq(b"", b""));
    }
}
