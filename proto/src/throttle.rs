//! Warnings about events that can repeat thousands of times a second (accept errors, refused
//! connections, timed-out requests): at most one line per interval, saying how many were not
//! logged since the last.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// Longest detail a throttled line carries.
const MAX_DETAIL: usize = 400;

/// How often one reason may be logged by `warn_limited`.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

static BY_REASON: LazyLock<Mutex<HashMap<&'static str, Throttled>>> = LazyLock::new(Default::default);

/// Warns about something a client can make happen at will (a refused request, a bad
/// message): one line per `reason` per `WARN_EVERY` for the whole process, counting the rest,
/// so that no flood of bad requests can fill a disk with logs.
pub fn warn_limited(reason: &'static str, detail: &dyn std::fmt::Display) {
    BY_REASON.lock().unwrap().entry(reason).or_insert_with(|| Throttled::new(WARN_EVERY)).warn(reason, detail);
}

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
        if self.due() {
            // a client chooses some of the text (ids, names): a line stays short whatever it sent
            let mut text = detail.to_string();
            if text.len() > MAX_DETAIL {
                let cut = (0..=MAX_DETAIL).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
                text.truncate(cut);
                text.push('…');
            }
            tracing::warn!("{what}: {text} ({} more since the last report)", self.skipped);
            self.skipped = 0;
        }
    }

    /// Whether a line may go out now (else the event is counted as skipped).
    fn due(&mut self) -> bool {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < self.every) {
            self.skipped += 1;
            return false;
        }
        self.last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_gives_one_line_per_interval_and_counts_the_rest() {
        let mut t = Throttled::new(Duration::from_millis(100));
        let start = Instant::now();
        let mut lines = 0;
        let mut events = 0;
        while start.elapsed() < Duration::from_millis(350) {
            events += 1;
            if t.due() {
                lines += 1;
            }
        }
        assert!((3..=5).contains(&lines), "{lines} lines for {events} events");
        assert!(t.skipped > 0);
    }
}
