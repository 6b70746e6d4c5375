//! A scripted OpenAI-compatible server on 127.0.0.1 for deterministic client tests.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One scripted reply: status, body, and a delay before answering.
#[derive(Clone)]
pub struct Reply(pub u16, pub String, pub u64);

#[derive(Default)]
pub struct Script {
    pub replies: VecDeque<Reply>,
    pub requests: Vec<Value>,
    /// With no scripted reply left, answer by rule: a message mentioning a key shows
    /// progress (classification), and ranking prompts prefer such a message (else a tie).
    pub auto: bool,
    /// Rule answers take this long per request in flight (a server that slows under load).
    pub auto_delay_ms: u64,
    /// Requests served at once; more get 429 at once (a server with `capacity` slots).
    pub capacity: Option<usize>,
    pub in_flight: usize,
    pub max_in_flight: usize,
    pub overloaded: usize,
    /// Prompts answered with 200, by prompt text.
    pub answered: std::collections::HashMap<String, usize>,
    /// Keep neither `requests` nor `answered` (a flood that measures the annotator's memory).
    pub forget: bool,
}

/// The rule `auto` answers with, on prompts made from the default templates.
pub fn rule_answer(prompt: &str) -> String {
    let key = |m: &str| m.contains("key");
    match oni_annotator::PromptConfig::default().messages_in(prompt).as_deref() {
        Some([a, b]) => match (key(a), key(b)) {
            (true, false) => r#"{"better": "first"}"#.into(),
            (false, true) => r#"{"better": "second"}"#.into(),
            _ => r#"{"better": "tie"}"#.into(),
        },
        Some([m]) => format!(r#"{{"helpful": {}}}"#, key(m)),
        _ => "?".into(),
    }
}

pub async fn serve(script: Arc<Mutex<Script>>) -> String {
    serve_on(script, 0).await
}

pub async fn serve_on(script: Arc<Mutex<Script>>, port: u16) -> String {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let script = script.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 65536];
                // (end of the headers, body length), once the headers are in: a large body is
                // not searched again on every read
                let mut head: Option<(usize, usize)> = None;
                let body = loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if head.is_none() {
                        if let Some(h) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let len = String::from_utf8_lossy(&buf[..h])
                                .lines()
                                .find_map(|l| {
                                    l.to_lowercase()
                                        .strip_prefix("content-length:")
                                        .map(|v| v.trim().parse::<usize>().unwrap())
                                })
                                .unwrap_or(0);
                            head = Some((h, len));
                        }
                    }
                    if let Some((h, len)) = head {
                        if buf.len() >= h + 4 + len {
                            break buf[h + 4..h + 4 + len].to_vec();
                        }
                    }
                };
                // only the completion endpoints are scripted: anything else (the client's
                // questions about the server's slots) finds nothing, as on a vLLM server
                if !buf.starts_with(b"POST ") {
                    let resp = "HTTP/1.1 404 X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                    let _ = sock.write_all(resp.as_bytes()).await;
                    return;
                }
                let reply = {
                    let mut s = script.lock().unwrap();
                    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let prompts: Vec<String> = match &req["prompt"] {
                        Value::Array(a) => a.iter().map(|p| p.as_str().unwrap_or("").to_string()).collect(),
                        p => vec![p.as_str().unwrap_or("").to_string()],
                    };
                    if !s.forget {
                        s.requests.push(req);
                    }
                    if s.capacity.is_some_and(|c| s.in_flight >= c) {
                        s.overloaded += 1;
                        Reply(429, "busy".into(), 0)
                    } else {
                        s.in_flight += 1;
                        s.max_in_flight = s.max_in_flight.max(s.in_flight);
                        let r = match s.replies.pop_front() {
                            Some(r) => r,
                            None if s.auto => {
                                let answers: Vec<String> = prompts.iter().map(|p| rule_answer(p)).collect();
                                let pairs: Vec<(usize, &str)> =
                                    answers.iter().enumerate().map(|(i, a)| (i, a.as_str())).collect();
                                Reply(200, completions(&pairs), s.auto_delay_ms * s.in_flight as u64)
                            }
                            None => Reply(500, "script exhausted".into(), 0),
                        };
                        if r.0 == 200 && !s.forget {
                            for p in &prompts {
                                *s.answered.entry(p.clone()).or_default() += 1;
                            }
                        }
                        r
                    }
                };
                tokio::time::sleep(Duration::from_millis(reply.2)).await;
                if reply.0 != 429 {
                    script.lock().unwrap().in_flight -= 1;
                }
                let resp = format!(
                    "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                    reply.0,
                    reply.1.len(),
                    reply.1
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

pub fn completions(texts: &[(usize, &str)]) -> String {
    json!({"choices": texts.iter().map(|(i, t)| json!({"index": i, "text": t})).collect::<Vec<_>>()}).to_string()
}
