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

    /// kernel × kernel windows of a rows × cols grid moving by `stride`, no padding; the
    /// taps of a window in row-major order.
    pub fn strided2d(rows: usize, cols: usize, kernel: usize, stride: usize) -> Self {
        let out = |n: usize| if n >= kernel { (n - kernel) / stride + 1 } else { 0 };
        let (orows, ocols) = (out(rows), out(cols));
        let mut index = Vec::with_capacity(orows * ocols * kernel * kernel);
        for i in 0..orows {
            for j in 0..ocols {
                for dy in 0..kernel {
                    for dx in 0..kernel {
                        index.push(((i * stride + dy) * cols + j * stride + dx) as i32);
                    }
                }
            }
        }
        Patches { index, positions: orows * ocols, taps: kernel * kernel, source_len: rows * cols }
    }

    /// Windows of `kernel` over a sequence of `len`, moving by `stride`, no padding.
    pub fn strided1d(len: usize, kernel: usize, stride: usize) -> Self {
        let positions = if len >= kernel { (len - kernel) / stride + 1 } else { 0 };
        let index = (0..positions).flat_map(|p| (0..kernel).map(move |k| (p * stride + k) as i32)).collect();
        Patches { index, positions, taps: kernel, source_len: len }
    }

    /// The convolution whose kernel is `layer` (weight [taps·C, C_out]): [N, L, C] →
    /// [N, positions, C_out]. The product runs on the 2-D [N·positions, taps·C] patches, so
    /// the weight gradient is one matrix product too (a 3-D input would make burn compute
    /// one per observation and sum them).
    pub fn conv<B: crate::PolicyBackend>(&self, layer: &burn::nn::Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [n, _, c] = x.dims();
        let cols = self.gather(x).reshape([n * self.positions, self.taps * c]);
        let out = crate::backend::linear(layer, cols);
        let c_out = out.dims()[1];
        out.reshape([n, self.positions, c_out])
    }

    /// [N, L, C] → [N, positions, taps·C]. Gathers rows of the flattened [N·L, C] input
    /// (a row gather and its row scatter-add backward are the fast paths of CPU backends).
    pub fn gather<B: crate::PolicyBackend>(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [n, l, c] = x.dims();
        debug_assert_eq!(l, self.source_len);
        let device = x.device();
        let padded = self.index.iter().any(|&i| i as usize == self.source_len);
        let mut flat = x.reshape([n * l, c]);
        let zero_row = (n * l) as i32;
        if padded {
            flat = Tensor::cat(vec![flat, Tensor::zeros([1, c], &device)], 0);
        }
        let mut index = Vec::with_capacity(n * self.index.len());
        for obs in 0..n {
            let base = (obs * l) as i32;
            index.extend(self.index.iter().map(|&i| if i as usize == self.source_len { zero_row } else { base + i }));
        }
        let len = index.len();
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [len]), &device);
        B::select_rows(flat, idx).reshape([n, self.positions, self.taps * c])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::conv::Conv2dConfig;
    use burn::nn::{Linear, PaddingConfig2d};
    type B = crate::CpuBackend;

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

    /// A strided, unpadded convolution computed by burn equals the gathered Linear.
    #[test]
    fn strided2d_patches_match_conv2d() {
        let dev = Default::default();
        let (rows, cols, cin, cout, k, s) = (9, 7, 3, 2, 4, 2);
        let conv = Conv2dConfig::new([cin, cout], [k, k]).with_stride([s, s]).init::<B>(&dev);
        let x = Tensor::<B, 4>::random([2, cin, rows, cols], burn::tensor::Distribution::Normal(0.0, 1.0), &dev);
        let want = conv.forward(x.clone()); // [2, cout, 3, 2]
        let [_, _, orows, ocols] = want.dims();
        let w = conv.weight.val().permute([2, 3, 1, 0]).reshape([k * k * cin, cout]);
        let lin = Linear { weight: burn::module::Param::from_tensor(w), bias: conv.bias.clone() };
        let seq = x.permute([0, 2, 3, 1]).reshape([2, rows * cols, cin]);
        let p = Patches::strided2d(rows, cols, k, s);
        assert_eq!(p.positions, orows * ocols);
        let got = lin.forward(p.gather(seq)).reshape([2, orows, ocols, cout]).permute([0, 3, 1, 2]);
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
