//! The stepping thread: two halves of the env batch alternate, one stepping on a worker
//! thread while the policy chooses the other's actions.

use crate::config::ActorConfig;
use crate::intrinsic::{pull_reward_models, IntrinsicConfig, RewardSlot, Rewarder};
use crate::link::{poll_weights, send_rollouts, WeightsSlot};
use crate::rollout::{GroupRollouts, RunIds};
use burn::prelude::*;
use burn::tensor::TensorData;
use oni_env::vec_env::{EnvFactory, StepWorker};
use oni_env::BatchView;
use oni_env::{make_env, EnvConfig, ObsSpec, VecEnv};
use oni_policy::sampling::sample_actions;
use oni_policy::{weights, ObsBatch, Policy, PolicyBackend, PolicyConfig};
use oni_proto::v1::Rollout;
use rand::SeedableRng;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    #[error("environment: {0}")]
    Env(#[from] oni_env::EnvError),
    #[error("weights from the learner do not fit this actor's network: {0}")]
    Weights(#[from] weights::WeightsError),
    #[error("{0}")]
    Learner(String),
    #[error("stepping thread panicked")]
    Panicked,
    #[error("cannot serve attached environments on {addr}: {reason}")]
    Hub { addr: String, reason: String },
}

pub struct ActorSetup {
    pub cfg: ActorConfig,
    pub env: EnvConfig,
    pub policy: PolicyConfig,
    /// The observation layout of the built-in env; `None` for attached environments, whose
    /// first client declares it.
    pub spec: Option<ObsSpec>,
    pub rollout_len: usize,
    pub token: Option<String>,
    /// Index of this actor among those of one process (seeds, default id).
    pub index: usize,
    /// Intrinsic reward from the annotator's reward model (needs `cfg.annotator`).
    pub intrinsic: Option<IntrinsicConfig>,
}

/// Counters the caller may read while the actor runs.
#[derive(Default)]
pub struct ActorCounters {
    pub env_steps: AtomicU64,
    pub rollouts: AtomicU64,
}

/// Runs one actor until `stop` flips or an unrecoverable error. Call inside a tokio runtime.
pub async fn run_actor<B: PolicyBackend>(
    setup: ActorSetup,
    device: B::Device,
    counters: Arc<ActorCounters>,
    stop: watch::Receiver<bool>,
) -> Result<(), ActorError> {
    let actor_id = setup.cfg.actor_id.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "actor".into());
        format!("{host}-{}-{}", std::process::id(), setup.index)
    });
    let run = Arc::new(RunIds::new(actor_id));
    tracing::info!(actor = %run.actor_id, run = %run.run_id, learner = %setup.cfg.learner, "actor starting");
    // Attached environments: serve the hub first; the first client's spaces fix the layout.
    let (spec, hub) = match setup.spec.clone() {
        Some(spec) => (spec, None),
        None => match crate::hub::serve(&setup, &run.actor_id, stop.clone()).await? {
            Some((layout, events)) => (layout.spec.clone(), Some((layout, events))),
            None => return Ok(()),
        },
    };
    let fingerprint = weights::fingerprint(&setup.policy, &spec);
    let declared = hub.as_ref().map(|_| serde_json::to_string(&spec).expect("spec serialises"));
    let slot = Arc::new(WeightsSlot::default());
    let poller = tokio::spawn(poll_weights(
        setup.cfg.clone(),
        setup.token.clone(),
        fingerprint,
        declared,
        slot.clone(),
        stop.clone(),
    ));

    // Nothing to act with until the first weights arrive.
    let mut stop_wait = stop.clone();
    while slot.latest.lock().unwrap().is_none() {
        if *stop_wait.borrow() {
            return Ok(());
        }
        if poller.is_finished() {
            return match poller.await {
                Ok(Err(e)) => Err(ActorError::Learner(e)),
                _ => Ok(()),
            };
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), stop_wait.changed()).await;
    }

    let (caption_tx, caption_rx) = mpsc::channel::<Vec<String>>(64);
    if !setup.cfg.annotator.is_empty() {
        tokio::spawn(crate::captions::send_captions(
            setup.cfg.annotator.clone(),
            setup.cfg.client_options(),
            setup.token.clone(),
            run.actor_id.clone(),
            caption_rx,
            stop.clone(),
        ));
    }
    let captions = (!setup.cfg.annotator.is_empty()).then_some(caption_tx);
    let reward_slot = Arc::new(RewardSlot::default());
    if let (Some(ic), false) = (&setup.intrinsic, setup.cfg.annotator.is_empty()) {
        tokio::spawn(pull_reward_models(
            "actor",
            setup.cfg.annotator.clone(),
            setup.cfg.client_options(),
            setup.token.clone(),
            ic.pull_ms,
            reward_slot.clone(),
            stop.clone(),
        ));
    }
    let (tx, rx) = mpsc::channel::<Rollout>(setup.cfg.send_queue.max(1));
    let fatal = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn(send_rollouts(setup.cfg.clone(), setup.token.clone(), rx, fatal.clone(), stop.clone()));
    let halt = Arc::new(AtomicBool::new(false));
    let stepping = {
        let w = Wiring {
            slot: slot.clone(),
            reward_slot,
            run: run.clone(),
            tx,
            captions,
            counters,
            halt: halt.clone(),
            fatal: fatal.clone(),
        };
        std::thread::Builder::new()
            .name(format!("actor-{}", setup.index))
            .spawn(move || match hub {
                Some((layout, events)) => crate::hub::stepping::hub_policy_loop::<B>(&setup, layout, device, w, events),
                None => step_loop::<B>(setup, spec, device, w),
            })
            .map_err(|_| ActorError::Panicked)?
    };
    let mut stop_main = stop.clone();
    loop {
        if *stop_main.borrow() || fatal.load(Ordering::Acquire) || stepping.is_finished() {
            break;
        }
        if poller.is_finished() {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), stop_main.changed()).await;
    }
    halt.store(true, Ordering::Release);
    let result = tokio::task::spawn_blocking(move || stepping.join()).await.map_err(|_| ActorError::Panicked)?;
    sender.abort();
    let poll_result = if poller.is_finished() {
        poller.await.ok()
    } else {
        poller.abort();
        None
    };
    if let Some(Err(e)) = poll_result {
        return Err(ActorError::Learner(e));
    }
    if fatal.load(Ordering::Acquire) {
        return Err(ActorError::Learner("the learner refused this actor's rollouts (see log)".into()));
    }
    result.map_err(|_| ActorError::Panicked)?
}

/// One batch of envs stepped in lockstep: its recurrent state, its rollouts in the making and
/// its intrinsic rewards.
pub(crate) struct Group {
    pub hidden: Vec<f32>,
    pub rollouts: GroupRollouts,
    pub rewarder: Option<Rewarder>,
    /// Global index of the batch's first env (its first env slot).
    pub offset: usize,
}

/// What every stepping loop shares: the policy and its weights, action sampling, and the
/// hand-over of finished rollouts and captions.
pub(crate) struct Stepper<B: PolicyBackend> {
    pub spec: ObsSpec,
    device: B::Device,
    policy: Policy<B>,
    pub version: u64,
    rng: rand::rngs::StdRng,
    slot: Arc<WeightsSlot>,
    run: Arc<RunIds>,
    tx: mpsc::Sender<Rollout>,
    captions: Option<mpsc::Sender<Vec<String>>>,
    counters: Arc<ActorCounters>,
    pub halt: Arc<AtomicBool>,
    pub fatal: Arc<AtomicBool>,
    policy_cfg: PolicyConfig,
    hidden_size: usize,
    rollout_len: usize,
    reward_slot: Arc<RewardSlot>,
    /// β of the count decay when steps get an intrinsic reward.
    intrinsic_beta: Option<f32>,
}

/// The channels and flags a stepping thread gets from `run_actor`.
pub(crate) struct Wiring {
    pub slot: Arc<WeightsSlot>,
    pub reward_slot: Arc<RewardSlot>,
    pub run: Arc<RunIds>,
    pub tx: mpsc::Sender<Rollout>,
    pub captions: Option<mpsc::Sender<Vec<String>>>,
    pub counters: Arc<ActorCounters>,
    pub halt: Arc<AtomicBool>,
    pub fatal: Arc<AtomicBool>,
}

impl<B: PolicyBackend> Stepper<B> {
    pub fn new(setup: &ActorSetup, spec: ObsSpec, device: B::Device, w: Wiring) -> Self {
        Stepper {
            policy: Policy::<B>::new(&setup.policy, &spec, &device),
            spec,
            device,
            version: u64::MAX,
            rng: rand::rngs::StdRng::from_os_rng(),
            slot: w.slot,
            run: w.run,
            tx: w.tx,
            captions: w.captions,
            counters: w.counters,
            halt: w.halt,
            fatal: w.fatal,
            policy_cfg: setup.policy.clone(),
            hidden_size: setup.policy.core_hidden,
            rollout_len: setup.rollout_len,
            reward_slot: w.reward_slot,
            intrinsic_beta: setup.intrinsic.as_ref().map(|ic| ic.beta),
        }
    }

    /// A group of `size` envs whose first env slot is `offset`.
    pub fn group(&self, size: usize, offset: usize) -> Group {
        Group {
            hidden: vec![0.0; size * self.hidden_size],
            rollouts: GroupRollouts::new(&self.spec, self.rollout_len, size, offset),
            rewarder: self.intrinsic_beta.map(|beta| Rewarder::new(self.reward_slot.clone(), beta, size)),
            offset,
        }
    }

    pub fn stopping(&self) -> bool {
        self.halt.load(Ordering::Acquire) || self.fatal.load(Ordering::Acquire)
    }

    /// Picks up new weights, queues the rollouts `obs` completes, then chooses the group's
    /// actions. An empty answer means the actor was halted while waiting to queue a rollout.
    pub fn infer(&mut self, g: &mut Group, obs: BatchView<'_>) -> Result<Vec<usize>, ActorError> {
        if let Some((v, bytes)) = self.slot.latest.lock().unwrap().clone() {
            if v != self.version {
                self.policy = weights::load_bytes(self.policy.clone(), &bytes)?;
                self.version = v;
                metrics::gauge!("oni_actor_policy_version").set(v as f64);
            }
        }
        for r in g.rollouts.observe(&obs, &g.hidden, self.version, &self.run) {
            if !self.queue(r) {
                return Ok(Vec::new());
            }
        }
        let size = obs.stats.len() / self.spec.stats_dim.max(1);
        let batch =
            ObsBatch::<B>::from_host(&self.spec, &self.policy_cfg, obs.glyphs, obs.stats, obs.messages, &self.device);
        let h = Tensor::<B, 2>::from_data(TensorData::new(g.hidden.clone(), [size, self.hidden_size]), &self.device);
        let (out, h_next) = self.policy.act(batch, h);
        g.hidden = h_next.into_data().convert::<f32>().to_vec().expect("f32 state");
        let logits: Vec<f32> = out.logits.into_data().convert::<f32>().to_vec().expect("f32 logits");
        let chosen = sample_actions(&logits, self.spec.num_actions, &mut self.rng);
        g.rollouts.act(&chosen);
        Ok(chosen.into_iter().map(|(a, _)| a).collect())
    }

    /// Hands a finished rollout to the sender (and its captions to the annotator). The queue
    /// is bounded: when the learner is slow or gone, stepping pauses here. False when halted.
    fn queue(&mut self, r: Rollout) -> bool {
        self.counters.rollouts.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = &self.captions {
            // never waits: a full hand-over queue drops this rollout's captions (counted)
            let caps: Vec<String> = r.captions.iter().filter(|c| !c.is_empty()).cloned().collect();
            if !caps.is_empty() && c.try_send(caps).is_err() {
                metrics::counter!("oni_actor_captions_dropped_total").increment(1);
            }
        }
        let mut item = r;
        loop {
            match self.tx.try_send(item) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Full(back)) => {
                    if self.stopping() {
                        return false;
                    }
                    item = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            }
        }
    }

    /// Records a finished step of group `g`: state resets, rollouts, intrinsic rewards,
    /// counters.
    pub fn after_step(&mut self, g: &mut Group, view: BatchView<'_>) {
        let h = self.hidden_size;
        for (i, &done) in view.last.dones.iter().enumerate() {
            if done {
                g.hidden[i * h..(i + 1) * h].fill(0.0);
            }
        }
        for (env, why) in &view.last.restarts {
            tracing::warn!(env, "environment failed and was restarted: {why}");
            metrics::counter!("oni_env_restarts_total").increment(1);
        }
        g.rollouts.stepped(&view, g.offset, g.rewarder.as_mut());
        let steps = view.last.dones.len() as u64;
        self.counters.env_steps.fetch_add(steps, Ordering::Relaxed);
        metrics::counter!("oni_env_steps_total", "role" => "actor").increment(steps);
        if !view.last.episodes.is_empty() {
            metrics::counter!("oni_actor_episodes_total").increment(view.last.episodes.len() as u64);
        }
    }
}

/// The built-in environments: two halves of the env batch alternate, one stepping on a
/// worker thread while the policy chooses the other's actions.
pub(crate) fn step_loop<B: PolicyBackend>(
    setup: ActorSetup,
    spec: ObsSpec,
    device: B::Device,
    w: Wiring,
) -> Result<(), ActorError> {
    let n = setup.cfg.num_envs.max(1);
    let halves = if n >= 2 { vec![n / 2, n - n / 2] } else { vec![n] };
    let seed = setup.env.seed.wrapping_add((setup.index as u64) << 32).wrapping_add(rand::random::<u32>() as u64);
    let mut st = Stepper::<B>::new(&setup, spec, device, w);
    let mut groups = Vec::new();
    let mut envs = Vec::new();
    let mut offset = 0;
    for &size in &halves {
        let env_cfg = setup.env.clone();
        let factory: EnvFactory = Box::new(move || make_env(&env_cfg));
        envs.push(Some(VecEnv::new(factory, size, seed, offset)?));
        groups.push(st.group(size, offset));
        offset += size;
    }
    let worker = StepWorker::new();

    let count = groups.len();
    let first = st.infer(&mut groups[0], envs[0].as_ref().expect("home").view())?;
    worker.submit(envs[0].take().unwrap(), first);
    let mut cur = 0;
    while !st.stopping() {
        let next = (cur + 1) % count;
        let mut actions = if count > 1 {
            Some(st.infer(&mut groups[next], envs[next].as_ref().expect("home").view())?)
        } else {
            None
        };
        let stepped = worker.wait().map_err(|(_, e)| ActorError::Env(e))?;
        st.after_step(&mut groups[cur], stepped.view());
        envs[cur] = Some(stepped);
        if actions.is_none() {
            actions = Some(st.infer(&mut groups[cur], envs[cur].as_ref().expect("home").view())?);
        }
        let actions = actions.unwrap();
        if actions.is_empty() {
            return Ok(()); // halted while waiting to queue a rollout; the worker is idle
        }
        worker.submit(envs[next].take().unwrap(), actions);
        cur = next;
    }
    let _ = worker.wait();
    Ok(())
}
