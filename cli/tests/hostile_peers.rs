//! Hostile peers, from outside, against real `oni` processes on 127.0.0.1:
//! - `oni bench fuzz` (HTTP/2 and gRPC framing built from the protos: broken framing, mutated
//!   messages, resets, raw frames, silent streams) against a learner, its inference service,
//!   an annotator and an env hub, all with a token: no broken request ends with OK, none with
//!   INTERNAL, every silent stream ends with DEADLINE_EXCEEDED, a good client is served
//!   throughout, the learner trains on, its RSS stays bounded and its log small;
//! - 5 000 connections of each hostile kind from one peer (127.0.0.2), plaintext and TLS:
//!   silent, half a preface, a finished TLS handshake then silence or half a preface, legal
//!   HTTP/2 connections that open no stream: a good client on another address connects on
//!   its first try 10 times out of 10, the server's RSS stays under twice its idle size, and
//!   the idle HTTP/2 connections are closed at `transport.idle_timeout_ms`.

mod support;
use oni_proto::transport::{AuthInterceptor, ClientOptions, TlsConfig};
use oni_proto::v1::learner_client::LearnerClient;
use oni_proto::v1::GetInfoRequest;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::AsyncWriteExt;

const TOKEN: &str = "fuzz-token";

fn rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn wait_port(port: u16) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(60), "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fuzzer_gets_a_true_status_for_every_broken_request_and_the_servers_live_on() {
    let dir = tempfile::tempdir().unwrap();
    let (learner, annotator, hub, hub_learner) = (free_port(), free_port(), free_port(), free_port());
    let common = [
        "--set".to_string(),
        format!("transport.token=\"{TOKEN}\""),
        "--set".into(),
        "transport.first_message_timeout_ms=2000".into(),
        "--set".into(),
        "telemetry.metrics_listen=\"\"".into(),
    ];
    let mut a_args: Vec<String> =
        ["run", "--config", "configs/keyroom-sparse-classification.toml", "--run-dir"].map(String::from).into();
    a_args.push(dir.path().join("a").display().to_string());
    for s in [
        format!("learner.listen=\"127.0.0.1:{learner}\""),
        format!("annotator.listen=\"127.0.0.1:{annotator}\""),
        "llm.base_url=\"http://127.0.0.1:9\"".into(),
        "actor.num_envs=8".into(),
        "run.max_env_steps=0".into(),
    ] {
        a_args.extend(["--set".into(), s]);
    }
    a_args.extend(common.iter().cloned());
    let mut a = Proc::start("a", dir.path(), &as_strs(&a_args));
    let mut b_args: Vec<String> =
        ["run", "--config", "configs/attached-cartpole.toml", "--run-dir"].map(String::from).into();
    b_args.push(dir.path().join("b").display().to_string());
    for s in [
        format!("learner.listen=\"127.0.0.1:{hub_learner}\""),
        format!("actor.hub.listen=\"127.0.0.1:{hub}\""),
        "run.max_env_steps=0".into(),
    ] {
        b_args.extend(["--set".into(), s]);
    }
    b_args.extend(common.iter().cloned());
    let mut b = Proc::start("b", dir.path(), &as_strs(&b_args));
    let learner_addr = format!("127.0.0.1:{learner}");
    let before =
        wait_for_steps("the learner to train", Duration::from_secs(120), &learner_addr, Some(TOKEN), 20_000).await;
    wait_port(hub);
    let rss_before = rss_kb(a.child.id());
    let log_size = |p: &Proc| std::fs::metadata(&p.log).unwrap().len();
    let (log_a, log_b) = (log_size(&a), log_size(&b));

    let report = dir.path().join("fuzz.json");
    let started = Instant::now();
    let out = Command::new(oni())
        .args(["bench", "fuzz", "--seconds", "20", "--token", TOKEN, "--silent-streams", "9"])
        .args(["--first-message-timeout-ms", "2000", "--json"])
        .arg(&report)
        .args(["--target", &format!("learner={learner_addr}")])
        .args(["--target", &format!("annotator=127.0.0.1:{annotator}")])
        .args(["--target", &format!("hub=127.0.0.1:{hub}")])
        .args(["--pid", &format!("learner={}", a.child.id())])
        .output()
        .unwrap();
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let text = std::fs::read_to_string(&report).unwrap_or_else(|_| String::from_utf8_lossy(&out.stderr).into());
    eprintln!("{text}");
    assert!(out.status.success(), "the fuzzer found violations: {}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["violation_count"], 0);
    assert!(r["cases"].as_u64().unwrap() > 1000, "too few cases to mean anything");
    for case in ["Cut", "FlagByte", "CompressedFlag", "Oversized"] {
        let codes = r["by_case"][case].as_object().unwrap_or_else(|| panic!("no {case} case ran"));
        assert!(!codes.contains_key("Ok") && !codes.contains_key("Internal"), "{case}: {codes:?}");
    }
    assert_eq!(r["silent_streams"]["DeadlineExceeded"], 9, "every silent stream: {}", r["silent_streams"]);

    assert!(a.alive() && b.alive(), "a server died under the fuzzer");
    let after =
        wait_for_steps("training after the fuzzer", Duration::from_secs(60), &learner_addr, Some(TOKEN), before + 1)
            .await;
    let rss_after = rss_kb(a.child.id());
    let rate = |p: &Proc, before: u64| (log_size(p) - before) as f64 / minutes;
    let (rate_a, rate_b) = (rate(&a, log_a), rate(&b, log_b));
    eprintln!(
        "fuzzed: {} cases ({:.0}/s); learner steps {before} -> {after}; RSS {rss_before} -> {rss_after} kB; \
         log {:.1} kB/min (learner and annotator), {:.1} kB/min (hub)",
        r["cases"],
        r["cases_per_s"].as_f64().unwrap(),
        rate_a / 1e3,
        rate_b / 1e3
    );
    assert!(rss_after < rss_before * 2, "RSS {rss_before} -> {rss_after} kB");
    for (who, r) in [("learner and annotator", rate_a), ("hub", rate_b)] {
        assert!(r < 100e3, "the {who}'s log grew {r:.0} bytes a minute under the fuzzer");
    }
}

/// A hostile peer's connections: `n` of one kind from 127.0.0.2, held until dropped.
enum Flood {
    Tcp(Vec<tokio::net::TcpStream>),
    Tls(Vec<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
    H2(Vec<(h2::client::SendRequest<bytes::Bytes>, tokio::task::JoinHandle<()>)>),
}

/// Whether the server still holds a connection: its socket has not reached end of file
/// (what the server sent before closing, a GOAWAY or a TLS alert, is read and skipped).
fn open(s: &tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.try_read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

impl Flood {
    /// Connections the server still holds.
    fn held(&self) -> usize {
        match self {
            Flood::Tcp(v) => v.iter().filter(|s| open(s)).count(),
            Flood::Tls(v) => v.iter().filter(|s| open(s.get_ref().0)).count(),
            Flood::H2(v) => v.iter().filter(|(_, c)| !c.is_finished()).count(),
        }
    }
}

async fn from_peer(port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind("127.0.0.2:0".parse().unwrap())?;
    // a reset on close: 30 000 connections must not hold ephemeral ports in TIME_WAIT
    sock.set_zero_linger()?;
    sock.connect(([127, 0, 0, 1], port).into()).await
}

fn tls_connector(ca: &Path) -> tokio_rustls::TlsConnector {
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = tokio_rustls::rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// A legal HTTP/2 connection over `io` that opens no stream (its task answers the server's
/// pings); `None` when the handshake did not finish.
async fn idle_h2<T>(io: T) -> Option<(h2::client::SendRequest<bytes::Bytes>, tokio::task::JoinHandle<()>)>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = tokio::time::timeout(Duration::from_millis(500), h2::client::handshake(io)).await.ok()?.ok()?;
    Some((
        send,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    ))
}

/// `n` connections of `kind` (silent, half-preface, h2-idle) from 127.0.0.2; those the
/// server refuses are dropped at once.
async fn flood(port: u16, kind: &str, tls: Option<&tokio_rustls::TlsConnector>, n: usize) -> Flood {
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let (mut tcp, mut over_tls, mut h2s) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let Ok(mut s) = from_peer(port).await else { continue };
        match (kind, tls) {
            ("silent", None) => tcp.push(s),
            ("half-preface", None) => {
                if s.write_all(b"PRI * HTTP/2.0\r\n").await.is_ok() {
                    tcp.push(s);
                }
            }
            ("h2-idle", None) => h2s.extend(idle_h2(s).await),
            (_, Some(c)) => {
                let Ok(Ok(mut t)) = tokio::time::timeout(Duration::from_millis(500), c.connect(name.clone(), s)).await
                else {
                    continue;
                };
                match kind {
                    "silent" => over_tls.push(t),
                    "half-preface" => {
                        if t.write_all(b"PRI * HTTP/2.0\r\n").await.is_ok() {
                            over_tls.push(t);
                        }
                    }
                    _ => h2s.extend(idle_h2(t).await),
                }
            }
            _ => unreachable!(),
        }
    }
    match kind {
        "h2-idle" => Flood::H2(h2s),
        _ if tls.is_some() => Flood::Tls(over_tls),
        _ => Flood::Tcp(tcp),
    }
}

/// A good client from 127.0.0.1: a fresh connection and one call, no retry.
async fn good_call(port: u16, ca: Option<&PathBuf>) -> Result<(), String> {
    let opts = ClientOptions {
        connect_timeout: Duration::from_secs(3),
        request_timeout: Duration::from_secs(5),
        tls: TlsConfig {
            enabled: ca.is_some(),
            ca: ca.cloned(),
            domain: Some("localhost".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let ch = opts.connect(&format!("127.0.0.1:{port}")).await.map_err(|e| e.to_string())?;
    let mut c = LearnerClient::new(tonic::service::interceptor::InterceptedService::new(
        ch,
        AuthInterceptor::new(Some(TOKEN)).unwrap(),
    ));
    c.get_info(GetInfoRequest {}).await.map(|_| ()).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_connections_from_one_peer_lock_no_one_out() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let out = Command::new(oni()).args(["certs", "--out"]).arg(&certs).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ca = certs.join("ca.pem");
    let connector = tls_connector(&ca);
    for tls in [false, true] {
        let port = free_port();
        let mut extra = vec![
            format!("transport.token=\"{TOKEN}\""),
            "transport.idle_timeout_ms=4000".into(),
            "transport.preface_timeout_ms=10000".into(),
            "learner.max_rollout_streams_per_peer=2".into(),
        ];
        if tls {
            extra.push("transport.tls.enabled=true".into());
            extra.push(format!("transport.tls.cert=\"{}\"", certs.join("cert.pem").display()));
            extra.push(format!("transport.tls.key=\"{}\"", certs.join("key.pem").display()));
        }
        let sets: Vec<String> = extra.iter().flat_map(|s| ["--set".to_string(), s.clone()]).collect();
        let run_dir = dir.path().join(format!("run-{tls}"));
        let args = learner_args(port, &run_dir, &as_strs(&sets));
        let mut learner = Proc::start(&format!("learner-{tls}"), dir.path(), &as_strs(&args));
        wait_port(port);
        let ca_opt = tls.then(|| ca.clone());
        good_call(port, ca_opt.as_ref()).await.expect("a good client before the flood");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle_rss = rss_kb(learner.child.id());
        for kind in ["silent", "half-preface", "h2-idle"] {
            let held = flood(port, kind, tls.then_some(&connector), 5000).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let n_held = held.held();
            let mut first_try = 0;
            for _ in 0..10 {
                if good_call(port, ca_opt.as_ref()).await.is_ok() {
                    first_try += 1;
                }
            }
            let rss = rss_kb(learner.child.id());
            eprintln!(
                "tls={tls} {kind}: 5000 tried, {n_held} held; good client {first_try}/10 on its first try; RSS {idle_rss} -> {rss} kB"
            );
            assert_eq!(first_try, 10, "tls={tls} {kind}: a good client was locked out");
            assert!(n_held <= 256, "tls={tls} {kind}: one peer holds {n_held} connections");
            assert!(rss < 2 * idle_rss, "tls={tls} {kind}: RSS {idle_rss} -> {rss} kB");
            if kind == "h2-idle" {
                // legal but idle: closed at the idle deadline although they answer pings
                let start = Instant::now();
                while held.held() > 0 {
                    assert!(
                        start.elapsed() < Duration::from_secs(15),
                        "{} idle HTTP/2 connections still open",
                        held.held()
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                eprintln!("tls={tls}: idle HTTP/2 connections closed after {:?}", start.elapsed());
            }
            drop(held);
        }
        if !tls {
            // rollout streams: an actor holds one for its life, one peer at most two here
            let ch = ClientOptions::default().connect(&format!("127.0.0.1:{port}")).await.unwrap();
            let mut c = LearnerClient::new(tonic::service::interceptor::InterceptedService::new(
                ch,
                AuthInterceptor::new(Some(TOKEN)).unwrap(),
            ));
            let mut held = Vec::new();
            for _ in 0..2 {
                let (tx, rx) = tokio::sync::mpsc::channel::<oni_proto::v1::Rollout>(1);
                held.push((tx, c.stream_rollouts(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap()));
            }
            let (_tx, rx) = tokio::sync::mpsc::channel::<oni_proto::v1::Rollout>(1);
            let st = c.stream_rollouts(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap_err();
            assert_eq!(st.code(), tonic::Code::ResourceExhausted, "{st:?}");
            assert!(st.message().contains("learner.max_rollout_streams_per_peer"), "{}", st.message());
        }
        assert!(learner.alive());
        learner.kill9();
    }
}
