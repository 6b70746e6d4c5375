//! Captions to the annotator. The stepping thread hands over each finished rollout's
//! messages without waiting; this task keeps a bounded set of captions already sent, so
//! each is sent about once per actor, and batches the new ones with how often every caption
//! was met since the previous batch (the annotator asks about the most met first). A failed
//! send puts them back to be tried again; nothing here can stall stepping.

use oni_proto::retry::{Authed, Reconnecting, Refused};
use oni_proto::tasks::CancellationToken;
use oni_proto::v1::annotator_client::AnnotatorClient;
use oni_proto::v1::{CaptionBatch, CaptionCount};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::mpsc;

/// Most captions remembered as sent; the set is cleared when it fills (bounded memory; a
/// caption sent again is answered from the annotator's bank).
pub const SEEN_CAPACITY: usize = 200_000;
/// Most new captions waiting to be sent; beyond that they are dropped and counted.
pub const PENDING_CAPACITY: usize = 50_000;
/// Most distinct captions counted between two batches; others met meanwhile are not
/// counted until the next batch.
pub const COUNTED_CAPACITY: usize = 50_000;
/// Most captions, and most counts, in one call (the annotator takes up to
/// `annotator.max_captions_per_call`, 4096 by default).
const PER_CALL: usize = 1024;
/// Counts go out this often when no new caption is waiting.
const COUNT_EVERY: Duration = Duration::from_secs(2);

pub type Client = AnnotatorClient<Authed>;

/// Sends new captions until `rx` closes or `stop`; `Err` when the annotator refuses this
/// actor for good (a wrong token, say): the actor stops and says so.
pub async fn send_captions(
    mut annotator: Reconnecting<Client>,
    actor_id: String,
    mut rx: mpsc::Receiver<Vec<String>>,
    stop: CancellationToken,
) -> Result<(), Refused> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut pending: Vec<String> = Vec::new();
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut next_try = tokio::time::Instant::now();
    let mut last_counts = tokio::time::Instant::now();
    let timeout = annotator.options().request_timeout;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            got = rx.recv() => match got {
                None => return Ok(()),
                Some(caps) => {
                    for c in caps {
                        if c.is_empty() {
                            continue;
                        }
                        if counts.len() < COUNTED_CAPACITY || counts.contains_key(&c) {
                            *counts.entry(c.clone()).or_insert(0) += 1;
                        }
                        if seen.contains(&c) {
                            continue;
                        }
                        if seen.len() >= SEEN_CAPACITY {
                            seen.clear();
                        }
                        if pending.len() >= PENDING_CAPACITY {
                            metrics::counter!(crate::metric_names::CAPTIONS_DROPPED).increment(1);
                            continue;
                        }
                        seen.insert(c.clone());
                        pending.push(c);
                    }
                }
            },
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let counts_due = !counts.is_empty() && last_counts.elapsed() >= COUNT_EVERY;
        if (pending.is_empty() && !counts_due) || tokio::time::Instant::now() < next_try {
            continue;
        }
        let client = match annotator.client().await {
            Ok(c) => c,
            Err(wait) => {
                next_try = tokio::time::Instant::now() + wait;
                continue;
            }
        };
        let batch: Vec<String> = pending.drain(..pending.len().min(PER_CALL)).collect();
        let keys: Vec<String> = counts.keys().take(PER_CALL).cloned().collect();
        let met: Vec<CaptionCount> =
            keys.into_iter().map(|k| CaptionCount { count: counts.remove(&k).unwrap_or(0), caption: k }).collect();
        last_counts = tokio::time::Instant::now();
        let mut req = tonic::Request::new(CaptionBatch {
            actor_id: actor_id.clone(),
            captions: batch.clone(),
            counts: met.clone(),
        });
        req.set_timeout(timeout);
        match client.submit_captions(req).await {
            Ok(ack) => {
                annotator.ok();
                metrics::counter!(crate::metric_names::CAPTIONS_SENT).increment(batch.len() as u64);
                if ack.into_inner().backpressure {
                    next_try = tokio::time::Instant::now() + Duration::from_secs(1);
                }
            }
            Err(st) => {
                let wait = annotator.failed("SubmitCaptions", &st)?;
                pending.splice(0..0, batch);
                for m in met {
                    *counts.entry(m.caption).or_insert(0) += m.count;
                }
                next_try = tokio::time::Instant::now() + wait;
            }
        }
    }
}
