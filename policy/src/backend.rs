//! The burn backends the policy runs on, and the fused operations it adds to them.
//!
//! Any burn backend works through the default methods (plain tensor operations). Under
//! autodiff the fused operations record one graph node with a hand-written backward pass
//! instead of one node per elementary operation: the GRU's whole time loop (see `gru`) and
//! the ELU activations, which run over the largest tensors of the image encoder.

use crate::gru;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::TensorPrimitive;

pub trait PolicyBackend: Backend {
    /// The GRU time loop: projected inputs `xi` [T·B, 3H], state `h0` [B, H], `keep` [T, B]
    /// (0 zeroes the state before that step), hidden weights [H, 3H] and bias [3H]. Returns
    /// the state after each step, [T·B, H].
    fn gru_unroll(
        xi: Tensor<Self, 2>,
        h0: Tensor<Self, 2>,
        keep: Tensor<Self, 2>,
        w_hh: Tensor<Self, 2>,
        b_hh: Tensor<Self, 1>,
    ) -> Tensor<Self, 2> {
        gru::forward(xi, h0, keep, w_hh, b_hh, false).0
    }

    /// ELU with α = 1: x for x > 0, eˣ − 1 otherwise.
    fn elu<const D: usize>(x: Tensor<Self, D>) -> Tensor<Self, D> {
        elu_plain(x)
    }
}

fn elu_plain<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let negative = x.clone().lower_equal_elem(0.0);
    let curve = x.clone().exp().sub_scalar(1.0);
    x.mask_where(negative, curve)
}

impl PolicyBackend for burn::backend::Flex {}
#[cfg(feature = "cuda")]
impl PolicyBackend for burn::backend::Cuda<f32, i32> {}
#[cfg(feature = "wgpu")]
impl PolicyBackend for burn::backend::Wgpu<f32, i32> {}

fn inner<B: Backend, const D: usize>(t: Tensor<Autodiff<B, impl CheckpointStrategy>, D>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t.into_primitive().tensor().primitive))
}

fn plain<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

fn raw<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

#[derive(Debug)]
struct GruBackward;

impl<B: Backend> Backward<B, 4> for GruBackward {
    type State = (gru::Saved<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [xi, h0, w, bias] = ops.parents;
        let (saved, w_hh) = ops.state;
        let dhs = plain::<B, 2>(grads.consume::<B>(&ops.node));
        let (dxi, dh0, dw, db) = gru::backward(saved, dhs, plain(w_hh));
        for (node, grad) in [(xi, raw(dxi)), (h0, raw(dh0)), (w, raw(dw)), (bias, raw(db))] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

#[derive(Debug)]
struct EluBackward<const D: usize>;

impl<B: Backend, const D: usize> Backward<B, 1> for EluBackward<D> {
    /// The output y: dy/dx = 1 where y > 0, else y + 1.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x] = ops.parents;
        let grad = plain::<B, D>(grads.consume::<B>(&ops.node));
        if let Some(node) = x {
            let y = plain::<B, D>(ops.state);
            let slope = y.clone().add_scalar(1.0).mask_fill(y.greater_elem(0.0), 1.0);
            grads.register::<B>(node.id, raw(grad * slope));
        }
    }
}

impl<B: PolicyBackend, C: CheckpointStrategy> PolicyBackend for Autodiff<B, C> {
    fn gru_unroll(
        xi: Tensor<Self, 2>,
        h0: Tensor<Self, 2>,
        keep: Tensor<Self, 2>,
        w_hh: Tensor<Self, 2>,
        b_hh: Tensor<Self, 1>,
    ) -> Tensor<Self, 2> {
        let nodes = [&xi, &h0, &w_hh].map(|t| t.clone().into_primitive().tensor().node.clone());
        let bias_node = b_hh.clone().into_primitive().tensor().node.clone();
        let (xi, h0, keep, w, bias) = (inner(xi), inner(h0), inner(keep), inner(w_hh), inner(b_hh));
        let out = match GruBackward
            .prepare::<C>([nodes[0].clone(), nodes[1].clone(), nodes[2].clone(), bias_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (hs, saved) = gru::forward(xi, h0, keep, w.clone(), bias, true);
                prep.finish((saved.expect("saved for backward"), raw(w)), raw(hs))
            }
            OpsKind::UnTracked(prep) => prep.finish(raw(gru::forward(xi, h0, keep, w, bias, false).0)),
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    fn elu<const D: usize>(x: Tensor<Self, D>) -> Tensor<Self, D> {
        let node = x.clone().into_primitive().tensor().node.clone();
        let y = B::elu(inner(x));
        let out = match EluBackward::<D>.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(raw(y.clone()), raw(y)),
            OpsKind::UnTracked(prep) => prep.finish(raw(y)),
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }
}

/// A backend the learner trains on: autodiff over a `PolicyBackend`, itself one.
pub trait TrainingBackend: burn::tensor::backend::AutodiffBackend<InnerBackend: PolicyBackend> + PolicyBackend {}

impl<T> TrainingBackend for T where
    T: burn::tensor::backend::AutodiffBackend<InnerBackend: PolicyBackend> + PolicyBackend
{
}
