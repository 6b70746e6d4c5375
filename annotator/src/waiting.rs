//! The questions queued or in flight, with the captions waiting for their answers (of the same
//! question key, or of several messages one of which asks it). However many captions share a
//! question that is not answered yet, at most `cap` wait: beyond it the oldest goes.

use std::collections::{BTreeMap, HashMap};

pub(crate) struct Waiting {
    /// Each pending question key, with its waiting captions (caption → age).
    keys: HashMap<String, HashMap<String, u64>>,
    /// Every waiting caption by age, oldest first: (key, caption).
    order: BTreeMap<u64, (String, String)>,
    next: u64,
    cap: usize,
}

impl Waiting {
    /// At most `cap` waiting captions (at least one).
    pub(crate) fn new(cap: usize) -> Self {
        Waiting { keys: HashMap::new(), order: BTreeMap::new(), next: 0, cap: cap.max(1) }
    }

    pub(crate) fn is_pending(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }

    /// Pending questions.
    pub(crate) fn questions(&self) -> usize {
        self.keys.len()
    }

    /// Waiting captions.
    pub(crate) fn captions(&self) -> usize {
        self.order.len()
    }

    /// A question is queued.
    pub(crate) fn open(&mut self, key: String) {
        self.keys.entry(key).or_default();
    }

    /// `caption` waits for the answer to the pending `key` (once, however often it comes).
    /// Returns the oldest waiting caption with its key when it had to go to make room.
    pub(crate) fn add(&mut self, key: &str, caption: &str) -> Option<(String, String)> {
        let waiters = self.keys.get_mut(key)?;
        if waiters.contains_key(caption) {
            return None;
        }
        waiters.insert(caption.to_string(), self.next);
        self.order.insert(self.next, (key.to_string(), caption.to_string()));
        self.next += 1;
        if self.order.len() <= self.cap {
            return None;
        }
        let (_, (k, c)) = self.order.pop_first().expect("over the cap, so not empty");
        if let Some(w) = self.keys.get_mut(&k) {
            w.remove(&c);
        }
        Some((k, c))
    }

    /// The question is answered or dropped: its waiting captions, oldest first.
    pub(crate) fn close(&mut self, key: &str) -> Vec<String> {
        let mut waiters: Vec<(u64, String)> =
            self.keys.remove(key).unwrap_or_default().into_iter().map(|(c, age)| (age, c)).collect();
        waiters.sort_unstable();
        for (age, _) in &waiters {
            self.order.remove(age);
        }
        waiters.into_iter().map(|(_, c)| c).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_waiting_caption_goes_at_the_cap() {
        let mut w = Waiting::new(3);
        w.open("k#".into());
        w.open("j#".into());
        assert_eq!(w.add("none", "x"), None, "no such question: nothing waits");
        for c in ["k1", "k2", "k1"] {
            assert_eq!(w.add("k#", c), None);
        }
        assert_eq!(w.add("j#", "j1"), None);
        assert_eq!((w.questions(), w.captions()), (2, 3));
        assert_eq!(w.add("j#", "j2"), Some(("k#".into(), "k1".into())));
        assert_eq!(w.captions(), 3);
        assert_eq!(w.close("j#"), vec!["j1".to_string(), "j2".to_string()]);
        assert_eq!(w.close("k#"), vec!["k2".to_string()]);
        assert_eq!((w.questions(), w.captions()), (0, 0));
        assert!(!w.is_pending("k#"));
    }
}
