use serde::{Deserialize, Serialize};

/// Layer sizes. The observation sizes come from the env's `ObsSpec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Glyph id embedding width.
    pub glyph_embed: usize,
    /// Number of 3×3 convolutions over the glyph crop (0, 1 or 2); 0 feeds the embedded
    /// crop straight to the linear layer (cheapest on CPU).
    pub glyph_conv_layers: usize,
    /// Channels of those convolutions.
    pub glyph_channels: usize,
    pub glyph_hidden: usize,
    pub stats_hidden: usize,
    /// The message encoder reads the first `message_bytes` bytes (of 256); 0 disables it.
    pub message_bytes: usize,
    pub message_embed: usize,
    pub message_channels: usize,
    pub message_hidden: usize,
    /// GRU hidden size.
    pub core_hidden: usize,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            glyph_embed: 16,
            glyph_conv_layers: 2,
            glyph_channels: 16,
            glyph_hidden: 128,
            stats_hidden: 32,
            message_bytes: 64,
            message_embed: 16,
            message_channels: 32,
            message_hidden: 32,
            core_hidden: 128,
        }
    }
}
