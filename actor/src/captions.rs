//! Captions to the annotator. The stepping thread hands over each finished rollout's
//! messages without waiting; this task keeps a bounded set of captions already sent, so
//! each is sent about once per actor, and batches the new ones. A failed send puts them back
//! to be tried again; nothing here can stall stepping.

use oni_proto::v1::annotator_client::AnnotatorClient;
use oni_proto::v1::CaptionBatch;
use oni_proto::{AuthInterceptor, Backoff, ClientOptions};
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Most captions remembered as sent; the set is cleared when it fills (bounded memory; a
/// caption sent again is answered from the annotator's bank).
pub const SEEN_CAPACITY: usize = 200_000;
/// Most new captions waiting to be sent; beyond that they are dropped and counted.
pub const PENDING_CAPACITY: usize = 50_000;

pub async fn send_captions(
    addr: String,
    opts: ClientOptions,
    token: Option<String>,
    actor_id: String,
    mut rx: mpsc::Receiver<Vec<String>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut seen: HashSet<String> = HashSet::new();
    let mut pending: Vec<String> = Vec::new();
    let mut client = None;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut next_try = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            got = rx.recv() => match got {
                None => return,
                Some(caps) => {
                    for c in caps {
                        if c.is_empty() || seen.contains(&c) {
                            continue;
                        }
                        if seen.len() >= SEEN_CAPACITY {
                            seen.clear();
                        }
                        if pending.len() >= PENDING_CAPACITY {
                            metrics::counter!("oni_actor_captions_dropped_total").increment(1);
                            continue;
                        }
                        seen.insert(c.clone());
                        pending.push(c);
                    }
                }
            },
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        if pending.is_empty() || tokio::time::Instant::now() < next_try {
            continue;
        }
        if client.is_none() {
            match opts.connect(&addr).await {
                Ok(ch) => {
                    let auth = AuthInterceptor::new(token.as_deref()).expect("token checked at start");
                    client = Some(AnnotatorClient::with_interceptor(ch, auth));
                }
                Err(e) => {
                    tracing::debug!("annotator unreachable: {e}");
                    metrics::counter!("oni_reconnects_total", "peer" => "annotator").increment(1);
                    next_try = tokio::time::Instant::now() + backoff.next_delay();
                    continue;
                }
            }
        }
        let batch: Vec<String> = pending.drain(..pending.len().min(1024)).collect();
        let mut req = tonic::Request::new(CaptionBatch { actor_id: actor_id.clone(), captions: batch.clone() });
        req.set_timeout(opts.request_timeout);
        match client.as_mut().unwrap().submit_captions(req).await {
            Ok(ack) => {
                backoff.reset();
                metrics::counter!("oni_actor_captions_sent_total").increment(batch.len() as u64);
                if ack.into_inner().backpressure {
                    next_try = tokio::time::Instant::now() + Duration::from_secs(1);
                }
            }
            Err(st) => {
                metrics::counter!("oni_rpc_errors_total", "method" => "SubmitCaptions", "code" => format!("{:?}", st.code()))
                    .increment(1);
                tracing::debug!("SubmitCaptions failed: {}", st.message());
                pending.splice(0..0, batch);
                client = None;
                next_try = tokio::time::Instant::now() + backoff.next_delay();
            }
        }
    }
}
