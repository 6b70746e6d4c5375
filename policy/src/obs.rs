use burn::prelude::*;
use burn::tensor::TensorData;
use oni_env::{ObsSpec, MESSAGE_LEN};

/// A batch of N observations as tensors.
#[derive(Debug, Clone)]
pub struct ObsBatch<B: Backend> {
    /// [N, crop] glyph ids.
    pub glyphs: Tensor<B, 2, Int>,
    /// [N, stats_dim].
    pub stats: Tensor<B, 2>,
    /// [N, message_bytes] message bytes (the configured prefix of the 256).
    pub message: Tensor<B, 2, Int>,
}

impl<B: Backend> ObsBatch<B> {
    /// From flat host buffers of `n` observations laid out as `VecEnv` holds them.
    pub fn from_host(
        spec: &ObsSpec,
        message_bytes: usize,
        glyphs: &[u16],
        stats: &[f32],
        messages: &[u8],
        device: &B::Device,
    ) -> Self {
        let n = stats.len() / spec.stats_dim.max(1);
        let g: Vec<i32> = glyphs.iter().map(|&x| x as i32).collect();
        let mb = message_bytes.max(1);
        let mut m = Vec::with_capacity(n * mb);
        for i in 0..n {
            let row = &messages[i * MESSAGE_LEN..(i + 1) * MESSAGE_LEN];
            m.extend(row[..mb.min(MESSAGE_LEN)].iter().map(|&b| b as i32));
        }
        ObsBatch {
            glyphs: Tensor::from_data(TensorData::new(g, [n, spec.crop_len()]), device),
            stats: Tensor::from_data(TensorData::new(stats.to_vec(), [n, spec.stats_dim]), device),
            message: Tensor::from_data(TensorData::new(m, [n, mb]), device),
        }
    }

    pub fn len(&self) -> usize {
        self.stats.dims()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
