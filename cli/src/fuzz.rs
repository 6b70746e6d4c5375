//! `oni bench fuzz`: a hostile client that speaks the wire protocol. It opens HTTP/2
//! connections to running servers and calls every method of their services with messages
//! built from the protos' types: well-formed ones, ones with mutated bytes, and ones whose
//! gRPC framing is broken (a cut message, a bad flag byte, a compressed flag without an
//! encoding, an oversized length prefix), plus streams reset mid-message, streams that never
//! send, and raw HTTP/2 frames of random type and content. It checks what a user of the
//! servers is promised: no broken request ends with OK, none with INTERNAL or UNKNOWN (those
//! would blame the server for the client's bytes), a good client is still served, and the
//! servers' memory (their RSS, with `--pid`) stays bounded.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use oni_proto::v1;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Args)]
pub struct FuzzBench {
    /// A server to attack, as ROLE=HOST:PORT (roles: learner, hub, annotator); repeat for more.
    #[arg(long = "target", required = true, value_parser = parse_target)]
    targets: Vec<(Role, String)>,
    /// A server's process id, as ROLE=PID, to sample its RSS while it is attacked.
    #[arg(long = "pid", value_parser = parse_pid)]
    pids: Vec<(Role, u32)>,
    /// How long to attack, in seconds (shared by the targets).
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The servers' token (`transport.token`); calls without it are tried too.
    #[arg(long)]
    token: Option<String>,
    /// Dial over TLS, trusting this CA (PEM).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Calls that never finish, over every method in turn (a stream that sends nothing, a
    /// unary call that never ends its body): each must end with DEADLINE_EXCEEDED within the
    /// servers' `transport.first_message_timeout_ms` (give it here, in ms).
    #[arg(long, default_value_t = 0)]
    silent_streams: usize,
    #[arg(long, default_value_t = 60_000)]
    first_message_timeout_ms: u64,
    /// Also write the report here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Learner,
    Hub,
    Annotator,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Learner => "learner",
            Role::Hub => "hub",
            Role::Annotator => "annotator",
        }
    }
}

fn parse_role(s: &str) -> Result<Role, String> {
    match s {
        "learner" => Ok(Role::Learner),
        "hub" => Ok(Role::Hub),
        "annotator" => Ok(Role::Annotator),
        _ => Err(format!("unknown role `{s}` (learner, hub, annotator)")),
    }
}

fn parse_target(s: &str) -> Result<(Role, String), String> {
    let (r, a) = s.split_once('=').ok_or("expected ROLE=HOST:PORT")?;
    Ok((parse_role(r)?, a.to_string()))
}

fn parse_pid(s: &str) -> Result<(Role, u32), String> {
    let (r, p) = s.split_once('=').ok_or("expected ROLE=PID")?;
    Ok((parse_role(r)?, p.parse().map_err(|e| format!("pid `{p}`: {e}"))?))
}

/// One method of a service, and how to make a well-formed request for it.
struct Method {
    path: &'static str,
    stream: bool,
    /// A well-formed request (`&str`: the token, for protocols that carry it in a message).
    sample: fn(&mut StdRng, &str) -> Vec<u8>,
}

fn word(rng: &mut StdRng, max: usize) -> String {
    let n = rng.random_range(1..=max);
    (0..n).map(|_| rng.random_range(b'a'..=b'z') as char).collect()
}

fn rollout(rng: &mut StdRng, _: &str) -> Vec<u8> {
    let t = rng.random_range(1..40usize);
    v1::Rollout {
        run_id: word(rng, 12),
        actor_id: word(rng, 12),
        sequence: rng.random_range(0..1000),
        length: t as u32,
        actions: (0..t).map(|_| rng.random_range(0..8)).collect(),
        rewards: (0..t).map(|_| rng.random::<f32>()).collect(),
        dones: (0..t).map(|_| rng.random_bool(0.1)).collect(),
        behaviour_logprobs: (0..t).map(|_| -rng.random::<f32>()).collect(),
        captions: (0..rng.random_range(0..3)).map(|_| word(rng, 20)).collect(),
        ..Default::default()
    }
    .encode_to_vec()
}

fn methods(role: Role) -> Vec<Method> {
    match role {
        Role::Learner => vec![
            Method { path: "/oni.v1.Learner/StreamRollouts", stream: true, sample: rollout },
            Method { path: "/oni.v1.Learner/PushRollout", stream: false, sample: rollout },
            Method {
                path: "/oni.v1.Learner/GetPolicy",
                stream: false,
                sample: |r, _| {
                    v1::GetPolicyRequest {
                        have_version: r.random_bool(0.5).then(|| r.random_range(0..5)),
                        ..Default::default()
                    }
                    .encode_to_vec()
                },
            },
            Method {
                path: "/oni.v1.Learner/GetInfo",
                stream: false,
                sample: |_, _| v1::GetInfoRequest {}.encode_to_vec(),
            },
            Method {
                path: "/oni.v1.Inference/Act",
                stream: true,
                sample: |r, _| {
                    let hello = v1::GroupHello {
                        run_id: word(r, 12),
                        actor_id: word(r, 12),
                        first_slot: r.random_range(0..100),
                        num_envs: r.random_range(1..8),
                        model_fingerprint: String::new(),
                    };
                    v1::ActRequest { hello: Some(hello), step: 0, ..Default::default() }.encode_to_vec()
                },
            },
        ],
        Role::Hub => vec![Method {
            path: "/oni.v1.EnvHub/Attach",
            stream: true,
            sample: |r, token| {
                let hello = v1::Hello {
                    protocol_version: oni_actor::hub::PROTOCOL_VERSION,
                    token: token.to_string(),
                    env_name: word(r, 10),
                    num_actions: r.random_range(1..10),
                    num_envs: r.random_range(1..8),
                    ..Default::default()
                };
                v1::ClientMessage { kind: Some(v1::client_message::Kind::Hello(hello)) }.encode_to_vec()
            },
        }],
        Role::Annotator => vec![
            Method {
                path: "/oni.v1.Annotator/SubmitCaptions",
                stream: false,
                sample: |r, _| {
                    let captions = (0..r.random_range(0..4)).map(|_| format!("You see a {}.", word(r, 10))).collect();
                    v1::CaptionBatch { actor_id: word(r, 8), captions, counts: vec![] }.encode_to_vec()
                },
            },
            Method {
                path: "/oni.v1.Annotator/GetLabels",
                stream: false,
                sample: |r, _| {
                    v1::GetLabelsRequest { captions: (0..r.random_range(0..3)).map(|_| word(r, 16)).collect() }
                        .encode_to_vec()
                },
            },
            Method {
                path: "/oni.v1.Annotator/GetRewardModel",
                stream: false,
                sample: |r, _| v1::RewardModelRequest { since_version: r.random_range(0..3) }.encode_to_vec(),
            },
        ],
    }
}

/// What one case sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Case {
    /// Well-formed messages (OK allowed).
    Valid,
    /// Well-formed framing around mutated bytes (OK allowed: a mutation may still parse).
    Mutated,
    /// Valid messages without the token (UNAUTHENTICATED when the servers have one).
    NoToken,
    /// The body ends inside a message.
    Cut,
    /// A message whose flag byte is neither 0 nor 1.
    FlagByte,
    /// A compressed flag without a `grpc-encoding` header.
    CompressedFlag,
    /// A length prefix far above any limit.
    Oversized,
    /// Part of a message, then RST_STREAM: nothing to check but that the server lives on.
    Reset,
    /// A raw connection: the preface, then HTTP/2 frames of random type, flags and content
    /// (last in `ALL`: drawn apart).
    RawFrames,
}

impl Case {
    const ALL: [Case; 9] = [
        Case::Valid,
        Case::Mutated,
        Case::NoToken,
        Case::Cut,
        Case::FlagByte,
        Case::CompressedFlag,
        Case::Oversized,
        Case::Reset,
        Case::RawFrames,
    ];

    /// Broken framing: must never end with OK.
    fn broken(self) -> bool {
        matches!(self, Case::Cut | Case::FlagByte | Case::CompressedFlag | Case::Oversized)
    }
}

fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + payload.len());
    v.push(flag);
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn mutate(rng: &mut StdRng, mut b: Vec<u8>) -> Vec<u8> {
    match rng.random_range(0..4) {
        0 if !b.is_empty() => {
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..b.len());
                b[i] ^= 1 << rng.random_range(0..8);
            }
        }
        1 if !b.is_empty() => b.truncate(rng.random_range(0..b.len())),
        2 => {
            let at = rng.random_range(0..=b.len());
            let junk: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
            b.splice(at..at, junk);
        }
        _ => b = (0..rng.random_range(0..64)).map(|_| rng.random()).collect(),
    }
    b
}

/// The request body a case sends, and whether it names a `grpc-encoding`.
fn body(rng: &mut StdRng, case: Case, m: &Method, token: &str) -> Vec<u8> {
    let token = if case == Case::NoToken { "" } else { token };
    let prefix = if m.stream { rng.random_range(0..3) } else { 0 };
    let mut out = Vec::new();
    for _ in 0..prefix {
        out.extend(frame(0, &(m.sample)(rng, token)));
    }
    match case {
        Case::Valid | Case::NoToken => out.extend(frame(0, &(m.sample)(rng, token))),
        Case::Mutated => {
            let valid = (m.sample)(rng, token);
            let b = mutate(rng, valid);
            out.extend(frame(0, &b));
        }
        Case::Cut | Case::Reset => {
            let whole = frame(0, &(m.sample)(rng, token));
            let cut = rng.random_range(1..whole.len());
            out.extend_from_slice(&whole[..cut]);
        }
        Case::FlagByte => out.extend(frame(rng.random_range(2..=255), &(m.sample)(rng, token))),
        Case::CompressedFlag => out.extend(frame(1, &(m.sample)(rng, token))),
        Case::Oversized => {
            out.push(0);
            out.extend_from_slice(&rng.random_range(0x7000_0000u32..=u32::MAX).to_be_bytes());
            out.extend((0..rng.random_range(0..32)).map(|_| rng.random::<u8>()));
        }
        Case::RawFrames => {}
    }
    out
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How the fuzzer dials: plaintext, or TLS trusting a CA.
#[derive(Clone)]
struct Dialer {
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Dialer {
    fn new(ca: Option<&PathBuf>) -> Result<Self> {
        use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer};
        let Some(ca) = ca else { return Ok(Dialer { tls: None }) };
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&pem) {
            roots.add(c.context("a CA certificate")?).context("adding the CA")?;
        }
        let mut cfg = tokio_rustls::rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Dialer { tls: Some(tokio_rustls::TlsConnector::from(Arc::new(cfg))) })
    }

    async fn dial(&self, addr: &str) -> Result<Box<dyn Io>> {
        let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .context("connect timed out")??;
        let _ = tcp.set_nodelay(true);
        // closed with a reset, not a FIN: thousands of connections in a run must not leave the
        // machine's ephemeral ports in TIME_WAIT for the next minute (other programs, other
        // tests, need them)
        let _ = tcp.set_zero_linger();
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some(c) => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).to_string();
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host).context("server name")?;
                Ok(Box::new(c.connect(name, tcp).await?))
            }
        }
    }

    async fn h2(&self, addr: &str) -> Result<h2::client::SendRequest<Bytes>> {
        let io = self.dial(addr).await?;
        let (send, conn) = tokio::time::timeout(Duration::from_secs(5), h2::client::handshake(io))
            .await
            .context("h2 handshake timed out")??;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }
}

/// How a call ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ending {
    Status(i32),
    /// The stream was reset or the connection closed without a status.
    NoStatus(String),
    TimedOut,
}

fn code_name(c: i32) -> String {
    format!("{:?}", tonic::Code::from_i32(c))
}

fn grpc_status(h: &http::HeaderMap) -> Option<i32> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// The headers of a gRPC call to `path`, with the token when one is given.
fn grpc_request(authority: &str, path: &str, token: Option<&str>) -> http::request::Builder {
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{authority}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    match token {
        Some(t) => req.header("authorization", format!("Bearer {t}")),
        None => req,
    }
}

/// How a call ended: its status (trailers-only, or after the body), or why there was none.
async fn ending(resp: h2::client::ResponseFuture) -> Ending {
    let resp = match resp.await {
        Ok(r) => r,
        Err(e) => return Ending::NoStatus(e.to_string()),
    };
    if let Some(c) = grpc_status(resp.headers()) {
        return Ending::Status(c); // trailers-only
    }
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        match chunk {
            Ok(b) => {
                let _ = body.flow_control().release_capacity(b.len());
            }
            Err(e) => return Ending::NoStatus(e.to_string()),
        }
    }
    match body.trailers().await {
        Ok(Some(t)) => grpc_status(&t).map_or(Ending::NoStatus("trailers without grpc-status".into()), Ending::Status),
        Ok(None) => Ending::NoStatus("no trailers".into()),
        Err(e) => Ending::NoStatus(e.to_string()),
    }
}

/// One gRPC call with hand-made bytes: the body is sent in random chunks, then END_STREAM
/// (or RST_STREAM for `reset`).
async fn call(
    send: &mut h2::client::SendRequest<Bytes>,
    authority: &str,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
    reset: bool,
    rng: &mut StdRng,
) -> Result<Ending> {
    let req = grpc_request(authority, path, token);
    let ready =
        tokio::time::timeout(Duration::from_secs(5), send.clone().ready()).await.context("no stream slot")??;
    *send = ready;
    let (resp, mut out) = send.send_request(req.body(())?, false)?;
    // the server may answer (and close the stream) before reading all of it: sending then
    // fails, and its answer is what counts
    let mut rest = &body[..];
    let mut sent = true;
    while !rest.is_empty() && sent {
        let n = rng.random_range(1..=rest.len().min(4096));
        out.reserve_capacity(n);
        sent = out.send_data(Bytes::copy_from_slice(&rest[..n]), false).is_ok();
        rest = &rest[n..];
    }
    if reset {
        out.send_reset(h2::Reason::CANCEL);
        return Ok(Ending::NoStatus("reset by us".into()));
    }
    if sent {
        let _ = out.send_data(Bytes::new(), true);
    }
    Ok(tokio::time::timeout(Duration::from_secs(10), ending(resp)).await.unwrap_or(Ending::TimedOut))
}

/// Preface, SETTINGS, then random frames on a fresh connection; reads what comes back for a
/// moment and hangs up.
async fn raw_frames(d: &Dialer, addr: &str, rng: &mut StdRng) -> Result<()> {
    let mut io = d.dial(addr).await?;
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    for _ in 0..rng.random_range(1..6) {
        let len = rng.random_range(0..64usize);
        let stream = if rng.random_bool(0.5) { rng.random_range(0..8u32) * 2 + 1 } else { rng.random() };
        out.extend_from_slice(&[
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            rng.random_range(0..=10),
            rng.random(),
        ]);
        out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        out.extend((0..len).map(|_| rng.random::<u8>()));
    }
    io.write_all(&out).await?;
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_millis(100), io.read(&mut buf)).await;
    Ok(())
}

fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// A good client's call on `role`: a fresh connection and a well-formed request that must
/// get a status within the deadline.
async fn alive(d: &Dialer, role: Role, addr: &str, token: Option<&str>, rng: &mut StdRng) -> Result<()> {
    let mut send = d.h2(addr).await?;
    let m = &methods(role)[match role {
        Role::Learner => 3,
        Role::Annotator => 1,
        Role::Hub => 0,
    }];
    let b = frame(0, &(m.sample)(rng, token.unwrap_or("")));
    match call(&mut send, addr, m.path, token, b, false, rng).await? {
        Ending::Status(_) => Ok(()),
        other => bail!("{} at {addr} gave a good call no status: {other:?}", role.name()),
    }
}

#[derive(Default)]
struct Tally {
    cases: u64,
    by_case: BTreeMap<(Case, String), u64>,
    violations: Vec<serde_json::Value>,
    violation_count: u64,
    liveness_checks: u64,
    liveness_failures: Vec<String>,
}

impl Tally {
    fn violation(&mut self, v: serde_json::Value) {
        self.violation_count += 1;
        if self.violations.len() < 20 {
            self.violations.push(v);
        }
    }
}

pub async fn run(a: FuzzBench) -> Result<()> {
    let dialer = Dialer::new(a.ca.as_ref())?;
    let token = a.token.as_deref();
    let mut rng = StdRng::seed_from_u64(a.seed);
    let mut tally = Tally::default();
    let rss_start: BTreeMap<Role, u64> = a.pids.iter().filter_map(|(r, p)| Some((*r, rss_kb(*p)?))).collect();
    let mut rss_max = rss_start.clone();

    // streams that open and never send, checked at the end
    // every method of every target in turn: a stream that sends nothing, or a unary call
    // that sends its message but never ends its body
    let mut silent = Vec::new();
    let all: Vec<(String, Method)> =
        a.targets.iter().flat_map(|(r, addr)| methods(*r).into_iter().map(|m| (addr.clone(), m))).collect();
    for i in 0..a.silent_streams {
        let (addr, m) = &all[i % all.len()];
        let (addr, m) = (addr.clone(), Method { path: m.path, stream: m.stream, sample: m.sample });
        let mut send = dialer.h2(&addr).await?;
        let (resp, mut out) = send.send_request(grpc_request(&addr, m.path, token).body(())?, false)?;
        if !m.stream {
            let _ = out.send_data(Bytes::from(frame(0, &(m.sample)(&mut rng, token.unwrap_or("")))), false);
        }
        let limit = Duration::from_millis(a.first_message_timeout_ms + 10_000);
        silent.push(tokio::spawn(async move {
            let _keep = (out, send);
            let got = match tokio::time::timeout(limit, ending(resp)).await {
                Ok(Ending::Status(c)) => Some(c),
                _ => None,
            };
            (m.path, got)
        }));
    }

    let start = Instant::now();
    let deadline = Duration::from_secs_f64(a.seconds);
    let mut conns: BTreeMap<String, h2::client::SendRequest<Bytes>> = BTreeMap::new();
    let mut last_check = Instant::now();
    while start.elapsed() < deadline {
        let (role, addr) = a.targets[rng.random_range(0..a.targets.len())].clone();
        let all = methods(role);
        let m = &all[rng.random_range(0..all.len())];
        // raw frames take a fresh connection each: rarer, so the client's ports (TIME_WAIT)
        // last a long run
        let case =
            if rng.random_bool(0.03) { Case::RawFrames } else { Case::ALL[rng.random_range(0..Case::ALL.len() - 1)] };
        tally.cases += 1;
        let ending = if case == Case::RawFrames {
            raw_frames(&dialer, &addr, &mut rng).await.map(|()| Ending::NoStatus("raw".into()))
        } else {
            let b = body(&mut rng, case, m, token.unwrap_or(""));
            let send = match conns.get_mut(&addr) {
                Some(s) => s,
                None => {
                    let s = dialer.h2(&addr).await?;
                    conns.entry(addr.clone()).or_insert(s)
                }
            };
            let tok = if case == Case::NoToken { None } else { token };
            let r = call(send, &addr, m.path, tok, b, case == Case::Reset, &mut rng).await;
            if r.is_err() || rng.random_bool(0.005) {
                conns.remove(&addr); // a broken connection, or now and then a fresh one
            }
            r
        };
        let label = match &ending {
            Ok(Ending::Status(c)) => code_name(*c),
            Ok(Ending::NoStatus(_)) => "no status".into(),
            Ok(Ending::TimedOut) => "timed out".into(),
            Err(_) => "connection failed".into(),
        };
        *tally.by_case.entry((case, label.clone())).or_default() += 1;
        let bad = match (&ending, case) {
            (Ok(Ending::Status(0)), c) if c.broken() => Some("a broken request ended with OK"),
            (Ok(Ending::Status(c)), Case::NoToken) if token.is_some() && *c != tonic::Code::Unauthenticated as i32 => {
                Some("a call without the token was not refused as UNAUTHENTICATED")
            }
            (Ok(Ending::Status(13)), _) => Some("INTERNAL for the client's bytes"),
            (Ok(Ending::Status(2)), _) => Some("UNKNOWN for the client's bytes"),
            (Ok(Ending::TimedOut), _) => Some("no status within 10 s"),
            (Ok(Ending::NoStatus(_)), c) if c.broken() || matches!(c, Case::Valid | Case::Mutated) => {
                Some("the stream ended without a status")
            }
            _ => None,
        };
        if let Some(what) = bad {
            let detail = match &ending {
                Ok(e) => format!("{e:?}"),
                Err(e) => format!("{e:#}"),
            };
            tally.violation(json!({"case": format!("{case:?}"), "method": m.path, "what": what, "ending": detail}));
        }
        if last_check.elapsed() >= Duration::from_millis(500) {
            last_check = Instant::now();
            for (role, addr) in &a.targets {
                tally.liveness_checks += 1;
                if let Err(e) = alive(&dialer, *role, addr, token, &mut rng).await {
                    tally.liveness_failures.push(format!("{e:#}"));
                }
            }
            for (role, pid) in &a.pids {
                if let Some(kb) = rss_kb(*pid) {
                    let e = rss_max.entry(*role).or_insert(kb);
                    *e = (*e).max(kb);
                }
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    for (role, addr) in &a.targets {
        tally.liveness_checks += 1;
        if let Err(e) = alive(&dialer, *role, addr, token, &mut rng).await {
            tally.liveness_failures.push(format!("{e:#}"));
        }
    }
    let mut silent_codes: BTreeMap<String, u64> = BTreeMap::new();
    for s in silent {
        let (path, code) = s.await?;
        let label = code.map_or("no status".to_string(), code_name);
        if code != Some(tonic::Code::DeadlineExceeded as i32) {
            tally.violation(json!({"case": "Silent", "method": path, "what": "a silent stream did not end with DEADLINE_EXCEEDED", "ending": label}));
        }
        *silent_codes.entry(label).or_default() += 1;
    }
    let rss_end: BTreeMap<Role, u64> = a.pids.iter().filter_map(|(r, p)| Some((*r, rss_kb(*p)?))).collect();

    let mut by_case = serde_json::Map::new();
    for ((case, label), n) in &tally.by_case {
        let e = by_case.entry(format!("{case:?}")).or_insert_with(|| json!({}));
        e[label] = json!(n);
    }
    let rss = |m: &BTreeMap<Role, u64>| {
        m.iter().map(|(r, kb)| (r.name().to_string(), json!(kb))).collect::<serde_json::Map<_, _>>()
    };
    let report = json!({
        "seconds": elapsed,
        "seed": a.seed,
        "targets": a.targets.iter().map(|(r, addr)| format!("{}={addr}", r.name())).collect::<Vec<_>>(),
        "tls": a.ca.is_some(),
        "cases": tally.cases,
        "cases_per_s": tally.cases as f64 / elapsed,
        "by_case": by_case,
        "silent_streams": silent_codes,
        "violation_count": tally.violation_count,
        "violations": tally.violations,
        "liveness_checks": tally.liveness_checks,
        "liveness_failures": tally.liveness_failures,
        "rss_kb": {"start": rss(&rss_start), "max": rss(&rss_max), "end": rss(&rss_end)},
    });
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(p) = &a.json {
        std::fs::write(p, &text).with_context(|| format!("writing {}", p.display()))?;
    }
    if tally.violation_count > 0 || !tally.liveness_failures.is_empty() {
        bail!(
            "{} violations and {} failed liveness checks in {} cases",
            tally.violation_count,
            tally.liveness_failures.len(),
            tally.cases
        );
    }
    Ok(())
}
