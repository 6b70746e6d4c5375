//! The stepping thread for attached environments: each client's batch is a group like a
//! built-in half batch. While one client steps its envs the policy answers another, so
//! several clients keep the thread busy the way the two halves of a `VecEnv` do.

use super::service::{HubEvent, Reply};
use super::spaces::{time_limited, Batch, Layout};
use crate::stepping::{ActorError, ActorSetup, Group, Stepper, Wiring};
use oni_policy::PolicyBackend;
use oni_proto::v1::{hub_message, Actions, HubMessage};
use rand::Rng;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

struct Client {
    /// Rollouts and state (none when acting at random).
    group: Option<Group>,
    batch: Batch,
    started: bool,
    /// Said once that the client's truncations come without final observations.
    warned_finals: bool,
    reply: Reply,
    permits: Arc<Semaphore>,
}

/// Where a step's actions come from.
pub(crate) enum Acting<B: PolicyBackend> {
    Policy(Box<Stepper<B>>),
    /// Uniformly random actions, nothing recorded: measures the protocol alone.
    Random(Arc<std::sync::atomic::AtomicBool>),
}

impl<B: PolicyBackend> Acting<B> {
    fn stopping(&self) -> bool {
        match self {
            Acting::Policy(st) => st.stopping(),
            Acting::Random(halt) => halt.load(std::sync::atomic::Ordering::Acquire),
        }
    }
}

fn send(c: &Client, msg: Result<HubMessage, tonic::Status>) -> bool {
    c.reply.try_send(msg).is_ok()
}

/// Serves attached clients until halted. Clients that leave (or send a bad step) take their
/// unfinished rollouts with them: only whole rollouts ever reach the learner.
pub(crate) fn hub_loop<B: PolicyBackend>(
    layout: Layout,
    events: crossbeam_channel::Receiver<HubEvent>,
    mut acting: Acting<B>,
) -> Result<(), ActorError> {
    let spec = layout.spec.clone();
    let mut clients: HashMap<u64, Client> = HashMap::new();
    let mut rng = rand::rng();
    while !acting.stopping() {
        let ev = match events.recv_timeout(Duration::from_millis(100)) {
            Ok(ev) => ev,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        match ev {
            HubEvent::Joined { client, envs, first_slot, reply, permits } => {
                let group = match &acting {
                    Acting::Policy(st) => Some(st.group(envs, first_slot)),
                    Acting::Random(_) => None,
                };
                let batch = Batch::new(&spec, envs, first_slot);
                clients.insert(client, Client { group, batch, started: false, warned_finals: false, reply, permits });
            }
            HubEvent::Left { client, why } => {
                if let Some(c) = clients.remove(&client) {
                    if c.started {
                        metrics::counter!("oni_hub_discarded_partial_rollouts_total").increment(c.batch.len() as u64);
                    }
                    tracing::debug!(client, "dropped the client's unfinished rollouts ({why})");
                }
            }
            HubEvent::Step { client, step } => {
                let Some(c) = clients.get_mut(&client) else { continue };
                let initial = !c.started;
                if let Err(st) = layout.decode(&step, c.batch.len(), initial, &mut c.batch) {
                    tracing::warn!(client, "bad step from an environment client: {}", st.message());
                    metrics::counter!("oni_hub_refused_total", "code" => format!("{:?}", st.code())).increment(1);
                    let c = clients.remove(&client).expect("present");
                    send(&c, Err(st));
                    c.permits.close();
                    continue;
                }
                c.started = true;
                let cut_blind =
                    step.final_observations.is_empty() && (0..step.truncated.len()).any(|i| time_limited(&step, i));
                if cut_blind && !c.warned_finals {
                    c.warned_finals = true;
                    tracing::warn!(
                        client,
                        "an environment client reports truncated episodes without `final_observations`: they \
                         train as terminations (no value bootstrap); update the client to send them"
                    );
                }
                let actions: Vec<u32> = match &mut acting {
                    Acting::Policy(st) => {
                        let g = c.group.as_mut().expect("a policy group");
                        if !initial {
                            st.after_step(g, c.batch.view());
                        }
                        let a = st.infer(g, c.batch.view())?;
                        if a.is_empty() {
                            break; // halted while waiting to queue a rollout
                        }
                        a.into_iter().map(|x| x as u32).collect()
                    }
                    Acting::Random(_) => {
                        (0..c.batch.len()).map(|_| rng.random_range(0..spec.num_actions as u32)).collect()
                    }
                };
                let version = match &acting {
                    Acting::Policy(st) => st.version,
                    Acting::Random(_) => 0,
                };
                let msg =
                    HubMessage { kind: Some(hub_message::Kind::Actions(Actions { actions, policy_version: version })) };
                if send(c, Ok(msg)) {
                    c.permits.add_permits(1);
                } else if let Some(c) = clients.remove(&client) {
                    c.permits.close();
                }
            }
        }
    }
    Ok(())
}

/// Runs the attached-environment stepping thread with the policy.
pub(crate) fn hub_policy_loop<B: PolicyBackend>(
    setup: &ActorSetup,
    layout: Layout,
    device: B::Device,
    w: Wiring,
    events: crossbeam_channel::Receiver<HubEvent>,
) -> Result<(), ActorError> {
    let st = Stepper::<B>::new(setup, layout.spec.clone(), device, w);
    hub_loop::<B>(layout, events, Acting::Policy(Box::new(st)))
}
