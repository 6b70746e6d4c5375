//! Counters shared by the training thread, the gRPC handlers and the progress reporter.

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
    pub mean_policy_lag: f64,
    pub rollouts_consumed: u64,
    pub rollouts_dropped: u64,
    pub rollouts_rejected: u64,
    pub loss_policy: f64,
    pub loss_value: f64,
    pub entropy: f64,
    pub approx_kl: f64,
    pub clip_fraction: f64,
    pub grad_norm: f64,
    pub samples_per_sec_train: f64,
}

#[derive(Default)]
struct Inner {
    snap: StatsSnapshot,
    recent: VecDeque<(f32, f32, u32, bool)>,
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
        s.success_rate = g.recent.iter().filter(|e| e.3).count() as f64 / n;
        s.mean_extrinsic_return = g.recent.iter().map(|e| e.0 as f64).sum::<f64>() / n;
        s.mean_intrinsic_return = g.recent.iter().map(|e| e.1 as f64).sum::<f64>() / n;
        s.mean_episode_length = g.recent.iter().map(|e| e.2 as f64).sum::<f64>() / n;
        s.mean_policy_lag = g.lag_ema.unwrap_or(0.0);
        s
    }

    pub fn update(&self, f: impl FnOnce(&mut StatsSnapshot)) {
        f(&mut self.inner.lock().unwrap().snap)
    }

    pub fn record_episode(&self, extrinsic: f32, intrinsic: f32, length: u32, success: bool) {
        let mut g = self.inner.lock().unwrap();
        g.snap.episodes += 1;
        g.snap.successes += success as u64;
        if g.recent.len() == WINDOW {
            g.recent.pop_front();
        }
        g.recent.push_back((extrinsic, intrinsic, length, success));
    }

    pub fn record_lag(&self, lag: u64) {
        let mut g = self.inner.lock().unwrap();
        let lag = lag as f64;
        g.lag_ema = Some(g.lag_ema.map_or(lag, |e| 0.95 * e + 0.05 * lag));
    }
}
