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
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::TensorPrimitive;

pub trait PolicyBackend: Backend {
    /// Whether the backend has its own kernels for the linear layer, the row gather and the
    /// image encoder's first layer, so that training records one graph node for each. A
    /// backend without them (the GPU ones, whose kernel fusion already merges the
    /// element-wise runs) trains on burn's own operations for those.
    const FUSED_LAYERS: bool = false;

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
        Self::gru_forward(xi, h0, keep, w_hh, b_hh, false).0
    }

    /// `gru_unroll` on plain tensors; `save` keeps what `gru_backward` needs.
    fn gru_forward(
        xi: Tensor<Self, 2>,
        h0: Tensor<Self, 2>,
        keep: Tensor<Self, 2>,
        w_hh: Tensor<Self, 2>,
        b_hh: Tensor<Self, 1>,
        save: bool,
    ) -> (Tensor<Self, 2>, Option<gru::Saved<Self>>) {
        gru::forward(xi, h0, keep, w_hh, b_hh, save)
    }

    /// The unroll's gradients from those of its outputs: (d xi, d h0, d W_hh, d b_hh).
    #[allow(clippy::type_complexity)]
    fn gru_backward(
        saved: gru::Saved<Self>,
        dhs: Tensor<Self, 2>,
        w_hh: Tensor<Self, 2>,
    ) -> (Tensor<Self, 2>, Tensor<Self, 2>, Tensor<Self, 2>, Tensor<Self, 1>) {
        gru::backward(saved, dhs, w_hh)
    }

    /// ELU with α = 1: x for x > 0, eˣ − 1 otherwise.
    fn elu<const D: usize>(x: Tensor<Self, D>) -> Tensor<Self, D> {
        elu_plain(x)
    }

    /// The ELU's input gradient from its output `y` and output gradient `dy`: dy where
    /// y > 0, dy (y + 1) otherwise.
    fn elu_backward<const D: usize>(y: Tensor<Self, D>, dy: Tensor<Self, D>) -> Tensor<Self, D> {
        let slope = y.clone().add_scalar(1.0).mask_fill(y.greater_elem(0.0), 1.0);
        dy * slope
    }

    /// A linear layer on a batch of rows: x [m, k] · w [k, n] + b.
    fn linear_2d(x: Tensor<Self, 2>, w: Tensor<Self, 2>, b: Option<Tensor<Self, 1>>) -> Tensor<Self, 2> {
        linear_plain(x, w, b)
    }

    /// `linear`'s gradients from dy [m, n]: (dx, dw, db), each computed only where `want`
    /// says so.
    fn linear_2d_backward(
        x: Tensor<Self, 2>,
        w: Tensor<Self, 2>,
        dy: Tensor<Self, 2>,
        want: [bool; 3],
    ) -> LinearGrads<Self> {
        let [dx, dw, db] = want;
        LinearGrads {
            dx: dx.then(|| dy.clone().matmul(w.transpose())),
            dw: dw.then(|| x.transpose().matmul(dy.clone())),
            db: db.then(|| dy.sum_dim(0).squeeze_dim::<1>(0)),
        }
    }

    /// The image encoder's first layer from its table (see `screen`): row p of the result is
    /// ELU(bias + Σ_q table[lookups[q][p]]), [len, c].
    fn lookup_sum_elu(
        table: Tensor<Self, 2>,
        lookups: [Tensor<Self, 1, Int>; 4],
        bias: Tensor<Self, 1>,
    ) -> Tensor<Self, 2> {
        lookup_sum_elu_plain(table, lookups, bias)
    }

    /// `lookup_sum_elu`'s gradients (table, bias) from its output `y` and output gradient.
    fn lookup_sum_elu_backward(
        y: Tensor<Self, 2>,
        dy: Tensor<Self, 2>,
        lookups: [Tensor<Self, 1, Int>; 4],
        table_rows: usize,
    ) -> (Tensor<Self, 2>, Tensor<Self, 1>) {
        let g = Self::elu_backward(y, dy);
        let d_table =
            lookups.into_iter().map(|l| Self::select_rows_backward(g.clone(), l, table_rows)).reduce(|a, b| a + b);
        (d_table.expect("four lookups"), g.sum_dim(0).squeeze_dim::<1>(0))
    }

    /// Rows of `x` [rows, c] picked by `index`: [len, c].
    fn select_rows(x: Tensor<Self, 2>, index: Tensor<Self, 1, Int>) -> Tensor<Self, 2> {
        x.select(0, index)
    }

    /// `select_rows`'s gradient: dy [len, c] added into zeros [rows, c] at `index`.
    fn select_rows_backward(dy: Tensor<Self, 2>, index: Tensor<Self, 1, Int>, rows: usize) -> Tensor<Self, 2> {
        let c = dy.dims()[1];
        Tensor::zeros([rows, c], &dy.device()).select_assign(0, index, dy, burn::tensor::IndexingUpdateOp::Add)
    }
}

/// x · w + b in burn's own operations.
fn linear_plain<B: Backend>(x: Tensor<B, 2>, w: Tensor<B, 2>, b: Option<Tensor<B, 1>>) -> Tensor<B, 2> {
    let y = x.matmul(w);
    match b {
        Some(b) => y + b.unsqueeze(),
        None => y,
    }
}

/// ELU(bias + Σ_q table[lookups[q]]) through the backend's row gather and ELU.
fn lookup_sum_elu_plain<B: PolicyBackend>(
    table: Tensor<B, 2>,
    lookups: [Tensor<B, 1, Int>; 4],
    bias: Tensor<B, 1>,
) -> Tensor<B, 2> {
    let sum = lookups.into_iter().map(|l| B::select_rows(table.clone(), l)).reduce(|a, b| a + b);
    B::elu(sum.expect("four lookups") + bias.unsqueeze())
}

/// The gradients of a linear layer with respect to its input, weight and bias.
pub struct LinearGrads<B: Backend> {
    pub dx: Option<Tensor<B, 2>>,
    pub dw: Option<Tensor<B, 2>>,
    pub db: Option<Tensor<B, 1>>,
}

/// `layer` applied to the rows of `x` through the backend's fused linear.
pub fn linear<B: PolicyBackend>(layer: &burn::nn::Linear<B>, x: Tensor<B, 2>) -> Tensor<B, 2> {
    B::linear_2d(x, layer.weight.val(), layer.bias.as_ref().map(|b| b.val()))
}

fn elu_plain<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let negative = x.clone().lower_equal_elem(0.0);
    let curve = x.clone().exp().sub_scalar(1.0);
    x.mask_where(negative, curve)
}

/// burn's CPU backend, with the fused kernels of `flex`.
impl PolicyBackend for burn::backend::Flex {
    const FUSED_LAYERS: bool = true;

    fn gru_forward(
        xi: Tensor<Self, 2>,
        h0: Tensor<Self, 2>,
        keep: Tensor<Self, 2>,
        w_hh: Tensor<Self, 2>,
        b_hh: Tensor<Self, 1>,
        save: bool,
    ) -> (Tensor<Self, 2>, Option<gru::Saved<Self>>) {
        let (hs, saved) = crate::flex::gru_forward(raw(xi), raw(h0), raw(keep.clone()), raw(w_hh), raw(b_hh), save);
        let saved = saved.map(|[h_in, r, z, n, hn]| gru::Saved {
            h_in: plain(h_in),
            r: plain(r),
            z: plain(z),
            n: plain(n),
            hn: plain(hn),
            keep,
        });
        (plain(hs), saved)
    }

    fn gru_backward(
        saved: gru::Saved<Self>,
        dhs: Tensor<Self, 2>,
        w_hh: Tensor<Self, 2>,
    ) -> (Tensor<Self, 2>, Tensor<Self, 2>, Tensor<Self, 2>, Tensor<Self, 1>) {
        let gru::Saved { h_in, r, z, n, hn, keep } = saved;
        let [dxi, dh0, dw, db] =
            crate::flex::gru_backward([h_in, r, z, n, hn].map(raw), raw(keep), raw(dhs), raw(w_hh));
        (plain(dxi), plain(dh0), plain(dw), plain(db))
    }

    fn elu<const D: usize>(x: Tensor<Self, D>) -> Tensor<Self, D> {
        plain(crate::flex::elu(raw(x)))
    }

    fn elu_backward<const D: usize>(y: Tensor<Self, D>, dy: Tensor<Self, D>) -> Tensor<Self, D> {
        plain(crate::flex::elu_backward(raw(y), raw(dy)))
    }

    fn linear_2d(x: Tensor<Self, 2>, w: Tensor<Self, 2>, b: Option<Tensor<Self, 1>>) -> Tensor<Self, 2> {
        plain(crate::flex::linear(raw(x), raw(w), b.map(raw)))
    }

    fn linear_2d_backward(
        x: Tensor<Self, 2>,
        w: Tensor<Self, 2>,
        dy: Tensor<Self, 2>,
        want: [bool; 3],
    ) -> LinearGrads<Self> {
        let [dx, dw, db] = crate::flex::linear_backward(raw(x), raw(w), raw(dy), want);
        LinearGrads { dx: dx.map(plain), dw: dw.map(plain), db: db.map(plain) }
    }

    fn select_rows_backward(dy: Tensor<Self, 2>, index: Tensor<Self, 1, Int>, rows: usize) -> Tensor<Self, 2> {
        plain(crate::flex::select_rows_backward(raw(dy), &index.into_primitive(), rows))
    }

    fn lookup_sum_elu(
        table: Tensor<Self, 2>,
        lookups: [Tensor<Self, 1, Int>; 4],
        bias: Tensor<Self, 1>,
    ) -> Tensor<Self, 2> {
        plain(crate::flex::lookup_sum_elu(raw(table), &lookups.map(|l| l.into_primitive()), raw(bias)))
    }

    fn lookup_sum_elu_backward(
        y: Tensor<Self, 2>,
        dy: Tensor<Self, 2>,
        lookups: [Tensor<Self, 1, Int>; 4],
        table_rows: usize,
    ) -> (Tensor<Self, 2>, Tensor<Self, 1>) {
        let (dt, db) =
            crate::flex::lookup_sum_elu_backward(raw(y), raw(dy), &lookups.map(|l| l.into_primitive()), table_rows);
        (plain(dt), plain(db))
    }
}
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

impl<B: PolicyBackend> Backward<B, 4> for GruBackward {
    type State = (gru::Saved<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [xi, h0, w, bias] = ops.parents;
        let (saved, w_hh) = ops.state;
        let dhs = plain::<B, 2>(grads.consume::<B>(&ops.node));
        let (dxi, dh0, dw, db) = B::gru_backward(saved, dhs, plain(w_hh));
        for (node, grad) in [(xi, raw(dxi)), (h0, raw(dh0)), (w, raw(dw)), (bias, raw(db))] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

#[derive(Debug)]
struct EluBackward<const D: usize>;

impl<B: PolicyBackend, const D: usize> Backward<B, 1> for EluBackward<D> {
    /// The output y: dy/dx = 1 where y > 0, else y + 1.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x] = ops.parents;
        let grad = plain::<B, D>(grads.consume::<B>(&ops.node));
        if let Some(node) = x {
            grads.register::<B>(node.id, raw(B::elu_backward(plain::<B, D>(ops.state), grad)));
        }
    }
}

#[derive(Debug)]
struct LinearBackward;

impl<B: PolicyBackend> Backward<B, 3> for LinearBackward {
    /// The input and the weight.
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x, w, b] = ops.parents;
        let (xv, wv) = ops.state;
        let dy = plain::<B, 2>(grads.consume::<B>(&ops.node));
        let g = B::linear_2d_backward(plain(xv), plain(wv), dy, [x.is_some(), w.is_some(), b.is_some()]);
        for (node, grad) in [(x, g.dx.map(raw)), (w, g.dw.map(raw)), (b, g.db.map(raw))] {
            if let (Some(node), Some(grad)) = (node, grad) {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

#[derive(Debug)]
struct SelectRowsBackward;

impl<B: PolicyBackend> Backward<B, 1> for SelectRowsBackward {
    /// The index and the source's number of rows.
    type State = (IntTensor<B>, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x] = ops.parents;
        let (index, rows) = ops.state;
        let dy = plain::<B, 2>(grads.consume::<B>(&ops.node));
        if let Some(node) = x {
            grads.register::<B>(node.id, raw(B::select_rows_backward(dy, Tensor::from_primitive(index), rows)));
        }
    }
}

#[derive(Debug)]
struct LookupSumEluBackward;

impl<B: PolicyBackend> Backward<B, 2> for LookupSumEluBackward {
    /// The output, the lookups and the table's number of rows.
    type State = (FloatTensor<B>, [IntTensor<B>; 4], usize);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [table, bias] = ops.parents;
        let (y, lookups, rows) = ops.state;
        let dy = plain::<B, 2>(grads.consume::<B>(&ops.node));
        let (dt, db) = B::lookup_sum_elu_backward(plain(y), dy, lookups.map(Tensor::from_primitive), rows);
        for (node, grad) in [(table, raw(dt)), (bias, raw(db))] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
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
                let (hs, saved) = B::gru_forward(xi, h0, keep, w.clone(), bias, true);
                prep.finish((saved.expect("saved for backward"), raw(w)), raw(hs))
            }
            OpsKind::UnTracked(prep) => prep.finish(raw(B::gru_forward(xi, h0, keep, w, bias, false).0)),
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    fn linear_2d(x: Tensor<Self, 2>, w: Tensor<Self, 2>, b: Option<Tensor<Self, 1>>) -> Tensor<Self, 2> {
        let b = match b {
            Some(b) if B::FUSED_LAYERS => b,
            // burn's own ops (every layer of the policy has a bias)
            b => return linear_plain(x, w, b),
        };
        let node = |t: FloatTensor<Self>| t.node.clone();
        let nodes = [node(x.clone().into_primitive().tensor()), node(w.clone().into_primitive().tensor())];
        let bias_node = node(b.clone().into_primitive().tensor());
        let (x, w, b) = (inner(x), inner(w), inner(b));
        let out = match LinearBackward
            .prepare::<C>([nodes[0].clone(), nodes[1].clone(), bias_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::linear_2d(x.clone(), w.clone(), Some(b));
                prep.finish((raw(x), raw(w)), raw(y))
            }
            OpsKind::UnTracked(prep) => prep.finish(raw(B::linear_2d(x, w, Some(b)))),
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    fn lookup_sum_elu(
        table: Tensor<Self, 2>,
        lookups: [Tensor<Self, 1, Int>; 4],
        bias: Tensor<Self, 1>,
    ) -> Tensor<Self, 2> {
        if !B::FUSED_LAYERS {
            // select_rows is then burn's select, and elu the autodiff node above
            return lookup_sum_elu_plain(table, lookups, bias);
        }
        let rows = table.dims()[0];
        let nodes =
            [table.clone().into_primitive().tensor().node.clone(), bias.clone().into_primitive().tensor().node.clone()];
        let lookups = lookups.map(|l| Tensor::<B, 1, Int>::from_primitive(l.into_primitive()));
        let (table, bias) = (inner(table), inner(bias));
        let out = match LookupSumEluBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::lookup_sum_elu(table, lookups.clone(), bias);
                prep.finish((raw(y.clone()), lookups.map(|l| l.into_primitive()), rows), raw(y))
            }
            OpsKind::UnTracked(prep) => prep.finish(raw(B::lookup_sum_elu(table, lookups, bias))),
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    fn select_rows(x: Tensor<Self, 2>, index: Tensor<Self, 1, Int>) -> Tensor<Self, 2> {
        if !B::FUSED_LAYERS {
            return x.select(0, index);
        }
        let rows = x.dims()[0];
        let node = x.clone().into_primitive().tensor().node.clone();
        // an integer tensor of the autodiff backend is the inner backend's
        let index = Tensor::<B, 1, Int>::from_primitive(index.into_primitive());
        let x = inner(x);
        let out = match SelectRowsBackward.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::select_rows(x, index.clone());
                prep.finish((index.into_primitive(), rows), raw(y))
            }
            OpsKind::UnTracked(prep) => prep.finish(raw(B::select_rows(x, index))),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CpuAutodiff, CpuBackend};
    use burn::tensor::{Distribution, TensorData};

    type B = CpuAutodiff;

    fn normal<const D: usize>(shape: [usize; D]) -> Tensor<B, D> {
        Tensor::<B, D>::random(shape, Distribution::Normal(0.0, 1.0), &Default::default()).require_grad()
    }

    /// Equal within 1e-4 of the larger of 1 and the reference's largest magnitude (sums over
    /// thousands of rows differ in their last bits with the order of summation).
    fn close<const D: usize>(a: Tensor<CpuBackend, D>, b: Tensor<CpuBackend, D>, what: &str) {
        assert_eq!(a.dims(), b.dims(), "{what}: shapes");
        let scale: f32 = b.clone().abs().max().into_scalar();
        let d: f32 = (a - b).abs().max().into_scalar();
        assert!(d < 1e-4 * scale.max(1.0), "{what} differs by {d} (largest magnitude {scale})");
    }

    /// The fused linear layer (and its hand-written backward) equals burn's matmul + bias,
    /// also for an input that is a transposed view, in values and in every gradient.
    #[test]
    fn fused_linear_matches_burns_ops() {
        for transposed in [false, true] {
            let x = if transposed { normal([19, 37]) } else { normal([37, 19]) };
            let (w, b) = (normal([19, 23]), normal([23]));
            // each pass gets its own view: a backward pass frees the graph it walked
            let xin = || if transposed { x.clone().transpose() } else { x.clone() };
            let weights = normal([37, 23]).detach();
            let fused = B::linear_2d(xin(), w.clone(), Some(b.clone()));
            let g1 = (fused.clone() * weights.clone()).sum().backward();
            let plain = xin().matmul(w.clone()) + b.clone().unsqueeze();
            let g2 = (plain.clone() * weights).sum().backward();
            close(fused.inner(), plain.inner(), "output");
            close(x.grad(&g1).unwrap(), x.grad(&g2).unwrap(), "d x");
            close(w.grad(&g1).unwrap(), w.grad(&g2).unwrap(), "d w");
            close(b.grad(&g1).unwrap(), b.grad(&g2).unwrap(), "d b");
        }
    }

    /// The row gather's parallel scatter-add backward equals burn's, with repeated rows,
    /// rows never picked, and enough work to split across threads.
    #[test]
    fn row_gather_matches_burns_select() {
        let dev = Default::default();
        for (rows, len, c) in [(7, 5, 3), (600, 9000, 8)] {
            let x = normal([rows, c]);
            let index: Vec<i32> = (0..len).map(|j| ((j * 7919 + j / 3) % (rows - 1)) as i32).collect();
            let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [len]), &dev);
            let weights = normal([len, c]).detach();
            let fused = B::select_rows(x.clone(), index.clone());
            let g1 = (fused.clone() * weights.clone()).sum().backward();
            let plain = x.clone().select(0, index);
            let g2 = (plain.clone() * weights).sum().backward();
            close(fused.inner(), plain.inner(), "gathered rows");
            let (d1, d2) = (x.grad(&g1).unwrap(), x.grad(&g2).unwrap());
            close(d1.clone(), d2, "d x");
            // the last row is never picked: its gradient is exactly zero
            let last: f32 = d1.slice([rows - 1..rows, 0..c]).abs().sum().into_scalar();
            assert_eq!(last, 0.0);
        }
    }

    /// The fused first layer of the image encoder equals the sum of four gathers, the bias and
    /// an ELU in burn's ops, in values and in the table's and bias's gradients.
    #[test]
    fn fused_lookup_sum_matches_burns_ops() {
        let dev = Default::default();
        let (rows, len, c) = (40, 3000, 6);
        let table = normal([rows, c]);
        let bias = normal([c]);
        let lookups: [Tensor<B, 1, Int>; 4] = std::array::from_fn(|q| {
            let idx: Vec<i32> = (0..len).map(|p| ((p * (q + 3) * 31 + q) % rows) as i32).collect();
            Tensor::from_data(TensorData::new(idx, [len]), &dev)
        });
        let weights = normal([len, c]).detach();
        let fused = B::lookup_sum_elu(table.clone(), lookups.clone(), bias.clone());
        let g1 = (fused.clone() * weights.clone()).sum().backward();
        let sum = lookups.into_iter().map(|l| table.clone().select(0, l)).reduce(|a, b| a + b).unwrap();
        let plain = elu_plain(sum + bias.clone().unsqueeze());
        let g2 = (plain.clone() * weights).sum().backward();
        close(fused.inner(), plain.inner(), "output");
        close(table.grad(&g1).unwrap(), table.grad(&g2).unwrap(), "d table");
        close(bias.grad(&g1).unwrap(), bias.grad(&g2).unwrap(), "d bias");
    }

    /// The in-place ELU equals burn's, leaves a tensor that something else still holds
    /// untouched, and its gradient equals burn's.
    #[test]
    fn fused_elu_matches_burns_ops_and_keeps_shared_inputs() {
        let x = normal([33, 17]).mul_scalar(3.0).detach().require_grad();
        let weights = normal([33, 17]).detach();
        let fused = B::elu(x.clone());
        let g1 = (fused.clone() * weights.clone()).sum().backward();
        let plain = elu_plain(x.clone());
        let g2 = (plain.clone() * weights).sum().backward();
        close(fused.inner(), plain.inner(), "ELU");
        close(x.grad(&g1).unwrap(), x.grad(&g2).unwrap(), "d x");

        let held = x.inner();
        let before = held.clone().into_data();
        let _ = CpuBackend::elu(held.clone());
        assert_eq!(held.into_data(), before, "a shared input was overwritten");
    }
}
