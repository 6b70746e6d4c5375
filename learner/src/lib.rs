//! The learner: takes rollouts from actors over gRPC, trains the policy with APPO
//! (PPO-clip on V-trace targets), publishes versioned weights and checkpoints atomically.

// burn's `slice` takes one range per dimension, also when there is one dimension.
#![allow(clippy::single_range_in_vec_init)]

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod fits;
pub mod loss;
pub mod relabel;
pub mod service;
pub mod stats;
pub mod trainer;
pub mod validate;
pub mod vtrace;

pub use config::LearnerConfig;
pub use service::{spawn_learner, LearnerHandle, LearnerSetup};
pub use stats::{LearnerStats, StatsSnapshot};
