//! Orthogonal initialisation (Saxe et al., 2013), which Sample Factory applies to every layer
//! of ONI's network: weights (semi-)orthogonal times a gain, biases zero.
//!
//! burn has it too, but its QR runs as many small tensor operations and took about 45 s for
//! ONI's network; here the Gaussian draw comes from the backend (so `Backend::seed` still
//! fixes it) and the orthonormalisation is a modified Gram–Schmidt on the host (< 1 s).

use burn::module::Param;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::{Distribution, TensorData};

pub fn orthogonal_linear<B: Backend>(d_in: usize, d_out: usize, gain: f64, device: &B::Device) -> Linear<B> {
    let mut layer = LinearConfig::new(d_in, d_out).with_initializer(Initializer::Zeros).init(device);
    layer.weight = Param::from_tensor(orthogonal([d_in, d_out], gain, device));
    layer
}

/// A `Linear` with burn's default initialisation.
pub fn default_linear<B: Backend>(d_in: usize, d_out: usize, device: &B::Device) -> Linear<B> {
    LinearConfig::new(d_in, d_out).init(device)
}

/// A rows × cols matrix whose shorter side's vectors are orthonormal (times `gain`): the Q
/// of a QR decomposition of a Gaussian matrix with R's diagonal made positive, as PyTorch's
/// `orthogonal_`.
pub fn orthogonal<B: Backend>([rows, cols]: [usize; 2], gain: f64, device: &B::Device) -> Tensor<B, 2> {
    let draw: Vec<f32> = Tensor::<B, 2>::random([rows, cols], Distribution::Normal(0.0, 1.0), device)
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32 draw");
    // vectors to orthonormalise: the columns when rows ≥ cols, else the rows
    let by_cols = rows >= cols;
    let (count, len) = if by_cols { (cols, rows) } else { (rows, cols) };
    let at = |v: usize, i: usize| if by_cols { i * cols + v } else { v * cols + i };
    let mut vecs: Vec<Vec<f64>> = (0..count).map(|v| (0..len).map(|i| draw[at(v, i)] as f64).collect()).collect();
    for j in 0..count {
        let (done, rest) = vecs.split_at_mut(j);
        let v = &mut rest[0];
        for q in done.iter() {
            let r: f64 = q.iter().zip(v.iter()).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(q).for_each(|(x, qi)| *x -= r * qi);
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x /= norm);
    }
    let mut out = vec![0.0f32; rows * cols];
    for (v, vec) in vecs.iter().enumerate() {
        for (i, x) in vec.iter().enumerate() {
            out[at(v, i)] = (x * gain) as f32;
        }
    }
    Tensor::from_data(TensorData::new(out, [rows, cols]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    type B = crate::CpuBackend;

    #[test]
    fn orthogonal_matrices_are_orthogonal() {
        let dev = Default::default();
        for shape in [[7, 3], [3, 7], [5, 5]] {
            let w = orthogonal::<B>(shape, 2.0, &dev);
            let [r, c] = shape;
            // the shorter side: WᵀW = gain² I (tall) or WWᵀ = gain² I (wide)
            let gram = if r >= c { w.clone().transpose().matmul(w) } else { w.clone().matmul(w.transpose()) };
            let eye = Tensor::<B, 2>::eye(r.min(c), &dev).mul_scalar(4.0);
            let d: f32 = (gram - eye).abs().max().into_scalar();
            assert!(d < 1e-4, "{shape:?}: off by {d}");
        }
    }
}
