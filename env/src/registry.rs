//! Environment names → constructors, and the `[env]` configuration section.

use crate::keyroom::{Keyroom, KeyroomVariant};
use crate::nethack::{tasks, NetHackConfig, NetHackEnv};
use crate::{Env, EnvError, ObsSpec};
use serde::{Deserialize, Serialize};

/// `[env]`: which environment the actors step.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EnvConfig {
    /// `keyroom-small`, `keyroom-sparse`, a NetHack task (`nethack-score`, …), or `attached`
    /// (environments attached over gRPC).
    pub name: String,
    /// Base seed; each (env, episode) derives its own seed from it.
    pub seed: u64,
    pub nethack: NetHackConfig,
}

impl Default for EnvConfig {
    fn default() -> Self {
        EnvConfig { name: "keyroom-small".into(), seed: 1, nethack: NetHackConfig::default() }
    }
}

/// The env name of environments attached over gRPC by clients (`oni.v1.EnvHub`).
pub const ATTACHED: &str = "attached";

fn known() -> String {
    let mut v = vec!["keyroom-small", "keyroom-sparse", ATTACHED];
    v.extend(tasks::TASKS.iter().map(|(n, _)| *n));
    v.join(", ")
}

pub fn make_env(cfg: &EnvConfig) -> Result<Box<dyn Env>, EnvError> {
    match cfg.name.as_str() {
        "keyroom-small" => Ok(Box::new(Keyroom::new(KeyroomVariant::Small))),
        "keyroom-sparse" => Ok(Box::new(Keyroom::new(KeyroomVariant::Sparse))),
        n if n.starts_with("nethack-") => {
            tasks::parse(n).map_err(|_| EnvError::UnknownEnv(n.into(), known()))?;
            Ok(Box::new(NetHackEnv::new(n, &cfg.nethack)?))
        }
        ATTACHED => Err(EnvError::BadSetting {
            key: "env.name".into(),
            reason: "attached environments are stepped by their clients, not created by the actor".into(),
        }),
        other => Err(EnvError::UnknownEnv(other.into(), known())),
    }
}

/// The observation layout of a built-in env, or `None` for attached environments (declared
/// by their first client).
pub fn known_spec(cfg: &EnvConfig) -> Result<Option<ObsSpec>, EnvError> {
    if cfg.name == ATTACHED {
        return Ok(None);
    }
    env_spec(cfg).map(Some)
}

/// The observation spec of an env by name. For NetHack this also checks that the library
/// is installed and of the right version, so a bad setup fails at start.
pub fn env_spec(cfg: &EnvConfig) -> Result<ObsSpec, EnvError> {
    if cfg.name.starts_with("nethack-") {
        tasks::parse(&cfg.name).map_err(|_| EnvError::UnknownEnv(cfg.name.clone(), known()))?;
        crate::nethack::library(&cfg.nethack)?;
        return crate::nethack::spec(&cfg.nethack);
    }
    Ok(make_env(cfg)?.spec().clone())
}
