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
