//! What one training update holds in memory, worked out from the config before anything is
//! allocated, so that a batch or network too big for the machine stops at start with its
//! sizes instead of dying in an allocation inside a kernel (or under the OOM killer).
//!
//! The count follows the layers as `network.rs` runs them: parameters four times (weights,
//! gradients, Adam's two moments) and, per observation, every intermediate the backward pass
//! keeps (pre- and post-activation maps, the GRU's gates; gathered convolution patches twice,
//! as their gradient is as large), times a small margin. Against the peak RSS of
//! `oni bench learner` at 1 056 and 4 224 observations the per-observation figure came out
//! 18 % low on keyroom's tiny network and about 20 % high on the two NetHack networks.

use crate::config::{Network, PolicyConfig};
use crate::screen::{Geometry, CHANNELS, K1};
use oni_env::ObsSpec;

/// Live floats per observation relative to the stored intermediates (their gradients and
/// the backward pass's temporaries on top of the forward pass's saved tensors).
const ACTIVATION_MARGIN: f64 = 1.1;
/// Bytes the process needs besides the update (code, allocator, runtime, rollout queue).
const BASE_BYTES: u64 = 64 << 20;

/// The sizes behind one update's memory need.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdateMemory {
    pub params: usize,
    /// Intermediate floats the forward pass keeps per observation.
    pub floats_per_obs: usize,
    /// Observations in one update ((T + 1) · B).
    pub observations: usize,
}

impl UpdateMemory {
    pub fn bytes(&self) -> u64 {
        let params = 4 * 4 * self.params as u64;
        let acts = 4.0 * ACTIVATION_MARGIN * self.floats_per_obs as f64 * self.observations as f64;
        BASE_BYTES + params + acts as u64
    }
}

fn linear(d_in: usize, d_out: usize) -> usize {
    (d_in + 1) * d_out
}

impl PolicyConfig {
    /// The memory of one update over `observations` observations of `spec`.
    pub fn update_memory(&self, spec: &ObsSpec, observations: usize) -> UpdateMemory {
        let h = self.core_hidden;
        let (enc_params, enc_floats, core_in) = match self.network {
            Network::GlyphCrop => self.glyph_crop_sizes(spec),
            Network::Oni => self.oni_sizes(spec),
        };
        let heads = linear(h, spec.num_actions) + linear(h, 1);
        let core = linear(core_in, 3 * h) + linear(h, 3 * h);
        // the input projection, the gates (r, z, n and the hidden projection) and the state
        let core_floats = 3 * h + 6 * h + 2 * h;
        UpdateMemory {
            params: enc_params + core + heads,
            floats_per_obs: enc_floats + core_floats + 2 * (spec.num_actions + 1),
            observations,
        }
    }

    /// (parameters, floats per observation, width into the core)
    fn glyph_crop_sizes(&self, spec: &ObsSpec) -> (usize, usize, usize) {
        let cells = spec.crop_len();
        let (e, c) = (self.glyph_embed, self.glyph_channels);
        let mut params = spec.num_glyphs * e;
        let mut floats = cells * e;
        let mut width = e;
        for _ in 0..self.glyph_conv_layers {
            params += linear(9 * width, c);
            floats += 2 * cells * 9 * width + 2 * cells * c; // patches and their gradient, output before/after ReLU
            width = c;
        }
        params += linear(cells * width, self.glyph_hidden) + linear(spec.stats_dim, self.stats_hidden);
        floats += 2 * (self.glyph_hidden + self.stats_hidden);
        let mut torso_in = self.glyph_hidden + self.stats_hidden;
        if self.message_bytes > 0 {
            let (me, mc, mh) = (self.message_embed, self.message_channels, self.message_hidden);
            let positions = (self.message_bytes.max(4) - 4) / 2 + 1;
            params += 256 * me + linear(4 * me, mc) + linear(mc, mh);
            floats += self.message_bytes * me + positions * (2 * 4 * me + 2 * mc) + mc + 2 * mh;
            torso_in += mh;
        }
        params += linear(torso_in, self.core_hidden);
        floats += torso_in + 2 * self.core_hidden;
        (params, floats, self.core_hidden)
    }

    fn oni_sizes(&self, spec: &ObsSpec) -> (usize, usize, usize) {
        let geo = Geometry::new(spec.crop_rows, spec.crop_cols);
        let [c1, c2, c3] = CHANNELS;
        let [(h1, w1), (h2, w2), (h3, w3)] = geo.maps;
        let mut params = linear(3 * K1 * K1, c1)
            + linear(16 * c1, c2)
            + linear(9 * c2, c3)
            + linear(geo.features(), self.screen_hidden);
        // first layer: the sum of four table rows, then ELU; the patches (twice) and ELU'd
        // maps of the two strided convolutions; the linear layer
        let mut floats = h1 * w1 * c1 * 3
            + h2 * w2 * (2 * 16 * c1 + 2 * c2)
            + h3 * w3 * (2 * 9 * c2 + 2 * c3)
            + 2 * self.screen_hidden;
        params += linear(spec.stats_dim, self.stats_hidden) + linear(self.stats_hidden, self.stats_hidden);
        floats += spec.stats_dim + 4 * self.stats_hidden;
        let mut width = self.screen_hidden + self.stats_hidden + spec.stats_dim;
        if self.message_bytes > 0 {
            let mh = self.message_hidden;
            params += linear(self.message_bytes, mh) + linear(mh, mh);
            floats += self.message_bytes + 4 * mh;
            width += mh;
        }
        floats += width; // the concatenation
        (params, floats, width)
    }
}

/// Bytes of memory the system can still hand out (`MemAvailable`, Linux), or None where it
/// cannot be read.
pub fn available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CpuBackend, Policy};
    use burn::module::Module;
    use oni_env::GridKind;

    /// NetHack as ONI's network sees it: the 12×12 tty crop, 27 stats, 28 actions.
    fn onis_nethack_spec() -> ObsSpec {
        use oni_env::nethack::NetHackConfig;
        let cfg = NetHackConfig { grid: GridKind::Tty, crop_rows: 12, crop_cols: 12, ..Default::default() };
        oni_env::nethack::spec(&cfg).unwrap()
    }

    fn keyroom_spec() -> ObsSpec {
        use oni_env::Env;
        oni_env::keyroom::Keyroom::new(oni_env::keyroom::KeyroomVariant::Small).spec().clone()
    }

    fn params_built(cfg: &PolicyConfig, spec: &ObsSpec) -> usize {
        Policy::<CpuBackend>::new(cfg, spec, &Default::default()).num_params()
    }

    /// The parameter count is worked out exactly, for both networks and with or without
    /// messages and convolutions, so the estimate follows any change to the layers.
    #[test]
    fn parameter_counts_match_the_built_networks() {
        let nethack = onis_nethack_spec();
        let oni = PolicyConfig::oni();
        assert_eq!(oni.update_memory(&nethack, 1).params, params_built(&oni, &nethack));
        let quiet = PolicyConfig { message_bytes: 0, screen_hidden: 64, core_hidden: 32, ..PolicyConfig::oni() };
        assert_eq!(quiet.update_memory(&nethack, 1).params, params_built(&quiet, &nethack));

        let keyroom = keyroom_spec();
        for cfg in [
            PolicyConfig::default(),
            PolicyConfig { glyph_conv_layers: 0, message_bytes: 0, ..Default::default() },
            PolicyConfig { glyph_conv_layers: 3, message_bytes: 64, ..Default::default() },
        ] {
            assert_eq!(cfg.update_memory(&keyroom, 1).params, params_built(&cfg, &keyroom), "{cfg:?}");
        }
    }

    #[test]
    fn memory_grows_with_the_batch() {
        let spec = keyroom_spec();
        let cfg = PolicyConfig::default();
        let (a, b) = (cfg.update_memory(&spec, 1000), cfg.update_memory(&spec, 2000));
        let per_obs = (b.bytes() - a.bytes()) as f64 / 1000.0;
        assert!((per_obs - 4.0 * ACTIVATION_MARGIN * a.floats_per_obs as f64).abs() < 0.01, "{per_obs}");
        assert!(available_bytes().is_some_and(|b| b > 0), "/proc/meminfo has MemAvailable on Linux");
    }
}
