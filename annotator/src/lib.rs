//! The annotator's core: prompts, an OpenAI-compatible LLM client that turns answers into
//! labels (with retries, a circuit breaker and constrained decoding where the server
//! supports it), and the label bank that keeps every answer with its provenance.

pub mod bank;
pub mod distill;
pub mod intake;
pub mod label;
pub mod limiter;
pub mod llm;
pub mod prompts;
pub mod redis_bank;
pub mod service;

pub use bank::{BankError, FileBank, LabelBank, LabelKey, PairKey};
pub use label::{parse_label, parse_preference, Label, LabelRecord, PairRecord, Preference};
pub use llm::{LlmClient, LlmConfig, LlmError};
pub use prompts::PromptConfig;
pub use redis_bank::RedisBank;
