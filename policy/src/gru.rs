//! A GRU cell whose input projection is applied to a whole rollout at once, leaving only
//! the hidden projection inside the time loop.
//!
//! r = σ(W_ir x + W_hr h), z = σ(W_iz x + W_hz h), n = tanh(W_in x + r ⊙ (W_hn h)),
//! h' = (1 − z) ⊙ n + z ⊙ h   (Cho et al., 2014; PyTorch's gate layout).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{sigmoid, tanh};

#[derive(Module, Debug)]
pub struct GruCell<B: Backend> {
    input: Linear<B>,
    hidden: Linear<B>,
    size: usize,
}

impl<B: Backend> GruCell<B> {
    pub fn new(input: usize, size: usize, device: &B::Device) -> Self {
        GruCell {
            input: LinearConfig::new(input, 3 * size).init(device),
            hidden: LinearConfig::new(size, 3 * size).init(device),
            size,
        }
    }

    /// W_i x for any batch of inputs: [N, input] → [N, 3H].
    pub fn project_input(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.input.forward(x)
    }

    /// One step from a projected input `xi` [B, 3H] and state `h` [B, H].
    pub fn step(&self, xi: Tensor<B, 2>, h: Tensor<B, 2>) -> Tensor<B, 2> {
        let hh = self.hidden.forward(h.clone());
        let [b, _] = xi.dims();
        let s = self.size;
        let xr = xi.clone().slice([0..b, 0..s]);
        let xz = xi.clone().slice([0..b, s..2 * s]);
        let xn = xi.slice([0..b, 2 * s..3 * s]);
        let hr = hh.clone().slice([0..b, 0..s]);
        let hz = hh.clone().slice([0..b, s..2 * s]);
        let hn = hh.slice([0..b, 2 * s..3 * s]);
        let r = sigmoid(xr + hr);
        let z = sigmoid(xz + hz);
        let n = tanh(xn + r * hn);
        n.clone() + z * (h - n)
    }
}
