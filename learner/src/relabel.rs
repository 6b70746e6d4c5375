//! Relabel mode (ONI's exact behaviour): the intrinsic reward of every step is recomputed
//! at training time with the newest reward model the learner pulled, instead of the model
//! the actor had when it stepped: `r_int = r_int_newest(m) · N_ep(m)^(−β)`, with the count
//! decay the actor recorded (`Rollout.intrinsic_decay`; the learner cannot count episodes
//! that span rollouts).

use oni_proto::v1::Rollout;
use oni_reward_model::pull::RewardSlot;
use oni_reward_model::{normalise, CachedRewards};
use std::sync::Arc;

pub struct Relabeler {
    rewards: CachedRewards,
}

impl Relabeler {
    pub fn new(slot: Arc<RewardSlot>) -> Self {
        Relabeler { rewards: CachedRewards::new(slot) }
    }

    /// Rewrites the intrinsic rewards of the rollouts that carry decay factors; returns how
    /// many were relabelled (none before the first model arrives).
    pub fn apply(&mut self, rollouts: &mut [Rollout]) -> usize {
        self.rewards.refresh();
        if !self.rewards.has_model() {
            return 0;
        }
        let relabel = |r: &Rollout| r.intrinsic_decay.len() == r.captions.len() && !r.captions.is_empty();
        let keys: Vec<String> = rollouts
            .iter()
            .filter(|r| relabel(r))
            .flat_map(|r| r.captions.iter().filter_map(|c| normalise(c)))
            .collect();
        self.rewards.prepare(keys.iter().map(String::as_str));
        let mut n = 0;
        for r in rollouts.iter_mut().filter(|r| relabel(r)) {
            r.intrinsic_rewards = r
                .captions
                .iter()
                .zip(&r.intrinsic_decay)
                .map(|(c, d)| normalise(c).map_or(0.0, |c| self.rewards.get(&c)) * d)
                .collect();
            r.reward_model_version = self.rewards.version();
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oni_reward_model::{DistillConfig, Distiller, Example, Kind};

    #[test]
    fn newest_model_times_recorded_decay() {
        let mut d = Distiller::new(Kind::Hashing, DistillConfig::default(), 0);
        d.add_labels([Example { caption: "You unlock the door.".into(), helpful: true }]);
        let slot = Arc::new(RewardSlot::default());
        let mut rl = Relabeler::new(slot.clone());
        let mut rs = vec![Rollout {
            captions: vec!["You unlock the door.".into(), "You hit the newt.".into(), " You unlock the door. ".into()],
            intrinsic_decay: vec![1.0, 1.0, 0.125],
            intrinsic_rewards: vec![0.0, 0.0, 0.0],
            ..Default::default()
        }];
        assert_eq!(rl.apply(&mut rs), 0, "no model yet: rewards untouched");
        assert_eq!(rs[0].intrinsic_rewards, vec![0.0, 0.0, 0.0]);
        assert!(oni_reward_model::pull::accept("learner", &slot, &d.snapshot(4).encode(), 4));
        assert_eq!(rl.apply(&mut rs), 1);
        assert_eq!((rs[0].intrinsic_rewards.clone(), rs[0].reward_model_version), (vec![1.0, 0.0, 0.125], 4));
    }
}
