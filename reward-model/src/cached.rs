//! The newest pulled reward model with `r_int` remembered per normalised caption: captions
//! repeat a lot, and the network runs once per caption and model version, not per step.
//! Used by the actors (each step) and by the learner in relabel mode (each batch).

use crate::pull::RewardSlot;
use crate::RewardModel;
use std::collections::HashMap;
use std::sync::Arc;

/// Most captions remembered per model version (then the memo starts over).
const CAPACITY: usize = 100_000;

pub struct CachedRewards {
    slot: Arc<RewardSlot>,
    model: Option<Arc<RewardModel>>,
    /// Per caption: `r_int`, whether the LLM has judged it, and its answer where the model
    /// carries it.
    memo: HashMap<String, (f32, bool, Option<bool>)>,
}

impl CachedRewards {
    pub fn new(slot: Arc<RewardSlot>) -> Self {
        CachedRewards { slot, model: None, memo: HashMap::new() }
    }

    /// Switches to the newest model the puller accepted, forgetting the old one's rewards.
    pub fn refresh(&mut self) {
        let latest = self.slot.latest.lock().unwrap().clone();
        if latest.as_ref().map(|m| m.version()) != self.model.as_ref().map(|m| m.version()) {
            self.model = latest;
            self.memo.clear();
        }
    }

    /// The version rewards come from; 0 before the first model (every reward is then 0).
    pub fn version(&self) -> u64 {
        self.model.as_ref().map_or(0, |m| m.version())
    }

    pub fn has_model(&self) -> bool {
        self.model.is_some()
    }

    /// Runs the model once over the (normalised) captions it has not rewarded yet.
    pub fn prepare<'a>(&mut self, keys: impl IntoIterator<Item = &'a str>) {
        let Some(model) = &self.model else { return };
        let mut missing: Vec<&str> = keys.into_iter().filter(|k| !self.memo.contains_key(*k)).collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return;
        }
        if self.memo.len() + missing.len() > CAPACITY {
            self.memo.clear();
        }
        for (k, r) in missing.iter().zip(model.rewards(&missing)) {
            self.memo.insert(k.to_string(), (r, model.is_labelled(k), model.label(k)));
        }
    }

    /// `r_int` of a normalised caption that `prepare` saw (0 otherwise, or without a model).
    pub fn get(&self, key: &str) -> f32 {
        self.memo.get(key).map_or(0.0, |m| m.0)
    }

    /// Whether the LLM had judged a caption that `prepare` saw when this model was made.
    pub fn is_labelled(&self, key: &str) -> bool {
        self.memo.get(key).is_some_and(|m| m.1)
    }

    /// The judge's answer for a caption that `prepare` saw, where the model carries it.
    pub fn label(&self, key: &str) -> Option<bool> {
        self.memo.get(key).and_then(|m| m.2)
    }
}
