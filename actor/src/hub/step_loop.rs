//! The stepping thread for attached environments: each client's batch is a group like a
//! built-in half batch. While one client steps its envs the policy answers another, so
//! several clients keep the thread busy the way the two halves of a `VecEnv` do.

use super::service::{HubEvent, Reply};
use super::spaces::{time_limited, Batch, Layout};
use crate::record::Recorder;
use crate::setup::ActorError;
use crate::source::{Acted, ActionSource};
use oni_proto::v1::{hub_message, Actions, HubMessage};
use oni_proto::Refusal;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

struct Client<G> {
    group: G,
    batch: Batch,
    first_slot: usize,
    started: bool,
    /// Said once that the client's truncations come without final observations.
    warned_finals: bool,
    reply: Reply,
    permits: Arc<Semaphore>,
}

/// Logs and counts a refusal of one client, as the status that ends its stream.
fn refuse(client: u64, r: Refusal) -> tonic::Status {
    tracing::debug!(client, "dropping an environment client");
    super::service::refuse(r)
}

/// Queues a client's actions without blocking the thread that steps every client. The
/// channel's last place is kept for the status that ends the stream, so a client that stopped
/// reading its answers is dropped and still hears why when it reads again.
fn answer<G>(client: u64, c: &Client<G>, msg: HubMessage) -> bool {
    if c.reply.capacity() > 1 {
        return c.reply.try_send(Ok(msg)).is_ok();
    }
    let _ = c.reply.try_send(Err(refuse(client, Refusal::Exhausted("the client stopped reading its answers".into()))));
    false
}

/// Serves attached clients until halted. Clients that leave (or send a bad step) take their
/// unfinished rollouts with them: only whole rollouts ever reach the learner.
pub(crate) fn hub_loop<S: ActionSource>(
    layout: Layout,
    events: crossbeam_channel::Receiver<HubEvent>,
    mut source: S,
    mut rec: Option<Recorder>,
) -> Result<(), ActorError> {
    let spec = layout.spec.clone();
    let mut clients: HashMap<u64, Client<S::Group>> = HashMap::new();
    while !source.stopping() {
        let ev = match events.recv_timeout(Duration::from_millis(100)) {
            Ok(ev) => ev,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        match ev {
            HubEvent::Joined { client, envs, first_slot, reply, permits } => {
                let group = source.group(envs, first_slot);
                let batch = Batch::new(&spec, envs, first_slot);
                clients.insert(
                    client,
                    Client { group, batch, first_slot, started: false, warned_finals: false, reply, permits },
                );
            }
            HubEvent::Left { client, why } => {
                if let Some(c) = clients.remove(&client) {
                    if let Some(r) = rec.as_mut().filter(|_| c.first_slot == 0) {
                        r.abandon();
                    }
                    if c.started {
                        metrics::counter!(crate::metric_names::HUB_DISCARDED_PARTIAL_ROLLOUTS)
                            .increment(c.batch.len() as u64);
                    }
                    tracing::debug!(client, "dropped the client's unfinished rollouts ({why})");
                }
            }
            HubEvent::Step { client, step } => {
                let Some(c) = clients.get_mut(&client) else { continue };
                let initial = !c.started;
                if let Err(bad) = layout.decode(&step, c.batch.len(), initial, &mut c.batch) {
                    let c = clients.remove(&client).expect("present");
                    let _ = c.reply.try_send(Err(refuse(client, bad)));
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
                if !initial {
                    source.stepped(&mut c.group, c.batch.view());
                    if let Some(r) = rec.as_mut() {
                        r.stepped(c.first_slot, &c.batch.view(), source.rewarder(&c.group));
                    }
                }
                // A lost inference stream cannot restart a client's episodes: its next stream
                // starts from these observations with a fresh state.
                let actions = loop {
                    match source.act(&mut c.group, c.batch.view())? {
                        Acted::Actions(a) => break Some(a),
                        Acted::Restart => continue,
                        Acted::Halted => break None,
                    }
                };
                let Some(actions) = actions else { break };
                if let Some(r) = rec.as_mut() {
                    r.chose(c.first_slot, &c.batch.view(), &actions, source.version());
                }
                let actions: Vec<u32> = actions.into_iter().map(|x| x as u32).collect();
                let version = source.version();
                let msg =
                    HubMessage { kind: Some(hub_message::Kind::Actions(Actions { actions, policy_version: version })) };
                if answer(client, c, msg) {
                    c.permits.add_permits(1);
                } else if let Some(c) = clients.remove(&client) {
                    c.permits.close();
                }
            }
        }
    }
    Ok(())
}
