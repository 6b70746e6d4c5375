//! Caption intake: normalisation, global de-duplication against the bank, the backlog and
//! the requests in flight, and the bounded newest-first backlog.
//!
//! Normalisation (`oni_reward_model::caption`, shared with the reward models): control
//! characters become spaces, whitespace runs collapse, the ends are trimmed, and the result
//! is cut to 256 bytes on a character boundary; an empty result is rejected. Invalid UTF-8
//! cannot arrive: protobuf strings are checked at decoding and such a request is refused
//! whole.

use serde::{Deserialize, Serialize};
use std::collections::{HashSet, VecDeque};

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

    /// Puts captions back (the server failed); they keep their place as the newest. Returns
    /// the oldest, dropped to make room.
    pub fn requeue(&mut self, captions: Vec<String>) -> Vec<String> {
        for c in captions.into_iter().rev() {
            if self.members.insert(c.clone()) {
                self.queue.push_back(c);
            }
        }
        let mut dropped = Vec::new();
        while self.queue.len() > self.capacity {
            let old = self.queue.pop_front().expect("over capacity, so not empty");
            self.members.remove(&old);
            dropped.push(old);
        }
        dropped
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
    fn backlog_is_newest_first_and_drops_the_oldest() {
        let mut b = Backlog::new(3);
        for c in ["a", "b", "c"] {
            assert_eq!(b.push(c.into()), None);
        }
        assert_eq!(b.push("d".into()).as_deref(), Some("a"));
        assert!(!b.contains("a") && b.contains("d"));
        assert_eq!(b.take_newest(2), vec!["d".to_string(), "c".to_string()]);
        assert_eq!(b.requeue(vec!["d".into(), "c".into()]), Vec::<String>::new());
        assert_eq!(b.take_newest(3), vec!["d".to_string(), "c".to_string(), "b".to_string()]);
        assert!(b.is_empty());
        for c in ["a", "b"] {
            b.push(c.into());
        }
        assert_eq!(b.requeue(vec!["y".into(), "z".into()]), vec!["a".to_string()], "full: the oldest goes");
        assert_eq!(b.take_newest(3), vec!["y".to_string(), "z".to_string(), "b".to_string()]);
    }
}
