//! The training thread: builds the network once the observation layout is known (resuming
//! from the newest checkpoint), starts the inference service on the same device, then takes
//! rollouts from the queue, trains on each full batch, publishes the weights and checkpoints.

use crate::checkpoint;
use crate::record::{self, Progress};
use crate::setup::LearnerSetup;
use crate::shared::{Model, Shared, TrainingSide};
use crate::stats::LearnerStats;
use crate::trainer::Trainer;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use oni_policy::TrainingBackend;
use oni_proto::tasks::CancellationToken;
use oni_proto::v1::Rollout;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) struct LearnerThread<B: TrainingBackend> {
    pub setup: LearnerSetup,
    pub device: B::Device,
    pub queue: Receiver<Rollout>,
    pub stats: Arc<LearnerStats>,
    pub finished: Arc<AtomicBool>,
}

impl<B: TrainingBackend> LearnerThread<B> {
    /// Trains until `stop` is cancelled.
    pub fn run(self, training: TrainingSide, shared: Arc<Shared>, stop: CancellationToken) {
        let LearnerThread { setup, device, queue, stats, finished } = self;
        let TrainingSide { declared, ready } = training;
        let ckpt_dir = setup.run_dir.join("checkpoints");
        let spec = loop {
            if stop.is_cancelled() {
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
        metrics::gauge!(crate::metric_names::POLICY_VERSION).set(trainer.version as f64);
        shared.publish(trainer.version, trainer.weights_bytes());
        shared.set_model(Model { spec: spec.clone(), fingerprint: trainer.fingerprint() });
        // the central inference service starts on this (`handle.rs`)
        let _ = ready.send(true);

        let cfg = &setup.cfg;
        let mut pending: Vec<Rollout> = Vec::with_capacity(cfg.batch_rollouts);
        let mut relabeler = setup.relabel.clone().map(crate::relabel::Relabeler::new);
        let ckpt_every = Duration::from_secs(cfg.checkpoint_interval_secs.max(1));
        let mut next_ckpt = Instant::now() + ckpt_every;
        while !stop.is_cancelled() {
            match queue.recv_timeout(Duration::from_millis(100)) {
                Ok(r) => {
                    let lag = trainer.version.saturating_sub(r.policy_version);
                    record::rollout_arrived(&stats, &r, lag, queue.len());
                    let drop_reason = if shared.is_retired(&r.run_id) {
                        Some("superseded_run")
                    } else if lag > cfg.max_policy_lag {
                        Some("policy_lag")
                    } else {
                        None
                    };
                    if let Some(reason) = drop_reason {
                        record::rollout_dropped(&stats, reason);
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
                    metrics::counter!(crate::metric_names::RELABELLED_ROLLOUTS).increment(n as u64);
                }
                let report = trainer.train(&pending);
                let secs = t0.elapsed().as_secs_f64();
                let bytes = trainer.weights_bytes();
                shared.publish(trainer.version, bytes);
                let rollouts = pending.len() as u64;
                pending.clear();
                let at = Progress { env_steps: trainer.env_steps, updates: trainer.updates, version: trainer.version };
                record::update(&stats, &report, at, rollouts, rollouts * cfg.rollout_len as u64, secs);
                if setup.max_env_steps.is_some_and(|m| trainer.env_steps >= m) {
                    finished.store(true, Ordering::Release);
                }
            }
            if Instant::now() >= next_ckpt {
                let wait = if write_checkpoint(&ckpt_dir, &trainer, &setup) {
                    ckpt_every
                } else {
                    ckpt_every.min(CHECKPOINT_RETRY)
                };
                next_ckpt = Instant::now() + wait;
            }
        }
        write_checkpoint(&ckpt_dir, &trainer, &setup);
    }
}

/// A failed checkpoint (a full disk, say) is tried again this soon rather than a whole
/// interval later; the previous one stays in place meanwhile.
const CHECKPOINT_RETRY: Duration = Duration::from_secs(5);

/// Writes a checkpoint; false (logged and counted) when it failed.
fn write_checkpoint<B: TrainingBackend>(dir: &std::path::Path, trainer: &Trainer<B>, setup: &LearnerSetup) -> bool {
    match checkpoint::save(dir, trainer, &setup.resolved_config, setup.cfg.keep_checkpoints) {
        Ok(path) => {
            metrics::counter!(crate::metric_names::CHECKPOINTS).increment(1);
            tracing::info!(path = %path.display(), version = trainer.version, env_steps = trainer.env_steps, "checkpoint written");
            true
        }
        Err(e) => {
            metrics::counter!(crate::metric_names::CHECKPOINT_FAILURES).increment(1);
            tracing::error!(
                "checkpoint failed (the previous one is kept; another try within {CHECKPOINT_RETRY:?}): {e}"
            );
            false
        }
    }
}
