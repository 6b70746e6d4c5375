//! What the env hub answers to bytes that are not a valid step, after a good Hello: a status
//! naming the problem (never a stream that ends OK as if all were well).

use oni_actor::config::HubConfig;
use oni_proto::raw::RawCodec;
use oni_proto::tasks::CancellationToken;
use oni_proto::v1::env_hub_client::EnvHubClient;
use oni_proto::v1::{client_message, ClientMessage, Dtype, EnvStep, Hello, HubMessage, TensorSpec};
use prost::Message;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::Code;

const LIMIT: usize = 1 << 20;

async fn hub() -> (String, CancellationToken) {
    hub_with(HubConfig { listen: "127.0.0.1:0".into(), max_message_bytes: LIMIT, ..Default::default() }).await
}

async fn hub_with(cfg: HubConfig) -> (String, CancellationToken) {
    let stop = CancellationToken::new();
    let addr = oni_actor::hub::serve_random(cfg, stop.clone()).await.unwrap();
    (format!("http://{addr}"), stop)
}

fn hello() -> ClientMessage {
    let obs = TensorSpec { name: "obs".into(), dtype: Dtype::Float32 as i32, shape: vec![4], num_ids: 0 };
    let h = Hello { protocol_version: 1, observations: vec![obs], num_actions: 2, num_envs: 1, ..Default::default() };
    ClientMessage { kind: Some(client_message::Kind::Hello(h)) }
}

fn step(initial: bool, obs_bytes: usize) -> ClientMessage {
    let s = EnvStep {
        initial,
        observations: vec![vec![0; obs_bytes]],
        rewards: if initial { vec![] } else { vec![0.0] },
        terminated: if initial { vec![] } else { vec![false] },
        truncated: if initial { vec![] } else { vec![false] },
        ..Default::default()
    };
    ClientMessage { kind: Some(client_message::Kind::Step(s)) }
}

/// Opens a stream, sends `first` (Hello, initial step), waits for the Welcome and the first
/// actions, then sends `bad` and returns how the stream ended.
async fn ends_with(addr: &str, bad: Vec<u8>) -> tonic::Status {
    let channel = tonic::transport::Endpoint::from_shared(addr.to_string()).unwrap().connect().await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
    tx.send(hello().encode_to_vec()).await.unwrap();
    tx.send(step(true, 16).encode_to_vec()).await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/oni.v1.EnvHub/Attach");
    let mut answers = grpc
        .streaming(tonic::Request::new(ReceiverStream::new(rx)), path, RawCodec::<HubMessage>::default())
        .await
        .unwrap()
        .into_inner();
    for _ in 0..2 {
        answers.next().await.expect("welcome and first actions").expect("no error yet");
    }
    tx.send(bad).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), answers.next()).await.expect("the hub answered") {
        Some(Err(st)) => st,
        other => panic!("the stream ended without an error status: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_steps_after_the_hello_end_the_stream_with_a_status_that_says_why() {
    let (addr, _stop) = hub().await;
    // a field-1 length prefix far beyond the message: not protobuf
    let st = ends_with(&addr, vec![0x0a, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3]).await;
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    assert!(st.message().contains("could not be read"), "{}", st.message());

    let st = ends_with(&addr, step(false, LIMIT + 4096).encode_to_vec()).await;
    assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
    assert!(st.message().contains("actor.hub.max_message_bytes"), "{}", st.message());

    // a well-formed step of the wrong size still gets its own answer
    let st = ends_with(&addr, step(false, 12).encode_to_vec()).await;
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");

    // and the hub still serves: a typed client attaches after all that
    let mut c = EnvHubClient::connect(addr.clone()).await.unwrap();
    let out = c.attach(tokio_stream::iter(vec![hello(), step(true, 16)])).await.unwrap().into_inner();
    let answers: Vec<_> = out.take(2).collect().await;
    assert!(answers.iter().all(|a| a.is_ok()), "{answers:?}");
}

/// A peer that opens TCP, sends half the HTTP/2 preface and waits is disconnected after the
/// handshake deadline instead of being held for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_closed_after_the_handshake_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, _stop) = hub().await;
    let mut s = tokio::net::TcpStream::connect(addr.trim_start_matches("http://")).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let start = std::time::Instant::now();
    let limit =
        Duration::from_millis(oni_proto::TransportConfig::default().preface_timeout_ms) + Duration::from_secs(5);
    let mut buf = vec![0u8; 1024];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue, // the server's own SETTINGS
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a half-open connection was still held after {limit:?}");
    assert!(
        start.elapsed()
            >= Duration::from_millis(oni_proto::TransportConfig::default().preface_timeout_ms) - Duration::from_secs(1)
    );
}

/// Hundreds of connections opened and left idle by one host (more than its share) do not
/// keep a good client on another from stepping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_starve_a_good_client() {
    let (addr, _stop) = hub().await;
    let host: std::net::SocketAddr = addr.trim_start_matches("http://").parse().unwrap();
    let mut idle = Vec::new();
    for _ in 0..300 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        idle.push(sock.connect(host).await.unwrap());
    }
    let mut c = EnvHubClient::connect(addr.clone()).await.unwrap();
    let (tx, rx) = mpsc::channel::<ClientMessage>(4);
    tx.send(hello()).await.unwrap();
    tx.send(step(true, 16)).await.unwrap();
    let mut answers = c.attach(ReceiverStream::new(rx)).await.unwrap().into_inner();
    for _ in 0..2 {
        answers.next().await.expect("welcome and first actions").expect("no error");
    }
    for i in 0..50 {
        tx.send(step(false, 16)).await.unwrap();
        let a = tokio::time::timeout(Duration::from_secs(5), answers.next()).await;
        assert!(matches!(a, Ok(Some(Ok(_)))), "step {i} got no answer: {a:?}");
    }
    drop(idle);
}

/// Random bytes as the first message, or after a good Hello, on 200 streams: every stream
/// ends with an error status (none with OK as if all were well), and the hub still serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_on_every_stream_end_in_an_error_status() {
    use rand::{Rng, SeedableRng};
    let (addr, _stop) = hub().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let channel = tonic::transport::Endpoint::from_shared(addr.clone()).unwrap().connect().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/oni.v1.EnvHub/Attach");
    let mut ok_endings = 0;
    for case in 0..200 {
        let garbage: Vec<u8> = (0..rng.random_range(0..512)).map(|_| rng.random()).collect();
        let first = if case % 2 == 0 { vec![garbage] } else { vec![hello().encode_to_vec(), garbage] };
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let req = tonic::Request::new(tokio_stream::iter(first));
        let ended = match grpc.streaming(req, path.clone(), RawCodec::<HubMessage>::default()).await {
            Err(st) => Some(st),
            Ok(resp) => {
                let mut answers = resp.into_inner();
                let mut end = None;
                while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(10), answers.next()).await {
                    if let Err(st) = item {
                        end = Some(st);
                        break;
                    }
                }
                end
            }
        };
        match ended {
            Some(st) => assert_ne!(st.code(), Code::Ok, "case {case}"),
            None => ok_endings += 1,
        }
    }
    assert_eq!(ok_endings, 0, "{ok_endings} of 200 random streams ended without an error status");
    let mut c = EnvHubClient::connect(addr.clone()).await.unwrap();
    let out = c.attach(tokio_stream::iter(vec![hello(), step(true, 16)])).await.unwrap().into_inner();
    let answers: Vec<_> = out.take(2).collect().await;
    assert!(answers.iter().all(|a| a.is_ok()), "{answers:?}");
}

type Answers = tonic::Streaming<HubMessage>;

/// Attaches one env through `endpoint` (Hello and the initial step) and reads the Welcome and
/// the first actions; the sender carries the client's next steps.
async fn attach(endpoint: tonic::transport::Endpoint) -> Result<(mpsc::Sender<ClientMessage>, Answers), tonic::Status> {
    let mut c = EnvHubClient::new(endpoint.connect().await.unwrap());
    let (tx, rx) = mpsc::channel::<ClientMessage>(64);
    tx.send(hello()).await.unwrap();
    tx.send(step(true, 16)).await.unwrap();
    let mut answers = c.attach(ReceiverStream::new(rx)).await?.into_inner();
    for _ in 0..2 {
        answers.next().await.expect("welcome and first actions")?;
    }
    Ok((tx, answers))
}

/// Tries to attach until a place is free.
async fn attach_within(addr: &str, limit: Duration) -> (mpsc::Sender<ClientMessage>, Answers) {
    let start = std::time::Instant::now();
    loop {
        match attach(endpoint(addr)).await {
            Ok(client) => return client,
            Err(st) if start.elapsed() < limit => assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}"),
            Err(st) => panic!("no place came free within {limit:?}: {st:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn endpoint(addr: &str) -> tonic::transport::Endpoint {
    tonic::transport::Endpoint::from_shared(addr.to_string()).unwrap()
}

/// The next status on a stream, skipping answers already queued for it.
async fn status_of(answers: &mut Answers, limit: Duration) -> tonic::Status {
    let found = tokio::time::timeout(limit, async {
        loop {
            match answers.next().await {
                Some(Ok(_)) => continue,
                Some(Err(st)) => return st,
                None => panic!("the stream ended without a status"),
            }
        }
    });
    found.await.expect("no status in time")
}

/// A client that sends its Hello and then nothing, one that never reads its answers, and a
/// thousand connections opened and left idle: each is timed out or dropped with its place
/// freed, while a good client steps on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_are_timed_out_and_their_places_freed() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let idle = Duration::from_millis(1500);
    let cfg = HubConfig {
        listen: "127.0.0.1:0".into(),
        max_message_bytes: LIMIT,
        max_clients: 2,
        idle_timeout_ms: idle.as_millis() as u64,
        ..Default::default()
    };
    let (addr, _stop) = hub_with(cfg).await;

    // the good client, and a watch on its progress
    let steps = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (good_tx, mut good_answers) = attach(endpoint(&addr)).await.unwrap();
    let good = {
        let (steps, done) = (steps.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                good_tx.send(step(false, 16)).await.unwrap();
                let a = tokio::time::timeout(Duration::from_secs(5), good_answers.next()).await;
                assert!(matches!(a, Ok(Some(Ok(_)))), "the good client lost its stream: {a:?}");
                steps.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let stalls = {
        let (steps, done) = (steps.clone(), done.clone());
        tokio::spawn(async move {
            let (mut longest, mut last, mut since) = (Duration::ZERO, 0, std::time::Instant::now());
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let now = steps.load(Ordering::Relaxed);
                if now != last {
                    (last, since) = (now, std::time::Instant::now());
                }
                longest = longest.max(since.elapsed());
            }
            longest
        })
    };
    let rate = |what: &'static str| {
        let steps = steps.clone();
        async move {
            let (before, t) = (steps.load(Ordering::Relaxed), std::time::Instant::now());
            tokio::time::sleep(Duration::from_secs(1)).await;
            let per_s = (steps.load(Ordering::Relaxed) - before) as f64 / t.elapsed().as_secs_f64();
            eprintln!("good client: {per_s:.0} steps/s {what}");
        }
    };
    rate("alone").await;

    // 1. Hello, the initial step, then silence: its place is taken until the idle timeout
    let (_silent_tx, mut silent) = attach(endpoint(&addr)).await.unwrap();
    let st = attach(endpoint(&addr)).await.expect_err("a third client found a place");
    assert!(st.message().contains("max_clients"), "{st:?}");
    let st = status_of(&mut silent, idle * 4).await;
    assert_eq!(st.code(), Code::DeadlineExceeded, "{st:?}");
    let (probe_tx, probe) = attach_within(&addr, Duration::from_secs(10)).await;
    drop((probe_tx, probe));

    // 2. steps sent as fast as the hub takes them, answers never read (a 1 KiB window)
    let narrow = endpoint(&addr).initial_stream_window_size(Some(1024)).initial_connection_window_size(Some(1024));
    let (deaf_tx, mut deaf) = attach(narrow).await.unwrap();
    let sender = tokio::spawn(async move { while deaf_tx.send(step(false, 16)).await.is_ok() {} });
    rate("beside a client that does not read").await;
    let (probe_tx, probe) = attach_within(&addr, Duration::from_secs(30)).await;
    drop((probe_tx, probe));
    let st = status_of(&mut deaf, Duration::from_secs(10)).await;
    assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
    assert!(st.message().contains("stopped reading"), "{st:?}");
    sender.abort();

    // 3. a thousand connections that never speak: all closed at the handshake deadline
    let host = addr.trim_start_matches("http://").to_string();
    let mut idle_conns = Vec::new();
    for _ in 0..1000 {
        let mut s = tokio::net::TcpStream::connect(&host).await.unwrap();
        idle_conns.push(tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 256];
            let limit = Duration::from_millis(oni_proto::TransportConfig::default().preface_timeout_ms)
                + Duration::from_secs(10);
            tokio::time::timeout(limit, async {
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await
            .is_ok()
        }));
    }
    rate("beside 1000 idle connections").await;
    let mut closed = 0;
    for c in idle_conns {
        closed += c.await.unwrap() as usize;
    }
    assert_eq!(closed, 1000, "{} idle connections were still open after the handshake deadline", 1000 - closed);
    let (probe_tx, probe) = attach_within(&addr, Duration::from_secs(10)).await;
    rate("after").await;
    drop((probe_tx, probe));

    done.store(true, Ordering::Relaxed);
    good.await.unwrap();
    let longest = stalls.await.unwrap();
    assert!(longest < Duration::from_secs(3), "the good client went {longest:?} without a step");
}
