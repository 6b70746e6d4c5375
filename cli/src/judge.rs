//! `oni judge`: a deterministic labelling server that speaks the same OpenAI-compatible API
//! as an LLM server (`/v1/completions`, batched or not, and `/v1/chat/completions`) and
//! answers by a rule instead of a model: a message shows progress when one of its words
//! starts with a keyword (default: key, door, stair). Ranking prompts compare the two
//! messages by the same rule (both or neither: a tie). It reads the messages out of the
//! prompts with the configured templates (`prompts.*`), so it answers exactly what the
//! annotator asks. For tests, CI and benchmarks that must not depend on a model's mood.

use crate::Common;
use anyhow::{Context, Result};
use oni_annotator::PromptConfig;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(clap::Args)]
pub struct JudgeArgs {
    #[command(flatten)]
    common: Common,
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:8091")]
    listen: String,
    /// Comma-separated word prefixes that mark progress.
    #[arg(long, default_value = DEFAULT_KEYWORDS)]
    keywords: String,
    /// Milliseconds each completion request waits before it is answered, to stand in for a
    /// slow LLM (fault drills, annotator tuning).
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
}

pub struct Rule {
    prompts: PromptConfig,
    keywords: Vec<String>,
    latency: std::time::Duration,
}

impl Rule {
    pub fn new(prompts: PromptConfig, keywords: &str) -> Self {
        let keywords = keywords.split(',').map(|k| k.trim().to_lowercase()).filter(|k| !k.is_empty()).collect();
        Rule { prompts, keywords, latency: std::time::Duration::ZERO }
    }

    /// Answers each completion request only after `latency`.
    pub fn with_latency(self, latency: std::time::Duration) -> Self {
        Rule { latency, ..self }
    }

    pub fn progress(&self, message: &str) -> bool {
        message.split(|c: char| !c.is_alphanumeric()).any(|w| {
            let w = w.to_lowercase();
            self.keywords.iter().any(|k| w.starts_with(k.as_str()))
        })
    }

    /// The answer to one prompt, in the JSON shape our prompts ask for.
    pub fn answer(&self, prompt: &str) -> String {
        match self.prompts.messages_in(prompt).as_deref() {
            Some([first, second]) => {
                let better = match (self.progress(first), self.progress(second)) {
                    (true, false) => "first",
                    (false, true) => "second",
                    _ => "tie",
                };
                json!({"better": better}).to_string()
            }
            Some([m]) => json!({"helpful": self.progress(m)}).to_string(),
            _ => "I cannot tell which message this prompt is about.".into(),
        }
    }

    fn respond(&self, path: &str, req: &Value) -> (u16, Value) {
        let model = req["model"].as_str().unwrap_or("rule-judge");
        match path {
            "/v1/completions" => {
                let prompts: Vec<&str> = match &req["prompt"] {
                    Value::String(s) => vec![s.as_str()],
                    Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                    _ => {
                        return (400, json!({"error": {"message": "`prompt` must be a string or an array of strings"}}))
                    }
                };
                let choices: Vec<Value> = prompts
                    .iter()
                    .enumerate()
                    .map(|(i, p)| json!({"index": i, "text": self.answer(p), "finish_reason": "stop"}))
                    .collect();
                (
                    200,
                    json!({"object": "text_completion", "model": model, "choices": choices, "usage": usage(&prompts)}),
                )
            }
            "/v1/chat/completions" => {
                let Some(content) =
                    req["messages"].as_array().and_then(|m| m.last()).and_then(|m| m["content"].as_str())
                else {
                    return (400, json!({"error": {"message": "`messages` must end with a message with `content`"}}));
                };
                let choice = json!({"index": 0, "message": {"role": "assistant", "content": self.answer(content)}, "finish_reason": "stop"});
                (
                    200,
                    json!({"object": "chat.completion", "model": model, "choices": [choice], "usage": usage(&[content])}),
                )
            }
            _ => (404, json!({"error": {"message": format!("no route {path}")}})),
        }
    }
}

/// Whitespace-separated words stand in for tokens.
fn usage(prompts: &[&str]) -> Value {
    let words: usize = prompts.iter().map(|p| p.split_whitespace().count()).sum();
    json!({"prompt_tokens": words, "completion_tokens": 6 * prompts.len(), "total_tokens": words + 6 * prompts.len()})
}

pub const DEFAULT_KEYWORDS: &str = "key,door,stair";

pub async fn judge(a: JudgeArgs) -> Result<()> {
    let cfg = crate::config::load(a.common.config.as_deref(), &a.common.set)?;
    let rule = Rule::new(cfg.prompts.clone(), &a.keywords).with_latency(std::time::Duration::from_millis(a.latency_ms));
    let listener = TcpListener::bind(&a.listen).await.with_context(|| format!("--listen {}", a.listen))?;
    eprintln!("rule judge serving on http://{} (keywords: {})", listener.local_addr()?, rule.keywords.join(", "));
    tokio::spawn(serve(listener, rule));
    crate::roles::shutdown_signal().await;
    Ok(())
}

/// Serves the rule on `listener` until the process ends.
pub async fn serve(listener: TcpListener, rule: Rule) {
    let rule = Arc::new(rule);
    while let Ok((sock, _)) = listener.accept().await {
        tokio::spawn(serve_connection(sock, rule.clone()));
    }
}

/// HTTP/1.1 with keep-alive: one request after another on a connection.
async fn serve_connection(mut sock: TcpStream, rule: Arc<Rule>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let (head_end, len) = loop {
            if let Some(h) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..h]).to_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:").and_then(|v| v.trim().parse().ok()))
                    .unwrap_or(0usize);
                if buf.len() >= h + 4 + len {
                    break (h, len);
                }
            }
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if buf.len() > 64 << 20 {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let body = buf[head_end + 4..head_end + 4 + len].to_vec();
        buf.drain(..head_end + 4 + len);
        let mut parts = head.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (status, reply) = match (method, path) {
            ("GET", "/health") => (200, json!({"status": "ok"})),
            ("GET", "/v1/models") => {
                (200, json!({"object": "list", "data": [{"id": "rule-judge", "object": "model"}]}))
            }
            ("POST", p) => match serde_json::from_slice::<Value>(&body) {
                Ok(req) => {
                    tokio::time::sleep(rule.latency).await;
                    rule.respond(p, &req)
                }
                Err(e) => (400, json!({"error": {"message": format!("body is not JSON: {e}")}})),
            },
            _ => (404, json!({"error": {"message": "not found"}})),
        };
        let text = reply.to_string();
        let resp = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        );
        if sock.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_answers_both_questions_from_the_prompts() {
        let p = PromptConfig::default();
        let r = Rule::new(p.clone(), "key,door,stair");
        assert!(r.progress("You see here a brass key.") && r.progress("There is a staircase down here."));
        assert!(!r.progress("You see here 12 gold pieces.") && !r.progress("You hit the monkey."));
        assert_eq!(r.answer(&p.classification_prompt("You unlock the door.")), r#"{"helpful":true}"#);
        assert_eq!(r.answer(&p.classification_prompt("You hit the newt.")), r#"{"helpful":false}"#);
        assert_eq!(r.answer(&p.ranking_prompt("You hit the newt.", "k - a brass key.")), r#"{"better":"second"}"#);
        assert_eq!(r.answer(&p.ranking_prompt("You hit the newt.", "The newt bites!")), r#"{"better":"tie"}"#);
        assert_eq!(
            oni_annotator::parse_preference(&r.answer(&p.ranking_prompt("This door is locked.", "x"))),
            oni_annotator::Preference::First
        );
        let (status, v) = r.respond(
            "/v1/completions",
            &json!({"prompt": [p.classification_prompt("a key"), p.classification_prompt("a rat")]}),
        );
        assert_eq!(status, 200);
        assert_eq!(v["choices"][1]["text"], r#"{"helpful":false}"#);
        assert_eq!(r.respond("/v1/completions", &json!({"prompt": 3})).0, 400);
    }
}
