//! Environment names → constructors, and the `[env]` configuration section.

use crate::keyroom::{Keyroom, KeyroomVariant};
use crate::nethack::{tasks, NetHackConfig, NetHackEnv};
use crate::{Env, EnvError, ObsSpec};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvConfig {
    /// `keyroom-small`, `keyroom-sparse`, or a NetHack task (`nethack-score`, …).
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

fn known() -> String {
    let mut v = vec!["keyroom-small", "keyroom-sparse"];
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
        other => Err(EnvError::UnknownEnv(other.into(), known())),
    }
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
