//! The policy network (glyph, stats and message encoders → GRU core → actor and critic
//! heads), action sampling, and a compact, checked weight format for shipping weights from
//! the learner to the actors.

pub mod config;
pub mod gru;
pub mod network;
pub mod obs;
pub mod patches;
pub mod sampling;
pub mod weights;

pub use config::PolicyConfig;
pub use network::{Policy, PolicyOutput};
pub use obs::ObsBatch;
pub use weights::{fingerprint, WeightsError};

/// The CPU inference backend.
pub type CpuBackend = burn::backend::NdArray<f32>;
/// The CPU training backend.
pub type CpuAutodiff = burn::backend::Autodiff<CpuBackend>;
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda<f32, i32>;
#[cfg(feature = "cuda")]
pub type CudaAutodiff = burn::backend::Autodiff<CudaBackend>;
