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
use oni_proto::v1::inference_server::{Inference, InferenceServer};
use oni_proto::v1::{ActReply, ActRequest, GroupHello};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    spec: ObsSpec,
    fingerprint: String,
    next_key: AtomicU64,
    stop: Arc<AtomicBool>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// The service as the learner holds it: it answers UNAVAILABLE until the network is known
/// (attached environments declare it) and [`InferenceSlot::start`] has run.
#[derive(Clone, Default)]
pub struct InferenceSlot {
    running: Arc<OnceLock<Running>>,
}

impl InferenceSlot {
    /// Starts the batcher for the learner's network on `device` (the learner's own).
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
    ) -> std::io::Result<()> {
        let stop = Arc::new(AtomicBool::new(false));
        let tx = batcher::spawn::<B>(policy, spec, device, cfg, rollout_len, board, sink, stop.clone())?;
        let _ = self.running.set(Running { tx, spec: spec.clone(), fingerprint, next_key: AtomicU64::new(0), stop });
        Ok(())
    }

    /// Stops the batcher thread (in-flight requests are answered UNAVAILABLE by the streams).
    pub fn stop(&self) {
        if let Some(r) = self.running.get() {
            r.stop.store(true, Ordering::Release);
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

fn refused(field: &str) {
    metrics::counter!("oni_inference_refused_total", "field" => field.to_string()).increment(1);
}

fn check_hello(h: Option<&GroupHello>, r: &Running) -> Result<GroupHello, Status> {
    let h = h.ok_or_else(|| {
        refused("hello");
        Status::invalid_argument("field `hello`: the first request of a stream must say which envs it serves")
    })?;
    let bad = |field: &str, reason: String| {
        refused(field);
        Status::invalid_argument(format!("field `{field}`: {reason}"))
    };
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
        refused("hello.model_fingerprint");
        return Err(Status::failed_precondition(format!(
            "actor network {} differs from the learner's {}: run both with the same [env] and [policy] settings",
            h.model_fingerprint, r.fingerprint
        )));
    }
    Ok(h.clone())
}

/// Queues a message for the batcher, waiting (counted) while its queue is full.
async fn submit(tx: &Sender<Msg>, mut m: Msg) -> Result<(), Status> {
    let mut waited = false;
    loop {
        match tx.try_send(m) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(back)) => {
                if !waited {
                    metrics::counter!("oni_inference_backpressure_total").increment(1);
                    waited = true;
                }
                m = back;
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            Err(TrySendError::Disconnected(_)) => return Err(Status::unavailable("the inference service is stopping")),
        }
    }
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
    mut inbound: Streaming<ActRequest>,
    out: &mpsc::Sender<Result<ActReply, Status>>,
) -> Result<(), Status> {
    let Some(first) = next(&mut inbound).await? else { return Ok(()) };
    let hello = check_hello(first.hello.as_ref(), r)?;
    let n = hello.num_envs as usize;
    let first_slot = hello.first_slot as usize;
    let key = r.next_key.fetch_add(1, Ordering::Relaxed);
    let (jtx, jrx) = oneshot::channel();
    submit(&r.tx, Msg::Join { key, hello, reply: jtx }).await?;
    jrx.await.map_err(|_| Status::unavailable("the inference service is stopping"))??;
    let mut member = Membership { tx: &r.tx, key, why: "stream closed" };
    let mut req = first;
    let mut buffers = Decoded::new(n);
    for step in 0.. {
        metrics::counter!("oni_inference_bytes_total", "direction" => "in").increment(wire::wire_bytes(&req) as u64);
        if req.step != step {
            refused("step");
            member.why = "bad request";
            return Err(Status::invalid_argument(format!("field `step`: {}, expected {step}", req.step)));
        }
        if step > 0 && req.hello.is_some() {
            refused("hello");
            member.why = "bad request";
            return Err(Status::invalid_argument("field `hello`: only the first request of a stream says hello"));
        }
        if let Err(e) = wire::decode(&req, &r.spec, n, step == 0, &mut buffers) {
            refused(e.field);
            member.why = "bad request";
            return Err(e.into());
        }
        wire::globalise(&mut buffers, first_slot);
        let (atx, arx) = oneshot::channel();
        let job = Job { key, step, decoded: buffers, queued: Instant::now(), reply: atx };
        submit(&r.tx, Msg::Job(Box::new(job))).await?;
        let (reply, back) = arx.await.map_err(|_| Status::unavailable("the inference service is stopping"))??;
        buffers = back;
        metrics::counter!("oni_inference_bytes_total", "direction" => "out").increment(wire::wire_bytes(&reply) as u64);
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

/// The stream's next request: `None` when the actor closed it or went away; an error only
/// for bytes that are not a request.
async fn next(inbound: &mut Streaming<ActRequest>) -> Result<Option<ActRequest>, Status> {
    match inbound.next().await {
        Some(Ok(r)) => Ok(Some(r)),
        Some(Err(st)) => match oni_proto::serve::inbound_status(&st, "the learner's message limit") {
            Some(bad) => {
                refused("(undecodable)");
                Err(bad)
            }
            None => Ok(None),
        },
        None => Ok(None),
    }
}

#[tonic::async_trait]
impl Inference for InferenceService {
    type ActStream = ReceiverStream<Result<ActReply, Status>>;

    async fn act(&self, request: Request<Streaming<ActRequest>>) -> Result<Response<Self::ActStream>, Status> {
        let inbound = request.into_inner();
        let slot = self.slot.clone();
        if slot.running.get().is_none() {
            return Err(Status::unavailable(
                "the learner has no network yet: it waits for the first attached environment to declare its spaces",
            ));
        }
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let r = slot.running.get().expect("checked above");
            if let Err(st) = serve_stream(r, inbound, &tx).await {
                tracing::debug!("inference stream ended: {}", st.message());
                let _ = tx.send(Err(st)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
