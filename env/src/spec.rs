use serde::{Deserialize, Serialize};

/// Messages are carried as this many bytes, zero padded (as NetHack's message buffer).
pub const MESSAGE_LEN: usize = 256;

/// What the cells of the egocentric crop hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum GridKind {
    /// Ids of the env's own symbols (NetHack glyphs, keyroom tiles, attached grids).
    #[default]
    Glyphs,
    /// Terminal cells: `char + 256 · colour` (colour 0–15), as a tty shows them; cells off
    /// the screen are 0 (a blank). ONI's network renders these to pixels.
    Tty,
}

/// Number of distinct tty cell ids (256 characters × 16 colours).
pub const TTY_CELLS: usize = 256 * 16;

/// Shape of the observations an environment produces; the policy is built from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObsSpec {
    /// Egocentric crop, rows × cols, around the hero.
    pub crop_rows: usize,
    pub crop_cols: usize,
    /// Cell ids are in `0..num_glyphs`.
    pub num_glyphs: usize,
    /// What the crop's cells are.
    #[serde(default)]
    pub grid: GridKind,
    /// Length of the normalised stats vector.
    pub stats_dim: usize,
    pub num_actions: usize,
}

impl ObsSpec {
    pub fn crop_len(&self) -> usize {
        self.crop_rows * self.crop_cols
    }
}

/// Mutable views into one env's slot of the observation buffers.
pub struct ObsBuf<'a> {
    pub glyphs: &'a mut [u16],
    pub stats: &'a mut [f32],
    pub message: &'a mut [u8],
}

/// What one step produced besides the observation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepOutcome {
    pub reward: f32,
    pub done: bool,
    /// The episode reached its goal (counts towards the success rate).
    pub success: bool,
    /// The episode was cut by a time limit, not ended by the task (`done` is set too). The
    /// return did not end here, so learners bootstrap from the value of the final
    /// observation instead of taking it as zero.
    pub truncated: bool,
    /// The env's own measure of how well the episode is going (NetHack's in-game score),
    /// reported with the episode when it ends; `None` where the env has none.
    pub score: Option<f32>,
}

/// Writes `text` as a zero-padded message, truncated to the buffer.
pub fn write_message(buf: &mut [u8], text: &[u8]) {
    let n = text.len().min(buf.len());
    buf[..n].copy_from_slice(&text[..n]);
    buf[n..].fill(0);
}

/// The text of a zero-padded message buffer (up to the first NUL), lossy UTF-8.
pub fn message_text(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
