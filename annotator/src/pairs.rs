//! Ranking questions: each new caption is paired with a few random earlier ones (the order
//! within a pair random, so the model's position bias averages out), each pair asked once.
//! Bookkeeping only: whether the bank answered a pair before is the caller's to ask, between
//! `propose` and `queue`.

use crate::bank::PairKey;
use rand::Rng;
use std::collections::{HashSet, VecDeque};

pub(crate) type Pair = (String, String);

pub(crate) struct Pairs {
    /// `annotator.pairs_per_caption` (0: no ranking questions at all).
    per_caption: usize,
    /// `annotator.pair_pool`.
    pool_cap: usize,
    /// `annotator.pair_backlog_capacity`.
    capacity: usize,
    prompt_hash: String,
    model: String,
    /// Pairs waiting for the LLM, oldest first.
    backlog: VecDeque<Pair>,
    /// Pairs waiting or at the LLM.
    pending: HashSet<PairKey>,
    /// Earlier captions, partners for new pairs.
    pool: Vec<String>,
}

impl Pairs {
    pub(crate) fn new(per_caption: usize, pool_cap: usize, capacity: usize, prompt_hash: &str, model: &str) -> Self {
        Pairs {
            per_caption,
            pool_cap,
            capacity: capacity.max(1),
            prompt_hash: prompt_hash.into(),
            model: model.into(),
            backlog: VecDeque::new(),
            pending: HashSet::new(),
            pool: Vec::new(),
        }
    }

    pub(crate) fn key(&self, (a, b): &Pair) -> PairKey {
        PairKey::new(a, b, &self.prompt_hash, &self.model)
    }

    /// A caption answered before this process started: a partner for later pairs.
    pub(crate) fn remember(&mut self, c: &str) {
        if self.per_caption > 0 && self.pool.len() < self.pool_cap {
            self.pool.push(c.into());
        }
    }

    /// Up to `pairs_per_caption` pairs of `c` with random earlier captions, none waiting
    /// already; then `c` joins the partners (in place of a random one when they are full).
    pub(crate) fn propose(&mut self, c: &str, rng: &mut impl Rng) -> Vec<Pair> {
        let k = self.per_caption;
        if k == 0 {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut keys = HashSet::new();
        let mut tries = 0;
        while out.len() < k.min(self.pool.len()) && tries < 4 * k {
            tries += 1;
            let other = self.pool[rng.random_range(0..self.pool.len())].clone();
            if other == c {
                continue;
            }
            let pair = if rng.random_bool(0.5) { (c.to_string(), other) } else { (other, c.to_string()) };
            let key = self.key(&pair);
            if !self.pending.contains(&key) && keys.insert(key) {
                out.push(pair);
            }
        }
        if self.pool.len() < self.pool_cap {
            self.pool.push(c.into());
        } else if !self.pool.is_empty() {
            let i = rng.random_range(0..self.pool.len());
            self.pool[i] = c.into();
        }
        out
    }

    /// Queues pairs (proposed, and not answered in the bank); returns how many of the oldest
    /// went to make room.
    pub(crate) fn queue(&mut self, pairs: Vec<Pair>) -> u64 {
        for p in pairs {
            if self.pending.insert(self.key(&p)) {
                self.backlog.push_back(p);
            }
        }
        self.trim()
    }

    /// Up to `n` pairs for the LLM, the newest first; they stay pending until `answered`.
    pub(crate) fn take_newest(&mut self, n: usize) -> Vec<Pair> {
        let n = n.min(self.backlog.len());
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.extend(self.backlog.pop_back());
        }
        out
    }

    /// Their answers are stored: asking them is over.
    pub(crate) fn answered<'a>(&mut self, pairs: impl IntoIterator<Item = &'a Pair>) {
        for p in pairs {
            self.pending.remove(&self.key(p));
        }
    }

    /// Pairs taken but not answered go back; returns how many of the oldest went to make room.
    pub(crate) fn put_back(&mut self, pairs: Vec<Pair>) -> u64 {
        self.backlog.extend(pairs);
        self.trim()
    }

    fn trim(&mut self) -> u64 {
        let mut dropped = 0;
        while self.backlog.len() > self.capacity {
            let p = self.backlog.pop_front().expect("over capacity, so not empty");
            self.pending.remove(&self.key(&p));
            dropped += 1;
        }
        dropped
    }

    pub(crate) fn waiting(&self) -> usize {
        self.backlog.len()
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }

    pub(crate) fn pool(&self) -> usize {
        self.pool.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn sorted(p: &Pair) -> (String, String) {
        if p.0 <= p.1 {
            p.clone()
        } else {
            (p.1.clone(), p.0.clone())
        }
    }

    #[test]
    fn a_new_caption_is_paired_with_earlier_ones_each_pair_once() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut p = Pairs::new(2, 3, 10, "h", "m");
        assert!(p.propose("a", &mut rng).is_empty(), "no earlier caption to pair with");
        assert_eq!(p.pool(), 1);
        let ab = p.propose("b", &mut rng);
        assert_eq!(ab.iter().map(sorted).collect::<Vec<_>>(), vec![("a".to_string(), "b".to_string())]);
        assert_eq!(p.queue(ab.clone()), 0);
        assert_eq!(p.queue(ab.clone()), 0, "a pair queued twice waits once");
        assert_eq!((p.waiting(), p.pending()), (1, 1));
        // "a"-"b" waits: a proposal for "b" again only pairs it with what does not wait
        for _ in 0..20 {
            assert!(p.propose("b", &mut rng).iter().all(|x| sorted(x) != ("a".into(), "b".into())));
        }
        // taken, it stays pending until answered; not answered, it goes back
        let taken = p.take_newest(5);
        assert_eq!((taken.len(), p.waiting(), p.pending()), (1, 0, 1));
        assert_eq!(p.put_back(taken.clone()), 0);
        assert_eq!((p.waiting(), p.pending()), (1, 1));
        let taken = p.take_newest(1);
        p.answered(&taken);
        assert_eq!((p.waiting(), p.pending()), (0, 0));
        // the pool holds at most 3 partners
        for c in ["c", "d", "e", "f"] {
            p.propose(c, &mut rng);
        }
        assert_eq!(p.pool(), 3);
    }

    #[test]
    fn a_full_pair_backlog_drops_the_oldest() {
        let mut p = Pairs::new(1, 10, 2, "h", "m");
        let pairs: Vec<Pair> = [("a", "b"), ("a", "c"), ("a", "d")].map(|(x, y)| (x.into(), y.into())).to_vec();
        assert_eq!(p.queue(pairs), 1);
        assert_eq!((p.waiting(), p.pending()), (2, 2));
        assert_eq!(p.take_newest(1), vec![("a".to_string(), "d".to_string())], "the newest first");
        assert_eq!(p.queue(vec![("a".into(), "b".into())]), 0, "the dropped pair can be asked again");
        assert_eq!(p.put_back(vec![("a".into(), "d".into())]), 1);
        assert_eq!((p.waiting(), p.pending()), (2, 2), "the one dropped is no longer pending");
    }

    #[test]
    fn no_pairs_when_the_kind_does_not_rank() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut p = Pairs::new(0, 10, 10, "h", "m");
        p.remember("a");
        assert!(p.propose("b", &mut rng).is_empty());
        assert_eq!(p.pool(), 0);
    }
}
