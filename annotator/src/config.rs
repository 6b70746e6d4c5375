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
        }
    }
}
