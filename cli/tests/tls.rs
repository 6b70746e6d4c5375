//! One `[transport]` section secures every endpoint: with certificates made by `oni certs`
//! and a token, an `oni run` serves its learner, its annotator and its env hub over TLS, its
//! own actor reaches the learner and the annotator through it, and a Python client attaches
//! over TLS and trains. On each of the three endpoints, a plaintext client, a client that
//! trusts another CA, and a client with the right CA but a wrong token are all refused.

mod support;
use oni_proto::transport::{AuthInterceptor, ClientOptions, TlsConfig};
use oni_proto::v1::annotator_client::AnnotatorClient;
use oni_proto::v1::env_hub_client::EnvHubClient;
use oni_proto::v1::learner_client::LearnerClient;
use oni_proto::v1::{client_message, ClientMessage, GetInfoRequest, GetLabelsRequest, Hello, ProtocolVersion};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Code;

const TOKEN: &str = "s3cret";

/// `oni certs` into `dir`: the CA and the server certificate.
fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let out = Command::new(oni()).args(["certs", "--out"]).arg(dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[transport.tls]"), "{text}");
    let files = (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&files.2).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the private key is readable by others");
    // a second run does not overwrite them
    let again = Command::new(oni()).args(["certs", "--out"]).arg(dir).output().unwrap();
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("--force"));
    files
}

/// How a probe dials: plaintext, or TLS trusting `ca`; and with which token.
#[derive(Clone)]
struct Dial {
    ca: Option<PathBuf>,
    token: Option<&'static str>,
}

impl Dial {
    async fn channel(&self, port: u16) -> Result<InterceptedService<Channel, AuthInterceptor>, String> {
        let opts = ClientOptions {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            tls: TlsConfig { enabled: self.ca.is_some(), ca: self.ca.clone(), ..Default::default() },
            ..Default::default()
        };
        let ch = opts.connect(&format!("127.0.0.1:{port}")).await.map_err(|e| e.to_string())?;
        Ok(InterceptedService::new(ch, AuthInterceptor::new(self.token).unwrap()))
    }

    async fn learner(&self, port: u16) -> Result<u64, (Code, String)> {
        let ch = self.channel(port).await.map_err(|e| (Code::Unavailable, e))?;
        let r = LearnerClient::new(ch).get_info(GetInfoRequest {}).await;
        r.map(|r| r.into_inner().env_steps).map_err(|s| (s.code(), s.message().to_string()))
    }

    async fn annotator(&self, port: u16) -> Result<usize, (Code, String)> {
        let ch = self.channel(port).await.map_err(|e| (Code::Unavailable, e))?;
        let r = AnnotatorClient::new(ch).get_labels(GetLabelsRequest { captions: vec!["You see a key.".into()] }).await;
        r.map(|r| r.into_inner().labels.len()).map_err(|s| (s.code(), s.message().to_string()))
    }

    /// Opens an Attach stream with a Hello that declares no spaces: a client the hub lets
    /// in gets INVALID_ARGUMENT for the spaces; one it does not trust, something else.
    async fn hub(&self, port: u16) -> Result<(), (Code, String)> {
        let ch = self.channel(port).await.map_err(|e| (Code::Unavailable, e))?;
        let hello = Hello {
            protocol_version: ProtocolVersion::Current as u32,
            token: self.token.unwrap_or_default().into(),
            env_name: "probe".into(),
            num_envs: 1,
            num_actions: 2,
            ..Default::default()
        };
        let first = ClientMessage { kind: Some(client_message::Kind::Hello(hello)) };
        let r = EnvHubClient::new(ch).attach(tokio_stream::iter(vec![first])).await;
        let mut stream = r.map_err(|s| (s.code(), s.message().to_string()))?.into_inner();
        match stream.message().await {
            Ok(_) => Ok(()),
            Err(s) => Err((s.code(), s.message().to_string())),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_transport_section_secures_the_learner_the_annotator_and_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(&dir.path().join("certs"));
    let (other_ca, _, _) = make_certs(&dir.path().join("other"));
    let judge_addr = format!("127.0.0.1:{}", free_port());
    let _judge = Proc::start("judge", dir.path(), &["judge", "--listen", &judge_addr]);
    wait_for("the judge", Duration::from_secs(30), || {
        let a = judge_addr.clone();
        async move { tokio::net::TcpStream::connect(a).await.ok() }
    })
    .await;
    let (learner, annotator, hub) = (free_port(), free_port(), free_port());
    let sets = [
        format!("transport.token=\"{TOKEN}\""),
        "transport.tls.enabled=true".into(),
        format!("transport.tls.cert=\"{}\"", cert.display()),
        format!("transport.tls.key=\"{}\"", key.display()),
        format!("transport.tls.ca=\"{}\"", ca.display()),
        format!("learner.listen=\"127.0.0.1:{learner}\""),
        "annotator.enabled=true".into(),
        format!("annotator.listen=\"127.0.0.1:{annotator}\""),
        format!("llm.base_url=\"http://{judge_addr}\""),
        format!("actor.hub.listen=\"127.0.0.1:{hub}\""),
        "telemetry.metrics_listen=\"\"".into(),
        "run.max_env_steps=0".into(),
        "run.max_seconds=300".into(),
    ];
    let mut args = vec!["run".to_string(), "--config".into(), "configs/attached-cartpole.toml".into()];
    args.extend(["--run-dir".into(), dir.path().join("run").display().to_string()]);
    for s in &sets {
        args.extend(["--set".into(), s.clone()]);
    }
    let mut run = Proc::start("run", dir.path(), &as_strs(&args));
    for port in [learner, annotator, hub] {
        wait_for("the run's servers", Duration::from_secs(60), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()
        })
        .await;
    }

    // a Python client attaches over TLS with the token (both from the environment) and trains
    let py_log = std::fs::File::create(dir.path().join("python.log")).unwrap();
    let py = Command::new(oni_cache().join("venv/bin/python"))
        .args(["examples/cartpole.py", "--address", &format!("127.0.0.1:{hub}"), "--num-envs", "8"])
        .args(["--max-steps", "4000"])
        .env("ONI_TOKEN", TOKEN)
        .env("ONI_TLS_CA", &ca)
        .env("PYTHONWARNINGS", "ignore")
        .env("PYTHONPATH", repo_root().join("clients/python"))
        .current_dir(repo_root().join("clients/python"))
        .stdout(Stdio::null())
        .stderr(py_log)
        .status()
        .unwrap();
    let py_text = std::fs::read_to_string(dir.path().join("python.log")).unwrap();
    assert!(py.success(), "the Python client over TLS failed:\n{py_text}\n{}", run.log_text());

    let good = Dial { ca: Some(ca.clone()), token: Some(TOKEN) };
    // the run's own actor reached the learner over TLS: it trained on the client's steps
    let steps = wait_for("training over TLS", Duration::from_secs(60), || {
        let good = good.clone();
        async move { good.learner(learner).await.ok().filter(|&s| s > 0) }
    })
    .await;
    eprintln!("trained {steps} env steps over TLS");
    assert!(good.annotator(annotator).await.is_ok(), "the annotator refused a trusted client with the token");
    let spaces = good.hub(hub).await.unwrap_err();
    assert_eq!(spaces.0, Code::InvalidArgument, "a trusted client's Hello without spaces: {spaces:?}");

    let cases = [
        ("plaintext", Dial { ca: None, token: Some(TOKEN) }),
        ("another CA", Dial { ca: Some(other_ca.clone()), token: Some(TOKEN) }),
        ("wrong token", Dial { ca: Some(ca.clone()), token: Some("nope") }),
        ("no token", Dial { ca: Some(ca.clone()), token: None }),
    ];
    for (what, dial) in &cases {
        let results = [
            ("learner", dial.learner(learner).await.map(|_| ())),
            ("annotator", dial.annotator(annotator).await.map(|_| ())),
            ("env hub", dial.hub(hub).await),
        ];
        for (endpoint, r) in results {
            eprintln!("{what} → {endpoint}: {r:?}");
            let (code, msg) = r.expect_err(&format!("{endpoint} let a client in with {what}"));
            if what.contains("token") {
                assert_eq!(code, Code::Unauthenticated, "{endpoint}, {what}: {msg}");
                assert!(msg.contains("token"), "{endpoint}, {what}: the message does not say why: {msg}");
            } else {
                assert_ne!(code, Code::InvalidArgument, "{endpoint} read a Hello sent with {what}");
            }
        }
    }
    assert!(run.alive(), "the run died:\n{}", run.log_text());
}
