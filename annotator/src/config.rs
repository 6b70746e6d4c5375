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
    /// Captions waiting for the LLM; when full the oldest are dropped (counted). Captions
    /// waiting for the answer to a question already asked (the same question key, or one of
    /// their messages) are held apart, as many at most.
    pub backlog_capacity: usize,
    /// Captions a worker takes from the backlog at once; their answers are stored when the
    /// last of them is in. With the chat API every caption is its own request, so 1 (the
    /// default) stores each answer the moment it arrives: on a slow CPU judge a batch of 8
    /// held finished answers back for seconds, the cold start's costliest wait. With
    /// `llm.api = completions` a worker takes at least `llm.batch` (one request's prompts).
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
    /// Which waiting question is asked next: `frequent` (the one whose captions the actors
    /// met most often; they report how often) or `newest` (ONI's order). On NetHack, newest
    /// first left the failed-action messages met on most steps ("You can't go up here.")
    /// unasked for the whole run while thousands of rarer ones came after them, so the
    /// network judged them alone (docs/results/oni-online.md).
    pub ask_order: crate::intake::AskOrder,
    /// A labelled caption set (the `data/judging/*.tsv` format) to score every published
    /// reward model against (`oni_reward_model_accuracy{against="gold"}`, the run's
    /// metrics.jsonl): how right the reward is while the bank fills. Never trained on.
    pub gold: Option<std::path::PathBuf>,
}

impl Default for AnnotatorConfig {
    fn default() -> Self {
        AnnotatorConfig {
            enabled: false,
            listen: "127.0.0.1:50052".into(),
            backlog_capacity: 100_000,
            batch: 1,
            retry_pause_ms: 1000,
            max_captions_per_call: 4096,
            drain_secs: 60,
            pairs_per_caption: 0,
            pair_backlog_capacity: 100_000,
            pair_pool: 50_000,
            caption_key: vec![KeyRule::Numbers, KeyRule::Letters, KeyRule::Pets],
            split_messages: false,
            ask_order: crate::intake::AskOrder::Frequent,
            gold: None,
        }
    }
}
