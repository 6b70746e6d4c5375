//! What an actor is started with, what it reports while it runs, and how it fails.

use crate::config::ActorConfig;
use crate::intrinsic::IntrinsicConfig;
use oni_env::{EnvConfig, ObsSpec};
use oni_policy::{weights, PolicyConfig};
use oni_proto::TransportConfig;
use std::sync::atomic::AtomicU64;

#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    #[error("environment: {0}")]
    Env(#[from] oni_env::EnvError),
    #[error("weights from the learner do not fit this actor's network: {0}")]
    Weights(#[from] weights::WeightsError),
    #[error("{0}")]
    Learner(String),
    #[error("{0}")]
    Refused(#[from] oni_proto::retry::Refused),
    #[error("annotator address or token: {0}")]
    Annotator(#[from] oni_proto::transport::TransportError),
    /// An evaluation cannot play the checkpoint it was given (`oni eval`).
    #[error("{0}")]
    Eval(String),
    /// One of the actor's tasks failed (named, with why).
    #[error(transparent)]
    Task(#[from] oni_proto::tasks::TaskFailed),
    #[error("cannot serve attached environments on {addr}: {reason}")]
    Hub { addr: String, reason: String },
}

#[derive(Clone)]
pub struct ActorSetup {
    pub cfg: ActorConfig,
    pub env: EnvConfig,
    pub policy: PolicyConfig,
    /// The observation layout of the built-in env; `None` for attached environments, whose
    /// first client declares it.
    pub spec: Option<ObsSpec>,
    pub rollout_len: usize,
    /// Token, TLS and client deadlines for every peer, and the hub's server side.
    pub transport: TransportConfig,
    /// Index of this actor among those of one process (seeds, default id).
    pub index: usize,
    /// Intrinsic reward from the annotator's reward model (needs `cfg.annotator`).
    pub intrinsic: Option<IntrinsicConfig>,
    /// Episode recordings; `None`: off.
    pub record: Option<crate::record::RecordPlan>,
}

impl ActorSetup {
    /// The recorder of this actor's stepping loop, where recordings are on.
    pub(crate) fn recorder(&self) -> Option<crate::record::Recorder> {
        let who = self.cfg.actor_id.clone().unwrap_or_else(|| format!("actor{}", self.index));
        self.record.clone().map(|plan| crate::record::Recorder::new(plan, &who, &self.env.name))
    }
}

/// Counters the caller may read while the actor runs.
#[derive(Default)]
pub struct ActorCounters {
    pub env_steps: AtomicU64,
    pub rollouts: AtomicU64,
}
