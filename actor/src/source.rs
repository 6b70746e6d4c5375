//! Where a group's actions come from: the seam between the stepping loops (built-in envs and
//! attached clients alike) and inference. `LocalSource` runs the policy in this process with
//! weights pulled from the learner and assembles rollouts here; `RemoteSource` sends each
//! step's observations to the learner's inference service, which chooses the actions and
//! assembles the rollouts itself; `RandomSource` answers uniformly at random and records
//! nothing (the protocol's own cost, for benchmarks).

use crate::config::ActorConfig;
use crate::intrinsic::{RewardSlot, Rewarder};
use crate::link::WeightsSlot;
use crate::remote::{Link, LinkReply};
use crate::setup::{ActorCounters, ActorError, ActorSetup};
use oni_env::{BatchView, ObsSpec};
use oni_inference::act::Acting;
use oni_inference::group::ActingGroup;
use oni_inference::rollout::{step_captions, IntrinsicStep, RunIds};
use oni_inference::wire;
use oni_policy::{PolicyBackend, PolicyConfig};
use oni_proto::tasks::CancellationToken;
use oni_proto::v1::{GroupHello, Rollout};
use oni_proto::TransportConfig;
use oni_reward_model::Decay;
use rand::Rng;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// What a source answered for a group's observations.
pub(crate) enum Acted {
    Actions(Vec<usize>),
    /// The source lost the group's recurrent state: start its episodes over and ask again.
    Restart,
    /// The actor is stopping.
    Halted,
}

pub(crate) trait ActionSource: Send + 'static {
    /// A group's state on this side (rollouts in the making, recurrent state, stream).
    type Group;
    /// A group of `size` envs whose first env slot is `offset`.
    fn group(&mut self, size: usize, offset: usize) -> Self::Group;
    /// The actions for `obs`. Its `last` holds the outcome of the group's previous actions,
    /// which `stepped` has recorded.
    fn act(&mut self, g: &mut Self::Group, obs: BatchView<'_>) -> Result<Acted, ActorError>;
    /// Records a finished step of the group (before `act` on its new observations).
    fn stepped(&mut self, g: &mut Self::Group, view: BatchView<'_>);
    /// The policy version the latest actions came from.
    fn version(&self) -> u64;
    fn stopping(&self) -> bool;
    /// The group's intrinsic reward, where this source computes one (recordings read it).
    fn rewarder<'a>(&self, _g: &'a Self::Group) -> Option<&'a Rewarder> {
        None
    }
}

/// What every source with a policy shares: identity, counters, the intrinsic reward and the
/// hand-over of captions.
pub(crate) struct Common {
    spec: ObsSpec,
    run: Arc<RunIds>,
    captions: Option<mpsc::Sender<Vec<String>>>,
    reward_slot: Arc<RewardSlot>,
    /// The count decays when steps get an intrinsic reward.
    intrinsic_decay: Option<Decay>,
    rollout_len: usize,
    counters: Arc<ActorCounters>,
    /// The actor's tasks are stopping (a stop, or one of them failed).
    halt: CancellationToken,
}

impl Common {
    pub fn new(
        setup: &ActorSetup,
        spec: ObsSpec,
        run: Arc<RunIds>,
        captions: Option<mpsc::Sender<Vec<String>>>,
        reward_slot: Arc<RewardSlot>,
        counters: Arc<ActorCounters>,
        halt: CancellationToken,
    ) -> Self {
        Common {
            spec,
            run,
            captions,
            reward_slot,
            intrinsic_decay: setup.intrinsic.as_ref().map(|ic| ic.decay),
            rollout_len: setup.rollout_len,
            counters,
            halt,
        }
    }

    fn stopping(&self) -> bool {
        self.halt.is_cancelled()
    }

    fn rewarder(&self, size: usize) -> Option<Rewarder> {
        self.intrinsic_decay.map(|decay| Rewarder::new(self.reward_slot.clone(), decay, size))
    }

    /// Sends captions to the annotator without ever waiting: a full hand-over queue drops
    /// them (counted).
    fn send_captions(&self, caps: Vec<String>) {
        if let Some(c) = &self.captions {
            if !caps.is_empty() && c.try_send(caps).is_err() {
                metrics::counter!(crate::metric_names::CAPTIONS_DROPPED).increment(1);
            }
        }
    }

    /// Counters and metrics of a finished step.
    fn count_step(&self, view: &BatchView<'_>) {
        for (env, why) in &view.last.restarts {
            tracing::warn!(env, "environment failed and was restarted: {why}");
            metrics::counter!(crate::metric_names::ENV_RESTARTS).increment(1);
        }
        let steps = view.last.dones.len() as u64;
        self.counters.env_steps.fetch_add(steps, Ordering::Relaxed);
        metrics::counter!(oni_proto::metric_names::ENV_STEPS, "role" => "actor").increment(steps);
        if !view.last.episodes.is_empty() {
            metrics::counter!(crate::metric_names::EPISODES).increment(view.last.episodes.len() as u64);
        }
    }
}

/// The intrinsic reward of a finished step, when the actor computes one.
fn intrinsic(rw: Option<&mut Rewarder>, view: &BatchView<'_>) -> Option<IntrinsicStep> {
    let rw = rw?;
    let s = rw.step(&step_captions(view), &view.last.dones);
    Some(IntrinsicStep { rewards: s.rewards, decays: s.decays, finished: s.finished, version: rw.version() })
}

/// The policy in this process, weights pulled from the learner; rollouts assembled here and
/// streamed to the learner.
pub(crate) struct LocalSource<B: PolicyBackend> {
    common: Common,
    acting: Acting<B>,
    slot: Arc<WeightsSlot>,
    tx: mpsc::Sender<Rollout>,
}

pub(crate) struct LocalGroup {
    acting: ActingGroup,
    rewarder: Option<Rewarder>,
}

impl<B: PolicyBackend> LocalSource<B> {
    pub fn new(
        common: Common,
        policy: &PolicyConfig,
        device: B::Device,
        slot: Arc<WeightsSlot>,
        tx: mpsc::Sender<Rollout>,
    ) -> Self {
        let acting = Acting::new(policy, &common.spec, device, None);
        LocalSource { common, acting, slot, tx }
    }

    /// Hands a finished rollout to the sender (and its captions to the annotator). The queue
    /// is bounded: when the learner is slow or gone, stepping pauses here. False when halted.
    fn queue(&mut self, r: Rollout) -> bool {
        self.common.counters.rollouts.fetch_add(1, Ordering::Relaxed);
        self.common.send_captions(r.captions.iter().filter(|c| !c.is_empty()).cloned().collect());
        let mut item = r;
        loop {
            match self.tx.try_send(item) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Full(back)) => {
                    if self.common.stopping() {
                        return false;
                    }
                    item = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            }
        }
    }
}

impl<B: PolicyBackend> ActionSource for LocalSource<B> {
    type Group = LocalGroup;

    fn group(&mut self, size: usize, offset: usize) -> LocalGroup {
        let h = self.acting.hidden_size();
        LocalGroup {
            acting: ActingGroup::new(&self.common.spec, self.common.rollout_len, size, offset, h),
            rewarder: self.common.rewarder(size),
        }
    }

    /// Picks up new weights, queues the rollouts `obs` completes, then chooses the actions.
    fn act(&mut self, g: &mut LocalGroup, obs: BatchView<'_>) -> Result<Acted, ActorError> {
        if let Some((v, bytes)) = self.slot.latest.lock().unwrap().clone() {
            if self.acting.update(v, &bytes)? {
                metrics::gauge!(crate::metric_names::POLICY_VERSION).set(v as f64);
            }
        }
        let run = self.common.run.clone();
        for r in g.acting.observe(&obs, self.acting.version, &run) {
            if !self.queue(r) {
                return Ok(Acted::Halted);
            }
        }
        let chosen = self.acting.choose(obs.glyphs, obs.stats, obs.messages, &g.acting.hidden);
        g.acting.chose(&chosen.actions, &chosen.hidden);
        Ok(Acted::Actions(chosen.actions.into_iter().map(|(a, _)| a).collect()))
    }

    /// State resets, rollouts, intrinsic rewards, counters.
    fn stepped(&mut self, g: &mut LocalGroup, view: BatchView<'_>) {
        let step = intrinsic(g.rewarder.as_mut(), &view);
        g.acting.stepped(&view, step);
        self.common.count_step(&view);
    }

    fn version(&self) -> u64 {
        self.acting.version
    }

    fn stopping(&self) -> bool {
        self.common.stopping()
    }

    fn rewarder<'a>(&self, g: &'a LocalGroup) -> Option<&'a Rewarder> {
        g.rewarder.as_ref()
    }
}

/// The learner's central inference service: observations out, actions back, one stream
/// per group. Rollouts are assembled by the service; this side adds the intrinsic reward and
/// sends captions to the annotator.
pub(crate) struct RemoteSource {
    common: Common,
    cfg: ActorConfig,
    transport: TransportConfig,
    rt: tokio::runtime::Handle,
    stop: CancellationToken,
    fingerprint: String,
    version: u64,
}

pub(crate) struct RemoteGroup {
    link: Link,
    hello: GroupHello,
    step: u64,
    /// The next request opens a stream (first request, or after the last one broke).
    fresh: bool,
    rewarder: Option<Rewarder>,
    /// The intrinsic reward of the step just recorded, sent with the next request.
    intrinsic: Option<IntrinsicStep>,
    captions: Vec<String>,
    offset: usize,
    size: usize,
}

impl RemoteSource {
    pub fn new(
        common: Common,
        setup: &ActorSetup,
        rt: tokio::runtime::Handle,
        stop: CancellationToken,
        fingerprint: String,
    ) -> Self {
        RemoteSource {
            common,
            cfg: setup.cfg.clone(),
            transport: setup.transport.clone(),
            rt,
            stop,
            fingerprint,
            version: 0,
        }
    }
}

impl ActionSource for RemoteSource {
    type Group = RemoteGroup;

    fn group(&mut self, size: usize, offset: usize) -> RemoteGroup {
        RemoteGroup {
            link: Link::spawn(&self.rt, self.cfg.clone(), self.transport.clone(), self.stop.clone()),
            hello: GroupHello {
                run_id: self.common.run.run_id.clone(),
                actor_id: self.common.run.actor_id.clone(),
                first_slot: offset as u32,
                num_envs: size as u32,
                model_fingerprint: self.fingerprint.clone(),
            },
            step: 0,
            fresh: true,
            rewarder: self.common.rewarder(size),
            intrinsic: None,
            captions: Vec::new(),
            offset,
            size,
        }
    }

    fn act(&mut self, g: &mut RemoteGroup, obs: BatchView<'_>) -> Result<Acted, ActorError> {
        let mut req = wire::encode(&self.common.spec, g.step, &obs, !g.fresh, g.intrinsic.as_ref(), g.offset);
        if g.fresh {
            req.hello = Some(g.hello.clone());
        }
        let halt = &self.common.halt;
        let Some(reply) = g.link.call(req, &|| halt.is_cancelled()) else { return Ok(Acted::Halted) };
        match reply {
            LinkReply::Actions(r) => {
                let n = self.common.spec.num_actions as u32;
                if r.step != g.step || r.actions.len() != g.size || r.actions.iter().any(|&a| a >= n) {
                    return Err(ActorError::Learner(format!(
                        "the inference service answered step {} with {} actions (expected step {}, {} actions below {n})",
                        r.step,
                        r.actions.len(),
                        g.step,
                        g.size
                    )));
                }
                g.step += 1;
                g.fresh = false;
                g.intrinsic = None;
                if r.policy_version != self.version {
                    self.version = r.policy_version;
                    metrics::gauge!(crate::metric_names::POLICY_VERSION).set(r.policy_version as f64);
                }
                Ok(Acted::Actions(r.actions.into_iter().map(|a| a as usize).collect()))
            }
            LinkReply::Lost(why) => {
                tracing::warn!(first_slot = g.offset, "inference stream lost ({why}); restarting the group's episodes");
                g.step = 0;
                g.fresh = true;
                g.intrinsic = None;
                g.rewarder = self.common.rewarder(g.size);
                if self.stopping() {
                    return Ok(Acted::Halted);
                }
                Ok(Acted::Restart)
            }
            // the stepping thread ends with it, and its group stops the actor's other tasks
            LinkReply::Fatal(why) => Err(ActorError::Learner(why)),
        }
    }

    fn stepped(&mut self, g: &mut RemoteGroup, view: BatchView<'_>) {
        g.intrinsic = intrinsic(g.rewarder.as_mut(), &view);
        if self.common.captions.is_some() {
            g.captions.extend(step_captions(&view).into_iter().filter(|c| !c.is_empty()));
            // sent in batches about as often as a local actor sends a rollout's captions
            if g.captions.len() >= self.common.rollout_len * g.size / 2 {
                self.common.send_captions(std::mem::take(&mut g.captions));
            }
        }
        self.common.count_step(&view);
    }

    fn version(&self) -> u64 {
        self.version
    }

    fn stopping(&self) -> bool {
        self.common.stopping()
    }

    fn rewarder<'a>(&self, g: &'a RemoteGroup) -> Option<&'a Rewarder> {
        g.rewarder.as_ref()
    }
}

/// Uniformly random actions, nothing recorded.
pub(crate) struct RandomSource {
    pub num_actions: usize,
    pub halt: CancellationToken,
}

impl ActionSource for RandomSource {
    type Group = usize;

    fn group(&mut self, size: usize, _offset: usize) -> usize {
        size
    }

    fn act(&mut self, size: &mut usize, _obs: BatchView<'_>) -> Result<Acted, ActorError> {
        let mut rng = rand::rng();
        Ok(Acted::Actions((0..*size).map(|_| rng.random_range(0..self.num_actions)).collect()))
    }

    fn stepped(&mut self, _g: &mut usize, _view: BatchView<'_>) {}

    fn version(&self) -> u64 {
        0
    }

    fn stopping(&self) -> bool {
        self.halt.is_cancelled()
    }
}
