//! The stepping thread: two halves of the env batch alternate, one stepping on a worker
//! thread while the other's actions are chosen. Where they are chosen is the action source
//! (`source.rs`): the policy in this process, or the learner's central inference service.

use crate::config::Placement;
use crate::intrinsic::{pull_reward_models, RewardSlot};
use crate::link::{declare_spec, poll_weights, send_rollouts, WeightsSlot};
use crate::record::Recorder;
use crate::setup::{ActorCounters, ActorError, ActorSetup};
use crate::source::{Acted, ActionSource, Common, LocalSource, RemoteSource};
use oni_env::vec_env::{EnvFactory, StepWorker};
use oni_env::{make_env, VecEnv};
use oni_inference::rollout::RunIds;
use oni_policy::{weights, PolicyBackend};
use oni_proto::retry::{Authed, Reconnecting, Refused};
use oni_proto::v1::annotator_client::AnnotatorClient;
use oni_proto::v1::Rollout;
use oni_proto::Backoff;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

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
    tracing::info!(actor = %run.actor_id, run = %run.run_id, learner = %setup.cfg.learner,
        inference = ?setup.cfg.inference, "actor starting");
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

    let (caption_tx, caption_rx) = mpsc::channel::<Vec<String>>(64);
    // the clients of the annotator (and the rollout sender): each ends early only when its
    // peer refuses this actor for good
    let mut peers: Vec<tokio::task::JoinHandle<Result<(), Refused>>> = Vec::new();
    let annotator = |address: &str, build: fn(Authed) -> AnnotatorClient<Authed>| {
        let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let opts = setup.transport.client_options();
        Reconnecting::new("annotator", address, opts, setup.transport.token(), backoff, build)
    };
    if let Some(address) = &setup.cfg.annotator {
        let conn = annotator(address, AnnotatorClient::new)?;
        peers.push(tokio::spawn(crate::captions::send_captions(conn, run.actor_id.clone(), caption_rx, stop.clone())));
    }
    let captions = setup.cfg.annotator.is_some().then_some(caption_tx);
    let reward_slot = Arc::new(RewardSlot::default());
    if let (Some(ic), Some(address)) = (&setup.intrinsic, &setup.cfg.annotator) {
        let conn = annotator(address, oni_reward_model::pull::annotator_client)?;
        peers.push(tokio::spawn(pull_reward_models("actor", conn, ic.pull_ms, reward_slot.clone(), stop.clone())));
    }
    let fatal = Arc::new(AtomicBool::new(false));
    let halt = Arc::new(AtomicBool::new(false));
    let common =
        Common::new(&setup, spec.clone(), run.clone(), captions, reward_slot, counters, halt.clone(), fatal.clone());
    let name = format!("actor-{}", setup.index);
    let thread = std::thread::Builder::new().name(name);
    let mut poller = None;
    let stepping = match setup.cfg.inference {
        Placement::Local => {
            let slot = Arc::new(WeightsSlot::default());
            let p = tokio::spawn(poll_weights(
                setup.cfg.clone(),
                setup.transport.clone(),
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
                if p.is_finished() {
                    return match p.await {
                        Ok(Err(e)) => Err(e),
                        _ => Ok(()),
                    };
                }
                let _ = tokio::time::timeout(Duration::from_millis(50), stop_wait.changed()).await;
            }
            poller = Some(p);
            let (tx, rx) = mpsc::channel::<Rollout>(setup.cfg.send_queue.max(1));
            peers.push(tokio::spawn(send_rollouts(setup.cfg.clone(), setup.transport.clone(), rx, stop.clone())));
            let source = LocalSource::<B>::new(common, &setup.policy, device, slot, tx);
            thread.spawn(move || drive(setup, hub, source))
        }
        Placement::Remote => {
            // each group's link task connects by itself: check the address and token here
            crate::link::to_learner(&setup.cfg, &setup.transport, |c| c)?;
            if let Some(spec_json) = declared {
                // the learner builds its network from the first declared layout
                declare_spec(&setup.cfg, &setup.transport, &fingerprint, &spec_json, stop.clone()).await?;
            }
            let rt = tokio::runtime::Handle::current();
            let source = RemoteSource::new(common, &setup, rt, stop.clone(), fingerprint);
            thread.spawn(move || drive(setup, hub, source))
        }
    }
    .map_err(|e| ActorError::Spawn("stepping", e))?;
    let mut stop_main = stop.clone();
    loop {
        if *stop_main.borrow() || fatal.load(Ordering::Acquire) || stepping.is_finished() {
            break;
        }
        if poller.as_ref().is_some_and(|p| p.is_finished()) || peers.iter().any(|p| p.is_finished()) {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), stop_main.changed()).await;
    }
    halt.store(true, Ordering::Release);
    let result = tokio::task::spawn_blocking(move || stepping.join()).await.map_err(|_| ActorError::Panicked)?;
    let poll_result = match poller {
        Some(p) if p.is_finished() => p.await.ok(),
        Some(p) => {
            p.abort();
            None
        }
        None => None,
    };
    for p in peers {
        if p.is_finished() {
            p.await.map_err(|_| ActorError::Panicked)??;
        } else {
            p.abort();
        }
    }
    // the stepping thread's own error says most (a remote actor's refusal comes there)
    result.map_err(|_| ActorError::Panicked)??;
    if let Some(Err(e)) = poll_result {
        return Err(e);
    }
    Ok(())
}

/// The stepping thread: attached clients' batches or the built-in envs, with `source`.
fn drive<S: ActionSource>(
    setup: ActorSetup,
    hub: Option<(crate::hub::Layout, crossbeam_channel::Receiver<crate::hub::HubEvent>)>,
    source: S,
) -> Result<(), ActorError> {
    match hub {
        Some((layout, events)) => {
            let rec = setup.recorder();
            crate::hub::step_loop::hub_loop(layout, events, source, rec)
        }
        None => step_loop(setup, source),
    }
}

/// The actions for one group's observations; starts the group's episodes over (and asks
/// again) when the source lost their recurrent state. `None`: halted.
fn actions_for<S: ActionSource>(
    st: &mut S,
    g: &mut S::Group,
    envs: &mut VecEnv,
    rec: &mut Option<Recorder>,
    offset: usize,
) -> Result<Option<Vec<usize>>, ActorError> {
    loop {
        match st.act(g, envs.view())? {
            Acted::Actions(a) => {
                if let Some(r) = rec {
                    r.chose(offset, &envs.view(), &a, st.version());
                }
                return Ok(Some(a));
            }
            Acted::Halted => return Ok(None),
            Acted::Restart => {
                metrics::counter!(crate::metric_names::EPISODE_RESTARTS).increment(envs.num_envs() as u64);
                envs.restart_episodes()?;
                if let Some(r) = rec {
                    r.abandon();
                }
            }
        }
    }
}

/// The built-in environments: two halves of the env batch alternate, one stepping on a
/// worker thread while the source chooses the other's actions.
pub(crate) fn step_loop<S: ActionSource>(setup: ActorSetup, mut st: S) -> Result<(), ActorError> {
    let n = setup.cfg.num_envs.max(1);
    let halves = if n >= 2 { vec![n / 2, n - n / 2] } else { vec![n] };
    let seed = setup.env.seed.wrapping_add((setup.index as u64) << 32).wrapping_add(rand::random::<u32>() as u64);
    let mut groups = Vec::new();
    let mut envs = Vec::new();
    let mut offsets = Vec::new();
    let mut offset = 0;
    for &size in &halves {
        let env_cfg = setup.env.clone();
        let factory: EnvFactory = Box::new(move || make_env(&env_cfg));
        envs.push(Some(VecEnv::new(factory, size, seed, offset)?));
        groups.push(st.group(size, offset));
        offsets.push(offset);
        offset += size;
    }
    let mut rec = setup.recorder();
    if rec.is_some() {
        envs[0].as_mut().expect("home").watch(Some(0));
    }
    let worker = StepWorker::new();

    let count = groups.len();
    let home = envs[0].as_mut().expect("home");
    let Some(first) = actions_for(&mut st, &mut groups[0], home, &mut rec, 0)? else { return Ok(()) };
    worker.submit(envs[0].take().unwrap(), first);
    let mut cur = 0;
    while !st.stopping() {
        let next = (cur + 1) % count;
        let mut actions = if count > 1 {
            let home = envs[next].as_mut().expect("home");
            match actions_for(&mut st, &mut groups[next], home, &mut rec, offsets[next])? {
                Some(a) => Some(a),
                None => break, // halted while waiting; the worker still holds the other half
            }
        } else {
            None
        };
        let stepped = worker.wait().map_err(|(_, e)| ActorError::Env(e))?;
        st.stepped(&mut groups[cur], stepped.view());
        if let Some(r) = rec.as_mut() {
            r.stepped(offsets[cur], &stepped.view(), st.rewarder(&groups[cur]));
        }
        envs[cur] = Some(stepped);
        if actions.is_none() {
            let home = envs[cur].as_mut().expect("home");
            match actions_for(&mut st, &mut groups[cur], home, &mut rec, offsets[cur])? {
                Some(a) => actions = Some(a),
                None => return Ok(()), // halted; the worker is idle
            }
        }
        worker.submit(envs[next].take().unwrap(), actions.unwrap());
        cur = next;
    }
    let _ = worker.wait();
    Ok(())
}
