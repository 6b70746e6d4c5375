//! Pulling reward-model snapshots from the annotator on a schedule (actors, and the learner
//! in relabel mode): each snapshot's checksum and kind are checked and the model swapped in
//! whole; a bad one is refused (counted) and the previous model kept. The annotator being
//! down only delays updates.

use crate::RewardModel;
use oni_proto::v1::annotator_client::AnnotatorClient;
use oni_proto::v1::RewardModelRequest;
use oni_proto::{AuthInterceptor, Backoff, ClientOptions};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The newest reward model the puller accepted.
#[derive(Default)]
pub struct RewardSlot {
    pub latest: Mutex<Option<Arc<RewardModel>>>,
}

/// Pulls `GetRewardModel` every `pull_ms` until stopped. The annotator being down only
/// delays updates: the actor keeps its current model and keeps training.
pub async fn pull_reward_models(
    role: &'static str,
    addr: String,
    opts: ClientOptions,
    token: Option<String>,
    pull_ms: u64,
    slot: Arc<RewardSlot>,
    mut stop: watch::Receiver<bool>,
) {
    let mut client = None;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut warned = false;
    loop {
        let version = slot.latest.lock().unwrap().as_ref().map_or(0, |m| m.version());
        let mut pause = Duration::from_millis(pull_ms.max(10));
        if client.is_none() {
            match opts.connect(&addr).await {
                Ok(ch) => {
                    let auth = AuthInterceptor::new(token.as_deref()).expect("token checked at start");
                    client = Some(AnnotatorClient::with_interceptor(ch, auth).max_decoding_message_size(64 << 20));
                }
                Err(e) => {
                    tracing::debug!("annotator unreachable for reward models: {e}");
                    metrics::counter!("oni_reconnects_total", "peer" => "annotator").increment(1);
                    pause = backoff.next_delay().max(pause);
                }
            }
        }
        if let Some(c) = client.as_mut() {
            let mut req = tonic::Request::new(RewardModelRequest { since_version: version });
            req.set_timeout(opts.request_timeout);
            match c.get_reward_model(req).await {
                Ok(reply) => {
                    backoff.reset();
                    let reply = reply.into_inner();
                    metrics::gauge!("oni_reward_model_pull_timestamp_seconds", "role" => role).set(now_secs());
                    if !reply.unchanged {
                        accept(role, &slot, &reply.snapshot, reply.version);
                    }
                }
                Err(st) => {
                    metrics::counter!("oni_rpc_errors_total", "method" => "GetRewardModel", "code" => format!("{:?}", st.code()))
                        .increment(1);
                    if !warned || st.code() != tonic::Code::FailedPrecondition {
                        tracing::warn!("GetRewardModel failed ({:?}): {}", st.code(), st.message());
                        warned = true;
                    }
                    if st.code() == tonic::Code::Unavailable {
                        client = None;
                    }
                    pause = backoff.next_delay().max(pause);
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Loads a snapshot and swaps it in whole, or refuses it and keeps the current model.
pub fn accept(role: &'static str, slot: &RewardSlot, bytes: &[u8], announced: u64) -> bool {
    match RewardModel::decode(bytes) {
        Ok(m) if m.version() == announced => {
            let first = slot.latest.lock().unwrap().is_none();
            if first || m.version() % 100 == 0 {
                tracing::info!(version = m.version(), kind = m.kind().name(), "reward model updated");
            }
            metrics::gauge!("oni_reward_model_version", "role" => role).set(m.version() as f64);
            *slot.latest.lock().unwrap() = Some(Arc::new(m));
            true
        }
        Ok(m) => {
            tracing::warn!("refused reward model: reply says v{announced}, snapshot says v{}", m.version());
            metrics::counter!("oni_reward_model_refused_total", "role" => role, "reason" => "version").increment(1);
            false
        }
        Err(e) => {
            tracing::warn!("refused reward model v{announced}: {e}");
            let reason = match e {
                crate::SnapshotError::Checksum => "checksum",
                crate::SnapshotError::UnknownKind(_) => "unknown_kind",
                _ => "malformed",
            };
            metrics::counter!("oni_reward_model_refused_total", "role" => role, "reason" => reason).increment(1);
            false
        }
    }
}

fn now_secs() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}
