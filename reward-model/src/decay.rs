//! The per-episode count decay of the intrinsic reward (docs/architecture.md, "The method"):
//!
//! `r = α_ext · clip(r_env, ±c) + α_int · r_int(m) · N_ep(m)^(−β)`
//!
//! `N_ep(m)` counts the steps of the current episode whose message was exactly `m`, this one
//! included, so a message pays its full reward once per episode and quickly less after. The
//! actor computes `r_int(m) · N_ep(m)^(−β)`; the learner applies the coefficients and clip.

use std::collections::HashMap;

/// Message counts of one environment's current episode.
#[derive(Debug, Default, Clone)]
pub struct EpisodeCounts {
    counts: HashMap<String, u32>,
}

impl EpisodeCounts {
    /// Counts `caption` and returns its decay factor `N^(−β)`.
    pub fn observe(&mut self, caption: &str, beta: f32) -> f32 {
        let n = match self.counts.get_mut(caption) {
            Some(n) => {
                *n += 1;
                *n
            }
            None => {
                self.counts.insert(caption.to_string(), 1);
                1
            }
        };
        (n as f32).powf(-beta)
    }

    /// A new episode starts.
    pub fn reset(&mut self) {
        self.counts.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_against_hand_worked_values() {
        let mut c = EpisodeCounts::default();
        // β = 3: 1, 1/8, 1/27 for the same message; another message starts at 1
        assert_eq!(c.observe("You see here a brass key.", 3.0), 1.0);
        assert_eq!(c.observe("You see here a brass key.", 3.0), 0.125);
        assert_eq!(c.observe("You unlock the door.", 3.0), 1.0);
        assert!((c.observe("You see here a brass key.", 3.0) - 1.0 / 27.0).abs() < 1e-7);
        c.reset();
        assert_eq!(c.observe("You see here a brass key.", 3.0), 1.0);
        // β = 0: no decay
        assert_eq!(c.observe("You see here a brass key.", 0.0), 1.0);
    }
}
