use rand::Rng;
use std::time::Duration;

/// Exponential backoff with full jitter: the n-th wait is uniform in
/// `[base/2, min(cap, base·2^n)]`, so a crowd of reconnecting actors spreads out.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff { base, cap, attempt: 0 }
    }

    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(16));
        let hi = exp.min(self.cap).max(self.base);
        self.attempt = self.attempt.saturating_add(1);
        let lo = self.base / 2;
        let span = (hi - lo).as_secs_f64();
        lo + Duration::from_secs_f64(rand::rng().random::<f64>() * span)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let delays: Vec<_> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d >= Duration::from_millis(50) && *d <= Duration::from_secs(2)));
        // late attempts may reach well beyond the base
        assert!(delays[5..].iter().any(|d| *d > Duration::from_millis(400)));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
