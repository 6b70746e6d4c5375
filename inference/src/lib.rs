//! Acting: a policy choosing actions for batches of envs, wherever it runs. The actor's local
//! inference and the learner's central service (`oni.v1.Inference`, SEED-style: actors
//! stream observations, the service batches them across actors into one forward pass on the
//! learner's device, keeps the recurrent state and assembles the rollouts) share the forward
//! pass and sampling (`act`), the rollout layout (`rollout`) and the compact wire form of a
//! step (`wire`).

pub mod act;
mod batcher;
pub mod config;
pub mod group;
pub mod metric_names;
pub mod rollout;
pub mod service;
pub mod wire;

pub use batcher::{PublishedWeights, RolloutSink, WeightsBoard};
pub use config::InferenceConfig;
pub use service::{InferenceService, InferenceSlot};
