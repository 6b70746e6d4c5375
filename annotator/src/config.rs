use crate::intake::KeyRule;
use serde::{Deserialize, Serialize};

/// `[annotator]`: the service that asks the LLM about captions and distils the reward model.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AnnotatorConfig {
    /// Whether `oni run` starts an annotator in-process and sends it the actors' captions.
    pub enabled: bool,
    /// gRPC listen address.
    pub listen: String,
    /// Captions waiting for the LLM; when full the oldest are dropped (counted).
    pub backlog_capacity: usize,
    /// Captions a worker takes from the backlog at once (ONI: the 100 newest); their
    /// prompts go to the server as fast as the LLM client's concurrency limit lets them.
    pub batch: usize,
    /// Pause after a failed batch before trying again.
    pub retry_pause_ms: u64,
    /// Most captions in one SubmitCaptions call.
    pub max_captions_per_call: usize,
    /// At shutdown, how long to keep labelling the captions already received.
    pub drain_secs: u64,
    /// Ranking questions per new caption, each pairing it with a random earlier caption
    /// (0: no ranking questions; the ranking reward model needs them).
    pub pairs_per_caption: usize,
    /// Pairs waiting for the LLM; when full the oldest are dropped (counted).
    pub pair_backlog_capacity: usize,
    /// Distinct captions remembered as partners for new pairs.
    pub pair_pool: usize,
    /// What a caption's question ignores (`numbers`, `letters`, `pets`): captions that differ
    /// only there are asked about once, and each gets the answer, stored under its exact text
    /// with the caption that was asked (`asked_as`). `[]`: every distinct caption is asked.
    pub caption_key: Vec<crate::intake::KeyRule>,
    /// Judge a caption of several messages (a step's messages, one after another) message by
    /// message, and call it helpful when any message is, so that a setback beside progress
    /// ("k - a brass key. The newt bites!") does not hide it. Off by default: with
    /// Qwen2.5-Coder-1.5B it found every keyroom progress caption but, on NetHack, where a
    /// step prints many messages, called nearly every caption helpful (docs/results/judges.md).
    pub split_messages: bool,
}

impl Default for AnnotatorConfig {
    fn default() -> Self {
        AnnotatorConfig {
            enabled: false,
            listen: "127.0.0.1:50052".into(),
            backlog_capacity: 100_000,
            batch: 8,
            retry_pause_ms: 1000,
            max_captions_per_call: 4096,
            drain_secs: 60,
            pairs_per_caption: 0,
            pair_backlog_capacity: 100_000,
            pair_pool: 50_000,
            caption_key: vec![KeyRule::Numbers, KeyRule::Letters, KeyRule::Pets],
            split_messages: false,
        }
    }
}
