//! Environments: the `Env` trait every environment implements, the observation layout the
//! policy consumes, vectorised stepping, and the built-in environments.

// NetHack's C `long`s are cast to i64 explicitly: `c_long` is 32 bits on some platforms.
#![allow(clippy::unnecessary_cast)]

pub mod episodes;
pub mod keyroom;
pub mod nethack;
pub mod registry;
pub mod screen;
pub mod spec;
pub mod vec_env;

pub use episodes::{EpisodeRecord, EpisodeTracker};
pub use registry::{make_env, EnvConfig};
pub use screen::Screen;
pub use spec::{GridKind, ObsBuf, ObsSpec, StepOutcome, MESSAGE_LEN, TTY_CELLS};
pub use vec_env::{BatchView, VecEnv, VecStep};

/// Errors an environment reports. The actor restarts an env that returns one.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("unknown environment `{0}` (known: {1})")]
    UnknownEnv(String, String),
    #[error("action {action} out of range: `{env}` has {num_actions} actions")]
    ActionOutOfRange { env: String, action: usize, num_actions: usize },
    #[error("environment `{env}` failed: {reason}")]
    Failed { env: String, reason: String },
    #[error("invalid environment setting `{key}`: {reason}")]
    BadSetting { key: String, reason: String },
}

/// One environment instance. Observations are written into caller-owned buffers so that a
/// vector of envs can fill one contiguous batch without copying.
pub trait Env: Send {
    fn spec(&self) -> &ObsSpec;
    /// Starts a new episode from `seed` and writes its first observation.
    fn reset(&mut self, seed: u64, obs: ObsBuf<'_>) -> Result<(), EnvError>;
    /// Applies `action` and writes the next observation (the terminal one when `done`).
    fn step(&mut self, action: usize, obs: ObsBuf<'_>) -> Result<StepOutcome, EnvError>;
    /// What a person would see now (recordings); `None` for an env without a picture.
    fn screen(&self) -> Option<Screen> {
        None
    }
    /// The caption of the step just taken (what the judge and the intrinsic reward see) when
    /// it differs from the observation's message; `None`: the message is the caption. NetHack
    /// leaves out the questions it puts to the player.
    fn caption(&self) -> Option<&[u8]> {
        None
    }
}
