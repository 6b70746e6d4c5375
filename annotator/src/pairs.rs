//! Ranking questions: each new caption is paired with a few random earlier ones (the order
//! within a pair random, so the model's position bias averages out), each pair asked once.

use crate::annotator::{Core, State};
use rand::Rng;

impl Core {
    /// Queues ranking questions pairing `c` with random earlier captions, then remembers it.
    pub(crate) fn add_pairs(&self, st: &mut State, c: &str) {
        let k = self.cfg.pairs_per_caption;
        if k == 0 {
            return;
        }
        let mut rng = rand::rng();
        let mut tries = 0;
        let mut added = 0;
        while added < k.min(st.pool.len()) && tries < 4 * k {
            tries += 1;
            let other = st.pool[rng.random_range(0..st.pool.len())].clone();
            if other == c {
                continue;
            }
            let key = self.pair_key(c, &other);
            if st.pairs_pending.contains(&key) || self.bank.get_pair(&key).ok().flatten().is_some() {
                continue;
            }
            // which comes first is random, so the model's position bias averages out
            let pair = if rng.random_bool(0.5) { (c.to_string(), other) } else { (other, c.to_string()) };
            st.pair_backlog.push_back(pair);
            st.pairs_pending.insert(key);
            self.trim_pairs(st);
            added += 1;
        }
        if st.pool.len() < self.cfg.pair_pool {
            st.pool.push(c.to_string());
        } else {
            let i = rng.random_range(0..st.pool.len());
            st.pool[i] = c.to_string();
        }
    }

    /// Drops the oldest pairs beyond `annotator.pair_backlog_capacity` (counted).
    pub(crate) fn trim_pairs(&self, st: &mut State) {
        while st.pair_backlog.len() > self.cfg.pair_backlog_capacity.max(1) {
            let (a, b) = st.pair_backlog.pop_front().expect("over capacity, so not empty");
            st.pairs_pending.remove(&self.pair_key(&a, &b));
            metrics::counter!(crate::metric_names::DROPPED, "reason" => "pair_backlog_full").increment(1);
        }
    }
}
