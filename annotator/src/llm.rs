//! A client for any OpenAI-compatible server (vLLM, llama.cpp's llama-server, Ollama):
//! `/v1/completions` with batched prompts or `/v1/chat/completions`. Timeouts, 429 and 5xx
//! are retried with jittered exponential backoff; consecutive failures open a circuit
//! breaker so a dead server is not hammered. Answers are constrained to `{"helpful": bool}`
//! with a GBNF grammar or a JSON schema where the server supports it, and parsed robustly.

use crate::label::{parse_label, parse_preference, truncate, Label, Preference, RAW_ANSWER_MAX};
use crate::limiter::{Limiter, Outcome};
use crate::prompts::PromptConfig;
use oni_proto::throttle::Throttled;
use oni_proto::Backoff;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Which OpenAI-compatible endpoint the prompts go to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// `/v1/completions`: the raw prompt, several per request (`llm.batch`). For base
    /// (non-instruct) models; an instruct model asked this way skips its chat template and
    /// judges far worse (docs/results/judges.md).
    Completions,
    /// `/v1/chat/completions`: the server wraps each prompt in the model's chat template.
    #[default]
    Chat,
}

/// How the answer is held to `{"helpful": bool}` (or the ranking's form).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Constrain {
    /// A GBNF grammar (llama.cpp).
    #[default]
    Grammar,
    /// A JSON schema (vLLM, llama.cpp).
    JsonSchema,
    /// Free text, parsed as it comes.
    None,
}

/// `[llm]`: the OpenAI-compatible server the annotator asks (llama-server, vLLM, a hosted API).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// The server's base URL (`/v1/...` is appended).
    pub base_url: String,
    /// The `model` field of each request (llama-server takes any name).
    pub model: String,
    /// Name of the environment variable holding the API key (sent as a bearer token).
    pub api_key_env: String,
    /// `chat` (the default: what instruct models are trained on) or `completions` (raw
    /// prompts, batched; for base models).
    pub api: Api,
    /// Prompts per `/v1/completions` request. 1 (the default): every prompt is a request of
    /// its own, so an answer is kept however late the others are. Above 1 saves request
    /// overhead on a fast server, but a request that misses its timeout loses all its answers.
    pub batch: usize,
    /// Most requests in flight at once.
    pub concurrency: usize,
    /// Fewest requests in flight the adaptive limit goes down to.
    pub min_concurrency: usize,
    /// Learn the concurrency (AIMD on answers and timeouts/overloads, between
    /// `min_concurrency` and `concurrency`) and the timeout (4 × the p95 latency of recent
    /// answers, at most `timeout_ms`) from the server; false keeps both fixed.
    pub adaptive: bool,
    /// The longest a request may take.
    pub timeout_ms: u64,
    /// Sampling temperature. 0 (greedy) by default: a caption always gets the same answer, and
    /// small judges agree with the gold labels far more (docs/results/judges.md).
    pub temperature: f32,
    /// Most tokens in an answer.
    pub max_tokens: u32,
    /// Retries after the first try, on timeouts, connection errors, 429 and 5xx.
    pub retries: u32,
    /// First pause before a retry; it doubles per retry...
    pub backoff_base_ms: u64,
    /// ...up to this.
    pub backoff_max_ms: u64,
    /// `grammar` (GBNF, llama.cpp), `json_schema` (vLLM, llama.cpp) or `none`.
    pub constrain: Constrain,
    /// Consecutive failed requests that open the circuit (no requests while it is open)...
    pub breaker_failures: u32,
    /// ...and how long it stays open.
    pub breaker_open_ms: u64,
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            base_url: "http://127.0.0.1:8090".into(),
            model: "local".into(),
            api_key_env: "ONI_LLM_API_KEY".into(),
            api: Api::Chat,
            batch: 1,
            concurrency: 4,
            min_concurrency: 1,
            adaptive: true,
            timeout_ms: 30_000,
            temperature: 0.0,
            max_tokens: 16,
            retries: 4,
            backoff_base_ms: 200,
            backoff_max_ms: 5_000,
            constrain: Constrain::Grammar,
            breaker_failures: 5,
            breaker_open_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum LlmError {
    #[error("LLM server timed out after {0} tries")]
    Timeout(u32),
    #[error("LLM server unreachable after {tries} tries: {reason}")]
    Unreachable { tries: u32, reason: String },
    #[error("LLM server answered HTTP {status} after {tries} tries: {body}")]
    Server { status: u16, tries: u32, body: String },
    #[error("LLM server refused the request (HTTP {status}): {body}")]
    Rejected { status: u16, body: String },
    #[error("LLM server sent a malformed response after {tries} tries: {reason}")]
    Malformed { tries: u32, reason: String },
    #[error("circuit open: the LLM server failed {0} times in a row; not calling it for now")]
    CircuitOpen(u32),
    #[error("bad LLM setting `{0}`: {1}")]
    Config(&'static str, String),
}

impl LlmError {
    /// True when asking again cannot help (the server refused the request, or the settings
    /// are wrong): the question is recorded as unknown instead of retried.
    pub fn is_final(&self) -> bool {
        matches!(self, LlmError::Rejected { .. } | LlmError::Config(..))
    }

    /// A short name for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            LlmError::Timeout(_) => "timeout",
            LlmError::Unreachable { .. } => "unreachable",
            LlmError::Server { .. } => "server_error",
            LlmError::Rejected { .. } => "rejected",
            LlmError::Malformed { .. } => "malformed",
            LlmError::CircuitOpen(_) => "circuit_open",
            LlmError::Config(..) => "config",
        }
    }
}

/// One answer to one prompt: what was read from it, the text itself and the request's latency.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer<T = Label> {
    pub label: T,
    pub raw: String,
    pub latency: Duration,
    /// Prompt + completion tokens of this answer, where the server reports usage.
    pub tokens: Option<u32>,
}

/// The two questions the annotator asks; each has its own answer shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question {
    Classification,
    Ranking,
}

impl Question {
    fn grammar(self) -> &'static str {
        match self {
            Question::Classification => r#"root ::= "{\"helpful\": " ("true" | "false") "}""#,
            Question::Ranking => r#"root ::= "{\"better\": \"" ("first" | "second" | "tie") "\"}""#,
        }
    }

    fn schema(self) -> Value {
        match self {
            Question::Classification => {
                json!({"type": "object", "properties": {"helpful": {"type": "boolean"}}, "required": ["helpful"]})
            }
            Question::Ranking => json!({"type": "object",
                "properties": {"better": {"type": "string", "enum": ["first", "second", "tie"]}}, "required": ["better"]}),
        }
    }
}

#[derive(Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

/// Least time between two warnings about timeouts.
const WARN_EVERY: Duration = Duration::from_secs(30);

pub struct LlmClient {
    cfg: LlmConfig,
    http: reqwest::Client,
    key: Option<String>,
    limiter: Limiter,
    breaker: Mutex<Breaker>,
    /// Warnings about timed-out requests, at most one per `WARN_EVERY`.
    timeouts: Mutex<Throttled>,
    /// Prompts sent to the server, retries included (for benchmarks and tests).
    prompts_sent: std::sync::atomic::AtomicU64,
    /// Tokens the server reported spending: prompt, completion.
    tokens: [std::sync::atomic::AtomicU64; 2],
}

enum Attempt {
    Done(Value),
    Retry(LlmError),
    Fail(LlmError),
}

impl LlmClient {
    pub fn new(cfg: LlmConfig) -> Result<Self, LlmError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .connect_timeout(Duration::from_millis(cfg.timeout_ms.min(5_000)))
            .build()
            .map_err(|e| LlmError::Config("llm", e.to_string()))?;
        let key = std::env::var(&cfg.api_key_env).ok().filter(|k| !k.is_empty());
        Ok(LlmClient {
            limiter: if cfg.adaptive {
                Limiter::new(cfg.min_concurrency, cfg.concurrency, Duration::from_millis(cfg.timeout_ms))
            } else {
                Limiter::fixed(cfg.concurrency, Duration::from_millis(cfg.timeout_ms))
            },
            http,
            key,
            breaker: Default::default(),
            timeouts: Mutex::new(Throttled::new(WARN_EVERY)),
            prompts_sent: Default::default(),
            tokens: Default::default(),
            cfg,
        })
    }

    pub fn config(&self) -> &LlmConfig {
        &self.cfg
    }

    pub fn prompts_sent(&self) -> u64 {
        self.prompts_sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Prompt and completion tokens the server reported spending so far (its `usage`
    /// fields; zero for servers that leave them out).
    pub fn tokens(&self) -> (u64, u64) {
        let [p, c] = &self.tokens;
        (p.load(std::sync::atomic::Ordering::Relaxed), c.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Requests the server gets at once now (the adaptive limit).
    pub fn concurrency_limit(&self) -> usize {
        self.limiter.limit()
    }

    /// The server's parallel slots, where it says: llama-server's `/props` (`total_slots`),
    /// else the length of its `/slots` list. `None` for servers that say neither (vLLM, hosted
    /// APIs).
    pub async fn server_slots(&self) -> Option<usize> {
        let base = self.cfg.base_url.trim_end_matches('/');
        let get = |path: &str| {
            let mut req = self.http.get(format!("{base}{path}")).timeout(Duration::from_secs(5));
            if let Some(k) = &self.key {
                req = req.bearer_auth(k);
            }
            req.send()
        };
        let json = |r: reqwest::Response| async move {
            if r.status().is_success() {
                r.json::<Value>().await.ok()
            } else {
                None
            }
        };
        if let Ok(r) = get("/props").await {
            if let Some(n) = json(r).await.and_then(|v| v["total_slots"].as_u64()) {
                return Some(n as usize).filter(|&n| n > 0);
            }
        }
        let r = get("/slots").await.ok()?;
        json(r).await?.as_array().map(Vec::len).filter(|&n| n > 0)
    }

    /// Asks the server for its parallel slots and caps the adaptive limit there; returns them.
    pub async fn fit_to_server(&self) -> Option<usize> {
        let slots = self.server_slots().await?;
        metrics::gauge!(crate::metric_names::LLM_SERVER_SLOTS).set(slots as f64);
        self.limiter.set_ceiling(slots);
        Some(slots)
    }

    /// True while the circuit is open (the server failed repeatedly and is being left alone).
    pub fn circuit_open(&self) -> bool {
        self.breaker.lock().unwrap().open_until.is_some_and(|t| Instant::now() < t)
    }

    fn constrain(&self, body: &mut Value, q: Question) {
        match self.cfg.constrain {
            Constrain::Grammar => body["grammar"] = json!(q.grammar()),
            // chat servers take OpenAI's response_format; on /v1/completions llama.cpp reads
            // `json_schema` and vLLM `guided_json`
            Constrain::JsonSchema if self.cfg.api == Api::Chat => {
                body["response_format"] =
                    json!({"type": "json_schema", "json_schema": {"name": "answer", "schema": q.schema()}})
            }
            Constrain::JsonSchema => {
                body["json_schema"] = q.schema();
                body["guided_json"] = q.schema();
            }
            Constrain::None => {}
        }
    }

    /// Labels each caption. One result per caption, in order; a request that failed after
    /// its retries fails every caption it carried.
    pub async fn classify(&self, prompts: &PromptConfig, captions: &[String]) -> Vec<Result<Answer, LlmError>> {
        let texts: Vec<String> = captions.iter().map(|c| prompts.classification_prompt(c)).collect();
        self.ask(&texts, Question::Classification, parse_label, |l| l == Label::Unknown).await
    }

    /// Asks which message of each pair shows more progress. One result per pair, in order.
    pub async fn rank(
        &self,
        prompts: &PromptConfig,
        pairs: &[(String, String)],
    ) -> Vec<Result<Answer<Preference>, LlmError>> {
        let texts: Vec<String> = pairs.iter().map(|(a, b)| prompts.ranking_prompt(a, b)).collect();
        self.ask(&texts, Question::Ranking, parse_preference, |p| p == Preference::Unknown).await
    }

    async fn ask<T: Copy>(
        &self,
        texts: &[String],
        q: Question,
        parse: fn(&str) -> T,
        unreadable: fn(T) -> bool,
    ) -> Vec<Result<Answer<T>, LlmError>> {
        let chunk = if self.cfg.api == Api::Completions { self.cfg.batch.max(1) } else { 1 };
        let futures = texts.chunks(chunk).map(|group| self.answer_group(group, q));
        let raw = futures::future::join_all(futures).await.into_iter().flatten();
        raw.map(|r| {
            r.map(|(text, latency, tokens)| {
                let label = parse(&text);
                if unreadable(label) {
                    metrics::counter!(crate::metric_names::LLM_UNPARSED).increment(1);
                }
                Answer { label, raw: truncate(&text, RAW_ANSWER_MAX), latency, tokens }
            })
        })
        .collect()
    }

    async fn answer_group(
        &self,
        prompts: &[String],
        q: Question,
    ) -> Vec<Result<(String, Duration, Option<u32>), LlmError>> {
        let (path, mut body) = if self.cfg.api == Api::Completions {
            let prompt = if prompts.len() == 1 { json!(prompts[0]) } else { json!(prompts) };
            ("/v1/completions", json!({"model": self.cfg.model, "prompt": prompt}))
        } else {
            (
                "/v1/chat/completions",
                json!({"model": self.cfg.model, "messages": [{"role": "user", "content": prompts[0]}]}),
            )
        };
        body["temperature"] = json!(self.cfg.temperature);
        body["max_tokens"] = json!(self.cfg.max_tokens);
        self.constrain(&mut body, q);
        let start = Instant::now();
        let n = prompts.len() as u64;
        let result = self.post(path, &body, n).await;
        let latency = start.elapsed();
        metrics::histogram!(crate::metric_names::LLM_REQUEST_SECONDS).record(latency.as_secs_f64());
        let tokens = result.as_ref().ok().and_then(|v| self.count_tokens(v)).map(|t| t / prompts.len().max(1) as u32);
        let texts = result.and_then(|v| choices(&v, prompts.len(), self.cfg.api == Api::Chat));
        match texts {
            Ok(texts) => {
                metrics::counter!(crate::metric_names::LLM_REQUESTS, "outcome" => "ok").increment(1);
                texts.into_iter().map(|raw| Ok((raw, latency, tokens))).collect()
            }
            Err(e) => {
                metrics::counter!(crate::metric_names::LLM_REQUESTS, "outcome" => "error").increment(1);
                metrics::counter!(crate::metric_names::LLM_ERRORS, "kind" => e.kind()).increment(1);
                vec![Err(e); prompts.len()]
            }
        }
    }

    async fn post(&self, path: &str, body: &Value, prompts: u64) -> Result<Value, LlmError> {
        {
            let b = self.breaker.lock().unwrap();
            if b.open_until.is_some_and(|t| Instant::now() < t) {
                return Err(LlmError::CircuitOpen(b.failures));
            }
        }
        let url = format!("{}{path}", self.cfg.base_url.trim_end_matches('/'));
        let mut backoff = Backoff::new(
            Duration::from_millis(self.cfg.backoff_base_ms),
            Duration::from_millis(self.cfg.backoff_max_ms),
        );
        let mut tries = 0;
        loop {
            tries += 1;
            let slot = self.limiter.acquire().await;
            self.prompts_sent.fetch_add(prompts, std::sync::atomic::Ordering::Relaxed);
            let start = Instant::now();
            let timeout = self.limiter.timeout();
            let attempt = self.try_once(&url, body, tries, timeout).await;
            let outcome = match &attempt {
                Attempt::Done(_) => Outcome::Answered(start.elapsed()),
                Attempt::Retry(LlmError::Timeout(_)) => {
                    // the server may have been working on them: that work is lost
                    metrics::counter!(crate::metric_names::LLM_WASTED_PROMPTS).increment(prompts);
                    self.timeouts.lock().unwrap().warn(
                        "an LLM request timed out",
                        &format_args!(
                            "gave up after {:.1} s, will ask again; {} requests at once now",
                            timeout.as_secs_f64(),
                            self.limiter.limit()
                        ),
                    );
                    Outcome::Overloaded
                }
                Attempt::Retry(LlmError::Server { .. }) => Outcome::Overloaded,
                _ => Outcome::Failed,
            };
            self.limiter.release(slot, outcome);
            match attempt {
                Attempt::Done(v) => {
                    self.record(true);
                    return Ok(v);
                }
                Attempt::Fail(e) => {
                    self.record(false);
                    return Err(e);
                }
                Attempt::Retry(e) => {
                    metrics::counter!(crate::metric_names::LLM_RETRIES, "kind" => e.kind()).increment(1);
                    if tries > self.cfg.retries {
                        self.record(false);
                        return Err(e);
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    async fn try_once(&self, url: &str, body: &Value, tries: u32, timeout: Duration) -> Attempt {
        // Dropping the request on timeout closes its connection, which makes llama-server and
        // vLLM cancel the generation instead of finishing an answer nobody reads.
        let mut req = self.http.post(url).json(body).timeout(timeout);
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Attempt::Retry(LlmError::Timeout(tries)),
            Err(e) => return Attempt::Retry(LlmError::Unreachable { tries, reason: error_chain(&e) }),
        };
        let status = resp.status();
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) if e.is_timeout() => return Attempt::Retry(LlmError::Timeout(tries)),
            Err(e) => return Attempt::Retry(LlmError::Unreachable { tries, reason: error_chain(&e) }),
        };
        if status.as_u16() == 429 || status.is_server_error() {
            return Attempt::Retry(LlmError::Server { status: status.as_u16(), tries, body: truncate(&text, 200) });
        }
        if !status.is_success() {
            return Attempt::Fail(LlmError::Rejected { status: status.as_u16(), body: truncate(&text, 300) });
        }
        match serde_json::from_str::<Value>(&text) {
            Ok(v) => Attempt::Done(v),
            Err(e) => Attempt::Retry(LlmError::Malformed { tries, reason: format!("{e}: {}", truncate(&text, 100)) }),
        }
    }

    /// Counts the tokens the server reports spending (OpenAI's `usage` block; absent on some
    /// servers); returns their sum, if it said.
    fn count_tokens(&self, v: &Value) -> Option<u32> {
        let mut total = None;
        for (i, (field, kind)) in
            [("prompt_tokens", "prompt"), ("completion_tokens", "completion")].into_iter().enumerate()
        {
            if let Some(n) = v.pointer(&format!("/usage/{field}")).and_then(Value::as_u64) {
                metrics::counter!(crate::metric_names::LLM_TOKENS, "kind" => kind).increment(n);
                self.tokens[i].fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                total = Some(total.unwrap_or(0) + n as u32);
            }
        }
        total
    }

    fn record(&self, ok: bool) {
        let mut b = self.breaker.lock().unwrap();
        if ok {
            b.failures = 0;
            b.open_until = None;
        } else {
            b.failures += 1;
            if b.failures >= self.cfg.breaker_failures.max(1) {
                if b.open_until.is_none_or(|t| Instant::now() >= t) {
                    tracing::warn!(
                        "the LLM server at {} failed {} requests in a row: leaving it alone for {} ms",
                        self.cfg.base_url,
                        b.failures,
                        self.cfg.breaker_open_ms
                    );
                }
                b.open_until = Some(Instant::now() + Duration::from_millis(self.cfg.breaker_open_ms));
            }
        }
        metrics::gauge!(crate::metric_names::LLM_CIRCUIT_OPEN).set(if b.open_until.is_some() { 1.0 } else { 0.0 });
    }
}

/// The answer texts of a response, ordered by their `index`.
fn choices(v: &Value, n: usize, chat: bool) -> Result<Vec<String>, LlmError> {
    let bad = |reason: &str| LlmError::Malformed { tries: 1, reason: reason.into() };
    let list = v.get("choices").and_then(Value::as_array).ok_or_else(|| bad("no `choices`"))?;
    let mut out = vec![None; n];
    for (pos, c) in list.iter().enumerate() {
        let i = c.get("index").and_then(Value::as_u64).map_or(pos, |i| i as usize);
        let text = if chat { c.pointer("/message/content") } else { c.get("text") }
            .and_then(Value::as_str)
            .ok_or_else(|| bad("a choice has no text"))?;
        if i < n {
            out[i] = Some(text.to_string());
        }
    }
    out.into_iter().map(|t| t.ok_or_else(|| bad("fewer choices than prompts"))).collect()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    oni_proto::transport::error_chain(e)
}
