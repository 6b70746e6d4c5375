//! A keyed collection with a size cap that forgets its oldest entry when full: what keeps the
//! distillation dataset and the label bank's in-memory table bounded however many distinct
//! captions clients send. Entries keep their insertion order; replacing the value of a key
//! keeps its place (a re-label does not make an entry young again).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

pub struct FifoMap<K, V> {
    cap: usize,
    /// Sequence number of `entries[0]`.
    base: u64,
    entries: VecDeque<(K, V)>,
    index: HashMap<K, u64>,
    evicted: u64,
}

impl<K: Hash + Eq + Clone, V> FifoMap<K, V> {
    /// At most `cap` entries (at least one).
    pub fn new(cap: usize) -> Self {
        FifoMap { cap: cap.max(1), base: 0, entries: VecDeque::new(), index: HashMap::new(), evicted: 0 }
    }

    /// Inserts or replaces; returns true for a new key. A new key in a full map evicts the
    /// oldest entry.
    pub fn put(&mut self, key: K, value: V) -> bool {
        if let Some(&seq) = self.index.get(&key) {
            self.entries[(seq - self.base) as usize].1 = value;
            return false;
        }
        if self.entries.len() == self.cap {
            let (old, _) = self.entries.pop_front().expect("a full map has entries");
            self.index.remove(&old);
            self.base += 1;
            self.evicted += 1;
        }
        self.index.insert(key.clone(), self.base + self.entries.len() as u64);
        self.entries.push_back((key, value));
        true
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.index.get(key).map(|&seq| &self.entries[(seq - self.base) as usize].1)
    }

    /// The `i`-th oldest value.
    pub fn at(&self, i: usize) -> &V {
        &self.entries[i].1
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries forgotten because the map was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Values, oldest first.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &V> + Clone {
        self.entries.iter().map(|(_, v)| v)
    }
}

impl<'a, K: Hash + Eq + Clone, V> IntoIterator for &'a FifoMap<K, V> {
    type Item = &'a V;
    type IntoIter = std::iter::Map<std::collections::vec_deque::Iter<'a, (K, V)>, fn(&'a (K, V)) -> &'a V>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_map_forgets_its_oldest_key_and_replacing_keeps_the_place() {
        let mut m = FifoMap::new(3);
        for (k, v) in [("a", 1), ("b", 2), ("c", 3)] {
            assert!(m.put(k, v));
        }
        assert!(!m.put("a", 10), "a replacement is not new");
        assert!(m.put("d", 4));
        assert_eq!(m.get(&"a"), None, "the oldest entry went, though it was re-labelled");
        assert_eq!(m.iter().copied().collect::<Vec<_>>(), vec![2, 3, 4]);
        assert!(m.put("e", 5));
        assert_eq!((m.get(&"c"), m.get(&"e"), m.len(), m.evicted()), (Some(&3), Some(&5), 3, 2));
        assert_eq!(*m.at(0), 3);
        assert!(m.put("b", 6), "an evicted key comes back as new");
        assert_eq!((&m).into_iter().copied().collect::<Vec<_>>(), vec![4, 5, 6]);
    }
}
