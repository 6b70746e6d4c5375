//! What the gRPC surface, the inference service and the training thread share: the network
//! once known, the published weights, the run table, the rollout queue, and the checks every
//! rollout passes on its way in.

use crate::config::LearnerConfig;
use crate::runs::RunTable;
use crate::stats::LearnerStats;
use crate::validate::{self, Shape};
use crossbeam_channel::{SendTimeoutError, Sender, TrySendError};
use oni_env::ObsSpec;
use oni_inference::{InferenceSlot, PublishedWeights, WeightsBoard};
use oni_policy::PolicyConfig;
use oni_proto::v1::{LearnerInfo, Rollout};
use oni_proto::Refusal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// The network the learner trains, known once the observation layout is.
pub(crate) struct Model {
    pub spec: ObsSpec,
    pub fingerprint: String,
}

/// Only the training thread publishes weights and sets the model; the gRPC handlers and the
/// inference service read them and queue rollouts.
pub(crate) struct Shared {
    weights: Arc<WeightsBoard>,
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
    policy: PolicyConfig,
    cfg: LearnerConfig,
    version: AtomicU64,
}

/// The training thread's ends of what `Shared` hands over: declared layouts in, readiness out.
pub(crate) struct TrainingSide {
    pub declared: std::sync::mpsc::Receiver<ObsSpec>,
    pub ready: watch::Sender<bool>,
}

impl Shared {
    pub fn new(
        cfg: &LearnerConfig,
        policy: &PolicyConfig,
        inference: InferenceSlot,
        stats: Arc<LearnerStats>,
        queue: Sender<Rollout>,
    ) -> (Arc<Shared>, TrainingSide) {
        let (declare_tx, declared) = std::sync::mpsc::channel::<ObsSpec>();
        let (ready_tx, ready) = watch::channel(false);
        let shared = Arc::new(Shared {
            weights: Arc::new(RwLock::new(Arc::new(PublishedWeights { version: 0, bytes: Vec::new() }))),
            inference,
            model: OnceLock::new(),
            declare: Mutex::new(Some(declare_tx)),
            ready,
            learner_run: format!("{:016x}", rand::random::<u64>()),
            runs: Mutex::new(RunTable::default()),
            stats,
            queue,
            policy: policy.clone(),
            cfg: cfg.clone(),
            version: AtomicU64::new(0),
        });
        (shared, TrainingSide { declared, ready: ready_tx })
    }

    pub fn config(&self) -> &LearnerConfig {
        &self.cfg
    }

    pub fn inference(&self) -> &InferenceSlot {
        &self.inference
    }

    /// The version of the newest published weights.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The newest published weights.
    pub fn weights(&self) -> Arc<PublishedWeights> {
        self.weights.read().unwrap().clone()
    }

    /// Where the inference service reads the newest weights before every pass.
    pub fn weights_board(&self) -> Arc<WeightsBoard> {
        self.weights.clone()
    }

    /// The training thread's: makes `version`'s weights the ones every reader gets.
    pub fn publish(&self, version: u64, bytes: Vec<u8>) {
        *self.weights.write().unwrap() = Arc::new(PublishedWeights { version, bytes });
        self.version.store(version, Ordering::Release);
    }

    /// The training thread's, once: the network it built.
    pub fn set_model(&self, model: Model) {
        let _ = self.model.set(model);
    }

    /// Whether a newer run of the same actor superseded `run_id`.
    pub fn is_retired(&self, run_id: &str) -> bool {
        self.runs.lock().unwrap().is_retired(run_id)
    }

    /// Waits until the training thread has built the network and published its weights;
    /// false when the thread is gone first.
    pub async fn wait_ready(&self) -> bool {
        self.ready.clone().wait_for(|r| *r).await.is_ok()
    }

    /// What `GetInfo` answers.
    pub fn info(&self) -> LearnerInfo {
        LearnerInfo {
            model_fingerprint: self.model.get().map(|m| m.fingerprint.clone()).unwrap_or_default(),
            policy_version: self.version(),
            env_steps: self.stats.snapshot().env_steps,
            learner_run: self.learner_run.clone(),
        }
    }

    pub fn model(&self) -> Result<&Model, Refusal> {
        self.model.get().ok_or_else(|| {
            Refusal::Unavailable(
                "the learner has no network yet: it waits for the first attached environment to declare its spaces"
                    .into(),
            )
        })
    }

    /// Hands `spec` to the training thread unless a layout was handed over already.
    pub fn declare(&self, spec: ObsSpec) -> bool {
        let Some(tx) = self.declare.lock().unwrap().take() else { return false };
        tx.send(spec).is_ok()
    }

    /// Builds the network for `spec` if none is built yet (attached environments), and waits
    /// until its weights are published. A layout other than the one being trained (also one
    /// declared concurrently by another actor) is refused.
    pub async fn adopt(&self, spec_json: &str) -> Result<(), Refusal> {
        let spec: ObsSpec = serde_json::from_str(spec_json)
            .map_err(|e| Refusal::field("obs_spec", format!("is not a valid observation layout: {e}")))?;
        self.policy.check(&spec).map_err(|e| {
            Refusal::Mismatch(format!("the learner's network cannot take the declared observations: {e}"))
        })?;
        if self.model.get().is_none() {
            crate::fits::check_device(&self.cfg, &self.policy, &spec)
                .map_err(|e| Refusal::Exhausted(format!("the learner cannot train these observations: {e}")))?;
            if self.declare(spec.clone()) {
                tracing::info!(spec = %spec_json, "building the network for the declared observation spaces");
            }
            let up = matches!(tokio::time::timeout(Duration::from_secs(120), self.wait_ready()).await, Ok(true));
            if !up {
                return Err(Refusal::Unavailable("the learner's training thread did not come up; see its log".into()));
            }
        }
        match self.model.get() {
            Some(m) if m.spec != spec => Err(Refusal::Mismatch(format!(
                "this learner trains observations {} but the actor declares {spec_json}: attach environments with the same spaces to one cluster",
                serde_json::to_string(&m.spec).unwrap_or_default()
            ))),
            _ => Ok(()),
        }
    }

    /// The checks every rollout passes before it is queued: its shapes and values, then the
    /// run table (superseded runs, repeated sequence numbers).
    pub fn check(&self, r: &Rollout) -> Result<(), Refusal> {
        let version = self.version();
        let model = self.model()?;
        let shape = Shape { spec: &model.spec, rollout_len: self.cfg.rollout_len, hidden: self.policy.core_hidden };
        let checked = validate::check(r, &shape, version)
            .map_err(Refusal::from)
            .and_then(|()| self.runs.lock().unwrap().admit(r));
        if let Err(e) = &checked {
            let who = format_args!("{e} (actor {:?}, run {:?})", r.actor_id, r.run_id);
            oni_proto::throttle::warn_limited("learner rejected a rollout", &who);
            metrics::counter!(crate::metric_names::ROLLOUTS_REJECTED, "field" => e.label()).increment(1);
            self.stats.update(|x| x.rollouts_rejected += 1);
        }
        checked
    }

    fn queued(&self) -> usize {
        let depth = self.queue.len();
        metrics::gauge!(crate::metric_names::QUEUE_DEPTH, "queue" => "learner_rollouts").set(depth as f64);
        depth
    }

    /// Whether a queue `depth` deep tells senders to slow down (three quarters full).
    pub fn backpressure(&self, depth: usize) -> bool {
        depth * 4 >= self.cfg.queue_capacity.max(1) * 3
    }

    /// Checks a rollout and queues it for the training thread, waiting for room while the
    /// queue is full (`wait_for_room`); the queue's depth after it.
    pub async fn enqueue(self: &Arc<Self>, r: Rollout) -> Result<usize, Refusal> {
        self.check(&r)?;
        match self.queue.try_send(r) {
            Ok(()) => Ok(self.queued()),
            Err(TrySendError::Disconnected(_)) => Err(shutting_down()),
            Err(TrySendError::Full(r)) => {
                let s = self.clone();
                tokio::task::spawn_blocking(move || s.wait_for_room(r)).await.unwrap_or_else(|_| Err(shutting_down()))
            }
        }
    }

    /// The inference service's way in: the same checks and the same wait, which holds up the
    /// service's batcher (and so every remote actor) while training lags.
    pub fn enqueue_blocking(&self, r: Rollout) -> Result<(), Refusal> {
        self.check(&r)?;
        self.wait_for_room(r).map(|_| ())
    }

    /// The one wait on the queue: up to `QUEUE_WAIT` for room, then the rollout is dropped
    /// (counted) and its sender told to pause.
    fn wait_for_room(&self, r: Rollout) -> Result<usize, Refusal> {
        match self.queue.send_timeout(r, QUEUE_WAIT) {
            Ok(()) => Ok(self.queued()),
            Err(SendTimeoutError::Timeout(_)) => Err(queue_full()),
            Err(SendTimeoutError::Disconnected(_)) => Err(shutting_down()),
        }
    }
}

/// A rollout that waited `QUEUE_WAIT` for room in the queue is dropped (counted).
fn queue_full() -> Refusal {
    metrics::counter!(oni_proto::metric_names::ROLLOUTS_DROPPED, "reason" => "queue_full").increment(1);
    Refusal::Exhausted("learner queue full for 20 s; pause and resend later".into())
}

/// The training thread is gone: no rollout is queued any more.
fn shutting_down() -> Refusal {
    Refusal::Unavailable("learner is shutting down".into())
}

/// How long a rollout waits for room in a full queue before it is dropped.
const QUEUE_WAIT: Duration = Duration::from_secs(20);
