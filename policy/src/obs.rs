use crate::config::{Network, PolicyConfig};
use crate::screen::{Geometry, ScreenInput};
use burn::prelude::*;
use burn::tensor::TensorData;
use oni_env::{ObsSpec, MESSAGE_LEN};

/// The crop, as the network's first layer takes it.
#[derive(Debug, Clone)]
pub enum GridInput<B: Backend> {
    /// [N, crop] cell ids, embedded by the network.
    Ids(Tensor<B, 2, Int>),
    /// tty cells, drawn by the image encoder.
    Screen(ScreenInput<B>),
}

/// The message, as the network's message encoder takes it.
#[derive(Debug, Clone)]
pub enum MessageInput<B: Backend> {
    /// [N, message_bytes] byte ids (glyph-crop's byte CNN).
    Bytes(Tensor<B, 2, Int>),
    /// [N, message_bytes] bytes / 255 (oni's MLP).
    Scaled(Tensor<B, 2>),
}

/// A batch of N observations as tensors.
#[derive(Debug, Clone)]
pub struct ObsBatch<B: Backend> {
    pub grid: GridInput<B>,
    /// [N, stats_dim].
    pub stats: Tensor<B, 2>,
    pub message: MessageInput<B>,
}

impl<B: Backend> ObsBatch<B> {
    /// From flat host buffers of `n` observations laid out as `VecEnv` holds them, in the
    /// form `cfg`'s network reads.
    pub fn from_host(
        spec: &ObsSpec,
        cfg: &PolicyConfig,
        glyphs: &[u16],
        stats: &[f32],
        messages: &[u8],
        device: &B::Device,
    ) -> Self {
        let n = stats.len() / spec.stats_dim.max(1);
        let mb = cfg.message_bytes.clamp(1, MESSAGE_LEN);
        let prefix = |f: &mut dyn FnMut(u8)| {
            for row in messages.chunks_exact(MESSAGE_LEN).take(n) {
                row[..mb].iter().for_each(|&b| f(b));
            }
        };
        let (grid, message) = match cfg.network {
            Network::GlyphCrop => {
                let g: Vec<i32> = glyphs.iter().map(|&x| x as i32).collect();
                let mut m = Vec::with_capacity(n * mb);
                prefix(&mut |b| m.push(b as i32));
                (
                    GridInput::Ids(Tensor::from_data(TensorData::new(g, [n, spec.crop_len()]), device)),
                    MessageInput::Bytes(Tensor::from_data(TensorData::new(m, [n, mb]), device)),
                )
            }
            Network::Oni => {
                let geo = Geometry::new(spec.crop_rows, spec.crop_cols);
                let mut m = Vec::with_capacity(n * mb);
                prefix(&mut |b| m.push(b as f32 / 255.0));
                (
                    GridInput::Screen(ScreenInput::from_cells(glyphs, &geo, device)),
                    MessageInput::Scaled(Tensor::from_data(TensorData::new(m, [n, mb]), device)),
                )
            }
        };
        ObsBatch {
            grid,
            stats: Tensor::from_data(TensorData::new(stats.to_vec(), [n, spec.stats_dim]), device),
            message,
        }
    }

    pub fn len(&self) -> usize {
        self.stats.dims()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
