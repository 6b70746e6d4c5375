use serde::{Deserialize, Serialize};

/// `[inference]`: the central inference service the learner hosts (used by actors with
/// `actor.inference = "remote"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct InferenceConfig {
    /// Most envs in one forward pass.
    pub max_batch: usize,
    /// After the first request of a batch, how long to wait for more (µs). 0: take what
    /// arrived while the previous pass ran, without waiting.
    pub max_wait_us: u64,
    /// Requests waiting for the batcher, over all actors. Beyond it actors wait (counted in
    /// `oni_inference_backpressure_total`), so memory stays bounded.
    pub queue: usize,
    /// The action sampler's seed (tests and reproductions); unset: from the OS.
    pub seed: Option<u64>,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        InferenceConfig { max_batch: 1024, max_wait_us: 0, queue: 256, seed: None }
    }
}

impl InferenceConfig {
    pub fn check(&self) -> Result<(), String> {
        if self.max_batch == 0 || self.queue == 0 {
            return Err("inference.max_batch and inference.queue must be at least 1".into());
        }
        if self.max_wait_us > 1_000_000 {
            return Err("inference.max_wait_us must be at most 1 000 000 (one second)".into());
        }
        Ok(())
    }
}
