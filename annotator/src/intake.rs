//! Caption intake: normalisation, global de-duplication against the bank, the backlog and
//! the requests in flight, and the bounded newest-first backlog.
//!
//! Normalisation (`oni_reward_model::caption`, shared with the reward models): control
//! characters become spaces, whitespace runs collapse, the ends are trimmed, and the result
//! is cut to 256 bytes on a character boundary; an empty result is rejected. Invalid UTF-8
//! cannot arrive: protobuf strings are checked at decoding and such a request is refused
//! whole.

use std::collections::{HashSet, VecDeque};

pub use oni_reward_model::caption::{normalise, MAX_CAPTION_BYTES};

/// Captions waiting for the LLM. Full: the oldest is dropped (ONI labels the newest first).
pub struct Backlog {
    queue: VecDeque<String>,
    members: HashSet<String>,
    capacity: usize,
}

impl Backlog {
    pub fn new(capacity: usize) -> Self {
        Backlog { queue: VecDeque::new(), members: HashSet::new(), capacity: capacity.max(1) }
    }

    pub fn contains(&self, c: &str) -> bool {
        self.members.contains(c)
    }

    /// Adds a caption; returns the one dropped to make room, if any.
    pub fn push(&mut self, c: String) -> Option<String> {
        let dropped = if self.queue.len() >= self.capacity {
            let old = self.queue.pop_front();
            if let Some(o) = &old {
                self.members.remove(o);
            }
            old
        } else {
            None
        };
        self.members.insert(c.clone());
        self.queue.push_back(c);
        dropped
    }

    /// Up to `n` captions, newest first.
    pub fn take_newest(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let Some(c) = self.queue.pop_back() else { break };
            self.members.remove(&c);
            out.push(c);
        }
        out
    }

    /// Puts captions back (the server failed); they keep their place as the newest.
    pub fn requeue(&mut self, captions: Vec<String>) {
        for c in captions.into_iter().rev() {
            if self.members.insert(c.clone()) {
                self.queue.push_back(c);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn is_nearly_full(&self) -> bool {
        self.queue.len() * 4 >= self.capacity * 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_is_newest_first_and_drops_the_oldest() {
        let mut b = Backlog::new(3);
        for c in ["a", "b", "c"] {
            assert_eq!(b.push(c.into()), None);
        }
        assert_eq!(b.push("d".into()).as_deref(), Some("a"));
        assert!(!b.contains("a") && b.contains("d"));
        assert_eq!(b.take_newest(2), vec!["d".to_string(), "c".to_string()]);
        b.requeue(vec!["d".into(), "c".into()]);
        assert_eq!(b.take_newest(3), vec!["d".to_string(), "c".to_string(), "b".to_string()]);
        assert!(b.is_empty());
    }
}
