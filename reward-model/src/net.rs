//! The byte-level CNN shared by the classification (2 outputs) and ranking (1 output)
//! models: byte embedding → 1-D convolution over 4-byte patches (kernel 4, stride 4: a
//! reshape and a linear) → 1-D convolution (kernel 4, stride 2, as gather + linear, see
//! `oni_policy::patches`) → max over positions → MLP. The first convolution does not
//! overlap because it is the costly one on CPU; the second's overlap restores shift
//! tolerance.

use crate::caption::{bytes, MAX_CAPTION_BYTES};
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::TensorData;
use oni_policy::patches::Patches;
use serde::{Deserialize, Serialize};

const KERNEL: usize = 4;
const STRIDE: usize = 2;

/// Network sizes; stored in every snapshot so the receiver builds the same network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NetConfig {
    /// Byte embedding width. Each size is at most `MAX_DIM`: actors refuse snapshots of
    /// larger networks.
    pub embed: usize,
    /// Channels of the convolutions over the message bytes.
    pub channels: usize,
    /// Width of the hidden layer before the output.
    pub hidden: usize,
}

/// Largest size of any layer of the reward model's network.
pub const MAX_DIM: usize = 4096;

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig { embed: 16, channels: 64, hidden: 64 }
    }
}

#[derive(Module, Debug)]
pub struct ByteCnn<B: Backend> {
    embed: Embedding<B>,
    conv1: Linear<B>,
    conv2: Linear<B>,
    hidden: Linear<B>,
    out: Linear<B>,
}

/// Positions after the first convolution.
const P1: usize = MAX_CAPTION_BYTES / KERNEL;

impl<B: oni_policy::PolicyBackend> ByteCnn<B> {
    pub fn new(cfg: &NetConfig, outputs: usize, device: &B::Device) -> Self {
        ByteCnn {
            embed: EmbeddingConfig::new(256, cfg.embed).init(device),
            conv1: LinearConfig::new(KERNEL * cfg.embed, cfg.channels).init(device),
            conv2: LinearConfig::new(KERNEL * cfg.channels, cfg.channels).init(device),
            hidden: LinearConfig::new(cfg.channels, cfg.hidden).init(device),
            out: LinearConfig::new(cfg.hidden, outputs).init(device),
        }
    }

    /// [N, 256] bytes → [N, outputs].
    pub fn forward(&self, x: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let [n, _] = x.dims();
        let x = self.embed.forward(x); // [N, 256, E]
        let e = x.dims()[2];
        let x = relu(self.conv1.forward(x.reshape([n, P1, KERNEL * e])));
        let x = relu(self.conv2.forward(Patches::strided1d(P1, KERNEL, STRIDE).gather(x)));
        let x = x.max_dim(1).squeeze_dim::<2>(1); // [N, C]
        self.out.forward(relu(self.hidden.forward(x)))
    }
}

/// A batch of captions as the network's input.
pub fn encode<B: Backend>(captions: &[&str], device: &B::Device) -> Tensor<B, 2, Int> {
    let mut data = Vec::with_capacity(captions.len() * MAX_CAPTION_BYTES);
    for c in captions {
        data.extend(bytes(c).iter().map(|&b| b as i32));
    }
    Tensor::from_data(TensorData::new(data, [captions.len(), MAX_CAPTION_BYTES]), device)
}
