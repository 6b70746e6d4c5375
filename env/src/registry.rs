//! Environment names → constructors, and the `[env]` configuration section.

use crate::keyroom::{Keyroom, KeyroomVariant};
use crate::{Env, EnvError, ObsSpec};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvConfig {
    /// `keyroom-small`, `keyroom-sparse`.
    pub name: String,
    /// Base seed; each (env, episode) derives its own seed from it.
    pub seed: u64,
}

impl Default for EnvConfig {
    fn default() -> Self {
        EnvConfig { name: "keyroom-small".into(), seed: 1 }
    }
}

pub const KNOWN_ENVS: &[&str] = &["keyroom-small", "keyroom-sparse"];

pub fn make_env(cfg: &EnvConfig) -> Result<Box<dyn Env>, EnvError> {
    match cfg.name.as_str() {
        "keyroom-small" => Ok(Box::new(Keyroom::new(KeyroomVariant::Small))),
        "keyroom-sparse" => Ok(Box::new(Keyroom::new(KeyroomVariant::Sparse))),
        other => Err(EnvError::UnknownEnv(other.into(), KNOWN_ENVS.join(", "))),
    }
}

/// The observation spec of an env by name, without keeping the instance.
pub fn env_spec(cfg: &EnvConfig) -> Result<ObsSpec, EnvError> {
    Ok(make_env(cfg)?.spec().clone())
}
