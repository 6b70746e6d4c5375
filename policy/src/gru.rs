//! The GRU core. Its input projection is applied to a whole rollout at once by the caller;
//! the time loop (hidden projection, gates, episode-boundary masks) runs as one operation
//! with a hand-written backward pass (see `backend`), so training pays for one graph node
//! instead of a dozen per step, and the hidden weights' gradient is one matrix product over
//! all steps instead of one per step.
//!
//!   r = σ(W_ir x + b_ir + W_hr h + b_hr),   z = σ(W_iz x + b_iz + W_hz h + b_hz)
//!   n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)),   h' = (1 − z) ⊙ n + z ⊙ h
//! (Cho et al., 2014; PyTorch's gate layout r, z, n). Before step t the state is multiplied
//! by keep_t (0 where an episode starts).

use crate::backend::PolicyBackend;
use crate::init::{default_linear, orthogonal_linear};
use burn::module::Module;
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::{sigmoid, tanh};

#[derive(Module, Debug)]
pub struct GruCell<B: Backend> {
    input: Linear<B>,
    hidden: Linear<B>,
    size: usize,
}

impl<B: PolicyBackend> GruCell<B> {
    /// `orthogonal`: orthogonal weights and zero biases, as Sample Factory initialises its
    /// GRU; otherwise burn's default initialisation.
    pub fn new(input: usize, size: usize, orthogonal: bool, device: &B::Device) -> Self {
        let layer = |d_in| {
            if orthogonal {
                orthogonal_linear(d_in, 3 * size, 1.0, device)
            } else {
                default_linear(d_in, 3 * size, device)
            }
        };
        GruCell { input: layer(input), hidden: layer(size), size }
    }

    /// W_i x + b_i for any batch of inputs: [N, input] → [N, 3H].
    pub fn project_input(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        crate::backend::linear(&self.input, x)
    }

    /// One step from a projected input `xi` [B, 3H] and state `h` [B, H].
    pub fn step(&self, xi: Tensor<B, 2>, h: Tensor<B, 2>) -> Tensor<B, 2> {
        let [b, _] = h.dims();
        let keep = Tensor::ones([1, b], &h.device());
        self.unroll(xi, h, keep)
    }

    /// All steps: `xi` [T·B, 3H] time-major, `h0` [B, H], `keep` [T, B]. Returns the state
    /// after every step, [T·B, H].
    pub fn unroll(&self, xi: Tensor<B, 2>, h0: Tensor<B, 2>, keep: Tensor<B, 2>) -> Tensor<B, 2> {
        let bias = self.hidden.bias.as_ref().expect("GRU hidden bias").val();
        B::gru_unroll(xi, h0, keep, self.hidden.weight.val(), bias)
    }
}

/// What the backward pass needs of the forward, per step stacked time-major [T·B, H]:
/// the masked incoming state, the gates r, z, n and the hidden candidate W_hn h + b_hn.
#[derive(Debug, Clone)]
pub struct Saved<B: Backend> {
    pub h_in: Tensor<B, 2>,
    pub r: Tensor<B, 2>,
    pub z: Tensor<B, 2>,
    pub n: Tensor<B, 2>,
    pub hn: Tensor<B, 2>,
    pub keep: Tensor<B, 2>,
}

fn rows<B: Backend>(t: &Tensor<B, 2>, from: usize, to: usize) -> Tensor<B, 2> {
    let w = t.dims()[1];
    t.clone().slice([from..to, 0..w])
}

fn cols<B: Backend>(t: &Tensor<B, 2>, from: usize, to: usize) -> Tensor<B, 2> {
    let n = t.dims()[0];
    t.clone().slice([0..n, from..to])
}

/// The forward time loop on plain tensors; `save` keeps what `backward` needs.
pub fn forward<B: Backend>(
    xi: Tensor<B, 2>,
    h0: Tensor<B, 2>,
    keep: Tensor<B, 2>,
    w_hh: Tensor<B, 2>,
    b_hh: Tensor<B, 1>,
    save: bool,
) -> (Tensor<B, 2>, Option<Saved<B>>) {
    let [steps, b] = keep.dims();
    let s = h0.dims()[1];
    let b_hh = b_hh.unsqueeze::<2>();
    let mut h = h0;
    let (mut hs, mut h_in, mut rs, mut zs, mut ns, mut hns) = (vec![], vec![], vec![], vec![], vec![], vec![]);
    for t in 0..steps {
        h = h * rows(&keep, t, t + 1).reshape([b, 1]);
        let x = rows(&xi, t * b, (t + 1) * b);
        let hh = h.clone().matmul(w_hh.clone()) + b_hh.clone();
        let r = sigmoid(cols(&x, 0, s) + cols(&hh, 0, s));
        let z = sigmoid(cols(&x, s, 2 * s) + cols(&hh, s, 2 * s));
        let hn = cols(&hh, 2 * s, 3 * s);
        let n = tanh(cols(&x, 2 * s, 3 * s) + r.clone() * hn.clone());
        let next = n.clone() + z.clone() * (h.clone() - n.clone());
        if save {
            h_in.push(h);
            rs.push(r);
            zs.push(z);
            ns.push(n);
            hns.push(hn);
        }
        hs.push(next.clone());
        h = next;
    }
    let saved = save.then(|| Saved {
        h_in: Tensor::cat(h_in, 0),
        r: Tensor::cat(rs, 0),
        z: Tensor::cat(zs, 0),
        n: Tensor::cat(ns, 0),
        hn: Tensor::cat(hns, 0),
        keep,
    });
    (Tensor::cat(hs, 0), saved)
}

/// Gradients of the unroll from the gradient `dhs` [T·B, H] of its outputs: (d xi, d h0,
/// d W_hh, d b_hh). Backpropagation through time, one step at a time for the state, then the
/// hidden weights' gradient as one product over all steps.
pub fn backward<B: Backend>(
    saved: Saved<B>,
    dhs: Tensor<B, 2>,
    w_hh: Tensor<B, 2>,
) -> (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 1>) {
    let Saved { h_in, r, z, n, hn, keep } = saved;
    let [steps, b] = keep.dims();
    let s = h_in.dims()[1];
    let w_t = w_hh.transpose(); // [3H, H]
    let mut dh = Tensor::<B, 2>::zeros([b, s], &dhs.device());
    let mut dxi = Vec::with_capacity(steps);
    let mut dhh = Vec::with_capacity(steps);
    for t in (0..steps).rev() {
        let (lo, hi) = (t * b, (t + 1) * b);
        let (r, z, n, hn, h) =
            (rows(&r, lo, hi), rows(&z, lo, hi), rows(&n, lo, hi), rows(&hn, lo, hi), rows(&h_in, lo, hi));
        dh = dh + rows(&dhs, lo, hi);
        // h' = n + z (h − n)
        let dn = dh.clone() * z.clone().neg().add_scalar(1.0);
        let dz = dh.clone() * (h - n.clone());
        let direct = dh * z.clone();
        // n = tanh(a_n), a_n = x_n + r ⊙ hn
        let da_n = dn * (n.clone() * n).neg().add_scalar(1.0);
        let dr = da_n.clone() * hn;
        let dhn = da_n.clone() * r.clone();
        let da_r = dr * r.clone() * r.neg().add_scalar(1.0);
        let da_z = dz * z.clone() * z.neg().add_scalar(1.0);
        let dgates_h = Tensor::cat(vec![da_r.clone(), da_z.clone(), dhn], 1);
        dxi.push(Tensor::cat(vec![da_r, da_z, da_n], 1));
        let dh_in = direct + dgates_h.clone().matmul(w_t.clone());
        dhh.push(dgates_h);
        dh = dh_in * rows(&keep, t, t + 1).reshape([b, 1]);
    }
    dxi.reverse();
    dhh.reverse();
    let dhh = Tensor::cat(dhh, 0); // [T·B, 3H]
    let dw = h_in.transpose().matmul(dhh.clone());
    let db = dhh.sum_dim(0).squeeze_dim::<1>(0);
    (Tensor::cat(dxi, 0), dh, dw, db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CpuAutodiff, CpuBackend};
    use burn::tensor::{Distribution, TensorData};

    /// The fused unroll (forward and hand-written backward) equals the same recurrence
    /// written step by step with ordinary autodiff ops, in values and in every gradient.
    #[test]
    fn fused_unroll_matches_the_step_by_step_graph() {
        type B = CpuAutodiff;
        let dev = Default::default();
        let (steps, b, s) = (5, 3, 4);
        let normal =
            |shape: [usize; 2]| Tensor::<B, 2>::random(shape, Distribution::Normal(0.0, 1.0), &dev).require_grad();
        let (xi, h0, w) = (normal([steps * b, 3 * s]), normal([b, s]), normal([s, 3 * s]));
        let bias = Tensor::<B, 1>::random([3 * s], Distribution::Normal(0.0, 1.0), &dev).require_grad();
        let mut keep = vec![1.0f32; steps * b];
        keep[2 * b + 1] = 0.0; // env 1 starts an episode before step 2
        let keep = Tensor::<B, 2>::from_data(TensorData::new(keep, [steps, b]), &dev);
        let weights = Tensor::<B, 2>::random([steps * b, s], Distribution::Normal(0.0, 1.0), &dev);

        let fused = <B as PolicyBackend>::gru_unroll(xi.clone(), h0.clone(), keep.clone(), w.clone(), bias.clone());
        let g1 = (fused.clone() * weights.clone()).sum().backward();

        // reference: the plain forward on the autodiff backend, differentiated by burn
        let (plain, _) = forward(xi.clone(), h0.clone(), keep, w.clone(), bias.clone(), false);
        let g2 = (plain.clone() * weights).sum().backward();

        let close = |a: Tensor<CpuBackend, 2>, b: Tensor<CpuBackend, 2>, what: &str| {
            let d: f32 = (a - b).abs().max().into_scalar();
            assert!(d < 1e-4, "{what} differs by {d}");
        };
        close(fused.inner(), plain.inner(), "output");
        close(xi.grad(&g1).unwrap(), xi.grad(&g2).unwrap(), "d xi");
        close(h0.grad(&g1).unwrap(), h0.grad(&g2).unwrap(), "d h0");
        close(w.grad(&g1).unwrap(), w.grad(&g2).unwrap(), "d W_hh");
        close(bias.grad(&g1).unwrap().unsqueeze(), bias.grad(&g2).unwrap().unsqueeze(), "d b_hh");
    }
}
