//! Playing a fixed policy to measure it (`oni eval`): the same stepping loops, observation
//! path and intrinsic reward as training, but the weights come from a checkpoint, nothing is
//! sent to a learner or an annotator, and every finished episode is kept.
//!
//! Stopping after the first N episodes to end would favour short ones (an env whose
//! episodes are short finishes more of them), so each env slot plays a fixed quota and its
//! later episodes are ignored: the N episodes are the first ones of every slot.

use crate::intrinsic::Rewarder;
use crate::setup::{ActorError, ActorSetup};
use crate::source::{Acted, ActionSource};
use oni_env::BatchView;
use oni_inference::act::Acting;
use oni_inference::rollout::step_captions;
use oni_policy::PolicyBackend;
use oni_proto::tasks::{CancellationToken, TaskGroup};
use oni_reward_model::pull::RewardSlot;
use oni_reward_model::{Decay, RewardModel};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// What to play and how.
pub struct EvalPlan {
    /// Episodes to play in all.
    pub episodes: usize,
    /// The most likely action instead of a sample from the policy.
    pub greedy: bool,
    /// Stepping loops run side by side, each with `cfg.num_envs` envs (built-in envs).
    pub loops: usize,
    /// Seed of the samplers.
    pub seed: u64,
    /// The run's reward model and its count decays: the intrinsic return it pays.
    pub reward: Option<(Arc<RewardModel>, Decay)>,
}

/// One finished episode.
#[derive(Debug, Clone, Serialize)]
pub struct EvalEpisode {
    /// Which stepping loop and env slot played it.
    pub env: (usize, usize),
    pub extrinsic_return: f32,
    /// What the run's reward model paid (`r_int · N_ep^(−β)` summed), without α_int.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intrinsic_return: Option<f32>,
    pub length: u32,
    pub success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
}

/// How many episodes each slot of `loops` × `n_envs` plays so that they add up to
/// `episodes`: an equal share, and one more for the first `episodes mod slots` slots.
struct Quota {
    n_envs: usize,
    per: usize,
    extra: usize,
}

impl Quota {
    fn new(episodes: usize, loops: usize, n_envs: usize) -> Self {
        let slots = loops * n_envs;
        Quota { n_envs, per: episodes / slots, extra: episodes % slots }
    }

    fn of(&self, loop_index: usize, env: usize) -> usize {
        self.per + usize::from(loop_index * self.n_envs + env < self.extra)
    }
}

/// Episodes of each slot, until every slot has its quota.
struct Tally {
    /// `None` where slots come and go (attached envs): the first `episodes` to end are kept.
    quota: Option<Quota>,
    episodes: usize,
    kept: BTreeMap<(usize, usize), Vec<EvalEpisode>>,
    count: usize,
}

impl Tally {
    fn add(&mut self, ep: EvalEpisode) -> bool {
        let quota = self.quota.as_ref().map_or(self.episodes, |q| q.of(ep.env.0, ep.env.1));
        let slot = self.kept.entry(ep.env).or_default();
        if slot.len() < quota && self.count < self.episodes {
            slot.push(ep);
            self.count += 1;
        }
        self.count >= self.episodes
    }
}

/// The policy's weights (the wire format of `oni_policy::weights`) for a network over this
/// observation layout, or why there are none (the checkpoint was made for another).
pub type WeightsFor = Box<dyn FnOnce(&oni_env::ObsSpec) -> Result<Vec<u8>, String> + Send>;

/// Plays `plan.episodes` episodes. Built-in envs when `setup.spec` is set; otherwise serves
/// the env hub and plays the environments attached to it, once the first client has
/// declared their layout. `weights` is asked once the layout is known.
pub async fn evaluate<B: PolicyBackend>(
    setup: ActorSetup,
    device: B::Device,
    weights: WeightsFor,
    plan: EvalPlan,
    stop: CancellationToken,
) -> Result<Vec<EvalEpisode>, ActorError> {
    // the loops play until the episodes are in (which halts them all) or a stop
    let mut loops_group = TaskGroup::child_of(&stop);
    // the env hub's server, when the environments are attached: it stops with the evaluation
    let mut hub_tasks = TaskGroup::child_of(&stop);
    let halt = loops_group.token();
    let loops = plan.loops.max(1);
    let quota = setup.spec.as_ref().map(|_| Quota::new(plan.episodes, loops, setup.cfg.num_envs.max(1)));
    let tally = Arc::new(Mutex::new(Tally { quota, episodes: plan.episodes, kept: BTreeMap::new(), count: 0 }));
    let slot = Arc::new(RewardSlot::default());
    if let Some((model, _)) = &plan.reward {
        *slot.latest.lock().unwrap() = Some(model.clone());
    }
    let source = |index: usize, spec: &oni_env::ObsSpec, bytes: &[u8]| -> Result<EvalSource<B>, ActorError> {
        let mut acting = Acting::new(&setup.policy, spec, device.clone(), Some(plan.seed.wrapping_add(index as u64)));
        acting.update(0, bytes)?;
        Ok(EvalSource {
            acting,
            greedy: plan.greedy,
            loop_index: index,
            decay: plan.reward.as_ref().map(|(_, d)| *d),
            slot: slot.clone(),
            tally: tally.clone(),
            halt: halt.clone(),
        })
    };
    match &setup.spec {
        Some(spec) => {
            let bytes = weights(spec).map_err(ActorError::Eval)?;
            for index in 0..loops {
                // step_loop gives each index its own seeds
                let s = ActorSetup { index, ..setup.clone() };
                let src = source(index, spec, &bytes)?;
                loops_group
                    .spawn_blocking(format!("evaluation loop {index}"), move |_| crate::stepping::step_loop(s, src));
            }
        }
        None => {
            let Some((layout, events)) = crate::hub::serve(&setup, "eval", &mut hub_tasks).await? else {
                return Ok(Vec::new());
            };
            let bytes = weights(&layout.spec).map_err(ActorError::Eval)?;
            let src = source(0, &layout.spec, &bytes)?;
            let rec = setup.recorder();
            loops_group.spawn_blocking("evaluation of the attached environments", move |_| {
                crate::hub::step_loop::hub_loop(layout, events, src, rec)
            });
        }
    }
    while let Some(ended) = loops_group.next().await {
        ended.outcome?;
    }
    let kept = std::mem::take(&mut tally.lock().unwrap().kept);
    Ok(kept.into_values().flatten().collect())
}

struct EvalSource<B: PolicyBackend> {
    acting: Acting<B>,
    greedy: bool,
    loop_index: usize,
    decay: Option<Decay>,
    slot: Arc<RewardSlot>,
    tally: Arc<Mutex<Tally>>,
    halt: CancellationToken,
}

struct EvalGroup {
    offset: usize,
    hidden: Vec<f32>,
    rewarder: Option<Rewarder>,
}

impl<B: PolicyBackend> ActionSource for EvalSource<B> {
    type Group = EvalGroup;

    fn group(&mut self, size: usize, offset: usize) -> EvalGroup {
        EvalGroup {
            offset,
            hidden: vec![0.0; size * self.acting.hidden_size()],
            rewarder: self.decay.map(|d| Rewarder::new(self.slot.clone(), d, size)),
        }
    }

    fn act(&mut self, g: &mut EvalGroup, obs: BatchView<'_>) -> Result<Acted, ActorError> {
        if self.stopping() {
            return Ok(Acted::Halted);
        }
        let chosen = self.acting.choose_with(obs.glyphs, obs.stats, obs.messages, &g.hidden, self.greedy);
        g.hidden = chosen.hidden;
        Ok(Acted::Actions(chosen.actions.into_iter().map(|(a, _)| a).collect()))
    }

    fn stepped(&mut self, g: &mut EvalGroup, view: BatchView<'_>) {
        let paid = g.rewarder.as_mut().map(|rw| rw.step(&step_captions(&view), &view.last.dones).finished);
        let h = self.acting.hidden_size();
        for (i, &done) in view.last.dones.iter().enumerate() {
            if done {
                g.hidden[i * h..(i + 1) * h].fill(0.0);
            }
        }
        let mut tally = self.tally.lock().unwrap();
        for e in &view.last.episodes {
            let local = e.env_index - g.offset;
            let done = tally.add(EvalEpisode {
                env: (self.loop_index, e.env_index),
                extrinsic_return: e.extrinsic_return,
                intrinsic_return: paid.as_ref().map(|p| p[local]),
                length: e.length,
                success: e.success,
                score: e.score,
            });
            if done {
                self.halt.cancel();
            }
        }
    }

    fn version(&self) -> u64 {
        self.acting.version
    }

    fn rewarder<'a>(&self, g: &'a EvalGroup) -> Option<&'a Rewarder> {
        g.rewarder.as_ref()
    }

    fn stopping(&self) -> bool {
        self.halt.is_cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(env: (usize, usize), ret: f32) -> EvalEpisode {
        EvalEpisode { env, extrinsic_return: ret, intrinsic_return: None, length: 1, success: false, score: None }
    }

    #[test]
    fn each_slot_plays_its_quota_so_short_episodes_are_not_favoured() {
        // 5 episodes over 2 loops × 2 slots: slot (0, 0) plays 2, the others 1
        let quota = Quota::new(5, 2, 2);
        assert_eq!([quota.of(0, 0), quota.of(0, 1), quota.of(1, 0), quota.of(1, 1)], [2, 1, 1, 1]);
        let mut t = Tally { quota: Some(quota), episodes: 5, kept: BTreeMap::new(), count: 0 };
        // slot (1, 1) has short episodes and ends three before anyone else ends one
        assert!(!t.add(ep((1, 1), 1.0)));
        assert!(!t.add(ep((1, 1), 2.0)));
        assert!(!t.add(ep((1, 1), 3.0)));
        assert!(!t.add(ep((0, 0), 10.0)));
        assert!(!t.add(ep((0, 1), 20.0)));
        assert!(!t.add(ep((0, 0), 11.0)));
        assert!(!t.add(ep((0, 0), 12.0)), "past its quota");
        assert!(t.add(ep((1, 0), 30.0)));
        let kept: Vec<f32> = t.kept.values().flatten().map(|e| e.extrinsic_return).collect();
        assert_eq!(kept, vec![10.0, 11.0, 20.0, 30.0, 1.0]);
    }

    #[test]
    fn without_quotas_the_first_episodes_to_end_are_kept() {
        let mut t = Tally { quota: None, episodes: 2, kept: BTreeMap::new(), count: 0 };
        assert!(!t.add(ep((0, 3), 1.0)));
        assert!(t.add(ep((0, 3), 2.0)));
        assert!(t.add(ep((0, 1), 3.0)));
        assert_eq!(t.count, 2);
    }
}
