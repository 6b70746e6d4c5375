//! What a learner is started with, and how starting it fails.

use crate::batch::RewardMix;
use crate::config::LearnerConfig;
use oni_env::ObsSpec;
use oni_inference::InferenceConfig;
use oni_policy::PolicyConfig;
use oni_proto::transport::TransportError;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum LearnerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("training thread failed to start: {0}")]
    Start(String),
    #[error(transparent)]
    TooBig(#[from] crate::fits::TooBig),
}

pub struct LearnerSetup {
    pub cfg: LearnerConfig,
    pub policy: PolicyConfig,
    /// The observation layout; `None` for attached environments, whose layout the first
    /// actor to ask for weights declares (see `GetPolicyRequest.obs_spec`).
    pub spec: Option<ObsSpec>,
    pub mix: RewardMix,
    pub run_dir: PathBuf,
    /// Written into every checkpoint.
    pub resolved_config: String,
    /// The gRPC server's token and TLS.
    pub transport: oni_proto::TransportConfig,
    /// Stop after consuming this many env steps.
    pub max_env_steps: Option<u64>,
    /// Relabel mode: the reward models pulled from the annotator.
    pub relabel: Option<Arc<oni_reward_model::pull::RewardSlot>>,
    /// The central inference service (for actors with `actor.inference = "remote"`).
    pub inference: InferenceConfig,
}
