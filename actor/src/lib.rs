//! The actor: steps a batch of environments (double-buffered against inference) and gets
//! their actions from an action source: locally (the policy in this process, weights pulled
//! from the learner, fixed-length rollouts streamed to it) or remotely (the learner's
//! central inference service, which assembles the rollouts itself). Reconnects with backoff
//! when the learner is gone; pulls the reward model from the annotator and adds each step's
//! intrinsic reward.

pub mod captions;
pub mod config;
pub mod eval;
pub mod hub;
pub mod intrinsic;
pub mod link;
pub mod metric_names;
pub mod record;
pub(crate) mod remote;
pub mod setup;
pub(crate) mod source;
pub mod stepping;

pub use config::{ActorConfig, Placement};
pub use setup::{ActorCounters, ActorError, ActorSetup};
pub use stepping::run_actor;
