//! The actor's two connections to the learner: a poller that fetches weights when the
//! version changes, and a sender that streams rollouts and reads acks. Both reconnect with
//! exponential backoff and jitter; every call has a deadline and the channel keepalives.

use crate::config::ActorConfig;
use oni_proto::v1::learner_client::LearnerClient;
use oni_proto::v1::{GetPolicyRequest, Rollout};
use oni_proto::{AuthInterceptor, Backoff};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub type Client = LearnerClient<InterceptedService<Channel, AuthInterceptor>>;

use oni_proto::MAX_MESSAGE_BYTES;

/// The newest weights the poller fetched, for the stepping thread to pick up.
#[derive(Default)]
pub struct WeightsSlot {
    pub latest: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
}

pub(crate) fn rpc_error(method: &'static str, st: &tonic::Status) {
    metrics::counter!("oni_rpc_errors_total", "method" => method, "code" => format!("{:?}", st.code())).increment(1);
}

/// A connection to the learner that adds the token to every call: what the clients of each
/// of its services (`Learner`, `Inference`) are built on.
pub(crate) async fn learner_channel(
    cfg: &ActorConfig,
    token: Option<&str>,
) -> Result<InterceptedService<Channel, AuthInterceptor>, String> {
    let channel = cfg.client_options().connect(&cfg.learner).await.map_err(|e| e.to_string())?;
    let auth = AuthInterceptor::new(token).map_err(|e| e.to_string())?;
    Ok(InterceptedService::new(channel, auth))
}

pub async fn connect(cfg: &ActorConfig, token: Option<&str>) -> Result<Client, String> {
    Ok(LearnerClient::new(learner_channel(cfg, token).await?)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

pub(crate) fn backoff(cfg: &ActorConfig) -> Backoff {
    Backoff::new(Duration::from_millis(cfg.backoff_base_ms), Duration::from_millis(cfg.backoff_max_ms))
}

/// Counts a reconnect and waits out the next backoff delay (or until stopped).
pub(crate) async fn retry_pause(bo: &mut Backoff, stop: &mut watch::Receiver<bool>) {
    metrics::counter!("oni_reconnects_total", "peer" => "learner").increment(1);
    let _ = tokio::time::timeout(bo.next_delay(), stop.changed()).await;
}

/// Errors that retrying cannot fix: the operator must change the setup.
pub(crate) fn is_fatal(st: &tonic::Status) -> bool {
    matches!(st.code(), tonic::Code::Unauthenticated | tonic::Code::FailedPrecondition | tonic::Code::PermissionDenied)
}

/// Polls `GetPolicy` until stopped. Returns an error only for problems retrying cannot fix
/// (wrong token, mismatched network).
pub async fn poll_weights(
    cfg: ActorConfig,
    token: Option<String>,
    fingerprint: String,
    declared_spec: Option<String>,
    slot: Arc<WeightsSlot>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut bo = backoff(&cfg);
    let mut client: Option<Client> = None;
    let timeout = Duration::from_millis(cfg.request_timeout_ms);
    while !*stop.borrow() {
        if client.is_none() {
            match connect(&cfg, token.as_deref()).await {
                Ok(c) => client = Some(c),
                Err(e) => {
                    tracing::warn!("weights: cannot reach learner: {e}");
                    retry_pause(&mut bo, &mut stop).await;
                    continue;
                }
            }
        }
        let have = slot.latest.lock().unwrap().as_ref().map(|(v, _)| *v);
        let mut req = tonic::Request::new(GetPolicyRequest {
            have_version: have,
            model_fingerprint: fingerprint.clone(),
            obs_spec: declared_spec.clone().unwrap_or_default(),
        });
        req.set_timeout(timeout);
        match client.as_mut().unwrap().get_policy(req).await {
            Ok(resp) => {
                bo.reset();
                let w = resp.into_inner();
                if !w.unchanged && !w.weights.is_empty() {
                    *slot.latest.lock().unwrap() = Some((w.version, Arc::new(w.weights)));
                }
            }
            Err(st) => {
                rpc_error("GetPolicy", &st);
                if is_fatal(&st) {
                    return Err(format!("learner refused GetPolicy: {}", st.message()));
                }
                tracing::warn!("weights: GetPolicy failed: {}", st.message());
                client = None;
                retry_pause(&mut bo, &mut stop).await;
                continue;
            }
        }
        let _ = tokio::time::timeout(Duration::from_millis(cfg.weights_poll_ms), stop.changed()).await;
    }
    Ok(())
}

/// Streams rollouts from `rx` to the learner until `rx` closes or `stop`. Rollouts in
/// flight when a stream breaks are lost (counted); the next ones go on a new stream.
pub async fn send_rollouts(
    cfg: ActorConfig,
    token: Option<String>,
    mut rx: mpsc::Receiver<Rollout>,
    fatal: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut bo = backoff(&cfg);
    'reconnect: loop {
        if *stop.borrow() {
            return;
        }
        let mut client = match connect(&cfg, token.as_deref()).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("rollouts: cannot reach learner: {e}");
                retry_pause(&mut bo, &mut stop).await;
                continue;
            }
        };
        let (out_tx, out_rx) = mpsc::channel::<Rollout>(cfg.max_in_flight.max(1));
        let mut acks = match client.stream_rollouts(ReceiverStream::new(out_rx)).await {
            Ok(r) => r.into_inner(),
            Err(st) => {
                rpc_error("StreamRollouts", &st);
                if is_fatal(&st) {
                    tracing::error!("learner refused the rollout stream: {}", st.message());
                    fatal.store(true, Ordering::Release);
                    return;
                }
                tracing::warn!("rollouts: stream failed: {}", st.message());
                retry_pause(&mut bo, &mut stop).await;
                continue;
            }
        };
        bo.reset();
        let window = Arc::new(Semaphore::new(cfg.max_in_flight.max(1)));
        let ack_timeout = Duration::from_millis(cfg.ack_timeout_ms);
        let mut pause = false;
        loop {
            let in_flight = cfg.max_in_flight.max(1) - window.available_permits();
            tokio::select! {
                biased;
                _ = stop.changed() => return,
                ack = tokio::time::timeout(ack_timeout, acks.next()), if in_flight > 0 => {
                    match ack {
                        Ok(Some(Ok(a))) => {
                            window.add_permits(1);
                            if !a.accepted {
                                metrics::counter!("oni_actor_rollouts_rejected_total").increment(1);
                                tracing::warn!(code = a.code, "learner rejected rollout {}: {}", a.sequence, a.message);
                                if a.code == tonic::Code::FailedPrecondition as i32 || a.code == tonic::Code::Unauthenticated as i32 {
                                    fatal.store(true, Ordering::Release);
                                    return;
                                }
                            }
                            if a.backpressure && !pause {
                                metrics::counter!("oni_actor_backpressure_pauses_total").increment(1);
                            }
                            pause = a.backpressure;
                        }
                        Ok(Some(Err(st))) => {
                            rpc_error("StreamRollouts", &st);
                            if is_fatal(&st) {
                                tracing::error!("learner closed the rollout stream: {}", st.message());
                                fatal.store(true, Ordering::Release);
                                return;
                            }
                            lost(in_flight, &st.to_string());
                            continue 'reconnect;
                        }
                        Ok(None) => {
                            lost(in_flight, "stream closed");
                            continue 'reconnect;
                        }
                        Err(_) => {
                            lost(in_flight, "no ack before the deadline");
                            continue 'reconnect;
                        }
                    }
                }
                r = rx.recv(), if !pause && window.available_permits() > 0 => {
                    let Some(r) = r else { return };
                    window.try_acquire().expect("permit available").forget();
                    if out_tx.send(r).await.is_err() {
                        lost(in_flight + 1, "stream closed");
                        continue 'reconnect;
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(20)), if pause && in_flight == 0 => {
                    // Paused with nothing in flight: resume slowly rather than stall forever.
                    pause = false;
                }
            }
        }
    }
}

fn lost(n: usize, why: &str) {
    tracing::warn!("rollout stream broke ({why}); {n} rollouts in flight lost, reconnecting");
    metrics::counter!("oni_rollouts_dropped_total", "reason" => "disconnect").increment(n as u64);
    metrics::counter!("oni_reconnects_total", "peer" => "learner").increment(1);
}

/// Declares attached environments' layout to the learner (which builds its network from the
/// first one) and checks the network's fingerprint, retrying until the learner answers: what
/// the weights poller does on its first call, for actors that pull no weights.
pub async fn declare_spec(
    cfg: &ActorConfig,
    token: Option<&str>,
    fingerprint: &str,
    spec_json: &str,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut bo = backoff(cfg);
    while !*stop.borrow() {
        let mut client = match connect(cfg, token).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("cannot reach learner to declare the observation layout: {e}");
                retry_pause(&mut bo, &mut stop).await;
                continue;
            }
        };
        let mut req = tonic::Request::new(GetPolicyRequest {
            have_version: None,
            model_fingerprint: fingerprint.to_string(),
            obs_spec: spec_json.to_string(),
        });
        req.set_timeout(Duration::from_millis(cfg.request_timeout_ms.max(130_000)));
        match client.get_policy(req).await {
            Ok(_) => return Ok(()),
            Err(st) if is_fatal(&st) => {
                return Err(format!("learner refused the observation layout: {}", st.message()))
            }
            Err(st) => {
                rpc_error("GetPolicy", &st);
                tracing::warn!("declaring the observation layout: {}", st.message());
                retry_pause(&mut bo, &mut stop).await;
            }
        }
    }
    Ok(())
}
