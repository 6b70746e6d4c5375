//! The LLM client against a scripted OpenAI-compatible server on 127.0.0.1: batching,
//! retries on 5xx/429/garbage/timeouts, the circuit breaker, and answer parsing.

mod common;
use common::*;
use oni_annotator::llm::{Api, Constrain};
use oni_annotator::{Label, LlmClient, LlmConfig, LlmError, PromptConfig};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn config(url: &str) -> LlmConfig {
    LlmConfig {
        base_url: url.into(),
        api: Api::Completions,
        backoff_base_ms: 10,
        backoff_max_ms: 50,
        timeout_ms: 2_000,
        ..Default::default()
    }
}

fn captions(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("message {i}")).collect()
}

#[tokio::test]
async fn batched_completions_map_answers_by_index_and_constrain_the_output() {
    let script = Arc::new(Mutex::new(Script::default()));
    script.lock().unwrap().replies.push_back(Reply(
        200,
        completions(&[(2, "{\"helpful\": false}"), (0, "{\"helpful\": true}"), (1, "yes")]),
        0,
    ));
    let url = serve(script.clone()).await;
    let client = LlmClient::new(LlmConfig { batch: 3, ..config(&url) }).unwrap();
    let out = client.classify(&PromptConfig::default(), &captions(3)).await;
    let labels: Vec<Label> = out.iter().map(|r| r.as_ref().unwrap().label).collect();
    assert_eq!(labels, vec![Label::Helpful, Label::Helpful, Label::Unhelpful]);
    let req = &script.lock().unwrap().requests[0];
    assert_eq!(req["prompt"].as_array().unwrap().len(), 3, "prompts were not batched");
    assert!(req["prompt"][1].as_str().unwrap().contains("\"message 1\""));
    assert!(req["grammar"].as_str().unwrap().contains("helpful"));
    assert_eq!(req["temperature"].as_f64().unwrap(), 0.0, "judging is greedy by default");
}

#[tokio::test]
async fn server_errors_429_and_garbage_are_retried_and_unreadable_answers_are_unknown() {
    let script = Arc::new(Mutex::new(Script::default()));
    {
        let mut s = script.lock().unwrap();
        s.replies.push_back(Reply(500, "boom".into(), 0));
        s.replies.push_back(Reply(429, "slow down".into(), 0));
        s.replies.push_back(Reply(200, "this is not json".into(), 0));
        s.replies.push_back(Reply(200, completions(&[(0, "The message mentions a key.")]), 0));
    }
    let url = serve(script.clone()).await;
    let client = LlmClient::new(LlmConfig { batch: 1, ..config(&url) }).unwrap();
    let out = client.classify(&PromptConfig::default(), &captions(1)).await;
    let a = out[0].as_ref().unwrap();
    assert_eq!(a.label, Label::Unknown, "an unreadable answer must be unknown, not 0");
    assert_eq!(a.raw, "The message mentions a key.");
    assert_eq!(script.lock().unwrap().requests.len(), 4);
}

#[tokio::test]
async fn a_slow_server_times_out_after_the_retries() {
    let script = Arc::new(Mutex::new(Script::default()));
    for _ in 0..3 {
        script.lock().unwrap().replies.push_back(Reply(200, completions(&[(0, "yes")]), 1_000));
    }
    let url = serve(script.clone()).await;
    let client = LlmClient::new(LlmConfig { timeout_ms: 200, retries: 2, ..config(&url) }).unwrap();
    let out = client.classify(&PromptConfig::default(), &captions(1)).await;
    assert_eq!(out[0].as_ref().unwrap_err(), &LlmError::Timeout(3));
}

#[tokio::test]
async fn a_4xx_is_not_retried() {
    let script = Arc::new(Mutex::new(Script::default()));
    script.lock().unwrap().replies.push_back(Reply(400, "{\"error\": \"bad model\"}".into(), 0));
    let url = serve(script.clone()).await;
    let client = LlmClient::new(config(&url)).unwrap();
    let out = client.classify(&PromptConfig::default(), &captions(1)).await;
    assert!(matches!(out[0], Err(LlmError::Rejected { status: 400, .. })), "{:?}", out[0]);
    assert_eq!(script.lock().unwrap().requests.len(), 1);
}

#[tokio::test]
async fn the_circuit_opens_while_the_server_is_down_and_closes_when_it_answers() {
    // nothing listens on this port
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let cfg = LlmConfig { retries: 0, breaker_failures: 2, breaker_open_ms: 300, ..config(&url) };
    let client = LlmClient::new(cfg).unwrap();
    for _ in 0..2 {
        let out = client.classify(&PromptConfig::default(), &captions(1)).await;
        assert!(matches!(out[0], Err(LlmError::Unreachable { .. })), "{:?}", out[0]);
    }
    assert!(client.circuit_open());
    let t = Instant::now();
    let out = client.classify(&PromptConfig::default(), &captions(1)).await;
    assert!(matches!(out[0], Err(LlmError::CircuitOpen(2))), "{:?}", out[0]);
    assert!(t.elapsed() < Duration::from_millis(100), "an open circuit must fail fast");
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(!client.circuit_open());
}

#[tokio::test]
async fn chat_api_reads_the_message_content() {
    let script = Arc::new(Mutex::new(Script::default()));
    script.lock().unwrap().replies.push_back(Reply(
        200,
        json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "{\"helpful\": true}"}}]})
            .to_string(),
        0,
    ));
    let url = serve(script.clone()).await;
    let client =
        LlmClient::new(LlmConfig { api: Api::Chat, constrain: Constrain::JsonSchema, ..config(&url) }).unwrap();
    let out = client.classify(&PromptConfig::default(), &captions(1)).await;
    assert_eq!(out[0].as_ref().unwrap().label, Label::Helpful);
    let req = &script.lock().unwrap().requests[0];
    assert!(req["messages"][0]["content"].as_str().unwrap().contains("message 0"));
    assert_eq!(req["response_format"]["json_schema"]["schema"]["required"][0], "helpful");
}

/// A server with three slots that refuses more (429) and slows as it fills: the client's
/// concurrency limit comes down to about its capacity, every prompt is answered exactly once,
/// and few requests are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_limit_settles_at_the_servers_capacity() {
    let script =
        Arc::new(Mutex::new(Script { auto: true, auto_delay_ms: 10, capacity: Some(3), ..Default::default() }));
    let url = serve(script.clone()).await;
    let client = LlmClient::new(LlmConfig { concurrency: 16, retries: 20, ..config(&url) }).unwrap();
    let out = client.classify(&PromptConfig::default(), &captions(150)).await;
    assert!(out.iter().all(|r| r.is_ok()), "{:?}", out.iter().find(|r| r.is_err()));
    let s = script.lock().unwrap();
    assert_eq!(s.answered.len(), 150);
    assert!(s.answered.values().all(|&n| n == 1), "a prompt was answered twice");
    assert!(client.concurrency_limit() <= 5, "limit {} for a server of 3 slots", client.concurrency_limit());
    assert!(s.overloaded < 60, "{} refusals for 150 prompts: the limit did not come down", s.overloaded);
}

/// After a few quick answers the timeout follows them: a prompt the server sits on is given
/// up after seconds, not after `timeout_ms`, and asked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_follows_the_servers_latency() {
    let script = Arc::new(Mutex::new(Script { auto: true, ..Default::default() }));
    let url = serve(script.clone()).await;
    let client = LlmClient::new(LlmConfig { timeout_ms: 60_000, concurrency: 1, ..config(&url) }).unwrap();
    let warm = client.classify(&PromptConfig::default(), &captions(10)).await;
    assert!(warm.iter().all(|r| r.is_ok()));
    script.lock().unwrap().replies.push_back(Reply(200, completions(&[(0, r#"{"helpful": true}"#)]), 20_000));
    let start = Instant::now();
    let out = client.classify(&PromptConfig::default(), &["a brass key".to_string()]).await;
    assert_eq!(out[0].as_ref().unwrap().label, Label::Helpful, "answered on the retry");
    assert!(start.elapsed() < Duration::from_secs(15), "waited {:?} on a stuck request", start.elapsed());
}
