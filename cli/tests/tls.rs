//! With `tls.enabled`, the learner serves gRPC over TLS (rustls) and actors connect with the
//! configured CA; a plaintext client gets nowhere.

mod support;
use oni_proto::v1::learner_client::LearnerClient;
use oni_proto::v1::GetInfoRequest;
use std::time::Duration;
use support::*;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_and_actor_talk_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();

    let port = free_port();
    let server_tls = [
        "--set".to_string(),
        "learner.tls.enabled=true".to_string(),
        "--set".to_string(),
        format!("learner.tls.cert=\"{}\"", cert.display()),
        "--set".to_string(),
        format!("learner.tls.key=\"{}\"", key.display()),
    ];
    let client_tls = [
        "--set".to_string(),
        "actor.tls.enabled=true".to_string(),
        "--set".to_string(),
        format!("actor.tls.ca=\"{}\"", cert.display()),
        "--set".to_string(),
        "actor.tls.domain=\"localhost\"".to_string(),
    ];
    let _learner = Proc::start(
        "learner",
        dir.path(),
        &as_strs(&learner_args(port, &dir.path().join("run"), &as_strs(&server_tls))),
    );
    let mut actor = Proc::start("actor", dir.path(), &as_strs(&actor_args(port, "tls", &as_strs(&client_tls))));

    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ck.cert.pem())).domain_name("localhost");
    let steps = wait_for("training over TLS", Duration::from_secs(60), || {
        let tls = tls.clone();
        async move {
            let ch = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
                .ok()?
                .tls_config(tls)
                .ok()?
                .connect()
                .await
                .ok()?;
            let info = LearnerClient::new(ch).get_info(GetInfoRequest {}).await.ok()?.into_inner();
            (info.env_steps >= 2_000).then_some(info.env_steps)
        }
    })
    .await;
    assert!(steps >= 2_000);
    assert!(actor.alive(), "{}", actor.log_text());
    // plaintext gets no answer from a TLS server
    assert!(info(&format!("127.0.0.1:{port}"), None).await.is_none());
}
