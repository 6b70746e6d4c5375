//! A feature that `oni run` turns on and the cluster roles leave off unless told: recordings,
//! the run page.

use serde::{Deserialize, Serialize};

/// Whether a feature of a run is on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Switch {
    /// On in `oni run`, off in the cluster roles (`oni actor`, `oni learner`).
    #[default]
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

impl Switch {
    /// Whether it is on, in `oni run` (`in_run`) or in a cluster role.
    pub fn on(self, in_run: bool) -> bool {
        match self {
            Switch::On => true,
            Switch::Off => false,
            Switch::Auto => in_run,
        }
    }
}
