//! Intrinsic reward models distilled from an LLM's judgements of captions (the
//! environment's text messages), in three kinds behind one interface:
//!
//! - **hashing**: the exact table caption → LLM label; unlabelled captions earn 0.
//! - **classification**: a byte-level CNN trained with cross-entropy on the binary labels;
//!   `r_int = 1[p(helpful) > τ]`.
//! - **ranking**: the same CNN with one scalar output, trained with the Bradley–Terry loss on
//!   the LLM's pair preferences (ties as ½); its output is standardised with the mean and
//!   standard deviation over the known captions and thresholded: `r_int = 1[(r − μ)/σ > τ]`.
//!   (ONI's public code means to standardise but uses the raw output by a typo; we do what
//!   the paper describes.)
//!
//! The annotator trains them (`train`) and publishes versioned snapshots (`snapshot`); the
//! actors load the snapshots and reward each step (`model`, `decay`).

pub mod cached;
pub mod caption;
pub mod decay;
pub mod fifo;
pub mod kind;
pub mod metric_names;
pub mod model;
pub mod net;
pub mod pull;
pub mod snapshot;
pub mod train;

pub use cached::CachedRewards;
pub use caption::normalise;
pub use decay::{Decay, EpisodeCounts, RunCounts};
pub use kind::Kind;
pub use model::RewardModel;
pub use snapshot::{Snapshot, SnapshotError};
pub use train::{DistillConfig, Distiller, Example, Pair};

/// Inference runs on the CPU (actors); training uses autodiff over the same backend.
pub type Backend = oni_policy::CpuBackend;
pub type TrainBackend = burn::backend::Autodiff<Backend>;
