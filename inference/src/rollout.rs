//! Accumulates one group of envs' steps into per-env rollouts. All envs of a group step in
//! lockstep, so their rollouts fill and are emitted together.

use oni_env::{spec::message_text, BatchView, ObsSpec, MESSAGE_LEN};
use oni_proto::v1::{EpisodeSummary, Rollout};

pub struct GroupRollouts {
    steps: usize,
    n: usize,
    t: usize,
    started: bool,
    spec: ObsSpec,
    first_slot: usize,
    policy_version: u64,
    initial_state: Vec<f32>,
    glyphs: Vec<Vec<u8>>,
    stats: Vec<Vec<f32>>,
    messages: Vec<Vec<u8>>,
    actions: Vec<Vec<u32>>,
    logp: Vec<Vec<f32>>,
    rewards: Vec<Vec<f32>>,
    intrinsic: Vec<Vec<f32>>,
    decay: Vec<Vec<f32>>,
    reward_model_version: u64,
    dones: Vec<Vec<bool>>,
    truncated: Vec<Vec<bool>>,
    finals: Vec<FinalObs>,
    captions: Vec<Vec<String>>,
    episodes: Vec<Vec<EpisodeSummary>>,
}

/// One env's final observations of time-limited episodes, in the rollout's wire layout.
#[derive(Default)]
struct FinalObs {
    glyphs: Vec<u8>,
    stats: Vec<f32>,
    messages: Vec<u8>,
}

impl GroupRollouts {
    pub fn new(spec: &ObsSpec, steps: usize, n: usize, first_slot: usize) -> Self {
        let mut g = GroupRollouts {
            steps,
            n,
            t: 0,
            started: false,
            spec: spec.clone(),
            first_slot,
            policy_version: 0,
            initial_state: Vec::new(),
            glyphs: Vec::new(),
            stats: Vec::new(),
            messages: Vec::new(),
            actions: Vec::new(),
            logp: Vec::new(),
            rewards: Vec::new(),
            intrinsic: Vec::new(),
            decay: Vec::new(),
            reward_model_version: 0,
            dones: Vec::new(),
            truncated: Vec::new(),
            finals: Vec::new(),
            captions: Vec::new(),
            episodes: Vec::new(),
        };
        g.clear();
        g
    }

    fn clear(&mut self) {
        let (n, t) = (self.n, self.steps);
        self.t = 0;
        self.glyphs = (0..n).map(|_| Vec::with_capacity((t + 1) * self.spec.crop_len() * 2)).collect();
        self.stats = (0..n).map(|_| Vec::with_capacity((t + 1) * self.spec.stats_dim)).collect();
        self.messages = (0..n).map(|_| Vec::with_capacity((t + 1) * MESSAGE_LEN)).collect();
        self.actions = (0..n).map(|_| Vec::with_capacity(t)).collect();
        self.logp = (0..n).map(|_| Vec::with_capacity(t)).collect();
        self.rewards = (0..n).map(|_| Vec::with_capacity(t)).collect();
        self.intrinsic = (0..n).map(|_| Vec::new()).collect();
        self.decay = (0..n).map(|_| Vec::new()).collect();
        self.dones = (0..n).map(|_| Vec::with_capacity(t)).collect();
        self.truncated = (0..n).map(|_| Vec::with_capacity(t)).collect();
        self.finals = (0..n).map(|_| FinalObs::default()).collect();
        self.captions = (0..n).map(|_| Vec::with_capacity(t)).collect();
        self.episodes = (0..n).map(|_| Vec::new()).collect();
    }

    fn push_obs(&mut self, envs: &BatchView<'_>) {
        let (c, s) = (self.spec.crop_len(), self.spec.stats_dim);
        for i in 0..self.n {
            self.glyphs[i].extend(envs.glyphs[i * c..(i + 1) * c].iter().flat_map(|g| g.to_le_bytes()));
            self.stats[i].extend_from_slice(&envs.stats[i * s..(i + 1) * s]);
            self.messages[i].extend_from_slice(&envs.messages[i * MESSAGE_LEN..(i + 1) * MESSAGE_LEN]);
        }
    }

    /// Records the observations about to be acted on. When T steps are complete this
    /// observation is also the bootstrap of the finished rollouts, which are returned; the
    /// next rollouts start from it with `hidden` ([n·H], the state before it) as their
    /// initial state.
    pub fn observe(&mut self, envs: &BatchView<'_>, hidden: &[f32], policy_version: u64, run: &RunIds) -> Vec<Rollout> {
        let mut out = Vec::new();
        if self.started && self.t == self.steps {
            self.push_obs(envs);
            out = self.emit(run);
            self.clear();
        }
        if self.t == 0 {
            self.started = true;
            self.policy_version = policy_version;
            self.initial_state = hidden.to_vec();
        }
        self.push_obs(envs);
        out
    }

    pub fn act(&mut self, actions: &[(usize, f32)]) {
        for (i, &(a, lp)) in actions.iter().enumerate() {
            self.actions[i].push(a as u32);
            self.logp[i].push(lp);
        }
    }

    /// Records a step's outcome; with `intrinsic`, also each env's intrinsic reward.
    pub fn stepped(&mut self, envs: &BatchView<'_>, env_offset: usize, intrinsic: Option<IntrinsicStep>) {
        let last = envs.last;
        for i in 0..self.n {
            self.rewards[i].push(last.rewards[i]);
            self.dones[i].push(last.dones[i]);
            self.truncated[i].push(last.truncated[i]);
            self.captions[i].push(message_text(&last.captions[i * MESSAGE_LEN..(i + 1) * MESSAGE_LEN]));
        }
        for (k, &i) in last.finals.envs.iter().enumerate() {
            let (g, st, m) = last.finals.get(k);
            let f = &mut self.finals[i];
            f.glyphs.extend(g.iter().flat_map(|g| g.to_le_bytes()));
            f.stats.extend_from_slice(st);
            f.messages.extend_from_slice(m);
        }
        let mut episode_intrinsic = vec![0.0; self.n];
        if let Some(s) = intrinsic {
            for (i, (r, d)) in s.rewards.into_iter().zip(s.decays).enumerate() {
                self.intrinsic[i].push(r);
                self.decay[i].push(d);
            }
            episode_intrinsic = s.finished;
            self.reward_model_version = s.version;
        }
        for e in &last.episodes {
            self.episodes[e.env_index - env_offset].push(EpisodeSummary {
                extrinsic_return: e.extrinsic_return,
                intrinsic_return: episode_intrinsic[e.env_index - env_offset],
                length: e.length,
                success: e.success,
                score: e.score,
            });
        }
        self.t += 1;
    }

    /// Envs whose unfinished rollout holds at least one step (dropped when a group goes away).
    pub fn partial(&self) -> usize {
        if self.started && self.t > 0 {
            self.n
        } else {
            0
        }
    }

    fn emit(&mut self, run: &RunIds) -> Vec<Rollout> {
        let h = self.initial_state.len() / self.n.max(1);
        (0..self.n)
            .map(|i| {
                let slot = (self.first_slot + i) as u32;
                Rollout {
                    run_id: run.run_id.clone(),
                    actor_id: run.actor_id.clone(),
                    env_slot: slot,
                    sequence: run.next_sequence(slot),
                    policy_version: self.policy_version,
                    length: self.steps as u32,
                    initial_state: self.initial_state[i * h..(i + 1) * h].to_vec(),
                    glyphs: std::mem::take(&mut self.glyphs[i]),
                    stats: std::mem::take(&mut self.stats[i]),
                    messages: std::mem::take(&mut self.messages[i]),
                    actions: std::mem::take(&mut self.actions[i]),
                    behaviour_logprobs: std::mem::take(&mut self.logp[i]),
                    rewards: std::mem::take(&mut self.rewards[i]),
                    dones: std::mem::take(&mut self.dones[i]),
                    captions: std::mem::take(&mut self.captions[i]),
                    intrinsic_rewards: std::mem::take(&mut self.intrinsic[i]),
                    reward_model_version: self.reward_model_version,
                    intrinsic_decay: std::mem::take(&mut self.decay[i]),
                    episodes: std::mem::take(&mut self.episodes[i]),
                    truncated: if self.truncated[i].contains(&true) {
                        std::mem::take(&mut self.truncated[i])
                    } else {
                        Vec::new()
                    },
                    final_glyphs: std::mem::take(&mut self.finals[i].glyphs),
                    final_stats: std::mem::take(&mut self.finals[i].stats),
                    final_messages: std::mem::take(&mut self.finals[i].messages),
                }
            })
            .collect()
    }
}

/// The intrinsic reward of one step of a group: `r_int(m) · N_ep(m)^(−β)` per env, the
/// decays `N_ep(m)^(−β)`, each env's intrinsic return when its episode ended here (else 0),
/// and the reward model's version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IntrinsicStep {
    pub rewards: Vec<f32>,
    pub decays: Vec<f32>,
    pub finished: Vec<f32>,
    pub version: u64,
}

/// Each env's caption of the step `envs.last` records.
pub fn step_captions(envs: &BatchView<'_>) -> Vec<String> {
    envs.last.captions.chunks_exact(MESSAGE_LEN).map(message_text).collect()
}

/// This actor process's identity and per-slot rollout counters.
pub struct RunIds {
    pub run_id: String,
    pub actor_id: String,
    sequences: std::sync::Mutex<std::collections::HashMap<u32, u64>>,
}

impl RunIds {
    pub fn new(actor_id: String) -> Self {
        RunIds::with_run(uuid::Uuid::new_v4().to_string(), actor_id)
    }

    /// The ids of a run named elsewhere (the inference service assembles an actor's rollouts
    /// under the actor's own run id).
    pub fn with_run(run_id: String, actor_id: String) -> Self {
        RunIds { run_id, actor_id, sequences: Default::default() }
    }

    fn next_sequence(&self, slot: u32) -> u64 {
        let mut m = self.sequences.lock().unwrap();
        let e = m.entry(slot).or_insert(0);
        let s = *e;
        *e += 1;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oni_env::{GridKind, VecStep};

    /// A group of two envs with a 1×1 crop, stepped with nothing happening.
    fn step(g: &mut GroupRollouts, run: &RunIds) -> Vec<Rollout> {
        let (glyphs, stats, messages) = (vec![1u16, 2], vec![0.0f32; 2], vec![0u8; 2 * MESSAGE_LEN]);
        let last = VecStep::new(2);
        let view = BatchView { glyphs: &glyphs, stats: &stats, messages: &messages, last: &last, screen: None };
        let out = g.observe(&view, &[0.0; 2], 1, run);
        g.act(&[(0, -1.0), (1, -1.0)]);
        g.stepped(&view, 0, None);
        out
    }

    /// Only a rollout that holds a step is lost when its group leaves: a group waiting at a
    /// rollout boundary (as one blocked by the learner's backpressure does) has nothing to drop.
    #[test]
    fn partial_counts_envs_whose_rollout_holds_a_step() {
        let spec =
            ObsSpec { crop_rows: 1, crop_cols: 1, num_glyphs: 4, grid: GridKind::Glyphs, stats_dim: 1, num_actions: 2 };
        let run = RunIds::new("a".into());
        let mut g = GroupRollouts::new(&spec, 3, 2, 0);
        assert_eq!(g.partial(), 0, "nothing observed yet");
        for t in 1..=3 {
            assert!(step(&mut g, &run).is_empty());
            assert_eq!(g.partial(), 2, "after step {t}");
        }
        // the fourth observation completes the rollouts and starts the next ones with no step
        let glyphs = vec![1u16, 2];
        let (stats, messages, last) = (vec![0.0f32; 2], vec![0u8; 2 * MESSAGE_LEN], VecStep::new(2));
        let view = BatchView { glyphs: &glyphs, stats: &stats, messages: &messages, last: &last, screen: None };
        let out = g.observe(&view, &[0.0; 2], 1, &run);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].actions.len(), 3);
        assert_eq!(g.partial(), 0, "at a boundary");
        g.act(&[(0, -1.0), (1, -1.0)]);
        g.stepped(&view, 0, None);
        assert_eq!(g.partial(), 2);
    }
}
