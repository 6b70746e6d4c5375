//! The policy networks (an encoder → GRU core → actor and critic heads; the small
//! glyph-crop network and ONI's NetHack network), the fused operations they add to burn
//! backends, action sampling, and a compact, checked weight format for shipping weights from
//! the learner to the actors.

// burn's `slice` takes one range per dimension, also when there is one dimension.
#![allow(clippy::single_range_in_vec_init)]

pub mod backend;
pub mod config;
mod flex;
pub mod font;
pub mod gru;
mod init;
pub mod memory;
pub mod network;
pub mod obs;
pub mod patches;
pub mod probe;
pub mod sampling;
pub mod screen;
pub mod weights;

pub use backend::{PolicyBackend, TrainingBackend};
pub use config::{Device, Network, PolicyConfig, PolicyConfigError};
pub use flex::{cpu_level, simd_level};
pub use network::{Policy, PolicyOutput};
pub use obs::ObsBatch;
pub use probe::{probe, DeviceError};
pub use weights::{fingerprint, WeightsError};

/// The CPU inference backend: burn's Flex (gemm-based matrix products and convolutions,
/// SIMD, rayon), about twice burn-ndarray's speed on the learner's update.
pub type CpuBackend = burn::backend::Flex;
/// The CPU training backend.
pub type CpuAutodiff = burn::backend::Autodiff<CpuBackend>;
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda<f32, i32>;
#[cfg(feature = "cuda")]
pub type CudaAutodiff = burn::backend::Autodiff<CudaBackend>;
/// The GPU backend the tests can run without a GPU (see the `wgpu` feature).
#[cfg(feature = "wgpu")]
pub type WgpuBackend = burn::backend::Wgpu<f32, i32>;
#[cfg(feature = "wgpu")]
pub type WgpuAutodiff = burn::backend::Autodiff<WgpuBackend>;
