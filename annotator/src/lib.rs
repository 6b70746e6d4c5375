//! The annotator's core: prompts, an OpenAI-compatible LLM client that turns answers into
//! labels (with retries, a circuit breaker and constrained decoding where the server
//! supports it), and the label bank that keeps every answer with its provenance.

mod annotator;
pub mod bank;
pub mod config;
pub mod distill;
pub mod intake;
pub mod judging;
pub mod label;
mod ledger;
pub mod limiter;
pub mod llm;
pub mod metric_names;
mod pairs;
pub mod prompts;
pub mod redis_bank;
pub mod serve;
pub mod service;
mod waiting;
mod workers;

pub use annotator::{derivation_rule, usable_answer, Core};
pub use bank::{BankError, FileBank, LabelBank, LabelKey, PairKey};
pub use config::AnnotatorConfig;
pub use label::{parse_label, parse_preference, Label, LabelRecord, PairRecord, Preference};
pub use ledger::MapSizes;
pub use llm::{LlmClient, LlmConfig, LlmError};
pub use prompts::PromptConfig;
pub use redis_bank::RedisBank;
