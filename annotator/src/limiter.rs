//! How many prompts the annotator keeps at the LLM server at once, and how long it waits for
//! one, learned from the server's answers instead of fixed.
//!
//! Concurrency follows AIMD (as TCP and adaptive concurrency limiters do): every answer in
//! time raises the limit by 1/limit (about one per round of answers), every timeout or
//! overload answer (429, 5xx) halves it, between `llm.min_concurrency` and
//! `llm.concurrency`. The timeout follows the observed latency: the 95th percentile of the
//! last answers × 4, at least `MIN_TIMEOUT`, at most `llm.timeout_ms`; until enough answers
//! are seen it is `llm.timeout_ms`. A server that slows down under load thus gets fewer
//! prompts at once, and a prompt is only given up when it is far slower than its peers.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

/// Answers remembered for the latency percentile.
const WINDOW: usize = 64;
/// Answers needed before the timeout follows them.
const MIN_SAMPLES: usize = 8;
const TIMEOUT_FACTOR: f64 = 4.0;
const MIN_TIMEOUT: Duration = Duration::from_secs(2);

/// How one request ended, as the limiter counts it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Answered, after this long.
    Answered(Duration),
    /// Timed out, or the server said it is overloaded (429, 5xx): back off.
    Overloaded,
    /// Any other failure (unreachable, refused, malformed): says nothing about load.
    Failed,
}

struct State {
    limit: f64,
    /// The most the limit may grow to: `max`, or fewer when the server says it has fewer
    /// parallel slots.
    ceiling: usize,
    in_flight: usize,
    latencies: VecDeque<f64>,
}

pub struct Limiter {
    state: Mutex<State>,
    freed: Notify,
    min: usize,
    max: usize,
    max_timeout: Duration,
    adaptive: bool,
}

/// A slot for one request; give it back with `Limiter::release`.
#[must_use]
pub struct Slot(());

impl Limiter {
    /// Starts at `max` (the configured concurrency): a healthy server is used fully at once.
    pub fn new(min: usize, max: usize, max_timeout: Duration) -> Self {
        let max = max.max(1);
        let min = min.clamp(1, max);
        Limiter {
            state: Mutex::new(State { limit: max as f64, ceiling: max, in_flight: 0, latencies: VecDeque::new() }),
            freed: Notify::new(),
            min,
            max,
            max_timeout,
            adaptive: true,
        }
    }

    /// A fixed limit and timeout (`llm.adaptive = false`).
    pub fn fixed(concurrency: usize, timeout: Duration) -> Self {
        Limiter { adaptive: false, ..Self::new(concurrency, concurrency, timeout) }
    }

    /// Waits until fewer requests than the current limit are in flight.
    pub async fn acquire(&self) -> Slot {
        loop {
            let notified = self.freed.notified();
            {
                let mut s = self.state.lock().unwrap();
                if s.in_flight < s.limit.floor() as usize {
                    s.in_flight += 1;
                    metrics::gauge!(crate::metric_names::LLM_IN_FLIGHT).set(s.in_flight as f64);
                    return Slot(());
                }
            }
            notified.await;
        }
    }

    pub fn release(&self, _slot: Slot, outcome: Outcome) {
        let mut s = self.state.lock().unwrap();
        s.in_flight -= 1;
        match outcome {
            Outcome::Answered(d) => {
                s.limit = (s.limit + 1.0 / s.limit).min(s.ceiling as f64);
                if s.latencies.len() == WINDOW {
                    s.latencies.pop_front();
                }
                s.latencies.push_back(d.as_secs_f64());
            }
            Outcome::Overloaded => s.limit = (s.limit / 2.0).max(self.min as f64),
            Outcome::Failed => {}
        }
        metrics::gauge!(crate::metric_names::LLM_IN_FLIGHT).set(s.in_flight as f64);
        metrics::gauge!(crate::metric_names::LLM_CONCURRENCY_LIMIT).set(s.limit.floor());
        drop(s);
        self.freed.notify_waiters();
    }

    /// Caps the limit at the server's parallel slots (never above the configured maximum nor
    /// below 1): more requests than slots only wait in the server's queue, where a timeout
    /// counts against them. A fixed limiter keeps what it was given.
    pub fn set_ceiling(&self, slots: usize) {
        if !self.adaptive {
            return;
        }
        let mut s = self.state.lock().unwrap();
        s.ceiling = slots.clamp(1, self.max);
        s.limit = s.limit.min(s.ceiling as f64);
        metrics::gauge!(crate::metric_names::LLM_CONCURRENCY_LIMIT).set(s.limit.floor());
    }

    /// Requests allowed at once now.
    pub fn limit(&self) -> usize {
        self.state.lock().unwrap().limit.floor() as usize
    }

    /// How long the next request may take.
    pub fn timeout(&self) -> Duration {
        let s = self.state.lock().unwrap();
        if !self.adaptive || s.latencies.len() < MIN_SAMPLES {
            return self.max_timeout;
        }
        let mut v: Vec<f64> = s.latencies.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        let p95 = v[((v.len() as f64 * 0.95).ceil() as usize).min(v.len()) - 1];
        Duration::from_secs_f64(p95 * TIMEOUT_FACTOR).clamp(MIN_TIMEOUT.min(self.max_timeout), self.max_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn answers_raise_the_limit_slowly_and_overloads_halve_it() {
        let l = Limiter::new(1, 8, Duration::from_secs(30));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let slot = || rt.block_on(l.acquire());
        assert_eq!(l.limit(), 8);
        l.release(slot(), Outcome::Overloaded);
        assert_eq!(l.limit(), 4);
        l.release(slot(), Outcome::Overloaded);
        l.release(slot(), Outcome::Overloaded);
        l.release(slot(), Outcome::Overloaded);
        assert_eq!(l.limit(), 1, "never below the minimum");
        l.release(slot(), Outcome::Failed);
        assert_eq!(l.limit(), 1, "a refused request says nothing about load");
        // additive increase: from 1, about one step per round of `limit` answers
        for _ in 0..3 {
            l.release(slot(), Outcome::Answered(Duration::from_millis(100)));
        }
        assert_eq!(l.limit(), 2);
        for _ in 0..1000 {
            l.release(slot(), Outcome::Answered(Duration::from_millis(100)));
        }
        assert_eq!(l.limit(), 8, "never above the configured concurrency");
    }

    #[test]
    fn the_timeout_follows_the_observed_latency_within_bounds() {
        let l = Limiter::new(1, 4, Duration::from_secs(30));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        assert_eq!(l.timeout(), Duration::from_secs(30), "no answers yet: the configured timeout");
        for ms in [900u64, 1000, 1100, 1000, 950, 1050, 1000, 2000] {
            l.release(rt.block_on(l.acquire()), Outcome::Answered(Duration::from_millis(ms)));
        }
        assert_eq!(l.timeout(), Duration::from_secs(8), "p95 (2 s) × 4");
        for _ in 0..64 {
            l.release(rt.block_on(l.acquire()), Outcome::Answered(Duration::from_millis(10)));
        }
        assert_eq!(l.timeout(), MIN_TIMEOUT);
        for _ in 0..64 {
            l.release(rt.block_on(l.acquire()), Outcome::Answered(Duration::from_secs(20)));
        }
        assert_eq!(l.timeout(), Duration::from_secs(30), "capped at llm.timeout_ms");
    }

    #[tokio::test]
    async fn no_more_than_the_limit_are_in_flight() {
        let l = Arc::new(Limiter::new(1, 2, Duration::from_secs(30)));
        let (a, b) = (l.acquire().await, l.acquire().await);
        let l2 = l.clone();
        let third = tokio::spawn(async move { l2.acquire().await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished(), "a third request got in with a limit of 2");
        l.release(a, Outcome::Answered(Duration::from_millis(5)));
        let c = tokio::time::timeout(Duration::from_secs(1), third).await.unwrap().unwrap();
        l.release(b, Outcome::Failed);
        l.release(c, Outcome::Failed);
    }
}
