//! The actor's two connections to the learner: a poller that fetches weights when the
//! version changes, and a sender that streams rollouts and reads acks. Both reconnect with
//! exponential backoff and jitter; every call has a deadline and the channel keepalives.

use crate::config::ActorConfig;
use crate::setup::ActorError;
use oni_proto::refusal::fault;
use oni_proto::retry::{pause, Authed, Reconnecting, Refused};
use oni_proto::tasks::CancellationToken;
use oni_proto::v1::learner_client::LearnerClient;
use oni_proto::v1::{GetPolicyRequest, Rollout};
use oni_proto::Fault;
use oni_proto::TransportConfig;
use oni_proto::{Backoff, MAX_MESSAGE_BYTES};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

pub type Client = LearnerClient<Authed>;

/// The newest weights the poller fetched, for the stepping thread to pick up.
#[derive(Default)]
pub struct WeightsSlot {
    pub latest: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
}

/// The learner's client, sized for the weights of large networks.
fn learner_client(ch: Authed) -> Client {
    LearnerClient::new(ch).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES)
}

pub(crate) fn backoff(cfg: &ActorConfig) -> Backoff {
    Backoff::new(Duration::from_millis(cfg.backoff_base_ms), Duration::from_millis(cfg.backoff_max_ms))
}

/// A connection to the learner (any of its services, built by `build`), remade after
/// failures with the actor's backoff.
pub(crate) fn to_learner<C>(
    cfg: &ActorConfig,
    transport: &TransportConfig,
    build: fn(Authed) -> C,
) -> Result<Reconnecting<C>, ActorError> {
    let opts = transport.client_options();
    Reconnecting::new("learner", &cfg.learner, opts, transport.token(), backoff(cfg), build)
        .map_err(|e| ActorError::Learner(format!("actor.learner {}: {e}", cfg.learner)))
}

/// Polls `GetPolicy` until stopped. Returns an error only for refusals retrying cannot fix
/// (wrong token, mismatched network).
pub async fn poll_weights(
    cfg: ActorConfig,
    transport: TransportConfig,
    fingerprint: String,
    declared_spec: Option<String>,
    slot: Arc<WeightsSlot>,
    stop: CancellationToken,
) -> Result<(), ActorError> {
    let mut learner = to_learner(&cfg, &transport, learner_client)?;
    let timeout = Duration::from_millis(transport.request_timeout_ms);
    loop {
        let have = slot.latest.lock().unwrap().as_ref().map(|(v, _)| *v);
        let polled = learner
            .call("GetPolicy", &stop, |mut client| {
                let mut req = tonic::Request::new(GetPolicyRequest {
                    have_version: have,
                    model_fingerprint: fingerprint.clone(),
                    obs_spec: declared_spec.clone().unwrap_or_default(),
                });
                req.set_timeout(timeout);
                async move { client.get_policy(req).await }
            })
            .await?;
        let Some(resp) = polled else { return Ok(()) };
        let w = resp.into_inner();
        if !w.unchanged && !w.weights.is_empty() {
            *slot.latest.lock().unwrap() = Some((w.version, Arc::new(w.weights)));
        }
        if pause(Duration::from_millis(cfg.weights_poll_ms), &stop).await {
            return Ok(());
        }
    }
}

/// Streams rollouts from `rx` to the learner until `rx` closes or `stop`. Rollouts in
/// flight when a stream breaks are lost (counted); the next ones go on a new stream. `Err`
/// when the learner refuses this actor for good.
pub async fn send_rollouts(
    cfg: ActorConfig,
    transport: TransportConfig,
    mut rx: mpsc::Receiver<Rollout>,
    stop: CancellationToken,
) -> Result<(), Refused> {
    let mut learner = to_learner(&cfg, &transport, learner_client).expect("checked by the weights poller");
    let max_in_flight = cfg.max_in_flight.max(1);
    // the stream opens with a rollout in hand: the learner ends a stream whose first message
    // is late (transport.first_message_timeout_ms), and the first one can take long (an
    // attached env not connected yet)
    let mut first: Option<Rollout> = None;
    'reconnect: loop {
        if first.is_none() {
            first = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = rx.recv() => match r { Some(r) => Some(r), None => return Ok(()) },
            };
        }
        let opened =
            learner
                .call("StreamRollouts", &stop, |mut client| {
                    let (out_tx, out_rx) = mpsc::channel::<Rollout>(max_in_flight);
                    async move {
                        client.stream_rollouts(ReceiverStream::new(out_rx)).await.map(|r| (out_tx, r.into_inner()))
                    }
                })
                .await?;
        let Some((out_tx, mut acks)) = opened else { return Ok(()) };
        let window = Arc::new(Semaphore::new(max_in_flight));
        if let Some(r) = first.take() {
            window.try_acquire().expect("a fresh window").forget();
            if out_tx.send(r).await.is_err() {
                metrics::counter!(oni_proto::metric_names::ROLLOUTS_DROPPED, "reason" => "disconnect").increment(1);
                pause(learner.broken("stream closed"), &stop).await;
                continue 'reconnect;
            }
        }
        let ack_timeout = Duration::from_millis(cfg.ack_timeout_ms);
        let mut paused = false;
        loop {
            let in_flight = max_in_flight - window.available_permits();
            let broke = tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(()),
                ack = tokio::time::timeout(ack_timeout, acks.next()), if in_flight > 0 => match ack {
                    Ok(Some(Ok(a))) => {
                        window.add_permits(1);
                        if !a.accepted {
                            metrics::counter!(crate::metric_names::ROLLOUTS_REJECTED).increment(1);
                            tracing::warn!(code = a.code, "learner rejected rollout {}: {}", a.sequence, a.message);
                            // the rollout is gone whatever the fault; only the setup's stops the stream
                            let st = tonic::Status::new(a.code.into(), a.message);
                            if fault(&st) == Fault::Setup {
                                return Err(learner.refused("StreamRollouts", &st));
                            }
                        }
                        if a.backpressure && !paused {
                            metrics::counter!(crate::metric_names::BACKPRESSURE_PAUSES).increment(1);
                        }
                        paused = a.backpressure;
                        None
                    }
                    // the failed call drops the connection and says how long to wait
                    Ok(Some(Err(st))) => Some((in_flight, learner.failed("StreamRollouts", &st)?)),
                    Ok(None) => Some((in_flight, learner.broken("stream closed"))),
                    Err(_) => Some((in_flight, learner.broken("no ack before the deadline"))),
                },
                r = rx.recv(), if !paused && window.available_permits() > 0 => {
                    let Some(r) = r else { return Ok(()) };
                    window.try_acquire().expect("permit available").forget();
                    out_tx.send(r).await.err().map(|_| (in_flight + 1, learner.broken("stream closed")))
                }
                _ = tokio::time::sleep(Duration::from_millis(20)), if paused && in_flight == 0 => {
                    // Paused with nothing in flight: resume slowly rather than stall forever.
                    paused = false;
                    None
                }
            };
            if let Some((n, wait)) = broke {
                tracing::warn!("rollout stream broke; {n} rollouts in flight lost, reconnecting");
                metrics::counter!(oni_proto::metric_names::ROLLOUTS_DROPPED, "reason" => "disconnect")
                    .increment(n as u64);
                pause(wait, &stop).await;
                continue 'reconnect;
            }
        }
    }
}

/// Declares attached environments' layout to the learner (which builds its network from the
/// first one) and checks the network's fingerprint, retrying until the learner answers: what
/// the weights poller does on its first call, for actors that pull no weights.
pub async fn declare_spec(
    cfg: &ActorConfig,
    transport: &TransportConfig,
    fingerprint: &str,
    spec_json: &str,
    stop: CancellationToken,
) -> Result<(), ActorError> {
    let mut learner = to_learner(cfg, transport, learner_client)?;
    // the learner may wait for its first layout before it answers
    let timeout = Duration::from_millis(transport.request_timeout_ms.max(130_000));
    learner
        .call("GetPolicy", &stop, |mut client| {
            let mut req = tonic::Request::new(GetPolicyRequest {
                have_version: None,
                model_fingerprint: fingerprint.to_string(),
                obs_spec: spec_json.to_string(),
            });
            req.set_timeout(timeout);
            async move { client.get_policy(req).await }
        })
        .await?;
    Ok(())
}
