//! Warnings about events that can repeat thousands of times a second (accept errors, refused
//! connections, timed-out requests): at most one line per interval, saying how many were not
//! logged since the last.

use std::time::{Duration, Instant};

pub struct Throttled {
    every: Duration,
    last: Option<Instant>,
    skipped: u64,
}

impl Throttled {
    pub fn new(every: Duration) -> Self {
        Throttled { every, last: None, skipped: 0 }
    }

    /// Logs `what: detail` unless a line went out less than `every` ago.
    pub fn warn(&mut self, what: &str, detail: &dyn std::fmt::Display) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < self.every) {
            self.skipped += 1;
            return;
        }
        tracing::warn!("{what}: {detail} ({} more since the last report)", self.skipped);
        self.last = Some(now);
        self.skipped = 0;
    }
}
