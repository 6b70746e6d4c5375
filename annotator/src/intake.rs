//! Caption intake: normalisation, global de-duplication against the bank, the backlog and
//! the requests in flight, and the bounded backlog of questions, asked most met first.
//!
//! Normalisation (`oni_reward_model::caption`, shared with the reward models): control
//! characters become spaces, whitespace runs collapse, the ends are trimmed, and the result
//! is cut to 256 bytes on a character boundary; an empty result is rejected. Invalid UTF-8
//! cannot arrive: protobuf strings are checked at decoding and such a request is refused
//! whole.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

pub use oni_reward_model::caption::{normalise, MAX_CAPTION_BYTES};

/// A part of a caption that does not change its answer, so captions differing only there
/// are asked about once (`annotator.caption_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyRule {
    /// Every run of digits ("You see here 53 gold pieces." / "… 54 …").
    Numbers,
    /// The inventory letter of a pick-up line ("k - a brass key." / "j - a brass key.").
    Letters,
    /// The species of the starting pets and their grown forms ("You swap places with your
    /// kitten." / "… little dog.").
    Pets,
}

const PETS: [&str; 9] =
    ["little dog", "large dog", "large cat", "warhorse", "housecat", "kitten", "horse", "pony", "dog"];

/// The question a caption asks: the caption with the parts `rules` ignore replaced by
/// placeholders (`#` for numbers, `?` for letters, `pet`). Equal keys get one question.
pub fn question_key(caption: &str, rules: &[KeyRule]) -> String {
    let mut s = caption.to_string();
    if rules.contains(&KeyRule::Pets) {
        s = replace_words(&s, &PETS, "pet");
    }
    if rules.contains(&KeyRule::Letters) {
        // "k - " at the start of a message: the caption's start or after a sentence's end
        let b = s.as_bytes();
        let mut out = String::with_capacity(s.len());
        for (i, ch) in s.char_indices() {
            let starts = i == 0 || (i >= 2 && matches!(b[i - 2], b'.' | b'!' | b'?') && b[i - 1] == b' ');
            if starts && ch.is_ascii_alphabetic() && s[i + 1..].starts_with(" - ") {
                out.push('?');
            } else {
                out.push(ch);
            }
        }
        s = out;
    }
    if rules.contains(&KeyRule::Numbers) {
        let mut out = String::with_capacity(s.len());
        for ch in s.chars() {
            if ch.is_ascii_digit() {
                if !out.ends_with('#') {
                    out.push('#');
                }
            } else {
                out.push(ch);
            }
        }
        s = out;
    }
    s
}

/// The messages a caption joins. The env joins a step's messages with two spaces, and the
/// annotator's intake collapses whitespace, so a stored caption is sentences one after the
/// other: split after every `.`, `!` or `?` followed by a space.
pub fn messages(caption: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    let b = caption.as_bytes();
    for i in 0..b.len() {
        if matches!(b[i], b'.' | b'!' | b'?') && b.get(i + 1).is_some_and(|c| c.is_ascii_whitespace()) {
            out.push(&caption[start..=i]);
            start = i + 1;
        }
    }
    out.push(&caption[start..]);
    out.into_iter().map(str::trim).filter(|m| !m.is_empty()).map(String::from).collect()
}

/// Replaces whole-word occurrences of `words` (longest listed first) with `with`.
fn replace_words(s: &str, words: &[&str], with: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let boundary = |j: usize| j == 0 || j >= s.len() || !s.as_bytes()[j - 1].is_ascii_alphanumeric();
    'scan: while i < s.len() {
        if boundary(i) {
            for w in words {
                let end = i + w.len();
                if s[i..].starts_with(w) && (end == s.len() || !s.as_bytes()[end].is_ascii_alphanumeric()) {
                    out.push_str(with);
                    i = end;
                    continue 'scan;
                }
            }
        }
        let ch = s[i..].chars().next().unwrap();
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Which waiting question the LLM is asked next (`annotator.ask_order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AskOrder {
    /// The one whose captions the actors met most often (they report how often), newest
    /// first among equals: the answers that cover the most steps come first.
    #[default]
    Frequent,
    /// The newest (ONI's order). A caption met from the first steps on is soon buried under
    /// rarer, newer ones.
    Newest,
}

struct Entry {
    caption: String,
    met: u64,
    arrival: u64,
}

/// Questions waiting for the LLM, one per question key, each with how often the actors met
/// its captions. Full: the least met (the oldest among equals) is dropped.
pub struct Backlog {
    capacity: usize,
    order: AskOrder,
    rules: Vec<KeyRule>,
    entries: HashMap<String, Entry>,
    /// (priority, arrival, key), asked from the end
    queue: BTreeSet<(u64, u64, String)>,
    arrivals: u64,
    /// How often the questions taken (in flight) were met, so a failed question goes back
    /// with its count; bounded, as most never come back.
    lent: HashMap<String, u64>,
}

impl Backlog {
    pub fn new(capacity: usize, order: AskOrder, rules: Vec<KeyRule>) -> Self {
        Backlog {
            capacity: capacity.max(1),
            order,
            rules,
            entries: HashMap::new(),
            queue: BTreeSet::new(),
            arrivals: 0,
            lent: HashMap::new(),
        }
    }

    fn priority(&self, met: u64) -> u64 {
        match self.order {
            AskOrder::Frequent => met,
            AskOrder::Newest => 0,
        }
    }

    /// Whether this exact caption waits here.
    pub fn contains(&self, c: &str) -> bool {
        self.entries.get(&question_key(c, &self.rules)).is_some_and(|e| e.caption == c)
    }

    fn insert(&mut self, key: String, caption: String, met: u64) {
        self.arrivals += 1;
        self.queue.insert((self.priority(met), self.arrivals, key.clone()));
        self.entries.insert(key, Entry { caption, met, arrival: self.arrivals });
    }

    /// Drops the lowest entries beyond the capacity; returns their captions.
    fn trim(&mut self) -> Vec<String> {
        let mut dropped = Vec::new();
        while self.entries.len() > self.capacity {
            let (_, _, key) = self.queue.pop_first().expect("over capacity, so not empty");
            dropped.push(self.entries.remove(&key).expect("queued, so an entry").caption);
        }
        dropped
    }

    /// Adds a question (a caption with a key of its own); returns the one dropped to make
    /// room, if any.
    pub fn push(&mut self, c: String) -> Option<String> {
        let key = question_key(&c, &self.rules);
        if self.entries.contains_key(&key) {
            return None;
        }
        self.insert(key, c, 0);
        self.trim().pop()
    }

    /// The actors met `caption` `n` more times: its question, if it waits here, moves up.
    pub fn met(&mut self, caption: &str, n: u64) -> bool {
        let key = question_key(caption, &self.rules);
        let order = self.order;
        let Some(e) = self.entries.get_mut(&key) else { return false };
        let old = (if order == AskOrder::Frequent { e.met } else { 0 }, e.arrival, key);
        e.met = e.met.saturating_add(n);
        let new_priority = if order == AskOrder::Frequent { e.met } else { 0 };
        self.queue.remove(&old);
        self.queue.insert((new_priority, old.1, old.2));
        true
    }

    /// Up to `n` questions, the next to ask first.
    pub fn take_next(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let Some((_, _, key)) = self.queue.pop_last() else { break };
            let e = self.entries.remove(&key).expect("queued, so an entry");
            if self.lent.len() >= self.capacity {
                self.lent.clear();
            }
            self.lent.insert(key, e.met);
            out.push(e.caption);
        }
        out
    }

    /// Puts questions back (the server failed) with their counts, as the newest among
    /// equals. Returns those dropped to make room.
    pub fn requeue(&mut self, captions: Vec<String>) -> Vec<String> {
        for c in captions.into_iter().rev() {
            let key = question_key(&c, &self.rules);
            let met = self.lent.remove(&key).unwrap_or(0);
            if !self.entries.contains_key(&key) {
                self.insert(key, c, met);
            }
        }
        self.trim()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn is_nearly_full(&self) -> bool {
        self.entries.len() * 4 >= self.capacity * 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captions_split_into_messages() {
        assert_eq!(messages("k - a brass key. The newt bites!"), vec!["k - a brass key.", "The newt bites!"]);
        assert_eq!(messages("k - a brass key.  The newt bites!"), vec!["k - a brass key.", "The newt bites!"]);
        assert_eq!(messages("You see here 53 gold pieces."), vec!["You see here 53 gold pieces."]);
        assert_eq!(messages("Really attack the newt? [yn] (n)"), vec!["Really attack the newt?", "[yn] (n)"]);
        assert_eq!(messages("  It's a wall.   "), vec!["It's a wall."]);
    }

    #[test]
    fn question_keys_ignore_only_what_their_rules_name() {
        use KeyRule::*;
        let all = [Numbers, Letters, Pets];
        let k = |c: &str| question_key(c, &all);
        assert_eq!(k("You see here 53 gold pieces. The newt bites!"), k("You see here 4 gold pieces. The newt bites!"));
        assert_eq!(k("$ - 12 gold pieces."), "$ - # gold pieces.");
        assert_eq!(k("k - a brass key. j - a dagger."), "? - a brass key. ? - a dagger.");
        assert_eq!(k("You swap places with your little dog."), k("You swap places with your kitten."));
        assert_eq!(k("The dog bites the doge."), "The pet bites the doge.");
        assert_ne!(k("You see here a gold piece."), k("You see here 2 gold pieces."));
        assert_ne!(k("You hit it - twice."), "You hit ? - twice.");
        assert_eq!(question_key("k - 3 darts.", &[]), "k - 3 darts.");
        assert_eq!(question_key("k - 3 darts.", &[Numbers]), "k - # darts.");
    }

    #[test]
    fn backlog_in_oni_order_is_newest_first_and_drops_the_oldest() {
        let mut b = Backlog::new(3, AskOrder::Newest, vec![]);
        for c in ["a", "b", "c"] {
            assert_eq!(b.push(c.into()), None);
        }
        assert_eq!(b.push("d".into()).as_deref(), Some("a"));
        assert!(!b.contains("a") && b.contains("d"));
        assert!(b.met("b", 100), "counted, but the order ignores counts");
        assert_eq!(b.take_next(2), vec!["d".to_string(), "c".to_string()]);
        assert_eq!(b.requeue(vec!["d".into(), "c".into()]), Vec::<String>::new());
        assert_eq!(b.take_next(3), vec!["d".to_string(), "c".to_string(), "b".to_string()]);
        assert!(b.is_empty());
        for c in ["a", "b"] {
            b.push(c.into());
        }
        assert_eq!(b.requeue(vec!["y".into(), "z".into()]), vec!["a".to_string()], "full: the oldest goes");
        assert_eq!(b.take_next(3), vec!["y".to_string(), "z".to_string(), "b".to_string()]);
    }

    #[test]
    fn backlog_asks_the_most_met_question_first_and_drops_the_least_met() {
        let mut b = Backlog::new(3, AskOrder::Frequent, vec![KeyRule::Numbers]);
        for c in ["You can't go up here.", "You see here 5 gold pieces.", "The newt bites!"] {
            assert_eq!(b.push(c.into()), None);
        }
        // met from the first steps on, and more often than what came after it
        assert!(b.met("You can't go up here.", 900));
        // a caption with another number counts for the question that waits
        assert!(b.met("You see here 7 gold pieces.", 40));
        assert!(!b.met("It's a wall.", 5), "not waiting here");
        assert!(!b.contains("You see here 7 gold pieces."), "only the caption asked is contained");
        // full: the least met goes, not the oldest
        assert_eq!(b.push("A rare message.".into()).as_deref(), Some("The newt bites!"));
        assert_eq!(b.take_next(1), vec!["You can't go up here.".to_string()]);
        // a failed question goes back with its count, ahead of the rarer ones
        assert!(b.requeue(vec!["You can't go up here.".into()]).is_empty());
        assert_eq!(
            b.take_next(3),
            vec!["You can't go up here.".to_string(), "You see here 5 gold pieces.".into(), "A rare message.".into()]
        );
        // among equals, the newest first
        for c in ["x", "y"] {
            b.push(c.into());
        }
        assert_eq!(b.take_next(2), vec!["y".to_string(), "x".to_string()]);
    }
}
