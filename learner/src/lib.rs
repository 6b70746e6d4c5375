//! The learner: takes rollouts from actors over gRPC, trains the policy with APPO
//! (PPO-clip on V-trace targets), publishes versioned weights and checkpoints atomically.

// burn's `slice` takes one range per dimension, also when there is one dimension.
#![allow(clippy::single_range_in_vec_init)]

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod fits;
mod handle;
pub mod loss;
pub mod metric_names;
mod record;
pub mod relabel;
mod runs;
mod service;
mod setup;
mod shared;
pub mod stats;
pub mod trainer;
mod training;
pub mod validate;
pub mod vtrace;

pub use config::LearnerConfig;
pub use handle::{spawn_learner, LearnerHandle};
pub use loss::{Losses, Term};
pub use setup::{LearnerError, LearnerSetup};
pub use stats::{LearnerStats, StatsSnapshot};
