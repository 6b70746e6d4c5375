use crate::config::PolicyConfig;
use crate::gru::GruCell;
use crate::obs::ObsBatch;
use burn::module::Module;
use crate::patches::Patches;
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

impl<B: Backend> MessageEncoder<B> {
    fn forward(&self, bytes: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let x = self.embed.forward(bytes); // [N, L, E]
        let x = Patches::strided1d(self.bytes, MSG_KERNEL, MSG_STRIDE).gather(x);
        let x = relu(self.conv.forward(x)); // [N, P, C]
        let x = x.max_dim(1).squeeze_dim::<2>(1); // [N, C]
        relu(self.out.forward(x))
    }
}

#[derive(Module, Debug)]
pub struct Policy<B: Backend> {
    glyph_embed: Embedding<B>,
    convs: Vec<Linear<B>>,
    glyph_out: Linear<B>,
    stats: Linear<B>,
    message: Option<MessageEncoder<B>>,
    torso: Linear<B>,
    core: GruCell<B>,
    actor: Linear<B>,
    critic: Linear<B>,
    crop_rows: usize,
    crop_cols: usize,
    core_hidden: usize,
}

/// Per-observation outputs: [N, A] logits, [N] values, and (for `act`) the next state.
#[derive(Debug, Clone)]
pub struct PolicyOutput<B: Backend> {
    pub logits: Tensor<B, 2>,
    pub values: Tensor<B, 1>,
}

impl<B: Backend> Policy<B> {
    pub fn new(cfg: &PolicyConfig, spec: &ObsSpec, device: &B::Device) -> Self {
        let c = cfg.glyph_channels;
        assert!(cfg.glyph_conv_layers <= 2, "policy.glyph_conv_layers must be 0, 1 or 2");
        let message = (cfg.message_bytes > 0).then(|| MessageEncoder {
            embed: EmbeddingConfig::new(256, cfg.message_embed).init(device),
            conv: LinearConfig::new(MSG_KERNEL * cfg.message_embed, cfg.message_channels).init(device),
            out: LinearConfig::new(cfg.message_channels, cfg.message_hidden).init(device),
            bytes: cfg.message_bytes.max(MSG_KERNEL),
        });
        let msg_out = if cfg.message_bytes > 0 { cfg.message_hidden } else { 0 };
        let torso_in = cfg.glyph_hidden + cfg.stats_hidden + msg_out;
        // Small final-layer weights keep the initial policy near uniform and values near 0.
        let actor = LinearConfig::new(cfg.core_hidden, spec.num_actions)
            .with_initializer(Initializer::Normal { mean: 0.0, std: 0.01 })
            .init(device);
        Policy {
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
            torso: LinearConfig::new(torso_in, cfg.core_hidden).init(device),
            core: GruCell::new(cfg.core_hidden, cfg.core_hidden, device),
            actor,
            critic: LinearConfig::new(cfg.core_hidden, 1).init(device),
            crop_rows: spec.crop_rows,
            crop_cols: spec.crop_cols,
            core_hidden: cfg.core_hidden,
        }
    }

    pub fn hidden_size(&self) -> usize {
        self.core_hidden
    }

    /// Everything before the recurrent core, for any number of observations at once,
    /// already projected by the GRU's input weights: [N, 3H].
    fn encode(&self, obs: ObsBatch<B>) -> Tensor<B, 2> {
        // 3×3 "same" convolutions over the crop, as gathered linears
        let grid = Patches::grid3x3(self.crop_rows, self.crop_cols);
        let mut g = self.glyph_embed.forward(obs.glyphs); // [N, R·C, E]
        for conv in &self.convs {
            g = relu(conv.forward(grid.gather(g))); // [N, R·C, channels]
        }
        let g = relu(self.glyph_out.forward(g.flatten::<2>(1, 2)));
        let s = relu(self.stats.forward(obs.stats));
        let mut parts = vec![g, s];
        if let Some(m) = &self.message {
            parts.push(m.forward(obs.message));
        }
        let x = relu(self.torso.forward(Tensor::cat(parts, 1)));
        self.core.project_input(x)
    }

    fn heads(&self, h: Tensor<B, 2>) -> PolicyOutput<B> {
        let logits = self.actor.forward(h.clone());
        let values = self.critic.forward(h).squeeze_dim::<1>(1);
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
        let [steps, b] = resets.dims();
        let xi = self.encode(obs); // [(T+1)·B, 3H]
        let width = xi.dims()[1];
        let keep = resets.neg().add_scalar(1.0); // [(T+1), B]
        let mut h = h0;
        let mut hs = Vec::with_capacity(steps);
        for t in 0..steps {
            let mask = keep.clone().slice([t..t + 1, 0..b]).reshape([b, 1]);
            h = h * mask;
            let x_t = xi.clone().slice([t * b..(t + 1) * b, 0..width]);
            h = self.core.step(x_t, h);
            hs.push(h.clone());
        }
        self.heads(Tensor::cat(hs, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CpuAutodiff;
    use burn::tensor::{Distribution, TensorData};

    fn spec() -> ObsSpec {
        ObsSpec { crop_rows: 3, crop_cols: 3, num_glyphs: 5, stats_dim: 2, num_actions: 3 }
    }

    fn obs<B: Backend>(n: usize, seed: u64, dev: &B::Device) -> ObsBatch<B> {
        let mut x = seed;
        let mut next = move || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) as i32
        };
        let g: Vec<i32> = (0..n * 9).map(|_| next().rem_euclid(5)).collect();
        let s: Vec<f32> = (0..n * 2).map(|_| next().rem_euclid(100) as f32 / 100.0).collect();
        let m: Vec<i32> = (0..n * 8).map(|_| next().rem_euclid(256)).collect();
        ObsBatch {
            glyphs: Tensor::from_data(TensorData::new(g, [n, 9]), dev),
            stats: Tensor::from_data(TensorData::new(s, [n, 2]), dev),
            message: Tensor::from_data(TensorData::new(m, [n, 8]), dev),
        }
    }

    fn slice_obs<B: Backend>(o: &ObsBatch<B>, from: usize, to: usize) -> ObsBatch<B> {
        ObsBatch {
            glyphs: o.glyphs.clone().slice([from..to, 0..9]),
            stats: o.stats.clone().slice([from..to, 0..2]),
            message: o.message.clone().slice([from..to, 0..8]),
        }
    }

    /// A reset before step k cuts the recurrence: outputs from k on equal a fresh unroll of
    /// the remaining steps from a zero state, and no gradient reaches the initial state.
    #[test]
    fn gru_state_is_masked_at_episode_boundaries() {
        type B = CpuAutodiff;
        let dev = Default::default();
        let cfg = PolicyConfig { core_hidden: 8, glyph_hidden: 8, stats_hidden: 4, message_bytes: 8, glyph_conv_layers: 1, ..Default::default() };
        let policy = Policy::<B>::new(&cfg, &spec(), &dev);
        let (steps, b, k) = (6, 2, 3);
        let all = obs::<B>(steps * b, 7, &dev);
        let h0 = Tensor::<B, 2>::random([b, 8], Distribution::Normal(0.0, 1.0), &dev).require_grad();
        // env 0 resets before step k; env 1 never does
        let mut resets = vec![0.0f32; steps * b];
        resets[k * b] = 1.0;
        let resets = Tensor::<B, 2>::from_data(TensorData::new(resets, [steps, b]), &dev);
        let full = policy.unroll(all.clone(), h0.clone(), resets);

        // the same env-0 steps from k on, started from zero
        let rows: Vec<usize> = (k..steps).map(|t| t * b).collect();
        let pick = |o: &ObsBatch<B>| {
            let parts: Vec<ObsBatch<B>> = rows.iter().map(|&r| slice_obs(o, r, r + 1)).collect();
            ObsBatch {
                glyphs: Tensor::cat(parts.iter().map(|p| p.glyphs.clone()).collect(), 0),
                stats: Tensor::cat(parts.iter().map(|p| p.stats.clone()).collect(), 0),
                message: Tensor::cat(parts.iter().map(|p| p.message.clone()).collect(), 0),
            }
        };
        let fresh = policy.unroll(pick(&all), Tensor::zeros([1, 8], &dev), Tensor::zeros([steps - k, 1], &dev));
        for (i, &r) in rows.iter().enumerate() {
            let a = full.logits.clone().slice([r..r + 1, 0..3]);
            let f = fresh.logits.clone().slice([i..i + 1, 0..3]);
            let d: f32 = (a - f).abs().max().into_scalar();
            assert!(d < 1e-5, "step {}: masked unroll differs from a fresh one by {d}", k + i);
        }

        // gradient of env 0's post-reset outputs w.r.t. its initial state is exactly zero,
        // while env 1's initial state does receive gradient through its unbroken recurrence
        let post0: Tensor<B, 1> = rows.iter().map(|&r| full.values.clone().slice([r..r + 1])).reduce(|a, b| a + b).unwrap();
        let post1: Tensor<B, 1> = (k..steps).map(|t| full.values.clone().slice([t * b + 1..t * b + 2])).reduce(|a, b| a + b).unwrap();
        let grads = (post0 + post1).backward();
        let g = h0.grad(&grads).unwrap();
        let g0: f32 = g.clone().slice([0..1, 0..8]).abs().sum().into_scalar();
        let g1: f32 = g.slice([1..2, 0..8]).abs().sum().into_scalar();
        assert_eq!(g0, 0.0, "gradient leaked across the episode boundary");
        assert!(g1 > 0.0, "no gradient through an unbroken recurrence");
    }
}
