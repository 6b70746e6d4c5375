use crate::screen::Geometry;
use oni_env::{GridKind, ObsSpec, MESSAGE_LEN};
use serde::{Deserialize, Serialize};

/// Where a network runs (`learner.device`, `actor.device`): burn's Flex backend on the CPU,
/// CUDA on an NVIDIA GPU (the `cuda` build feature), or wgpu on any GPU with a Vulkan, Metal
/// or DX12 driver (the `wgpu` build feature).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    #[default]
    Cpu,
    Cuda,
    Wgpu,
}

impl Device {
    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::Wgpu => "wgpu",
        }
    }
}

/// Which network the policy is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Network {
    /// Small and quick: embedded glyph crop (optionally 3×3 convolutions), a linear stats
    /// encoder, a byte CNN over the message prefix, a linear torso, then the GRU.
    #[default]
    GlyphCrop,
    /// ONI's NetHack network: the tty crop as an RGB image through three convolutions
    /// (32, 64, 128 channels) and a linear layer, the stats through an MLP (plus the raw
    /// stats), the message bytes / 255 through an MLP, all concatenated into the GRU;
    /// orthogonal initialisation. Needs `env.nethack.grid = "tty"`.
    Oni,
}

impl std::fmt::Display for Network {
    /// The config value (`policy.network`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Network::GlyphCrop => "glyph-crop",
            Network::Oni => "oni",
        })
    }
}

/// Layer sizes. The observation sizes come from the env's `ObsSpec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub network: Network,
    /// glyph-crop: glyph id embedding width.
    pub glyph_embed: usize,
    /// glyph-crop: number of 3×3 convolutions over the glyph crop (0, 1 or 2); 0 feeds the
    /// embedded crop straight to the linear layer (cheapest on CPU).
    pub glyph_conv_layers: usize,
    /// glyph-crop: channels of those convolutions.
    pub glyph_channels: usize,
    /// glyph-crop: width of the crop encoder's output.
    pub glyph_hidden: usize,
    /// Width of the stats encoder (oni: both layers of its MLP).
    pub stats_hidden: usize,
    /// The message encoder reads the first `message_bytes` bytes (of 256); 0 disables it.
    pub message_bytes: usize,
    /// glyph-crop: byte embedding width of the message encoder.
    pub message_embed: usize,
    /// glyph-crop: CNN channels of the message encoder.
    pub message_channels: usize,
    /// Width of the message encoder's output (oni: both layers of its MLP).
    pub message_hidden: usize,
    /// oni: width of the image encoder's output.
    pub screen_hidden: usize,
    /// GRU hidden size.
    pub core_hidden: usize,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            network: Network::GlyphCrop,
            glyph_embed: 16,
            glyph_conv_layers: 2,
            glyph_channels: 16,
            glyph_hidden: 128,
            stats_hidden: 32,
            message_bytes: 64,
            message_embed: 16,
            message_channels: 32,
            message_hidden: 32,
            screen_hidden: 512,
            core_hidden: 128,
        }
    }
}

impl PolicyConfig {
    /// ONI's NetHack network with ONI's sizes.
    pub fn oni() -> Self {
        PolicyConfig {
            network: Network::Oni,
            stats_hidden: 128,
            message_bytes: 256,
            message_hidden: 128,
            screen_hidden: 512,
            core_hidden: 512,
            ..Default::default()
        }
    }
}

/// A setting that cannot build a network for the observations at hand.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("config key `{key}`: {reason}")]
pub struct PolicyConfigError {
    pub key: &'static str,
    pub reason: String,
}

impl PolicyConfig {
    /// Checks the settings against the env's observations, naming the key at fault.
    pub fn check(&self, spec: &ObsSpec) -> Result<(), PolicyConfigError> {
        let bad = |key, reason: String| Err(PolicyConfigError { key, reason });
        if self.core_hidden == 0 {
            return bad("policy.core_hidden", "must be at least 1".into());
        }
        let mb = self.message_bytes;
        if mb > MESSAGE_LEN || (self.network == Network::GlyphCrop && (1..4).contains(&mb)) {
            return bad("policy.message_bytes", format!("must be 0 (no message encoder) or 4..={MESSAGE_LEN}"));
        }
        match self.network {
            Network::GlyphCrop if self.glyph_conv_layers > 2 => bad("policy.glyph_conv_layers", "must be 0, 1 or 2".into()),
            Network::GlyphCrop => Ok(()),
            Network::Oni if spec.grid != GridKind::Tty => bad(
                "policy.network",
                format!("`oni` draws the terminal and needs tty cells, but the env's crop holds {:?}: set env.nethack.grid = \"tty\"", spec.grid),
            ),
            Network::Oni if !Geometry::new(spec.crop_rows, spec.crop_cols).is_valid() => bad(
                "env.nethack.crop_rows",
                format!("`oni` needs a crop of at least 6×6 cells for its three convolutions, not {}×{}", spec.crop_rows, spec.crop_cols),
            ),
            Network::Oni if self.screen_hidden == 0 || self.stats_hidden == 0 || self.message_hidden == 0 => {
                bad("policy.screen_hidden", "screen_hidden, stats_hidden and message_hidden must be at least 1".into())
            }
            Network::Oni => Ok(()),
        }
    }
}
