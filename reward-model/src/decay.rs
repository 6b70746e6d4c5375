//! The count decays of the intrinsic reward (docs/architecture.md, "The method"):
//!
//! `r = α_ext · clip(r_env, ±c) + α_int · r_int(m) · N_ep(m)^(−β) · (1 + E(m))^(−γ)`
//!
//! `N_ep(m)` counts the steps of the current episode whose message was exactly `m`, this one
//! included, so a message pays its full reward once per episode and quickly less after.
//! `E(m)` counts the earlier episodes (of the same stepping thread) that met `m`: with γ > 0 a
//! message met in every episode pays less and less over the run, so one wrong "helpful" on
//! it cannot be collected anew in every episode. γ = 0 (the default) is ONI's reward. The
//! actor computes `r_int(m) · decay`; the learner applies the coefficients and clip.

use std::collections::HashMap;

/// β and γ of the two count decays.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Decay {
    pub beta: f32,
    pub run_gamma: f32,
}

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

/// How many finished episodes met each message, for `(1 + E(m))^(−γ)`. Bounded: past
/// `RUN_COUNTS_CAPACITY` distinct messages, new ones are not counted (they keep paying in
/// full, as without this decay).
#[derive(Debug, Default, Clone)]
pub struct RunCounts {
    episodes: HashMap<String, u32>,
}

pub const RUN_COUNTS_CAPACITY: usize = 1 << 20;

impl RunCounts {
    /// `(1 + E(m))^(−γ)`; exactly 1 when γ is 0.
    pub fn factor(&self, caption: &str, gamma: f32) -> f32 {
        if gamma == 0.0 {
            return 1.0;
        }
        let e = self.episodes.get(caption).copied().unwrap_or(0);
        (1.0 + e as f32).powf(-gamma)
    }

    /// An episode with these counts ended: each message it met counts one more episode.
    pub fn episode_ended(&mut self, episode: &EpisodeCounts) {
        for m in episode.counts.keys() {
            if let Some(e) = self.episodes.get_mut(m) {
                *e = e.saturating_add(1);
            } else if self.episodes.len() < RUN_COUNTS_CAPACITY {
                self.episodes.insert(m.clone(), 1);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.episodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.episodes.is_empty()
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

    #[test]
    fn run_decay_counts_episodes_not_steps() {
        let (key, door) = ("You see here a brass key.", "The door opens.");
        let mut run = RunCounts::default();
        let mut ep = EpisodeCounts::default();
        assert_eq!(run.factor(key, 0.5), 1.0, "a message no episode met pays in full");
        // one episode meets the key three times and the door once
        for m in [key, key, door, key] {
            ep.observe(m, 3.0);
        }
        run.episode_ended(&ep);
        ep.reset();
        ep.observe(key, 3.0);
        run.episode_ended(&ep);
        // key: 2 earlier episodes -> 3^-0.5; door: 1 -> 2^-0.5
        assert!((run.factor(key, 0.5) - 3f32.powf(-0.5)).abs() < 1e-7);
        assert!((run.factor(door, 0.5) - 2f32.powf(-0.5)).abs() < 1e-7);
        assert!((run.factor(key, 1.0) - 1.0 / 3.0).abs() < 1e-7);
        assert_eq!(run.factor(key, 0.0), 1.0, "γ = 0 is ONI's reward");
        assert_eq!(run.len(), 2);
    }
}
