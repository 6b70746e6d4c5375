//! Counters shared by the training thread, the gRPC handlers and the progress reporter.

use oni_proto::v1::EpisodeSummary;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

const WINDOW: usize = 100;

#[derive(Debug, Clone, Default, Serialize)]
pub struct StatsSnapshot {
    pub env_steps: u64,
    pub updates: u64,
    pub policy_version: u64,
    pub episodes: u64,
    /// Successful episodes since the start (the area under the learning curve).
    pub successes: u64,
    /// Over the last 100 episodes.
    pub success_rate: f64,
    pub mean_extrinsic_return: f64,
    pub mean_intrinsic_return: f64,
    pub mean_episode_length: f64,
    /// The env's own score at the end of the last 100 episodes that had one (NetHack's
    /// in-game score); `None` for envs without a score.
    pub mean_score: Option<f64>,
    pub mean_policy_lag: f64,
    pub rollouts_consumed: u64,
    pub rollouts_dropped: u64,
    pub rollouts_rejected: u64,
    /// The last update's loss terms and diagnostics, by name.
    pub loss: crate::loss::Losses,
    pub grad_norm: f64,
    pub samples_per_sec_train: f64,
}

#[derive(Default)]
struct Inner {
    snap: StatsSnapshot,
    recent: VecDeque<EpisodeSummary>,
    /// Exponential average of the policy lag: what it is now, not since the start.
    lag_ema: Option<f64>,
}

pub struct LearnerStats {
    inner: Mutex<Inner>,
    pub started: Instant,
}

impl Default for LearnerStats {
    fn default() -> Self {
        LearnerStats { inner: Mutex::new(Inner::default()), started: Instant::now() }
    }
}

impl LearnerStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = self.inner.lock().unwrap();
        let mut s = g.snap.clone();
        let n = g.recent.len().max(1) as f64;
        s.success_rate = g.recent.iter().filter(|e| e.success).count() as f64 / n;
        s.mean_extrinsic_return = g.recent.iter().map(|e| e.extrinsic_return as f64).sum::<f64>() / n;
        s.mean_intrinsic_return = g.recent.iter().map(|e| e.intrinsic_return as f64).sum::<f64>() / n;
        s.mean_episode_length = g.recent.iter().map(|e| e.length as f64).sum::<f64>() / n;
        let scores: Vec<f64> = g.recent.iter().filter_map(|e| e.score.map(f64::from)).collect();
        s.mean_score = (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64);
        s.mean_policy_lag = g.lag_ema.unwrap_or(0.0);
        s
    }

    pub fn update(&self, f: impl FnOnce(&mut StatsSnapshot)) {
        f(&mut self.inner.lock().unwrap().snap)
    }

    pub fn record_episode(&self, e: &EpisodeSummary) {
        let mut g = self.inner.lock().unwrap();
        g.snap.episodes += 1;
        g.snap.successes += e.success as u64;
        if g.recent.len() == WINDOW {
            g.recent.pop_front();
        }
        g.recent.push_back(*e);
    }

    pub fn record_lag(&self, lag: u64) {
        let mut g = self.inner.lock().unwrap();
        let lag = lag as f64;
        g.lag_ema = Some(g.lag_ema.map_or(lag, |e| 0.95 * e + 0.05 * lag));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn episode(ret: f32, score: Option<f32>) -> EpisodeSummary {
        EpisodeSummary { extrinsic_return: ret, intrinsic_return: 0.0, length: 10, success: false, score }
    }

    #[test]
    fn the_mean_score_counts_only_episodes_that_report_one() {
        let stats = LearnerStats::default();
        stats.record_episode(&episode(1.0, None));
        assert_eq!(stats.snapshot().mean_score, None, "an env without a score has no mean score");
        stats.record_episode(&episode(2.0, Some(40.0)));
        stats.record_episode(&episode(3.0, Some(20.0)));
        let s = stats.snapshot();
        assert_eq!(s.mean_score, Some(30.0));
        assert_eq!(s.mean_extrinsic_return, 2.0);
        for _ in 0..WINDOW {
            stats.record_episode(&episode(0.0, Some(5.0)));
        }
        assert_eq!(stats.snapshot().mean_score, Some(5.0), "the mean is over the last {WINDOW} episodes");
    }
}
