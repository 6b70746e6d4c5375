//! What the gRPC surface, the inference service and the training thread share: the network
//! once known, the published weights, the run table, the rollout queue, and the checks every
//! rollout passes on its way in.

use crate::config::LearnerConfig;
use crate::runs::RunTable;
use crate::stats::LearnerStats;
use crate::validate::{self, Shape};
use crossbeam_channel::Sender;
use oni_env::ObsSpec;
use oni_inference::{InferenceSlot, WeightsBoard};
use oni_policy::PolicyConfig;
use oni_proto::v1::Rollout;
use oni_proto::Refusal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::watch;

/// The network the learner trains, known once the observation layout is.
pub(crate) struct Model {
    pub spec: ObsSpec,
    pub fingerprint: String,
}

pub(crate) struct Shared {
    pub published: Arc<WeightsBoard>,
    pub inference: InferenceSlot,
    pub model: OnceLock<Model>,
    /// Hands the declared layout to the training thread (taken by the first declaration).
    pub declare: Mutex<Option<std::sync::mpsc::Sender<ObsSpec>>>,
    /// Flips once the training thread has built the network and published its weights.
    pub ready: watch::Receiver<bool>,
    pub learner_run: String,
    pub runs: Mutex<RunTable>,
    pub stats: Arc<LearnerStats>,
    pub queue: Sender<Rollout>,
    pub queue_capacity: usize,
    pub rollout_len: usize,
    pub hidden: usize,
    pub policy: PolicyConfig,
    /// For checking a declared layout's update against memory.
    pub learner_cfg: LearnerConfig,
    pub version: AtomicU64,
}

impl Shared {
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
            crate::fits::check_device(&self.learner_cfg, &self.policy, &spec)
                .map_err(|e| Refusal::Exhausted(format!("the learner cannot train these observations: {e}")))?;
            if self.declare(spec.clone()) {
                tracing::info!(spec = %spec_json, "building the network for the declared observation spaces");
            }
            let mut ready = self.ready.clone();
            let up = matches!(tokio::time::timeout(Duration::from_secs(120), ready.wait_for(|r| *r)).await, Ok(Ok(_)));
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
        let version = self.version.load(Ordering::Acquire);
        let model = self.model()?;
        let shape = Shape { spec: &model.spec, rollout_len: self.rollout_len, hidden: self.hidden };
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

    pub fn queued(&self) -> usize {
        let depth = self.queue.len();
        metrics::gauge!(crate::metric_names::QUEUE_DEPTH, "queue" => "learner_rollouts").set(depth as f64);
        depth
    }

    /// The inference service's way in: the same checks, and a wait for room in the queue
    /// that holds up the service's batcher (and so every remote actor) while training lags.
    pub fn enqueue_blocking(&self, r: Rollout) -> Result<(), Refusal> {
        self.check(&r)?;
        match self.queue.send_timeout(r, QUEUE_WAIT) {
            Ok(()) => {
                self.queued();
                Ok(())
            }
            Err(crossbeam_channel::SendTimeoutError::Timeout(_)) => Err(queue_full()),
            Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => Err(shutting_down()),
        }
    }
}

/// A rollout that waited `QUEUE_WAIT` for room in the queue is dropped (counted).
pub(crate) fn queue_full() -> Refusal {
    metrics::counter!(oni_proto::metric_names::ROLLOUTS_DROPPED, "reason" => "queue_full").increment(1);
    Refusal::Exhausted("learner queue full for 20 s; pause and resend later".into())
}

/// The training thread is gone: no rollout is queued any more.
pub(crate) fn shutting_down() -> Refusal {
    Refusal::Unavailable("learner is shutting down".into())
}

/// How long a rollout waits for room in a full queue before it is dropped.
pub(crate) const QUEUE_WAIT: Duration = Duration::from_secs(20);
