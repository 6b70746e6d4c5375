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
use oni_env::ObsSpec;
use oni_env::{make_env, VecEnv};
use oni_inference::rollout::RunIds;
use oni_policy::{weights, PolicyBackend};
use oni_proto::retry::{Authed, Reconnecting};
use oni_proto::tasks::{CancellationToken, TaskGroup, STOP_DEADLINE};
use oni_proto::v1::annotator_client::AnnotatorClient;
use oni_proto::v1::Rollout;
use oni_proto::Backoff;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The attached environments' layout and events, when the actor serves the env hub.
type Hub = (crate::hub::Layout, crossbeam_channel::Receiver<crate::hub::HubEvent>);

/// The hand-over queue of captions for the annotator's client.
type CaptionQueue = mpsc::Sender<Vec<String>>;

/// Runs one actor until `stop` is cancelled or one of its tasks fails (the stepping thread,
/// the weights poller, the rollout sender, the annotator's clients). Call inside a tokio
/// runtime.
pub async fn run_actor<B: PolicyBackend>(
    setup: ActorSetup,
    device: B::Device,
    counters: Arc<ActorCounters>,
    stop: CancellationToken,
) -> Result<(), ActorError> {
    let run = Arc::new(RunIds::new(actor_id(&setup)));
    tracing::info!(actor = %run.actor_id, run = %run.run_id, learner = %setup.cfg.learner,
        inference = ?setup.cfg.inference, "actor starting");
    let mut tasks = TaskGroup::child_of(&stop);
    let Some((spec, hub)) = environments(&setup, &run, &mut tasks).await? else { return Ok(()) };
    let fingerprint = weights::fingerprint(&setup.policy, &spec);
    let declared = hub.as_ref().map(|_| serde_json::to_string(&spec).expect("spec serialises"));
    let (captions, reward_slot) = annotator_clients(&setup, &run, &mut tasks)?;
    let common = Common::new(&setup, spec, run, captions, reward_slot, counters, tasks.token());
    let started = match setup.cfg.inference {
        Placement::Local => start_local::<B>(setup, hub, common, device, fingerprint, declared, &mut tasks).await,
        Placement::Remote => start_remote(setup, hub, common, fingerprint, declared, &mut tasks).await,
    };
    let ran = match started {
        Ok(()) => tasks.watch().await.map_err(ActorError::from),
        Err(e) => Err(e),
    };
    let stopped = tasks.shutdown(STOP_DEADLINE).await;
    ran?;
    stopped.map_err(Into::into)
}

/// `actor.actor_id`, or one made of the host, the process and the actor's index.
fn actor_id(setup: &ActorSetup) -> String {
    setup.cfg.actor_id.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "actor".into());
        format!("{host}-{}-{}", std::process::id(), setup.index)
    })
}

/// The observation layout: the built-in env's, or, for attached environments, that of the
/// first client of the env hub this serves (its server one of `tasks`). `None`: stopped
/// before a client came.
async fn environments(
    setup: &ActorSetup,
    run: &RunIds,
    tasks: &mut TaskGroup,
) -> Result<Option<(ObsSpec, Option<Hub>)>, ActorError> {
    Ok(match setup.spec.clone() {
        Some(spec) => Some((spec, None)),
        None => crate::hub::serve(setup, &run.actor_id, tasks)
            .await?
            .map(|(layout, events)| (layout.spec.clone(), Some((layout, events)))),
    })
}

/// The annotator's clients, when the actor has an annotator: the captions out (their
/// hand-over queue is returned), the reward models in (into the returned slot).
fn annotator_clients(
    setup: &ActorSetup,
    run: &RunIds,
    tasks: &mut TaskGroup,
) -> Result<(Option<CaptionQueue>, Arc<RewardSlot>), ActorError> {
    let reward_slot = Arc::new(RewardSlot::default());
    let Some(address) = &setup.cfg.annotator else { return Ok((None, reward_slot)) };
    let connect = |build: fn(Authed) -> AnnotatorClient<Authed>| {
        let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let opts = setup.transport.client_options();
        Reconnecting::new("annotator", address, opts, setup.transport.token(), backoff, build)
    };
    let (tx, rx) = mpsc::channel::<Vec<String>>(64);
    let conn = connect(AnnotatorClient::new)?;
    let id = run.actor_id.clone();
    tasks.spawn("caption sender", move |stop| crate::captions::send_captions(conn, id, rx, stop));
    if let Some(ic) = &setup.intrinsic {
        let conn = connect(oni_reward_model::pull::annotator_client)?;
        let (every, slot) = (ic.pull_ms, reward_slot.clone());
        tasks.spawn("reward-model puller", move |stop| pull_reward_models("actor", conn, every, slot, stop));
    }
    Ok((Some(tx), reward_slot))
}

/// Acting with the policy in this process: polls the learner's weights, and once the first
/// have come, starts the rollout sender and the stepping thread.
async fn start_local<B: PolicyBackend>(
    setup: ActorSetup,
    hub: Option<Hub>,
    common: Common,
    device: B::Device,
    fingerprint: String,
    declared: Option<String>,
    tasks: &mut TaskGroup,
) -> Result<(), ActorError> {
    let slot = Arc::new(WeightsSlot::default());
    let (cfg, transport, s) = (setup.cfg.clone(), setup.transport.clone(), slot.clone());
    tasks.spawn("weights poller", move |stop| poll_weights(cfg, transport, fingerprint, declared, s, stop));
    // nothing to act with until the first weights arrive
    let first_weights = async {
        while slot.latest.lock().unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        _ = first_weights => {}
        stopped = tasks.watch() => return stopped.map_err(Into::into),
    }
    let (tx, rx) = mpsc::channel::<Rollout>(setup.cfg.send_queue.max(1));
    let (cfg, transport) = (setup.cfg.clone(), setup.transport.clone());
    tasks.spawn("rollout sender", move |stop| send_rollouts(cfg, transport, rx, stop));
    let source = LocalSource::<B>::new(common, &setup.policy, device, slot, tx);
    tasks.spawn_blocking("stepping", move |_| drive(setup, hub, source));
    Ok(())
}

/// Acting through the learner's inference service: declares the attached layout, then
/// starts the stepping thread (each group's link connects by itself).
async fn start_remote(
    setup: ActorSetup,
    hub: Option<Hub>,
    common: Common,
    fingerprint: String,
    declared: Option<String>,
    tasks: &mut TaskGroup,
) -> Result<(), ActorError> {
    // check the address and token here, once
    crate::link::to_learner(&setup.cfg, &setup.transport, |c| c)?;
    if let Some(spec_json) = declared {
        // the learner builds its network from the first declared layout
        declare_spec(&setup.cfg, &setup.transport, &fingerprint, &spec_json, tasks.token()).await?;
    }
    let rt = tokio::runtime::Handle::current();
    let source = RemoteSource::new(common, &setup, rt, tasks.token(), fingerprint);
    tasks.spawn_blocking("stepping", move |_| drive(setup, hub, source));
    Ok(())
}

/// The stepping thread: attached clients' batches or the built-in envs, with `source`.
fn drive<S: ActionSource>(setup: ActorSetup, hub: Option<Hub>, source: S) -> Result<(), ActorError> {
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
