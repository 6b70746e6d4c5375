//! Pulling reward-model snapshots from the annotator on a schedule (actors, and the learner
//! in relabel mode): each snapshot's checksum and kind are checked and the model swapped in
//! whole; a bad one is refused (counted) and the previous model kept. The annotator being
//! down only delays updates.

use crate::RewardModel;
use oni_proto::retry::{pause, Authed, Reconnecting, Refused};
use oni_proto::tasks::CancellationToken;
use oni_proto::v1::annotator_client::AnnotatorClient;
use oni_proto::v1::RewardModelRequest;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The newest reward model the puller accepted.
#[derive(Default)]
pub struct RewardSlot {
    pub latest: Mutex<Option<Arc<RewardModel>>>,
}

/// The annotator's client, as the puller builds it (snapshots can be large).
pub fn annotator_client(ch: Authed) -> Client {
    AnnotatorClient::new(ch).max_decoding_message_size(64 << 20)
}

pub type Client = AnnotatorClient<Authed>;

/// Pulls `GetRewardModel` every `pull_ms` until stopped. The annotator being down only
/// delays updates: the caller keeps its current model and keeps training. `Err` when the
/// annotator refuses for good (a wrong token, no reward model distilled there).
pub async fn pull_reward_models(
    role: &'static str,
    mut annotator: Reconnecting<Client>,
    pull_ms: u64,
    slot: Arc<RewardSlot>,
    stop: CancellationToken,
) -> Result<(), Refused> {
    let timeout = annotator.options().request_timeout;
    let every = Duration::from_millis(pull_ms.max(10));
    loop {
        let version = slot.latest.lock().unwrap().as_ref().map_or(0, |m| m.version());
        let pulled = annotator
            .call("GetRewardModel", &stop, |mut c| {
                let mut req = tonic::Request::new(RewardModelRequest { since_version: version });
                req.set_timeout(timeout);
                async move { c.get_reward_model(req).await }
            })
            .await?;
        let Some(reply) = pulled else { return Ok(()) };
        let reply = reply.into_inner();
        metrics::gauge!(crate::metric_names::REWARD_MODEL_PULL_TIMESTAMP, "role" => role).set(now_secs());
        if !reply.unchanged {
            accept(role, &slot, &reply.snapshot, reply.version);
        }
        if pause(every, &stop).await {
            return Ok(());
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
            metrics::gauge!(crate::metric_names::REWARD_MODEL_VERSION, "role" => role).set(m.version() as f64);
            *slot.latest.lock().unwrap() = Some(Arc::new(m));
            true
        }
        Ok(m) => {
            tracing::warn!("refused reward model: reply says v{announced}, snapshot says v{}", m.version());
            metrics::counter!(crate::metric_names::REWARD_MODEL_REFUSED, "role" => role, "reason" => "version")
                .increment(1);
            false
        }
        Err(e) => {
            tracing::warn!("refused reward model v{announced}: {e}");
            let reason = match e {
                crate::SnapshotError::Checksum => "checksum",
                crate::SnapshotError::UnknownKind(_) => "unknown_kind",
                _ => "malformed",
            };
            metrics::counter!(crate::metric_names::REWARD_MODEL_REFUSED, "role" => role, "reason" => reason)
                .increment(1);
            false
        }
    }
}

fn now_secs() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}
