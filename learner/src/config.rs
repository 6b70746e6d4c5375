use serde::{Deserialize, Serialize};

/// `[learner]`: the gRPC service that receives rollouts, and the V-trace + PPO update.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LearnerConfig {
    /// gRPC listen address.
    pub listen: String,
    /// `cpu`; `cuda` (NVIDIA GPUs) or `wgpu` (any GPU with a Vulkan, Metal or DX12 driver), each
    /// needing oni built with the feature of that name.
    pub device: oni_policy::Device,
    /// Rollouts per gradient update (ONI: 4096 samples = 128 × 32).
    pub batch_rollouts: usize,
    /// Steps per rollout; rollouts of another length are rejected.
    pub rollout_len: usize,
    /// Adam's step size.
    pub learning_rate: f64,
    /// Adam's ε.
    pub adam_epsilon: f32,
    /// Discount γ.
    pub gamma: f32,
    /// PPO's clip ε of the probability ratio.
    pub ppo_clip: f32,
    /// V-trace truncation level ρ̄ (importance weights of the targets).
    pub vtrace_rho_bar: f32,
    /// V-trace truncation level c̄ (the traces).
    pub vtrace_c_bar: f32,
    /// Weight of the value loss.
    pub value_coef: f32,
    /// Weight of the entropy bonus.
    pub entropy_coef: f32,
    /// Gradients are scaled down to this global norm.
    pub max_grad_norm: f32,
    /// Advantages normalised to mean 0, deviation 1 over each batch.
    pub normalize_advantages: bool,
    /// Passes over each batch.
    pub epochs: usize,
    /// Rollouts older than this many policy versions are dropped at consumption.
    pub max_policy_lag: u64,
    /// Bounded queue of received rollouts; actors are asked to pause when it is 3/4 full.
    pub queue_capacity: usize,
    /// Rollout streams (one per actor) open at once, over all actors.
    pub max_rollout_streams: usize,
    /// Rollout streams one peer address may hold open.
    pub max_rollout_streams_per_peer: usize,
    /// Seconds between checkpoints (one is also written at a clean stop).
    pub checkpoint_interval_secs: u64,
    /// Checkpoints kept; older ones are removed.
    pub keep_checkpoints: usize,
    /// Seed of the network's initial weights.
    pub seed: u64,
    /// Relabel mode (ONI's behaviour): recompute every step's intrinsic reward at training
    /// time with the newest reward model, pulled from the annotator at `actor.annotator`,
    /// instead of using the values the actors computed.
    pub relabel: bool,
    /// Also writes the run's scalars (every number of a `metrics.jsonl` row, at its env step)
    /// as TensorBoard event files in `<run_dir>/tensorboard`.
    pub tensorboard: bool,
}

impl Default for LearnerConfig {
    fn default() -> Self {
        LearnerConfig {
            listen: "127.0.0.1:50051".into(),
            device: oni_policy::Device::Cpu,
            batch_rollouts: 32,
            rollout_len: 32,
            learning_rate: 1e-4,
            adam_epsilon: 1e-6,
            gamma: 0.99,
            ppo_clip: 0.1,
            vtrace_rho_bar: 1.0,
            vtrace_c_bar: 1.0,
            value_coef: 0.5,
            entropy_coef: 0.003,
            max_grad_norm: 4.0,
            normalize_advantages: true,
            epochs: 1,
            max_policy_lag: 20,
            queue_capacity: 128,
            max_rollout_streams: 1024,
            max_rollout_streams_per_peer: 256,
            checkpoint_interval_secs: 60,
            keep_checkpoints: 3,
            seed: 1,
            relabel: false,
            tensorboard: false,
        }
    }
}
