//! What the training thread tells the operator, written in one place to both Prometheus and
//! the stats the progress line, `summary.json` and `GetInfo` read.

use crate::stats::LearnerStats;
use crate::trainer::TrainReport;
use oni_proto::v1::Rollout;

/// A rollout taken from the queue: its policy lag and the episodes that ended in it.
pub(crate) fn rollout_arrived(stats: &LearnerStats, r: &Rollout, lag: u64, queue_depth: usize) {
    metrics::gauge!(crate::metric_names::QUEUE_DEPTH, "queue" => "learner_rollouts").set(queue_depth as f64);
    metrics::histogram!(crate::metric_names::POLICY_LAG).record(lag as f64);
    stats.record_lag(lag);
    for e in &r.episodes {
        stats.record_episode(e);
        metrics::counter!(crate::metric_names::EPISODES).increment(1);
        metrics::histogram!(crate::metric_names::EPISODE_RETURN, "kind" => "extrinsic")
            .record(e.extrinsic_return as f64);
        metrics::histogram!(crate::metric_names::EPISODE_RETURN, "kind" => "intrinsic")
            .record(e.intrinsic_return as f64);
        metrics::histogram!(crate::metric_names::EPISODE_LENGTH).record(e.length as f64);
        if let Some(score) = e.score {
            metrics::histogram!(crate::metric_names::EPISODE_SCORE).record(score as f64);
        }
        metrics::counter!(crate::metric_names::EPISODE_SUCCESSES).increment(e.success as u64);
    }
}

/// A rollout dropped at consumption (`superseded_run`, `policy_lag`).
pub(crate) fn rollout_dropped(stats: &LearnerStats, reason: &'static str) {
    metrics::counter!(oni_proto::metric_names::ROLLOUTS_DROPPED, "reason" => reason).increment(1);
    stats.update(|s| s.rollouts_dropped += 1);
}

/// Where the trainer stands after an update.
pub(crate) struct Progress {
    pub env_steps: u64,
    pub updates: u64,
    pub version: u64,
}

/// One update of `rollouts` rollouts (`steps` env steps) that took `secs`.
pub(crate) fn update(stats: &LearnerStats, report: &TrainReport, at: Progress, rollouts: u64, steps: u64, secs: f64) {
    let samples_per_sec = report.samples as f64 / secs.max(1e-9);
    metrics::counter!(oni_proto::metric_names::ENV_STEPS, "role" => "learner").increment(steps);
    metrics::counter!(crate::metric_names::UPDATES).increment(1);
    metrics::gauge!(crate::metric_names::POLICY_VERSION).set(at.version as f64);
    for (term, v) in report.losses.iter() {
        metrics::gauge!(crate::metric_names::LOSS, "term" => term.name()).set(v as f64);
    }
    metrics::gauge!(crate::metric_names::GRAD_NORM).set(report.grad_norm as f64);
    metrics::gauge!(crate::metric_names::SAMPLES_PER_SECOND).set(samples_per_sec);
    stats.update(|s| {
        s.env_steps = at.env_steps;
        s.updates = at.updates;
        s.policy_version = at.version;
        s.rollouts_consumed += rollouts;
        s.loss = report.losses;
        s.grad_norm = report.grad_norm as f64;
        s.samples_per_sec_train = samples_per_sec;
    });
}
