use oni_proto::TlsConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LearnerConfig {
    /// gRPC listen address.
    pub listen: String,
    /// `cpu`, or `cuda` (needs the `cuda` build feature).
    pub device: String,
    /// Rollouts per gradient update (ONI: 4096 samples = 128 × 32).
    pub batch_rollouts: usize,
    /// Steps per rollout; rollouts of another length are rejected.
    pub rollout_len: usize,
    pub learning_rate: f64,
    pub adam_epsilon: f32,
    pub gamma: f32,
    pub ppo_clip: f32,
    /// V-trace truncation levels ρ̄ and c̄.
    pub vtrace_rho_bar: f32,
    pub vtrace_c_bar: f32,
    pub value_coef: f32,
    pub entropy_coef: f32,
    pub max_grad_norm: f32,
    pub normalize_advantages: bool,
    /// Passes over each batch.
    pub epochs: usize,
    /// Rollouts older than this many policy versions are dropped at consumption.
    pub max_policy_lag: u64,
    /// Bounded queue of received rollouts; actors are asked to pause when it is 3/4 full.
    pub queue_capacity: usize,
    pub checkpoint_interval_secs: u64,
    pub keep_checkpoints: usize,
    pub seed: u64,
    pub tls: TlsConfig,
    /// Annotator address (`host:port`) to pull reward models from; when set, the learner
    /// recomputes every step's intrinsic reward with the newest model at training time
    /// (ONI's behaviour) instead of using the actors' values. Empty: off.
    pub relabel_from: String,
}

impl Default for LearnerConfig {
    fn default() -> Self {
        LearnerConfig {
            listen: "127.0.0.1:50051".into(),
            device: "cpu".into(),
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
            checkpoint_interval_secs: 60,
            keep_checkpoints: 3,
            seed: 1,
            tls: TlsConfig::default(),
            relabel_from: String::new(),
        }
    }
}
