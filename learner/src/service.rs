//! The learner process: the gRPC service (rollouts in, weights out), the central inference
//! service (`oni_inference`; observations in, actions out, rollouts assembled in-process)
//! and the training thread, joined by a bounded queue.

use crate::batch::RewardMix;
use crate::checkpoint;
use crate::config::LearnerConfig;
use crate::stats::LearnerStats;
use crate::trainer::Trainer;
use crate::validate::{self, Shape};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use oni_env::ObsSpec;
use oni_inference::{InferenceConfig, InferenceSlot, PublishedWeights, WeightsBoard};
use oni_policy::PolicyConfig;
use oni_policy::TrainingBackend;
use oni_proto::transport::{server_builder, spawn_server, TransportError};
use oni_proto::v1::learner_server::{Learner, LearnerServer};
use oni_proto::v1::{GetInfoRequest, GetPolicyRequest, LearnerInfo, PolicyWeights, Rollout, RolloutAck};
use oni_proto::TokenCheck;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use oni_proto::MAX_MESSAGE_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum LearnerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("training thread failed to start: {0}")]
    Start(String),
    #[error(transparent)]
    TooBig(#[from] crate::fits::TooBig),
}

pub struct LearnerSetup {
    pub cfg: LearnerConfig,
    pub policy: PolicyConfig,
    /// The observation layout; `None` for attached environments, whose layout the first
    /// actor to ask for weights declares (see `GetPolicyRequest.obs_spec`).
    pub spec: Option<ObsSpec>,
    pub mix: RewardMix,
    pub run_dir: PathBuf,
    /// Written into every checkpoint.
    pub resolved_config: String,
    pub token: Option<String>,
    /// Stop after consuming this many env steps.
    pub max_env_steps: Option<u64>,
    /// Relabel mode: the reward models pulled from the annotator.
    pub relabel: Option<Arc<oni_reward_model::pull::RewardSlot>>,
    /// The central inference service (for actors with `actor.inference = "remote"`).
    pub inference: InferenceConfig,
}

/// Which runs are live: a restarted actor gets a new run id, and the learner retires the
/// old one so none of its rollouts are joined to the new run's.
#[derive(Default)]
struct RunTable {
    next_seq: HashMap<(String, u32), u64>,
    actor_run: HashMap<String, String>,
    retired: HashSet<String>,
    retired_order: VecDeque<String>,
}

const MAX_RETIRED: usize = 10_000;

impl RunTable {
    fn is_retired(&self, run: &str) -> bool {
        self.retired.contains(run)
    }

    fn admit(&mut self, r: &Rollout) -> Result<(), Status> {
        if self.retired.contains(&r.run_id) {
            return Err(Status::failed_precondition(format!(
                "run_id `{}` of actor `{}` was superseded by a newer run of that actor; its rollouts are no longer accepted",
                r.run_id, r.actor_id
            )));
        }
        match self.actor_run.insert(r.actor_id.clone(), r.run_id.clone()) {
            Some(old) if old != r.run_id => {
                tracing::info!(actor = %r.actor_id, old_run = %old, new_run = %r.run_id, "actor restarted; retiring its old run");
                self.next_seq.retain(|(run, _), _| run != &old);
                self.retired.insert(old.clone());
                self.retired_order.push_back(old);
                if self.retired_order.len() > MAX_RETIRED {
                    if let Some(o) = self.retired_order.pop_front() {
                        self.retired.remove(&o);
                    }
                }
            }
            _ => {}
        }
        let key = (r.run_id.clone(), r.env_slot);
        let expected = self.next_seq.get(&key).copied().unwrap_or(0);
        if r.sequence < expected {
            return Err(Status::invalid_argument(format!(
                "field `sequence`: {} was already received for run `{}` slot {} (next is {expected})",
                r.sequence, r.run_id, r.env_slot
            )));
        }
        if r.sequence > expected {
            metrics::counter!("oni_rollout_sequence_gaps_total").increment(r.sequence - expected);
        }
        self.next_seq.insert(key, r.sequence + 1);
        Ok(())
    }
}

/// The network the learner trains, known once the observation layout is.
struct Model {
    spec: ObsSpec,
    fingerprint: String,
}

struct Shared {
    published: Arc<WeightsBoard>,
    inference: InferenceSlot,
    model: OnceLock<Model>,
    /// Hands the declared layout to the training thread (taken by the first declaration).
    declare: Mutex<Option<std::sync::mpsc::Sender<ObsSpec>>>,
    /// Flips once the training thread has built the network and published its weights.
    ready: watch::Receiver<bool>,
    learner_run: String,
    runs: Mutex<RunTable>,
    stats: Arc<LearnerStats>,
    queue: Sender<Rollout>,
    queue_capacity: usize,
    rollout_len: usize,
    hidden: usize,
    policy: PolicyConfig,
    /// For checking a declared layout's update against memory.
    learner_cfg: LearnerConfig,
    version: AtomicU64,
}

impl Shared {
    fn model(&self) -> Result<&Model, Status> {
        self.model.get().ok_or_else(|| {
            Status::unavailable(
                "the learner has no network yet: it waits for the first attached environment to declare its spaces",
            )
        })
    }

    /// Hands `spec` to the training thread unless a layout was handed over already.
    fn declare(&self, spec: ObsSpec) -> bool {
        let Some(tx) = self.declare.lock().unwrap().take() else { return false };
        tx.send(spec).is_ok()
    }

    /// Builds the network for `spec` if none is built yet (attached environments), and waits
    /// until its weights are published. A layout other than the one being trained (also one
    /// declared concurrently by another actor) is refused.
    async fn adopt(&self, spec_json: &str) -> Result<(), Status> {
        let spec: ObsSpec = serde_json::from_str(spec_json).map_err(|e| {
            Status::invalid_argument(format!("field `obs_spec` is not a valid observation layout: {e}"))
        })?;
        self.policy.check(&spec).map_err(|e| {
            Status::failed_precondition(format!("the learner's network cannot take the declared observations: {e}"))
        })?;
        if self.model.get().is_none() {
            crate::fits::check_device(&self.learner_cfg, &self.policy, &spec)
                .map_err(|e| Status::resource_exhausted(format!("the learner cannot train these observations: {e}")))?;
            if self.declare(spec.clone()) {
                tracing::info!(spec = %spec_json, "building the network for the declared observation spaces");
            }
            let mut ready = self.ready.clone();
            let up = matches!(tokio::time::timeout(Duration::from_secs(120), ready.wait_for(|r| *r)).await, Ok(Ok(_)));
            if !up {
                return Err(Status::unavailable("the learner's training thread did not come up; see its log"));
            }
        }
        match self.model.get() {
            Some(m) if m.spec != spec => Err(Status::failed_precondition(format!(
                "this learner trains observations {} but the actor declares {spec_json}: attach environments with the same spaces to one cluster",
                serde_json::to_string(&m.spec).unwrap_or_default()
            ))),
            _ => Ok(()),
        }
    }
}

#[derive(Clone)]
struct LearnerService {
    shared: Arc<Shared>,
}

fn reject(field: &str) {
    metrics::counter!("oni_rollouts_rejected_total", "field" => field.to_string()).increment(1);
}

impl Shared {
    /// The checks every rollout passes before it is queued: its shapes and values, then the
    /// run table (superseded runs, repeated sequence numbers).
    fn check(&self, r: &Rollout) -> Result<(), Status> {
        let version = self.version.load(Ordering::Acquire);
        let model = self.model()?;
        let shape = Shape { spec: &model.spec, rollout_len: self.rollout_len, hidden: self.hidden };
        if let Err(e) = validate::check(r, &shape, version) {
            tracing::warn!(actor = %r.actor_id, run = %r.run_id, field = e.field, "rejected rollout: {e}");
            reject(e.field);
            self.stats.update(|x| x.rollouts_rejected += 1);
            return Err(e.into());
        }
        if let Err(st) = self.runs.lock().unwrap().admit(r) {
            tracing::warn!(actor = %r.actor_id, run = %r.run_id, "rejected rollout: {}", st.message());
            reject(if st.code() == tonic::Code::FailedPrecondition { "run_id" } else { "sequence" });
            self.stats.update(|x| x.rollouts_rejected += 1);
            return Err(st);
        }
        Ok(())
    }

    fn queued(&self) -> usize {
        let depth = self.queue.len();
        metrics::gauge!("oni_queue_depth", "queue" => "learner_rollouts").set(depth as f64);
        depth
    }

    /// The inference service's way in: the same checks, and a wait for room in the queue
    /// that holds up the service's batcher (and so every remote actor) while training lags.
    fn enqueue_blocking(&self, r: Rollout) -> Result<(), Status> {
        self.check(&r)?;
        match self.queue.send_timeout(r, QUEUE_WAIT) {
            Ok(()) => {
                self.queued();
                Ok(())
            }
            Err(crossbeam_channel::SendTimeoutError::Timeout(_)) => {
                metrics::counter!("oni_rollouts_dropped_total", "reason" => "queue_full").increment(1);
                Err(Status::resource_exhausted("learner queue full for 20 s"))
            }
            Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => {
                Err(Status::unavailable("learner is shutting down"))
            }
        }
    }
}

/// How long a rollout waits for room in a full queue before it is dropped.
const QUEUE_WAIT: Duration = Duration::from_secs(20);

impl LearnerService {
    async fn accept(&self, r: Rollout) -> Result<RolloutAck, Status> {
        let s = &self.shared;
        s.check(&r)?;
        let sequence = r.sequence;
        let mut item = r;
        let deadline = Instant::now() + QUEUE_WAIT;
        loop {
            match s.queue.try_send(item) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) => {
                    if Instant::now() > deadline {
                        metrics::counter!("oni_rollouts_dropped_total", "reason" => "queue_full").increment(1);
                        return Err(Status::resource_exhausted("learner queue full for 20 s; pause and resend later"));
                    }
                    item = back;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(TrySendError::Disconnected(_)) => {
                    return Err(Status::unavailable("learner is shutting down"));
                }
            }
        }
        let depth = s.queued();
        Ok(RolloutAck {
            sequence,
            accepted: true,
            code: 0,
            message: String::new(),
            policy_version: s.version.load(Ordering::Acquire),
            backpressure: depth * 4 >= s.queue_capacity * 3,
        })
    }
}

#[tonic::async_trait]
impl Learner for LearnerService {
    type StreamRolloutsStream = ReceiverStream<Result<RolloutAck, Status>>;

    async fn stream_rollouts(
        &self,
        request: Request<Streaming<Rollout>>,
    ) -> Result<Response<Self::StreamRolloutsStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let svc = self.clone();
        tokio::spawn(async move {
            while let Some(item) = inbound.next().await {
                let ack = match item {
                    Ok(r) => {
                        let seq = r.sequence;
                        match svc.accept(r).await {
                            Ok(ack) => ack,
                            // A bad rollout is answered in its ack; the stream goes on.
                            Err(st) => RolloutAck {
                                sequence: seq,
                                accepted: false,
                                code: st.code() as i32,
                                message: st.message().to_string(),
                                policy_version: svc.shared.version.load(Ordering::Acquire),
                                backpressure: false,
                            },
                        }
                    }
                    Err(st) => {
                        // Bytes that are not a rollout end the stream with a status saying so;
                        // otherwise the actor went away mid-message. Nothing of it was enqueued.
                        if let Some(bad) = oni_proto::serve::inbound_status(&st, "the learner's message limit") {
                            metrics::counter!("oni_rollouts_rejected_total", "field" => "(undecodable)").increment(1);
                            let _ = tx.send(Err(bad)).await;
                        }
                        tracing::debug!("rollout stream ended: {st}");
                        break;
                    }
                };
                if tx.send(Ok(ack)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn push_rollout(&self, request: Request<Rollout>) -> Result<Response<RolloutAck>, Status> {
        self.accept(request.into_inner()).await.map(Response::new)
    }

    async fn get_policy(&self, request: Request<GetPolicyRequest>) -> Result<Response<PolicyWeights>, Status> {
        let req = request.into_inner();
        let s = &self.shared;
        if !req.obs_spec.is_empty() {
            s.adopt(&req.obs_spec).await?;
        }
        let fingerprint = &s.model()?.fingerprint;
        if !req.model_fingerprint.is_empty() && &req.model_fingerprint != fingerprint {
            return Err(Status::failed_precondition(format!(
                "actor network {} differs from the learner's {}: run both with the same [env] and [policy] settings",
                req.model_fingerprint, fingerprint
            )));
        }
        let p = s.published.read().unwrap().clone();
        let unchanged = req.have_version == Some(p.version);
        Ok(Response::new(PolicyWeights {
            version: p.version,
            unchanged,
            weights: if unchanged { Vec::new() } else { p.bytes.clone() },
            model_fingerprint: fingerprint.clone(),
        }))
    }

    async fn get_info(&self, _: Request<GetInfoRequest>) -> Result<Response<LearnerInfo>, Status> {
        let s = &self.shared;
        let snap = s.stats.snapshot();
        Ok(Response::new(LearnerInfo {
            model_fingerprint: s.model.get().map(|m| m.fingerprint.clone()).unwrap_or_default(),
            policy_version: s.version.load(Ordering::Acquire),
            env_steps: snap.env_steps,
            learner_run: s.learner_run.clone(),
        }))
    }
}

/// A running learner. Dropping it does not stop it; call `shutdown`.
pub struct LearnerHandle {
    pub addr: SocketAddr,
    pub stats: Arc<LearnerStats>,
    inference: InferenceSlot,
    stop: watch::Sender<bool>,
    finished: Arc<AtomicBool>,
    trainer_thread: Option<std::thread::JoinHandle<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl LearnerHandle {
    /// True once `max_env_steps` have been consumed.
    pub fn finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Stops serving, writes a final checkpoint and waits for both.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.inference.stop();
        if let Some(s) = self.server.take() {
            let _ = s.await;
        }
        if let Some(t) = self.trainer_thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// Starts the training thread (resuming from the newest checkpoint in the run directory)
/// and the gRPC server. Must be called inside a tokio runtime.
pub async fn spawn_learner<B: TrainingBackend>(
    setup: LearnerSetup,
    device: B::Device,
) -> Result<LearnerHandle, LearnerError> {
    if let Some(spec) = &setup.spec {
        crate::fits::check_device(&setup.cfg, &setup.policy, spec)?;
    }
    let listener = tokio::net::TcpListener::bind(&setup.cfg.listen)
        .await
        .map_err(|source| LearnerError::Bind { addr: setup.cfg.listen.clone(), source })?;
    let addr = listener.local_addr().map_err(|source| LearnerError::Bind { addr: setup.cfg.listen.clone(), source })?;
    let mut builder = server_builder(&setup.cfg.tls)?;
    let check = TokenCheck::new(setup.token.as_deref())?;

    let (queue_tx, queue_rx) = bounded::<Rollout>(setup.cfg.queue_capacity.max(1));
    let stats = Arc::new(LearnerStats::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let finished = Arc::new(AtomicBool::new(false));

    // The trainer is built on its own thread (burn state stays there) once the observation
    // layout is known: at once from the config, or when the first attached env declares it.
    let (declare_tx, declare_rx) = std::sync::mpsc::channel::<ObsSpec>();
    let (ready_tx, ready_rx) = watch::channel(false);
    let inference = InferenceSlot::default();
    let shared = Arc::new(Shared {
        published: Arc::new(RwLock::new(Arc::new(PublishedWeights { version: 0, bytes: Vec::new() }))),
        inference: inference.clone(),
        model: OnceLock::new(),
        declare: Mutex::new(Some(declare_tx)),
        ready: ready_rx,
        learner_run: format!("{:016x}", rand::random::<u64>()),
        runs: Mutex::new(RunTable::default()),
        stats: stats.clone(),
        queue: queue_tx,
        queue_capacity: setup.cfg.queue_capacity.max(1),
        rollout_len: setup.cfg.rollout_len,
        hidden: setup.policy.core_hidden,
        policy: setup.policy.clone(),
        learner_cfg: setup.cfg.clone(),
        version: AtomicU64::new(0),
    });
    let known_spec = setup.spec.clone();
    let thread = {
        let stats = stats.clone();
        let finished = finished.clone();
        let stop_rx = stop_rx.clone();
        let shared = shared.clone();
        let worker = LearnerThread::<B> { setup, device, queue: queue_rx, stats, finished, stop: stop_rx };
        std::thread::Builder::new()
            .name("learner-train".into())
            .spawn(move || worker.run(declare_rx, ready_tx, shared))
            .map_err(|e| LearnerError::Start(e.to_string()))?
    };
    if let Some(spec) = known_spec {
        shared.declare(spec);
        let mut ready = shared.ready.clone();
        ready
            .wait_for(|r| *r)
            .await
            .map_err(|_| LearnerError::Start("training thread exited during start-up".into()))?;
    } else {
        tracing::info!("no observation layout configured: the network is built when the first attached environment declares its spaces");
    }
    let version = shared.version.load(Ordering::Acquire);

    let svc = LearnerServer::new(LearnerService { shared })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let svc = tonic::service::interceptor::InterceptedService::new(svc, check.clone());
    let infer = tonic::service::interceptor::InterceptedService::new(inference.server(MAX_MESSAGE_BYTES), check);
    let server = spawn_server(builder.add_service(svc).add_service(infer), listener, stop_rx.clone(), "learner");
    tracing::info!(%addr, version, "learner serving");
    Ok(LearnerHandle {
        addr,
        stats,
        inference,
        stop: stop_tx,
        finished,
        trainer_thread: Some(thread),
        server: Some(server),
    })
}

struct LearnerThread<B: TrainingBackend> {
    setup: LearnerSetup,
    device: B::Device,
    queue: Receiver<Rollout>,
    stats: Arc<LearnerStats>,
    finished: Arc<AtomicBool>,
    stop: watch::Receiver<bool>,
}

impl<B: TrainingBackend> LearnerThread<B> {
    fn run(self, declared: std::sync::mpsc::Receiver<ObsSpec>, ready: watch::Sender<bool>, shared: Arc<Shared>) {
        let LearnerThread { setup, device, queue, stats, finished, stop } = self;
        let ckpt_dir = setup.run_dir.join("checkpoints");
        let spec = loop {
            if *stop.borrow() {
                return;
            }
            match declared.recv_timeout(Duration::from_millis(100)) {
                Ok(spec) => break spec,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
        };
        let mut trainer =
            Trainer::<B>::new(setup.cfg.clone(), setup.policy.clone(), spec.clone(), setup.mix, device.clone());
        if let Some(state) = checkpoint::resume_latest(&ckpt_dir, &mut trainer) {
            stats.update(|s| {
                s.env_steps = state.env_steps;
                s.updates = state.updates;
                s.policy_version = state.version;
            });
        }
        metrics::gauge!("oni_policy_version").set(trainer.version as f64);
        *shared.published.write().unwrap() =
            Arc::new(PublishedWeights { version: trainer.version, bytes: trainer.weights_bytes() });
        shared.version.store(trainer.version, Ordering::Release);
        let _ = shared.model.set(Model { spec: spec.clone(), fingerprint: trainer.fingerprint() });
        let sink: oni_inference::RolloutSink = {
            let shared = shared.clone();
            Box::new(move |r| shared.enqueue_blocking(r))
        };
        if let Err(e) = shared.inference.start::<B::InnerBackend>(
            &setup.policy,
            &spec,
            trainer.fingerprint(),
            device.clone(),
            setup.inference.clone(),
            setup.cfg.rollout_len,
            shared.published.clone(),
            sink,
        ) {
            tracing::error!("the central inference service did not start: {e}");
        }
        let _ = ready.send(true);

        let cfg = &setup.cfg;
        let mut pending: Vec<Rollout> = Vec::with_capacity(cfg.batch_rollouts);
        let mut relabeler = setup.relabel.clone().map(crate::relabel::Relabeler::new);
        let mut last_ckpt = Instant::now();
        let ckpt_every = Duration::from_secs(cfg.checkpoint_interval_secs.max(1));
        while !*stop.borrow() {
            match queue.recv_timeout(Duration::from_millis(100)) {
                Ok(r) => {
                    metrics::gauge!("oni_queue_depth", "queue" => "learner_rollouts").set(queue.len() as f64);
                    let lag = trainer.version.saturating_sub(r.policy_version);
                    metrics::histogram!("oni_policy_lag_versions").record(lag as f64);
                    stats.record_lag(lag);
                    for e in &r.episodes {
                        stats.record_episode(e.extrinsic_return, e.intrinsic_return, e.length, e.success);
                        metrics::counter!("oni_episodes_total").increment(1);
                        metrics::histogram!("oni_episode_return", "kind" => "extrinsic")
                            .record(e.extrinsic_return as f64);
                        metrics::histogram!("oni_episode_return", "kind" => "intrinsic")
                            .record(e.intrinsic_return as f64);
                        metrics::histogram!("oni_episode_length").record(e.length as f64);
                        metrics::counter!("oni_episode_successes_total").increment(e.success as u64);
                    }
                    let drop_reason = if shared.runs.lock().unwrap().is_retired(&r.run_id) {
                        Some("superseded_run")
                    } else if lag > cfg.max_policy_lag {
                        Some("policy_lag")
                    } else {
                        None
                    };
                    if let Some(reason) = drop_reason {
                        metrics::counter!("oni_rollouts_dropped_total", "reason" => reason).increment(1);
                        stats.update(|s| s.rollouts_dropped += 1);
                        continue;
                    }
                    pending.push(r);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if pending.len() >= cfg.batch_rollouts {
                let t0 = Instant::now();
                if let Some(rl) = relabeler.as_mut() {
                    let n = rl.apply(&mut pending);
                    metrics::counter!("oni_learner_relabelled_rollouts_total").increment(n as u64);
                }
                let report = trainer.train(&pending);
                let secs = t0.elapsed().as_secs_f64();
                let bytes = trainer.weights_bytes();
                *shared.published.write().unwrap() = Arc::new(PublishedWeights { version: trainer.version, bytes });
                shared.version.store(trainer.version, Ordering::Release);
                let n = (cfg.rollout_len * pending.len()) as u64;
                pending.clear();
                metrics::counter!("oni_env_steps_total", "role" => "learner").increment(n);
                metrics::counter!("oni_learner_updates_total").increment(1);
                metrics::gauge!("oni_policy_version").set(trainer.version as f64);
                metrics::gauge!("oni_learner_loss", "term" => "total").set(report.loss_total as f64);
                metrics::gauge!("oni_learner_loss", "term" => "policy").set(report.loss_policy as f64);
                metrics::gauge!("oni_learner_loss", "term" => "value").set(report.loss_value as f64);
                metrics::gauge!("oni_learner_loss", "term" => "entropy").set(report.entropy as f64);
                metrics::gauge!("oni_learner_approx_kl").set(report.approx_kl as f64);
                metrics::gauge!("oni_learner_clip_fraction").set(report.clip_fraction as f64);
                metrics::gauge!("oni_learner_grad_norm").set(report.grad_norm as f64);
                metrics::gauge!("oni_learner_samples_per_second").set(report.samples as f64 / secs.max(1e-9));
                stats.update(|s| {
                    s.env_steps = trainer.env_steps;
                    s.updates = trainer.updates;
                    s.policy_version = trainer.version;
                    s.rollouts_consumed += n / cfg.rollout_len as u64;
                    s.loss_policy = report.loss_policy as f64;
                    s.loss_value = report.loss_value as f64;
                    s.entropy = report.entropy as f64;
                    s.approx_kl = report.approx_kl as f64;
                    s.clip_fraction = report.clip_fraction as f64;
                    s.grad_norm = report.grad_norm as f64;
                    s.samples_per_sec_train = report.samples as f64 / secs.max(1e-9);
                });
                if setup.max_env_steps.is_some_and(|m| trainer.env_steps >= m) {
                    finished.store(true, Ordering::Release);
                }
            }
            if last_ckpt.elapsed() >= ckpt_every {
                write_checkpoint(&ckpt_dir, &trainer, &setup);
                last_ckpt = Instant::now();
            }
        }
        write_checkpoint(&ckpt_dir, &trainer, &setup);
    }
}

fn write_checkpoint<B: TrainingBackend>(dir: &std::path::Path, trainer: &Trainer<B>, setup: &LearnerSetup) {
    match checkpoint::save(dir, trainer, &setup.resolved_config, setup.cfg.keep_checkpoints) {
        Ok(path) => {
            metrics::counter!("oni_checkpoints_total").increment(1);
            tracing::info!(path = %path.display(), version = trainer.version, env_steps = trainer.env_steps, "checkpoint written");
        }
        Err(e) => {
            metrics::counter!("oni_checkpoint_failures_total").increment(1);
            tracing::error!("checkpoint failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(actor: &str, run: &str, slot: u32, seq: u64) -> Rollout {
        Rollout { actor_id: actor.into(), run_id: run.into(), env_slot: slot, sequence: seq, ..Default::default() }
    }

    #[test]
    fn a_restarted_actor_retires_its_old_run() {
        let mut t = RunTable::default();
        t.admit(&r("a", "run1", 0, 0)).unwrap();
        t.admit(&r("a", "run1", 0, 1)).unwrap();
        t.admit(&r("a", "run1", 1, 0)).unwrap();
        // duplicates and regressions are refused, gaps (lost in a reconnect) are not
        assert_eq!(t.admit(&r("a", "run1", 0, 1)).unwrap_err().code(), tonic::Code::InvalidArgument);
        t.admit(&r("a", "run1", 0, 5)).unwrap();
        // the actor restarts: a new run id for the same actor retires the old one
        t.admit(&r("a", "run2", 0, 0)).unwrap();
        assert!(t.is_retired("run1") && !t.is_retired("run2"));
        let e = t.admit(&r("a", "run1", 0, 6)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(e.message().contains("superseded"));
        // other actors are unaffected
        t.admit(&r("b", "run3", 0, 0)).unwrap();
        assert!(!t.is_retired("run3"));
    }
}
