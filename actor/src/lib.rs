//! The actor: steps a batch of environments (double-buffered against inference), runs the
//! policy, and streams fixed-length rollouts to the learner; pulls new weights when the
//! learner's version changes; reconnects with backoff when the learner is gone; pulls the
//! reward model from the annotator and adds each step's intrinsic reward to the rollouts.

pub mod captions;
pub mod config;
pub mod hub;
pub mod intrinsic;
pub mod link;
pub mod rollout;
pub mod stepping;

pub use config::ActorConfig;
pub use stepping::{run_actor, ActorSetup};
