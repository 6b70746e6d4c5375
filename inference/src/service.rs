//! `oni.v1.Inference`: one bidirectional stream per group of an actor's envs. The stream
//! handler checks every request and queues it for the batcher (waiting while the batcher's
//! queue is full); a bad request ends its own stream with INVALID_ARGUMENT naming the field,
//! and the streams of other actors go on.

use crate::batcher::{self, Job, Msg, RolloutSink, WeightsBoard};
use crate::config::InferenceConfig;
use crate::wire::{self, Decoded};
use crossbeam_channel::{Sender, TrySendError};
use oni_env::ObsSpec;
use oni_policy::{PolicyBackend, PolicyConfig};
use oni_proto::tasks::CancellationToken;
use oni_proto::v1::inference_server::{Inference, InferenceServer};
use oni_proto::v1::{ActReply, ActRequest, GroupHello};
use oni_proto::Refusal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// Most envs one stream may serve.
pub const MAX_GROUP_ENVS: u32 = 4096;

/// A running batcher and what requests are checked against.
pub struct Running {
    tx: Sender<Msg>,
    budget: Arc<oni_proto::budget::Budget>,
    spec: ObsSpec,
    fingerprint: String,
    next_key: AtomicU64,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The service as the learner holds it: it answers UNAVAILABLE until the network is known
/// (attached environments declare it) and [`InferenceSlot::start`] has run.
#[derive(Clone, Default)]
pub struct InferenceSlot {
    running: Arc<OnceLock<Running>>,
}

impl InferenceSlot {
    /// Prepares the batcher for the learner's network on `device` (the learner's own) and
    /// opens the service to requests; returns the batcher's loop, to run on a thread of its own
    /// until `stop` is cancelled (`InferenceSlot::stop` cancels it too).
    #[allow(clippy::too_many_arguments)]
    pub fn start<B: PolicyBackend>(
        &self,
        policy: &PolicyConfig,
        spec: &ObsSpec,
        fingerprint: String,
        device: B::Device,
        cfg: InferenceConfig,
        rollout_len: usize,
        board: Arc<WeightsBoard>,
        sink: RolloutSink,
        stop: CancellationToken,
    ) -> impl FnOnce() + Send + 'static {
        let stop = stop.child_token();
        let budget = oni_proto::budget::Budget::new(oni_proto::budget::Caps {
            streams_per_peer: (cfg.max_groups_per_peer, "inference.max_groups_per_peer"),
            units_per_peer: (cfg.max_envs_per_peer, "inference.max_envs_per_peer"),
            streams: (cfg.max_groups, "inference.max_groups"),
            units: (cfg.max_envs, "inference.max_envs"),
            unit: "envs",
        });
        let (tx, rx, mut batcher) = batcher::prepare::<B>(policy, spec, device, cfg, rollout_len, board, sink);
        let running =
            Running { tx, budget, spec: spec.clone(), fingerprint, next_key: AtomicU64::new(0), stop: stop.clone() };
        let _ = self.running.set(running);
        move || batcher.run(rx, stop)
    }

    /// Stops the batcher thread (in-flight requests are answered UNAVAILABLE by the streams).
    pub fn stop(&self) {
        if let Some(r) = self.running.get() {
            r.stop.cancel();
        }
    }

    pub fn server(&self, max_message_bytes: usize) -> InferenceServer<InferenceService> {
        InferenceServer::new(InferenceService { slot: self.clone() })
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }
}

#[derive(Clone)]
pub struct InferenceService {
    slot: InferenceSlot,
}

/// Counts a refusal under its label and hands it back.
fn refused(r: Refusal) -> Refusal {
    metrics::counter!(crate::metric_names::REFUSED, "field" => r.label()).increment(1);
    r
}

fn check_hello(h: Option<&GroupHello>, r: &Running) -> Result<GroupHello, Refusal> {
    let h = h.ok_or_else(|| {
        refused(Refusal::field("hello", "the first request of a stream must say which envs it serves"))
    })?;
    let bad = |field: &'static str, reason: String| refused(Refusal::field(field, reason));
    if h.run_id.is_empty() || h.run_id.len() > 128 {
        return Err(bad("hello.run_id", "must be 1 to 128 characters".into()));
    }
    if h.actor_id.is_empty() || h.actor_id.len() > 256 {
        return Err(bad("hello.actor_id", "must be 1 to 256 characters".into()));
    }
    if h.num_envs == 0 || h.num_envs > MAX_GROUP_ENVS {
        return Err(bad("hello.num_envs", format!("{} is not in 1..={MAX_GROUP_ENVS}", h.num_envs)));
    }
    if h.first_slot.checked_add(h.num_envs).is_none() {
        return Err(bad(
            "hello.first_slot",
            format!("{} + {} envs overflows the slot numbers", h.first_slot, h.num_envs),
        ));
    }
    if !h.model_fingerprint.is_empty() && h.model_fingerprint != r.fingerprint {
        return Err(refused(Refusal::Mismatch(format!(
            "field `hello.model_fingerprint`: actor network {} differs from the learner's {}: run both with the same \
             [env] and [policy] settings",
            h.model_fingerprint, r.fingerprint
        ))));
    }
    Ok(h.clone())
}

/// Queues a message for the batcher, waiting (counted) while its queue is full.
async fn submit(tx: &Sender<Msg>, mut m: Msg) -> Result<(), Refusal> {
    let mut waited = false;
    loop {
        match tx.try_send(m) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(back)) => {
                if !waited {
                    metrics::counter!(crate::metric_names::BACKPRESSURE).increment(1);
                    waited = true;
                }
                m = back;
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            Err(TrySendError::Disconnected(_)) => return Err(stopping()),
        }
    }
}

fn stopping() -> Refusal {
    Refusal::Unavailable("the inference service is stopping".into())
}

/// Tells the batcher a stream ended, whichever way it ended.
struct Membership<'a> {
    tx: &'a Sender<Msg>,
    key: u64,
    why: &'static str,
}

impl Drop for Membership<'_> {
    fn drop(&mut self) {
        // never blocks the stream's task: with the batcher's queue full, a short-lived thread
        // waits for room (the group's state must go, or a reconnecting actor could not join)
        let (tx, key, why) = (self.tx.clone(), self.key, self.why);
        if let Err(TrySendError::Full(m)) = tx.try_send(Msg::Leave { key, why }) {
            std::thread::spawn(move || {
                let _ = tx.send_timeout(m, Duration::from_secs(60));
            });
        }
    }
}

async fn serve_stream(
    r: &Running,
    peer: Option<std::net::IpAddr>,
    mut inbound: Streaming<ActRequest>,
    out: &mpsc::Sender<Result<ActReply, Status>>,
) -> Result<(), Refusal> {
    let Some(first) = next(&mut inbound).await? else { return Ok(()) };
    let hello = check_hello(first.hello.as_ref(), r)?;
    let n = hello.num_envs as usize;
    let _share = r.budget.reserve(peer, n).map_err(|(refusal, key)| {
        metrics::counter!(crate::metric_names::REFUSED, "field" => key).increment(1);
        refusal
    })?;
    let first_slot = hello.first_slot as usize;
    let key = r.next_key.fetch_add(1, Ordering::Relaxed);
    let (jtx, jrx) = oneshot::channel();
    submit(&r.tx, Msg::Join { key, hello, reply: jtx }).await?;
    jrx.await.map_err(|_| stopping())??;
    let mut member = Membership { tx: &r.tx, key, why: "stream closed" };
    let mut req = first;
    let mut buffers = Decoded::new(n);
    for step in 0.. {
        metrics::counter!(crate::metric_names::BYTES, "direction" => "in").increment(wire::wire_bytes(&req) as u64);
        if req.step != step {
            member.why = "bad request";
            return Err(refused(Refusal::field("step", format!("{}, expected {step}", req.step))));
        }
        if step > 0 && req.hello.is_some() {
            member.why = "bad request";
            return Err(refused(Refusal::field("hello", "only the first request of a stream says hello")));
        }
        if let Err(e) = wire::decode(&req, &r.spec, n, step == 0, &mut buffers) {
            member.why = "bad request";
            return Err(refused(e.into()));
        }
        wire::globalise(&mut buffers, first_slot);
        let (atx, arx) = oneshot::channel();
        let job = Job { key, step, decoded: buffers, queued: Instant::now(), reply: atx };
        submit(&r.tx, Msg::Job(Box::new(job))).await?;
        let (reply, back) = arx.await.map_err(|_| stopping())??;
        buffers = back;
        metrics::counter!(crate::metric_names::BYTES, "direction" => "out").increment(wire::wire_bytes(&reply) as u64);
        if out.send(Ok(reply)).await.is_err() {
            return Ok(()); // the actor went away
        }
        req = match next(&mut inbound).await? {
            Some(r) => r,
            None => return Ok(()),
        };
    }
    Ok(())
}

/// The stream's next request: `None` when the actor closed it; an error for a stream that
/// broke (bad framing or bytes, a missed deadline), with the code the framing layer gave it.
async fn next(inbound: &mut Streaming<ActRequest>) -> Result<Option<ActRequest>, Refusal> {
    match inbound.next().await {
        Some(Ok(r)) => Ok(Some(r)),
        Some(Err(st)) => Err(refused(oni_proto::refusal::inbound(&st))),
        None => Ok(None),
    }
}

#[tonic::async_trait]
impl Inference for InferenceService {
    type ActStream = ReceiverStream<Result<ActReply, Status>>;

    async fn act(&self, request: Request<Streaming<ActRequest>>) -> Result<Response<Self::ActStream>, Status> {
        let peer = oni_proto::serve::peer_of(&request);
        let inbound = request.into_inner();
        let slot = self.slot.clone();
        if slot.running.get().is_none() {
            return Err(Refusal::Unavailable(
                "the learner has no network yet: it waits for the first attached environment to declare its spaces"
                    .into(),
            )
            .into());
        }
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let r = slot.running.get().expect("checked above");
            if let Err(refused) = serve_stream(r, peer, inbound, &tx).await {
                tracing::debug!("inference stream ended: {refused}");
                let _ = tx.send(Err(refused.into())).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
