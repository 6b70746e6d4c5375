//! One group of envs being acted for: each env's recurrent state and the rollouts assembled
//! from its steps. The actor's local inference and the central service keep one per group
//! alike, so the state is zeroed at episode ends and the rollouts recorded in one way.

use crate::rollout::{GroupRollouts, IntrinsicStep, RunIds};
use oni_env::{BatchView, ObsSpec};
use oni_proto::v1::Rollout;

pub struct ActingGroup {
    /// `[n · H]`: each env's state before its next observation.
    pub hidden: Vec<f32>,
    rollouts: GroupRollouts,
    first_slot: usize,
    hidden_size: usize,
}

impl ActingGroup {
    /// `n` envs whose first env slot is `first_slot`, rollouts of `rollout_len` steps.
    pub fn new(spec: &ObsSpec, rollout_len: usize, n: usize, first_slot: usize, hidden_size: usize) -> Self {
        ActingGroup {
            hidden: vec![0.0; n * hidden_size],
            rollouts: GroupRollouts::new(spec, rollout_len, n, first_slot),
            first_slot,
            hidden_size,
        }
    }

    /// Records a finished step (`view.last`): the state of an env whose episode ended is
    /// zeroed, since its next observation starts a new one.
    pub fn stepped(&mut self, view: &BatchView<'_>, intrinsic: Option<IntrinsicStep>) {
        let h = self.hidden_size;
        for (i, &done) in view.last.dones.iter().enumerate() {
            if done {
                self.hidden[i * h..(i + 1) * h].fill(0.0);
            }
        }
        self.rollouts.stepped(view, self.first_slot, intrinsic);
    }

    /// Records the observations about to be acted on; returns the rollouts they complete.
    pub fn observe(&mut self, view: &BatchView<'_>, policy_version: u64, run: &RunIds) -> Vec<Rollout> {
        self.rollouts.observe(view, &self.hidden, policy_version, run)
    }

    /// Records the chosen (action, log-probability) per env and the state after them.
    pub fn chose(&mut self, actions: &[(usize, f32)], hidden: &[f32]) {
        self.rollouts.act(actions);
        self.hidden.copy_from_slice(hidden);
    }

    /// Envs whose unfinished rollout holds at least one step (lost when the group goes away).
    pub fn partial(&self) -> usize {
        self.rollouts.partial()
    }
}
