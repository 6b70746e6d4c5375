//! Convolutions as gather + matrix product. burn-ndarray's direct convolution (and its
//! transposed backward) dominated the learner's time on CPU; gathering each output
//! position's receptive field and applying one `Linear` is the same operation (im2col)
//! and runs on the fast matmul path of every backend.

use burn::prelude::*;
use burn::tensor::TensorData;

/// For each output position, the input positions it reads; `pad` marks zero padding.
#[derive(Debug, Clone)]
pub struct Patches {
    index: Vec<i32>,
    pub positions: usize,
    pub taps: usize,
    source_len: usize,
}

impl Patches {
    /// 3×3 neighbourhoods of a rows × cols grid, "same" zero padding, stride 1.
    pub fn grid3x3(rows: usize, cols: usize) -> Self {
        let pad = (rows * cols) as i32;
        let mut index = Vec::with_capacity(rows * cols * 9);
        for r in 0..rows as i64 {
            for c in 0..cols as i64 {
                for dr in -1..=1 {
                    for dc in -1..=1 {
                        let (rr, cc) = (r + dr, c + dc);
                        let inside = rr >= 0 && cc >= 0 && rr < rows as i64 && cc < cols as i64;
                        index.push(if inside { (rr * cols as i64 + cc) as i32 } else { pad });
                    }
                }
            }
        }
        Patches { index, positions: rows * cols, taps: 9, source_len: rows * cols }
    }

    /// Windows of `kernel` over a sequence of `len`, moving by `stride`, no padding.
    pub fn strided1d(len: usize, kernel: usize, stride: usize) -> Self {
        let positions = if len >= kernel { (len - kernel) / stride + 1 } else { 0 };
        let index = (0..positions).flat_map(|p| (0..kernel).map(move |k| (p * stride + k) as i32)).collect();
        Patches { index, positions, taps: kernel, source_len: len }
    }

    /// [N, L, C] → [N, positions, taps·C].
    pub fn gather<B: Backend>(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [n, l, c] = x.dims();
        debug_assert_eq!(l, self.source_len);
        let device = x.device();
        let x = Tensor::cat(vec![x, Tensor::zeros([n, 1, c], &device)], 1);
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(self.index.clone(), [self.index.len()]), &device);
        x.select(1, idx).reshape([n, self.positions, self.taps * c])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::conv::Conv2dConfig;
    use burn::nn::{Linear, PaddingConfig2d};
    type B = burn::backend::NdArray<f32>;

    /// A 3×3 "same" convolution computed by burn equals the gathered Linear with the
    /// kernel's weights laid out tap by tap.
    #[test]
    fn grid_patches_match_conv2d() {
        let dev = Default::default();
        let (rows, cols, cin, cout) = (4, 5, 3, 2);
        let conv = Conv2dConfig::new([cin, cout], [3, 3]).with_padding(PaddingConfig2d::Same).init::<B>(&dev);
        let x = Tensor::<B, 4>::random([2, cin, rows, cols], burn::tensor::Distribution::Normal(0.0, 1.0), &dev);
        let want = conv.forward(x.clone()); // [2, cout, rows, cols]

        // conv weight [cout, cin, 3, 3] → linear weight [9·cin, cout], tap-major
        let w = conv.weight.val().permute([2, 3, 1, 0]).reshape([9 * cin, cout]);
        let lin = Linear { weight: burn::module::Param::from_tensor(w), bias: conv.bias.clone() };
        let seq = x.permute([0, 2, 3, 1]).reshape([2, rows * cols, cin]);
        let got = lin.forward(Patches::grid3x3(rows, cols).gather(seq)); // [2, rows·cols, cout]
        let got = got.reshape([2, rows, cols, cout]).permute([0, 3, 1, 2]);
        let diff: f32 = (got - want).abs().max().into_scalar();
        assert!(diff < 1e-4, "max difference {diff}");
    }

    #[test]
    fn strided_windows() {
        let p = Patches::strided1d(8, 4, 2);
        assert_eq!(p.positions, 3);
        assert_eq!(p.index, vec![0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7]);
    }
}
