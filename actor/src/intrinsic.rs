//! The intrinsic reward on the actor: a task pulls reward-model snapshots from the
//! annotator (`oni_reward_model::pull`), and the stepping thread rewards each step with
//! `r_int(m) · N_ep(m)^(−β) · (1 + E(m))^(−γ)` (`oni_reward_model::decay`). The learner adds `α_int` times
//! this to `α_ext · clip(r_ext)`.

pub use oni_reward_model::pull::{accept, pull_reward_models, RewardSlot};
use oni_reward_model::{normalise, CachedRewards, Decay, EpisodeCounts, RunCounts};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IntrinsicConfig {
    /// β of the count decay `N_ep(m)^(−β)` and γ of the run-level one `(1 + E(m))^(−γ)`.
    pub decay: Decay,
    /// How often to ask the annotator for a newer reward model.
    pub pull_ms: u64,
}

/// Steps between updates of the intrinsic-reward gauges.
const GAUGE_EVERY: u64 = 20_000;

/// Most distinct captions a ledger names; the rest are summed under `OTHER`.
const LEDGER_CAPTIONS: usize = 4096;
pub const OTHER: &str = "(other captions)";

/// What the intrinsic reward paid for, and how much of what the agents met the LLM had
/// judged: the diagnosis of an online ONI run. The stepping threads add to one ledger per
/// process every `GAUGE_EVERY` steps; `oni run` writes it into each metrics.jsonl row (and
/// sums it for the run page's label table), a lone actor logs its top captions.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Ledger {
    /// Steps whose observation carried a message.
    pub captioned: u64,
    /// Of those, steps whose caption the reward model's labels cover.
    pub labelled: u64,
    /// Per caption: how often it was met and what it was paid.
    pub captions: HashMap<String, Booked>,
}

/// One caption's steps in a ledger.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Booked {
    /// Steps whose caption it was.
    pub met: u64,
    /// Of those, steps paid an intrinsic reward.
    pub paid_steps: u64,
    /// The intrinsic reward paid (`r_int · N_ep^(−β)`, before α_int).
    pub paid: f64,
}

impl Booked {
    fn plus(self, o: Booked) -> Booked {
        Booked { met: self.met + o.met, paid_steps: self.paid_steps + o.paid_steps, paid: self.paid + o.paid }
    }
}

impl Ledger {
    /// Books steps to a caption (to `OTHER` once the ledger names `LEDGER_CAPTIONS`);
    /// allocates only for a caption new to the ledger.
    fn add(&mut self, caption: &str, b: Booked) {
        let key =
            if self.captions.contains_key(caption) || self.captions.len() < LEDGER_CAPTIONS { caption } else { OTHER };
        match self.captions.get_mut(key) {
            Some(e) => *e = e.plus(b),
            None => {
                self.captions.insert(key.to_string(), b);
            }
        }
    }

    fn merge(&mut self, other: Ledger) {
        self.captioned += other.captioned;
        self.labelled += other.labelled;
        for (c, b) in other.captions {
            self.add(&c, b);
        }
    }

    /// The share of captioned steps the LLM had judged; `None` without any.
    pub fn labelled_share(&self) -> Option<f64> {
        (self.captioned > 0).then(|| self.labelled as f64 / self.captioned as f64)
    }

    /// The `n` captions paid the most, most first: (caption, steps paid, reward paid).
    pub fn top(&self, n: usize) -> Vec<(String, u64, f64)> {
        let mut v: Vec<(String, u64, f64)> = self
            .captions
            .iter()
            .filter(|(_, b)| b.paid_steps > 0)
            .map(|(c, b)| (c.clone(), b.paid_steps, b.paid))
            .collect();
        v.sort_by(|a, b| b.2.total_cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}

static LEDGER: Mutex<Option<Ledger>> = Mutex::new(None);

/// This process's ledger since the last take.
pub fn take_ledger() -> Ledger {
    LEDGER.lock().unwrap().take().unwrap_or_default()
}

/// Rewards the steps of one group of envs; lives on the stepping thread.
pub struct Rewarder {
    rewards: CachedRewards,
    decay: Decay,
    counts: Vec<EpisodeCounts>,
    run_counts: RunCounts,
    episode_sum: Vec<f32>,
    window: (u64, u64, f64),
    ledger: Ledger,
    /// The last step's normalised captions and rewards (recordings read them).
    last_keys: Vec<Option<String>>,
    last_rewards: Vec<f32>,
}

/// What one env's last step was paid, and what the judge said about its caption.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Paid {
    pub reward: f32,
    pub judged: bool,
    pub label: Option<bool>,
}

impl Rewarder {
    pub fn new(slot: Arc<RewardSlot>, decay: Decay, envs: usize) -> Self {
        Rewarder {
            rewards: CachedRewards::new(slot),
            decay,
            counts: vec![EpisodeCounts::default(); envs],
            run_counts: RunCounts::default(),
            episode_sum: vec![0.0; envs],
            window: (0, 0, 0.0),
            ledger: Ledger::default(),
            last_keys: Vec::new(),
            last_rewards: Vec::new(),
        }
    }

    /// The model version rewards are computed with (0: none yet, every reward is 0).
    pub fn version(&self) -> u64 {
        self.rewards.version()
    }

    /// Env `i`'s last step: its reward and its caption's label; `None` before any step.
    pub fn paid(&self, i: usize) -> Option<Paid> {
        let reward = *self.last_rewards.get(i)?;
        let key = self.last_keys.get(i)?.as_deref();
        Some(Paid {
            reward,
            judged: key.is_some_and(|k| self.rewards.is_labelled(k)),
            label: key.and_then(|k| self.rewards.label(k)),
        })
    }

    /// `r_int(m) · N_ep(m)^(−β) · (1 + E(m))^(−γ)` for each env's caption of this step, with
    /// the decay factors themselves; episodes that ended here (`dones`) return their
    /// intrinsic sum in `finished` (else 0), count towards `E`, and restart their counts.
    pub fn step(&mut self, captions: &[String], dones: &[bool]) -> StepRewards {
        self.rewards.refresh();
        let keys: Vec<Option<String>> = captions.iter().map(|c| normalise(c)).collect();
        self.rewards.prepare(keys.iter().flatten().map(String::as_str));
        let mut rewards = Vec::with_capacity(captions.len());
        let mut decays = Vec::with_capacity(captions.len());
        let mut finished = vec![0.0; captions.len()];
        let Decay { beta, run_gamma } = self.decay;
        for (i, key) in keys.iter().enumerate() {
            let decay =
                key.as_ref().map_or(0.0, |k| self.counts[i].observe(k, beta) * self.run_counts.factor(k, run_gamma));
            let r = key.as_ref().map_or(0.0, |k| self.rewards.get(k) * decay);
            if let Some(k) = key {
                self.ledger.captioned += 1;
                self.ledger.labelled += self.rewards.is_labelled(k) as u64;
                self.ledger.add(k, Booked { met: 1, paid_steps: (r > 0.0) as u64, paid: r as f64 });
            }
            self.episode_sum[i] += r;
            rewards.push(r);
            decays.push(decay);
            if dones[i] {
                finished[i] = std::mem::take(&mut self.episode_sum[i]);
            }
            self.window.0 += 1;
            self.window.1 += (r > 0.0) as u64;
            self.window.2 += r as f64;
        }
        // after every env's reward, so an episode ending here does not lower the reward of an
        // env stepped after it in the same step
        for (i, _) in dones.iter().enumerate().filter(|(_, &d)| d) {
            if run_gamma != 0.0 {
                self.run_counts.episode_ended(&self.counts[i]);
            }
            self.counts[i].reset();
        }
        if self.window.0 >= GAUGE_EVERY {
            let (n, pos, sum) = std::mem::take(&mut self.window);
            metrics::gauge!(crate::metric_names::INTRINSIC_REWARD_MEAN).set(sum / n as f64);
            metrics::gauge!(crate::metric_names::INTRINSIC_REWARDED_FRACTION).set(pos as f64 / n as f64);
            let ledger = std::mem::take(&mut self.ledger);
            if let Some(share) = ledger.labelled_share() {
                metrics::gauge!(crate::metric_names::INTRINSIC_LABELLED_FRACTION).set(share);
            }
            LEDGER.lock().unwrap().get_or_insert_with(Ledger::default).merge(ledger);
        }
        self.last_keys = keys;
        self.last_rewards.clone_from(&rewards);
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

    /// A rewarder for two envs under a model that pays exactly KEY.
    fn key_rewarder(beta: f32, run_gamma: f32) -> Rewarder {
        let slot = Arc::new(RewardSlot::default());
        accept("actor", &slot, &model(1, &[KEY], &[NEWT]), 1);
        Rewarder::new(slot, Decay { beta, run_gamma }, 2)
    }

    fn caps(a: &str, b: &str) -> Vec<String> {
        vec![a.to_string(), b.to_string()]
    }

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
        let mut rw = key_rewarder(3.0, 0.0);
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
    fn the_run_decay_pays_a_message_less_in_each_later_episode_that_meets_it() {
        let mut rw = key_rewarder(3.0, 1.0);
        // both envs' first episodes pay the key in full; env 0's ends, env 1's goes on
        let s = rw.step(&caps(KEY, KEY), &[true, false]);
        assert_eq!(s.rewards, vec![1.0, 1.0]);
        // env 0's second episode: one earlier episode met the key, (1 + 1)^-1
        let s = rw.step(&caps(KEY, NEWT), &[false, false]);
        assert_eq!((s.rewards, s.decays), (vec![0.5, 0.0], vec![0.5, 1.0]));
        // within an episode the per-episode decay still applies on top: 1/8 · 1/2
        let s = rw.step(&caps(KEY, NEWT), &[true, true]);
        assert_eq!(s.rewards[0], 0.0625);
        assert!((s.finished[0] - 0.5625).abs() < 1e-6, "{}", s.finished[0]);
        // three episodes have met the key now (env 0 twice, env 1 once), and one the newt
        let s = rw.step(&caps(KEY, KEY), &[false, false]);
        assert_eq!(s.rewards, vec![0.25, 0.25]);
        assert_eq!(s.decays, vec![0.25, 0.25]);
    }

    #[test]
    fn the_ledger_books_what_was_paid_and_how_much_the_judge_had_seen() {
        let mut rw = key_rewarder(3.0, 0.0);
        rw.step(&caps(KEY, NEWT), &[false, false]);
        rw.step(&caps(KEY, "It's a wall."), &[false, false]);
        rw.step(&caps("", KEY), &[false, false]);
        let l = &rw.ledger;
        // five steps with a message, four of them judged (the wall was never labelled)
        assert_eq!((l.captioned, l.labelled), (5, 4));
        assert_eq!(l.labelled_share(), Some(0.8));
        let top = l.top(5);
        assert_eq!(top.len(), 1, "only the key was paid: {top:?}");
        // every caption met is counted, paid or not
        assert_eq!(l.captions["It's a wall."], Booked { met: 1, paid_steps: 0, paid: 0.0 });
        assert_eq!(l.captions[KEY].met, 3);
        assert_eq!((top[0].0.as_str(), top[0].1), (KEY, 3));
        assert!((top[0].2 - (1.0 + 0.125 + 1.0)).abs() < 1e-6, "env 0 paid 1 then 1/8, env 1 paid 1: {}", top[0].2);

        // bounded: past LEDGER_CAPTIONS distinct captions the rest are summed as one
        let mut big = Ledger::default();
        let one = Booked { met: 1, paid_steps: 1, paid: 1.0 };
        for i in 0..LEDGER_CAPTIONS + 10 {
            big.add(&format!("caption {i}"), one);
        }
        big.add("caption 0", one);
        assert_eq!(big.captions.len(), LEDGER_CAPTIONS + 1);
        assert_eq!(big.captions[OTHER], Booked { met: 10, paid_steps: 10, paid: 10.0 });
        assert_eq!(
            big.captions["caption 0"],
            Booked { met: 2, paid_steps: 2, paid: 2.0 },
            "a caption already named keeps its own line"
        );
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
        let mut rw = Rewarder::new(slot, Decay { beta: 0.0, run_gamma: 0.0 }, 2);
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
