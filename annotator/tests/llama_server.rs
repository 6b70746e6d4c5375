//! The LLM client against a real llama.cpp `llama-server` with the SmolLM2-135M-Instruct
//! GGUF (both provided by scripts/llm-server.sh, which scripts/test.sh runs first).

use oni_annotator::{Label, LlmClient, LlmConfig, PromptConfig};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cache() -> PathBuf {
    std::env::var("ONI_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/oni"))
}

fn start(port: u16) -> Server {
    let bin = cache().join("bin/llama-server");
    let model = cache().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(bin.exists() && model.exists(), "run scripts/llm-server.sh build && scripts/llm-server.sh model first");
    let child = Command::new(bin)
        .args([
            "-m",
            model.to_str().unwrap(),
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--parallel",
            "4",
            "-c",
            "4096",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Server(child)
}

async fn healthy(port: u16) -> bool {
    let url = format!("http://127.0.0.1:{port}/health");
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        if reqwest::get(&url).await.is_ok_and(|r| r.status().is_success()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

#[tokio::test]
async fn labels_captions_with_a_real_llama_server_under_both_apis() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _server = start(port);
    assert!(healthy(port).await, "llama-server did not become healthy");
    let captions: Vec<String> =
        ["You see here a brass key.", "This door is locked.", "You hit the newt.", "There is a staircase down here."]
            .iter()
            .map(|s| s.to_string())
            .collect();
    for (api, constrain) in [("completions", "grammar"), ("chat", "grammar"), ("completions", "json_schema")] {
        let cfg = LlmConfig {
            base_url: format!("http://127.0.0.1:{port}"),
            api: api.into(),
            constrain: constrain.into(),
            batch: 4,
            timeout_ms: 60_000,
            ..Default::default()
        };
        let client = LlmClient::new(cfg).unwrap();
        let out = client.classify(&PromptConfig::default(), &captions).await;
        assert_eq!(out.len(), 4);
        for a in &out {
            let a = a.as_ref().unwrap_or_else(|e| panic!("{api}/{constrain}: {e}"));
            // constrained decoding leaves the server no way to answer anything but the JSON
            assert!(matches!(a.label, Label::Helpful | Label::Unhelpful), "{api}/{constrain}: unparsed {:?}", a.raw);
            assert!(a.raw.contains("\"helpful\""), "{api}/{constrain}: {:?}", a.raw);
        }
    }
    // the server's 4 parallel slots cap a client configured for 16 requests at once
    let cfg = LlmConfig { base_url: format!("http://127.0.0.1:{port}"), concurrency: 16, ..Default::default() };
    let client = LlmClient::new(cfg).unwrap();
    assert_eq!(client.concurrency_limit(), 16);
    assert_eq!(client.fit_to_server().await, Some(4));
    assert_eq!(client.concurrency_limit(), 4);
    // a server that says nothing about its slots leaves the limit alone
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = LlmConfig { base_url: format!("http://127.0.0.1:{gone}"), concurrency: 16, ..Default::default() };
    let client = LlmClient::new(cfg).unwrap();
    assert_eq!(client.fit_to_server().await, None);
    assert_eq!(client.concurrency_limit(), 16);
}
