//! The intrinsic reward on the actor: a task pulls reward-model snapshots from the
//! annotator (`oni_reward_model::pull`), and the stepping thread rewards each step with
//! `r_int(m) · N_ep(m)^(−β)` (`oni_reward_model::decay`). The learner adds `α_int` times
//! this to `α_ext · clip(r_ext)`.

pub use oni_reward_model::pull::{accept, pull_reward_models, RewardSlot};
use oni_reward_model::{normalise, CachedRewards, EpisodeCounts};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IntrinsicConfig {
    /// β of the count decay `N_ep(m)^(−β)`.
    pub beta: f32,
    /// How often to ask the annotator for a newer reward model.
    pub pull_ms: u64,
}

/// Steps between updates of the intrinsic-reward gauges.
const GAUGE_EVERY: u64 = 20_000;

/// Rewards the steps of one group of envs; lives on the stepping thread.
pub struct Rewarder {
    rewards: CachedRewards,
    beta: f32,
    counts: Vec<EpisodeCounts>,
    episode_sum: Vec<f32>,
    window: (u64, u64, f64),
}

impl Rewarder {
    pub fn new(slot: Arc<RewardSlot>, beta: f32, envs: usize) -> Self {
        Rewarder {
            rewards: CachedRewards::new(slot),
            beta,
            counts: vec![EpisodeCounts::default(); envs],
            episode_sum: vec![0.0; envs],
            window: (0, 0, 0.0),
        }
    }

    /// The model version rewards are computed with (0: none yet, every reward is 0).
    pub fn version(&self) -> u64 {
        self.rewards.version()
    }

    /// `r_int(m) · N_ep(m)^(−β)` for each env's caption of this step, with the decay
    /// factors `N_ep(m)^(−β)` themselves; episodes that ended here (`dones`) return their
    /// intrinsic sum in `finished` (else 0) and restart their counts.
    pub fn step(&mut self, captions: &[String], dones: &[bool]) -> StepRewards {
        self.rewards.refresh();
        let keys: Vec<Option<String>> = captions.iter().map(|c| normalise(c)).collect();
        self.rewards.prepare(keys.iter().flatten().map(String::as_str));
        let mut rewards = Vec::with_capacity(captions.len());
        let mut decays = Vec::with_capacity(captions.len());
        let mut finished = vec![0.0; captions.len()];
        for (i, key) in keys.iter().enumerate() {
            let decay = key.as_ref().map_or(0.0, |k| self.counts[i].observe(k, self.beta));
            let r = key.as_ref().map_or(0.0, |k| self.rewards.get(k) * decay);
            self.episode_sum[i] += r;
            rewards.push(r);
            decays.push(decay);
            if dones[i] {
                finished[i] = std::mem::take(&mut self.episode_sum[i]);
                self.counts[i].reset();
            }
            self.window.0 += 1;
            self.window.1 += (r > 0.0) as u64;
            self.window.2 += r as f64;
        }
        if self.window.0 >= GAUGE_EVERY {
            let (n, pos, sum) = std::mem::take(&mut self.window);
            metrics::gauge!(crate::metric_names::INTRINSIC_REWARD_MEAN).set(sum / n as f64);
            metrics::gauge!(crate::metric_names::INTRINSIC_REWARDED_FRACTION).set(pos as f64 / n as f64);
        }
        StepRewards { rewards, decays, finished }
    }
}

pub struct StepRewards {
    pub rewards: Vec<f32>,
    pub decays: Vec<f32>,
    pub finished: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use oni_reward_model::{DistillConfig, Distiller, Example, Kind};
    use std::collections::HashSet;

    /// A hashing model that rewards exactly the captions in `helpful`.
    fn model(version: u64, helpful: &[&str], unhelpful: &[&str]) -> Vec<u8> {
        let mut d = Distiller::new(Kind::Hashing, DistillConfig::default(), 0);
        d.add_labels(helpful.iter().map(|c| Example { caption: c.to_string(), helpful: true }));
        d.add_labels(unhelpful.iter().map(|c| Example { caption: c.to_string(), helpful: false }));
        d.snapshot(version).encode()
    }

    const KEY: &str = "You see here a brass key.";
    const NEWT: &str = "You hit the newt.";

    #[test]
    fn a_damaged_snapshot_is_refused_and_the_previous_model_kept() {
        let slot = RewardSlot::default();
        assert!(accept("actor", &slot, &model(1, &[KEY], &[NEWT]), 1));
        let mut bad = model(2, &[NEWT], &[KEY]);
        let n = bad.len();
        bad[n / 2] ^= 0x40;
        assert!(!accept("actor", &slot, &bad, 2));
        assert!(!accept("actor", &slot, &model(3, &[NEWT], &[KEY]), 4), "version announced and carried must agree");
        let m = slot.latest.lock().unwrap().clone().unwrap();
        assert_eq!((m.version(), m.rewards(&[KEY, NEWT])), (1, vec![1.0, 0.0]));
    }

    #[test]
    fn count_decay_and_episode_sums_against_hand_worked_values() {
        let slot = Arc::new(RewardSlot::default());
        accept("actor", &slot, &model(1, &[KEY], &[NEWT]), 1);
        let mut rw = Rewarder::new(slot, 3.0, 2);
        let caps = |a: &str, b: &str| vec![a.to_string(), b.to_string()];
        // env 0 sees the key message three times, env 1 sees it once among other messages
        let s = rw.step(&caps(KEY, NEWT), &[false, false]);
        assert_eq!((s.rewards, s.decays, s.finished), (vec![1.0, 0.0], vec![1.0, 1.0], vec![0.0, 0.0]));
        let s = rw.step(&caps(&format!("  {KEY} "), ""), &[false, false]);
        assert_eq!(
            (s.rewards, s.decays),
            (vec![0.125, 0.0], vec![0.125, 0.0]),
            "normalised caption counts as the same message"
        );
        let s = rw.step(&caps(KEY, KEY), &[true, false]);
        assert!((s.rewards[0] - 1.0 / 27.0).abs() < 1e-7 && s.rewards[1] == 1.0);
        assert!((s.finished[0] - (1.0 + 0.125 + 1.0 / 27.0)).abs() < 1e-6, "episode sum {}", s.finished[0]);
        // env 0's new episode starts its counts afresh
        let s = rw.step(&caps(KEY, KEY), &[false, true]);
        assert_eq!(s.rewards, vec![1.0, 0.125]);
        assert_eq!(rw.version(), 1);
    }

    #[test]
    fn models_swap_whole_under_load() {
        // v odd rewards KEY only, v even rewards NEWT only: every step must see one model
        let slot = Arc::new(RewardSlot::default());
        accept("actor", &slot, &model(1, &[KEY], &[NEWT]), 1);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = {
            let (slot, stop) = (slot.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut v = 1;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    v += 1;
                    let bytes = if v % 2 == 0 { model(v, &[NEWT], &[KEY]) } else { model(v, &[KEY], &[NEWT]) };
                    assert!(accept("actor", &slot, &bytes, v));
                }
                v
            })
        };
        let mut rw = Rewarder::new(slot, 0.0, 2);
        let caps = vec![KEY.to_string(), NEWT.to_string()];
        let mut seen = HashSet::new();
        // the swapper may be scheduled late on a busy machine: keep stepping until it has swapped
        // a few times (or long enough that it plainly never will) rather than a fixed count
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut steps = 0;
        while steps < 20_000 || (seen.len() < 4 && std::time::Instant::now() < deadline) {
            steps += 1;
            let r = rw.step(&caps, &[true, true]).rewards;
            let want = if rw.version() % 2 == 1 { vec![1.0, 0.0] } else { vec![0.0, 1.0] };
            assert_eq!(r, want, "v{} gave {r:?}", rw.version());
            seen.insert(rw.version());
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let last = swapper.join().unwrap();
        assert!(seen.len() > 2 && last > 2, "{} versions seen while {last} were published", seen.len());
    }
}
