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
    /// Act streams (env groups) open at once, over all actors.
    pub max_groups: usize,
    /// Envs served at once, over all actors (each holds its observation buffers).
    pub max_envs: usize,
    /// Act streams one peer address may hold open.
    pub max_groups_per_peer: usize,
    /// Envs one peer address may have served at once.
    pub max_envs_per_peer: usize,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        InferenceConfig {
            max_batch: 1024,
            max_wait_us: 0,
            queue: 256,
            seed: None,
            max_groups: 1024,
            max_envs: 65_536,
            max_groups_per_peer: 256,
            max_envs_per_peer: 8192,
        }
    }
}

impl InferenceConfig {
    pub fn check(&self) -> Result<(), String> {
        if self.max_batch == 0 || self.queue == 0 {
            return Err("inference.max_batch and inference.queue must be at least 1".into());
        }
        if self.max_groups == 0 || self.max_envs == 0 || self.max_groups_per_peer == 0 || self.max_envs_per_peer == 0 {
            return Err(
                "inference.max_groups, max_envs, max_groups_per_peer and max_envs_per_peer must be at least 1".into()
            );
        }
        if self.max_wait_us > 1_000_000 {
            return Err("inference.max_wait_us must be at most 1 000 000 (one second)".into());
        }
        Ok(())
    }
}
