use crate::backend::{linear, PolicyBackend};
use crate::config::{Network, PolicyConfig};
use crate::gru::GruCell;
use crate::init::orthogonal_linear;
use crate::obs::{GridInput, MessageInput, ObsBatch};
use crate::patches::Patches;
use crate::screen::{ScreenEncoder, ScreenInput};
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use oni_env::ObsSpec;

/// Byte-level message encoder: embedding → 1-D convolution (kernel 4, stride 2) → max over
/// positions → linear.
#[derive(Module, Debug)]
pub struct MessageEncoder<B: Backend> {
    embed: Embedding<B>,
    conv: Linear<B>,
    out: Linear<B>,
    bytes: usize,
}

const MSG_KERNEL: usize = 4;
const MSG_STRIDE: usize = 2;

impl<B: PolicyBackend> MessageEncoder<B> {
    fn forward(&self, bytes: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let x = self.embed.forward(bytes); // [N, L, E]
        let x = relu(Patches::strided1d(self.bytes, MSG_KERNEL, MSG_STRIDE).conv(&self.conv, x)); // [N, P, C]
        let x = x.max_dim(1).squeeze_dim::<2>(1); // [N, C]
        relu(linear(&self.out, x))
    }
}

/// The small network's encoder: embedded glyph crop (+ 3×3 convolutions), linear stats,
/// byte CNN over the message, and a linear torso to `core_hidden`.
#[derive(Module, Debug)]
pub struct GlyphCropEncoder<B: Backend> {
    glyph_embed: Embedding<B>,
    convs: Vec<Linear<B>>,
    glyph_out: Linear<B>,
    stats: Linear<B>,
    message: Option<MessageEncoder<B>>,
    torso: Linear<B>,
    crop_rows: usize,
    crop_cols: usize,
}

impl<B: PolicyBackend> GlyphCropEncoder<B> {
    fn new(cfg: &PolicyConfig, spec: &ObsSpec, device: &B::Device) -> Self {
        let c = cfg.glyph_channels;
        let message = (cfg.message_bytes > 0).then(|| MessageEncoder {
            embed: EmbeddingConfig::new(256, cfg.message_embed).init(device),
            conv: LinearConfig::new(MSG_KERNEL * cfg.message_embed, cfg.message_channels).init(device),
            out: LinearConfig::new(cfg.message_channels, cfg.message_hidden).init(device),
            bytes: cfg.message_bytes.max(MSG_KERNEL),
        });
        let msg_out = if cfg.message_bytes > 0 { cfg.message_hidden } else { 0 };
        GlyphCropEncoder {
            glyph_embed: EmbeddingConfig::new(spec.num_glyphs, cfg.glyph_embed).init(device),
            convs: (0..cfg.glyph_conv_layers)
                .map(|i| LinearConfig::new(9 * if i == 0 { cfg.glyph_embed } else { c }, c).init(device))
                .collect(),
            glyph_out: LinearConfig::new(
                spec.crop_len() * if cfg.glyph_conv_layers > 0 { c } else { cfg.glyph_embed },
                cfg.glyph_hidden,
            )
            .init(device),
            stats: LinearConfig::new(spec.stats_dim, cfg.stats_hidden).init(device),
            message,
            torso: LinearConfig::new(cfg.glyph_hidden + cfg.stats_hidden + msg_out, cfg.core_hidden).init(device),
            crop_rows: spec.crop_rows,
            crop_cols: spec.crop_cols,
        }
    }

    fn forward(
        &self,
        glyphs: Tensor<B, 2, Int>,
        stats: Tensor<B, 2>,
        message: Option<Tensor<B, 2, Int>>,
    ) -> Tensor<B, 2> {
        // 3×3 "same" convolutions over the crop, as gathered linears
        let grid = Patches::grid3x3(self.crop_rows, self.crop_cols);
        let mut g = self.glyph_embed.forward(glyphs); // [N, R·C, E]
        for conv in &self.convs {
            g = relu(grid.conv(conv, g)); // [N, R·C, channels]
        }
        let g = relu(linear(&self.glyph_out, g.flatten::<2>(1, 2)));
        let s = relu(linear(&self.stats, stats));
        let mut parts = vec![g, s];
        if let (Some(m), Some(bytes)) = (&self.message, message) {
            parts.push(m.forward(bytes));
        }
        relu(linear(&self.torso, Tensor::cat(parts, 1)))
    }
}

/// ONI's NetHack encoder (Sample Factory's `NLEMainEncoder` as Motif configures it): the
/// image encoder's features, the stats through an MLP, the raw stats, and the message
/// bytes / 255 through an MLP, concatenated in that order (512 + 128 + 27 + 128 = 795 with
/// ONI's sizes). Every layer is followed by ELU.
#[derive(Module, Debug)]
pub struct OniEncoder<B: Backend> {
    screen: ScreenEncoder<B>,
    stats: [Linear<B>; 2],
    message: Option<[Linear<B>; 2]>,
}

impl<B: PolicyBackend> OniEncoder<B> {
    fn new(cfg: &PolicyConfig, spec: &ObsSpec, device: &B::Device) -> Self {
        let mlp = |d_in, d| [orthogonal_linear(d_in, d, 1.0, device), orthogonal_linear(d, d, 1.0, device)];
        OniEncoder {
            screen: ScreenEncoder::new(spec.crop_rows, spec.crop_cols, cfg.screen_hidden, device),
            stats: mlp(spec.stats_dim, cfg.stats_hidden),
            message: (cfg.message_bytes > 0).then(|| mlp(cfg.message_bytes, cfg.message_hidden)),
        }
    }

    fn width(cfg: &PolicyConfig, spec: &ObsSpec) -> usize {
        cfg.screen_hidden
            + cfg.stats_hidden
            + spec.stats_dim
            + if cfg.message_bytes > 0 { cfg.message_hidden } else { 0 }
    }

    fn forward(&self, screen: &ScreenInput<B>, stats: Tensor<B, 2>, message: Option<Tensor<B, 2>>) -> Tensor<B, 2> {
        let mlp = |layers: &[Linear<B>; 2], x| B::elu(linear(&layers[1], B::elu(linear(&layers[0], x))));
        let mut parts = vec![self.screen.forward(screen), mlp(&self.stats, stats.clone()), stats];
        if let (Some(layers), Some(m)) = (&self.message, message) {
            parts.push(mlp(layers, m));
        }
        Tensor::cat(parts, 1)
    }
}

#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)] // one per network
pub enum Encoder<B: Backend> {
    GlyphCrop(GlyphCropEncoder<B>),
    Oni(OniEncoder<B>),
}

#[derive(Module, Debug)]
pub struct Policy<B: Backend> {
    encoder: Encoder<B>,
    core: GruCell<B>,
    actor: Linear<B>,
    critic: Linear<B>,
    core_hidden: usize,
}

/// Per-observation outputs: [N, A] logits, [N] values.
#[derive(Debug, Clone)]
pub struct PolicyOutput<B: Backend> {
    pub logits: Tensor<B, 2>,
    pub values: Tensor<B, 1>,
}

impl<B: PolicyBackend> Policy<B> {
    /// The network for `cfg` and `spec`; check them first with `PolicyConfig::check`.
    pub fn new(cfg: &PolicyConfig, spec: &ObsSpec, device: &B::Device) -> Self {
        debug_assert_eq!(cfg.check(spec), Ok(()));
        let h = cfg.core_hidden;
        match cfg.network {
            Network::GlyphCrop => Policy {
                encoder: Encoder::GlyphCrop(GlyphCropEncoder::new(cfg, spec, device)),
                core: GruCell::new(h, h, false, device),
                // Small final-layer weights keep the initial policy near uniform and values near 0.
                actor: LinearConfig::new(h, spec.num_actions)
                    .with_initializer(Initializer::Normal { mean: 0.0, std: 0.01 })
                    .init(device),
                critic: LinearConfig::new(h, 1).init(device),
                core_hidden: h,
            },
            Network::Oni => Policy {
                encoder: Encoder::Oni(OniEncoder::new(cfg, spec, device)),
                core: GruCell::new(OniEncoder::<B>::width(cfg, spec), h, true, device),
                actor: orthogonal_linear(h, spec.num_actions, 1.0, device),
                critic: orthogonal_linear(h, 1, 1.0, device),
                core_hidden: h,
            },
        }
    }

    pub fn hidden_size(&self) -> usize {
        self.core_hidden
    }

    /// Everything before the recurrent core, for any number of observations at once,
    /// already projected by the GRU's input weights: [N, 3H].
    fn encode(&self, obs: ObsBatch<B>) -> Tensor<B, 2> {
        let x = match (&self.encoder, obs.grid, obs.message) {
            (Encoder::GlyphCrop(e), GridInput::Ids(g), MessageInput::Bytes(m)) => e.forward(g, obs.stats, Some(m)),
            (Encoder::Oni(e), GridInput::Screen(s), MessageInput::Scaled(m)) => e.forward(&s, obs.stats, Some(m)),
            _ => panic!("observation batch built for another network (ObsBatch::from_host takes the policy config)"),
        };
        self.core.project_input(x)
    }

    fn heads(&self, h: Tensor<B, 2>) -> PolicyOutput<B> {
        let logits = linear(&self.actor, h.clone());
        let values = linear(&self.critic, h).squeeze_dim::<1>(1);
        PolicyOutput { logits, values }
    }

    /// The actor's step: one observation per env and the carried state [B, H]. The caller
    /// zeroes the state of envs whose episode just started.
    pub fn act(&self, obs: ObsBatch<B>, h: Tensor<B, 2>) -> (PolicyOutput<B>, Tensor<B, 2>) {
        let h = self.core.step(self.encode(obs), h);
        (self.heads(h.clone()), h)
    }

    /// The learner's pass over a whole rollout batch, time-major: `obs` holds (T+1)·B
    /// observations ordered t·B + b, `h0` is [B, H], and `resets` [(T+1), B] is 1 where the
    /// state must be zeroed before observation t (an episode started there). Gradients flow
    /// through the whole rollout. Returns outputs for all (T+1)·B observations.
    pub fn unroll(&self, obs: ObsBatch<B>, h0: Tensor<B, 2>, resets: Tensor<B, 2>) -> PolicyOutput<B> {
        self.unroll_with_states(obs, h0, resets).0
    }

    /// `unroll`, and the recurrent state after each observation, [(T+1)·B, H]: the state an
    /// observation outside the batch continues from (the last one of a truncated episode).
    pub fn unroll_with_states(
        &self,
        obs: ObsBatch<B>,
        h0: Tensor<B, 2>,
        resets: Tensor<B, 2>,
    ) -> (PolicyOutput<B>, Tensor<B, 2>) {
        let keep = resets.neg().add_scalar(1.0); // [(T+1), B]
        let hs = self.core.unroll(self.encode(obs), h0, keep);
        (self.heads(hs.clone()), hs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CpuAutodiff;
    use burn::tensor::{Distribution, TensorData};
    use oni_env::{GridKind, MESSAGE_LEN};

    /// Random host observations: (glyphs, stats, messages) for `n` observations.
    fn host(spec: &ObsSpec, n: usize, seed: u64) -> (Vec<u16>, Vec<f32>, Vec<u8>) {
        let mut x = seed;
        let mut next = move || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) as usize
        };
        let g = (0..n * spec.crop_len()).map(|_| (next() % spec.num_glyphs) as u16).collect();
        let s = (0..n * spec.stats_dim).map(|_| (next() % 100) as f32 / 100.0).collect();
        let m = (0..n * MESSAGE_LEN).map(|_| (next() % 256) as u8).collect();
        (g, s, m)
    }

    fn rows_of(
        spec: &ObsSpec,
        (g, s, m): &(Vec<u16>, Vec<f32>, Vec<u8>),
        rows: &[usize],
    ) -> (Vec<u16>, Vec<f32>, Vec<u8>) {
        let (c, d) = (spec.crop_len(), spec.stats_dim);
        (
            rows.iter().flat_map(|&r| g[r * c..(r + 1) * c].to_vec()).collect(),
            rows.iter().flat_map(|&r| s[r * d..(r + 1) * d].to_vec()).collect(),
            rows.iter().flat_map(|&r| m[r * MESSAGE_LEN..(r + 1) * MESSAGE_LEN].to_vec()).collect(),
        )
    }

    /// A reset before step k cuts the recurrence: outputs from k on equal a fresh unroll of
    /// the remaining steps from a zero state, and no gradient reaches the initial state.
    /// Checked for both networks.
    #[test]
    fn gru_state_is_masked_at_episode_boundaries() {
        type B = CpuAutodiff;
        let dev = Default::default();
        let glyph_spec =
            ObsSpec { crop_rows: 3, crop_cols: 3, num_glyphs: 5, stats_dim: 2, num_actions: 3, grid: GridKind::Glyphs };
        let glyph_cfg = PolicyConfig {
            core_hidden: 8,
            glyph_hidden: 8,
            stats_hidden: 4,
            message_bytes: 8,
            glyph_conv_layers: 1,
            ..Default::default()
        };
        let tty_spec = ObsSpec {
            crop_rows: 6,
            crop_cols: 7,
            num_glyphs: oni_env::TTY_CELLS,
            stats_dim: 4,
            num_actions: 3,
            grid: GridKind::Tty,
        };
        let oni_cfg = PolicyConfig {
            network: Network::Oni,
            core_hidden: 8,
            screen_hidden: 16,
            stats_hidden: 4,
            message_bytes: 16,
            message_hidden: 4,
            ..Default::default()
        };
        for (cfg, spec) in [(glyph_cfg, glyph_spec), (oni_cfg, tty_spec)] {
            cfg.check(&spec).unwrap();
            let policy = Policy::<B>::new(&cfg, &spec, &dev);
            let (steps, b, k) = (6, 2, 3);
            let all = host(&spec, steps * b, 7);
            let batch =
                |(g, s, m): &(Vec<u16>, Vec<f32>, Vec<u8>)| ObsBatch::<B>::from_host(&spec, &cfg, g, s, m, &dev);
            let h0 = Tensor::<B, 2>::random([b, 8], Distribution::Normal(0.0, 1.0), &dev).require_grad();
            // env 0 resets before step k; env 1 never does
            let mut resets = vec![0.0f32; steps * b];
            resets[k * b] = 1.0;
            let resets = Tensor::<B, 2>::from_data(TensorData::new(resets, [steps, b]), &dev);
            let full = policy.unroll(batch(&all), h0.clone(), resets);

            // the same env-0 steps from k on, started from zero
            let rows: Vec<usize> = (k..steps).map(|t| t * b).collect();
            let fresh = policy.unroll(
                batch(&rows_of(&spec, &all, &rows)),
                Tensor::zeros([1, 8], &dev),
                Tensor::zeros([steps - k, 1], &dev),
            );
            for (i, &r) in rows.iter().enumerate() {
                let a = full.logits.clone().slice([r..r + 1, 0..3]);
                let f = fresh.logits.clone().slice([i..i + 1, 0..3]);
                let d: f32 = (a - f).abs().max().into_scalar();
                assert!(d < 1e-5, "{:?}: step {}: masked unroll differs from a fresh one by {d}", cfg.network, k + i);
            }

            // gradient of env 0's post-reset outputs w.r.t. its initial state is exactly zero,
            // while env 1's initial state does receive gradient through its unbroken recurrence
            let post0: Tensor<B, 1> =
                rows.iter().map(|&r| full.values.clone().slice([r..r + 1])).reduce(|a, b| a + b).unwrap();
            let post1: Tensor<B, 1> =
                (k..steps).map(|t| full.values.clone().slice([t * b + 1..t * b + 2])).reduce(|a, b| a + b).unwrap();
            let grads = (post0 + post1).backward();
            let g = h0.grad(&grads).unwrap();
            let g0: f32 = g.clone().slice([0..1, 0..8]).abs().sum().into_scalar();
            let g1: f32 = g.slice([1..2, 0..8]).abs().sum().into_scalar();
            assert_eq!(g0, 0.0, "{:?}: gradient leaked across the episode boundary", cfg.network);
            assert!(g1 > 0.0, "{:?}: no gradient through an unbroken recurrence", cfg.network);
        }
    }

    /// ONI's sizes: 795 inputs to the GRU and about 2.8 M parameters with 28 actions.
    #[test]
    fn onis_network_has_onis_size() {
        let spec = ObsSpec {
            crop_rows: 12,
            crop_cols: 12,
            num_glyphs: oni_env::TTY_CELLS,
            stats_dim: 27,
            num_actions: 28,
            grid: GridKind::Tty,
        };
        let cfg = PolicyConfig::oni();
        assert_eq!(OniEncoder::<crate::CpuBackend>::width(&cfg, &spec), 795);
        let p = Policy::<crate::CpuBackend>::new(&cfg, &spec, &Default::default());
        // conv 6 176 + 32 832 + 73 856, linear 590 336, stats 20 096, message 49 408,
        // GRU 2 010 624, heads 14 364 + 513
        assert_eq!(p.num_params(), 2_798_205);
    }
}
