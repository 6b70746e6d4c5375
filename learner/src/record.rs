//! What the training thread tells the operator, written in one place to both Prometheus and
//! the stats the progress line, `summary.json` and `GetInfo` read.

use crate::stats::LearnerStats;
use crate::trainer::TrainReport;
use oni_proto::v1::Rollout;

/// A rollout taken from the queue: its policy lag and the episodes that ended in it.
pub(crate) fn rollout_arrived(stats: &LearnerStats, r: &Rollout, lag: u64, queue_depth: usize) {
    metrics::gauge!("oni_queue_depth", "queue" => "learner_rollouts").set(queue_depth as f64);
    metrics::histogram!("oni_policy_lag_versions").record(lag as f64);
    stats.record_lag(lag);
    for e in &r.episodes {
        stats.record_episode(e.extrinsic_return, e.intrinsic_return, e.length, e.success);
        metrics::counter!("oni_episodes_total").increment(1);
        metrics::histogram!("oni_episode_return", "kind" => "extrinsic").record(e.extrinsic_return as f64);
        metrics::histogram!("oni_episode_return", "kind" => "intrinsic").record(e.intrinsic_return as f64);
        metrics::histogram!("oni_episode_length").record(e.length as f64);
        metrics::counter!("oni_episode_successes_total").increment(e.success as u64);
    }
}

/// A rollout dropped at consumption (`superseded_run`, `policy_lag`).
pub(crate) fn rollout_dropped(stats: &LearnerStats, reason: &'static str) {
    metrics::counter!("oni_rollouts_dropped_total", "reason" => reason).increment(1);
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
    metrics::counter!("oni_env_steps_total", "role" => "learner").increment(steps);
    metrics::counter!("oni_learner_updates_total").increment(1);
    metrics::gauge!("oni_policy_version").set(at.version as f64);
    for (term, v) in [
        ("total", report.loss_total),
        ("policy", report.loss_policy),
        ("value", report.loss_value),
        ("entropy", report.entropy),
    ] {
        metrics::gauge!("oni_learner_loss", "term" => term).set(v as f64);
    }
    metrics::gauge!("oni_learner_approx_kl").set(report.approx_kl as f64);
    metrics::gauge!("oni_learner_clip_fraction").set(report.clip_fraction as f64);
    metrics::gauge!("oni_learner_grad_norm").set(report.grad_norm as f64);
    metrics::gauge!("oni_learner_samples_per_second").set(samples_per_sec);
    stats.update(|s| {
        s.env_steps = at.env_steps;
        s.updates = at.updates;
        s.policy_version = at.version;
        s.rollouts_consumed += rollouts;
        s.loss_policy = report.loss_policy as f64;
        s.loss_value = report.loss_value as f64;
        s.entropy = report.entropy as f64;
        s.approx_kl = report.approx_kl as f64;
        s.clip_fraction = report.clip_fraction as f64;
        s.grad_norm = report.grad_norm as f64;
        s.samples_per_sec_train = samples_per_sec;
    });
}
