//! The stepping thread: two halves of the env batch alternate, one stepping on a worker
//! thread while the policy chooses the other's actions.

use crate::config::ActorConfig;
use crate::intrinsic::{pull_reward_models, IntrinsicConfig, RewardSlot, Rewarder};
use crate::link::{poll_weights, send_rollouts, WeightsSlot};
use crate::rollout::{GroupRollouts, RunIds};
use burn::prelude::*;
use burn::tensor::TensorData;
use oni_env::vec_env::{EnvFactory, StepWorker};
use oni_env::{make_env, EnvConfig, ObsSpec, VecEnv};
use oni_policy::sampling::sample_actions;
use oni_policy::{weights, ObsBatch, Policy, PolicyConfig};
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
}

pub struct ActorSetup {
    pub cfg: ActorConfig,
    pub env: EnvConfig,
    pub policy: PolicyConfig,
    pub spec: ObsSpec,
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
pub async fn run_actor<B: Backend>(
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
    let fingerprint = weights::fingerprint(&setup.policy, &setup.spec);
    let slot = Arc::new(WeightsSlot::default());
    let poller = tokio::spawn(poll_weights(setup.cfg.clone(), setup.token.clone(), fingerprint, slot.clone(), stop.clone()));

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
        let halt = halt.clone();
        let fatal = fatal.clone();
        let slot = slot.clone();
        let run = run.clone();
        std::thread::Builder::new()
            .name(format!("actor-{}", setup.index))
            .spawn(move || step_loop::<B>(setup, device, slot, reward_slot, run, tx, captions, counters, halt, fatal))
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
    let poll_result = if poller.is_finished() { poller.await.ok() } else { poller.abort(); None };
    if let Some(Err(e)) = poll_result {
        return Err(ActorError::Learner(e));
    }
    if fatal.load(Ordering::Acquire) {
        return Err(ActorError::Learner("the learner refused this actor's rollouts (see log)".into()));
    }
    result.map_err(|_| ActorError::Panicked)?
}

struct Group {
    envs: Option<VecEnv>,
    hidden: Vec<f32>,
    rollouts: GroupRollouts,
    rewarder: Option<Rewarder>,
    offset: usize,
}

#[allow(clippy::too_many_arguments)]
fn step_loop<B: Backend>(
    setup: ActorSetup,
    device: B::Device,
    slot: Arc<WeightsSlot>,
    reward_slot: Arc<RewardSlot>,
    run: Arc<RunIds>,
    tx: mpsc::Sender<Rollout>,
    captions: Option<mpsc::Sender<Vec<String>>>,
    counters: Arc<ActorCounters>,
    halt: Arc<AtomicBool>,
    fatal: Arc<AtomicBool>,
) -> Result<(), ActorError> {
    let spec = setup.spec.clone();
    let hidden_size = setup.policy.core_hidden;
    let n = setup.cfg.num_envs.max(1);
    let halves = if n >= 2 { vec![n / 2, n - n / 2] } else { vec![n] };
    let seed = setup.env.seed.wrapping_add((setup.index as u64) << 32).wrapping_add(rand::random::<u32>() as u64);
    let mut groups = Vec::new();
    let mut offset = 0;
    for &size in &halves {
        let env_cfg = setup.env.clone();
        let factory: EnvFactory = Box::new(move || make_env(&env_cfg));
        groups.push(Group {
            envs: Some(VecEnv::new(factory, size, seed, offset)?),
            hidden: vec![0.0; size * hidden_size],
            rollouts: GroupRollouts::new(&spec, setup.rollout_len, size, offset),
            rewarder: setup.intrinsic.as_ref().map(|ic| Rewarder::new(reward_slot.clone(), ic.beta, size)),
            offset,
        });
        offset += size;
    }
    let mut policy = Policy::<B>::new(&setup.policy, &spec, &device);
    let mut version = u64::MAX;
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let worker = StepWorker::new();
    let message_bytes = setup.policy.message_bytes;

    // Picks up new weights, then chooses actions for group `g` and queues finished rollouts.
    let mut infer = |g: &mut Group, policy: &mut Policy<B>, version: &mut u64| -> Result<Vec<usize>, ActorError> {
        if let Some((v, bytes)) = slot.latest.lock().unwrap().clone() {
            if v != *version {
                *policy = weights::load_bytes(policy.clone(), &bytes)?;
                *version = v;
                metrics::gauge!("oni_actor_policy_version").set(v as f64);
            }
        }
        let envs = g.envs.as_ref().expect("group at home");
        for r in g.rollouts.observe(envs, &g.hidden, *version, &run) {
            counters.rollouts.fetch_add(1, Ordering::Relaxed);
            if let Some(c) = &captions {
                // never waits: a full hand-over queue drops this rollout's captions (counted)
                let caps: Vec<String> = r.captions.iter().filter(|c| !c.is_empty()).cloned().collect();
                if !caps.is_empty() && c.try_send(caps).is_err() {
                    metrics::counter!("oni_actor_captions_dropped_total").increment(1);
                }
            }
            // The queue is bounded: when the learner is slow or gone, stepping pauses here.
            let mut item = r;
            loop {
                match tx.try_send(item) {
                    Ok(()) => break,
                    Err(mpsc::error::TrySendError::Full(back)) => {
                        if halt.load(Ordering::Acquire) || fatal.load(Ordering::Acquire) {
                            return Ok(Vec::new());
                        }
                        item = back;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return Ok(Vec::new()),
                }
            }
        }
        let size = envs.num_envs();
        let obs = ObsBatch::<B>::from_host(&spec, message_bytes, &envs.glyphs, &envs.stats, &envs.messages, &device);
        let h = Tensor::<B, 2>::from_data(TensorData::new(g.hidden.clone(), [size, hidden_size]), &device);
        let (out, h_next) = policy.act(obs, h);
        g.hidden = h_next.into_data().convert::<f32>().to_vec().expect("f32 state");
        let logits: Vec<f32> = out.logits.into_data().convert::<f32>().to_vec().expect("f32 logits");
        let chosen = sample_actions(&logits, spec.num_actions, &mut rng);
        g.rollouts.act(&chosen);
        Ok(chosen.into_iter().map(|(a, _)| a).collect())
    };

    let after_step = |g: &mut Group, envs: VecEnv| {
        for (i, &done) in envs.last.dones.iter().enumerate() {
            if done {
                g.hidden[i * hidden_size..(i + 1) * hidden_size].fill(0.0);
            }
        }
        for (env, why) in &envs.last.restarts {
            tracing::warn!(env, "environment failed and was restarted: {why}");
            metrics::counter!("oni_env_restarts_total").increment(1);
        }
        g.rollouts.stepped(&envs, g.offset, g.rewarder.as_mut());
        let steps = envs.num_envs() as u64;
        counters.env_steps.fetch_add(steps, Ordering::Relaxed);
        metrics::counter!("oni_env_steps_total", "role" => "actor").increment(steps);
        if !envs.last.episodes.is_empty() {
            metrics::counter!("oni_actor_episodes_total").increment(envs.last.episodes.len() as u64);
        }
        g.envs = Some(envs);
    };

    let count = groups.len();
    let first = infer(&mut groups[0], &mut policy, &mut version)?;
    worker.submit(groups[0].envs.take().unwrap(), first);
    let mut cur = 0;
    while !halt.load(Ordering::Acquire) && !fatal.load(Ordering::Acquire) {
        let next = (cur + 1) % count;
        let mut actions = if count > 1 { Some(infer(&mut groups[next], &mut policy, &mut version)?) } else { None };
        let envs = worker.wait().map_err(|(_, e)| ActorError::Env(e))?;
        after_step(&mut groups[cur], envs);
        if actions.is_none() {
            actions = Some(infer(&mut groups[cur], &mut policy, &mut version)?);
        }
        let actions = actions.unwrap();
        if actions.is_empty() {
            return Ok(()); // halted while waiting to queue a rollout; the worker is idle
        }
        worker.submit(groups[next].envs.take().unwrap(), actions);
        cur = next;
    }
    let _ = worker.wait();
    Ok(())
}
