//! Which actor runs are live: a restarted actor gets a new run id, and the learner retires the
//! old one so none of its rollouts are joined to the new run's; sequence numbers per (run,
//! env slot) refuse repeats and count gaps.

use oni_proto::v1::Rollout;
use oni_proto::Refusal;
use std::collections::{HashMap, HashSet, VecDeque};

#[derive(Default)]
pub(crate) struct RunTable {
    next_seq: HashMap<(String, u32), u64>,
    actor_run: HashMap<String, String>,
    retired: HashSet<String>,
    retired_order: VecDeque<String>,
}

const MAX_RETIRED: usize = 10_000;

impl RunTable {
    pub(crate) fn is_retired(&self, run: &str) -> bool {
        self.retired.contains(run)
    }

    pub(crate) fn admit(&mut self, r: &Rollout) -> Result<(), Refusal> {
        if self.retired.contains(&r.run_id) {
            return Err(Refusal::Mismatch(format!(
                "run_id `{}` of actor `{}` was superseded by a newer run of that actor; its rollouts are no longer accepted",
                r.run_id, r.actor_id
            )));
        }
        match self.actor_run.insert(r.actor_id.clone(), r.run_id.clone()) {
            Some(old) if old != r.run_id => {
                tracing::info!(actor = %r.actor_id, old_run = %old, new_run = %r.run_id, "actor restarted; retiring its old run");
                self.next_seq.retain(|(run, _), _| run != &old);
                self.retired.insert(old.clone());
                self.retired_order.push_back(old);
                if self.retired_order.len() > MAX_RETIRED {
                    if let Some(o) = self.retired_order.pop_front() {
                        self.retired.remove(&o);
                    }
                }
            }
            _ => {}
        }
        let key = (r.run_id.clone(), r.env_slot);
        let expected = self.next_seq.get(&key).copied().unwrap_or(0);
        if r.sequence < expected {
            return Err(Refusal::field(
                "sequence",
                format!(
                    "{} was already received for run `{}` slot {} (next is {expected})",
                    r.sequence, r.run_id, r.env_slot
                ),
            ));
        }
        if r.sequence > expected {
            metrics::counter!(crate::metric_names::SEQUENCE_GAPS).increment(r.sequence - expected);
        }
        self.next_seq.insert(key, r.sequence + 1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(actor: &str, run: &str, slot: u32, seq: u64) -> Rollout {
        Rollout { actor_id: actor.into(), run_id: run.into(), env_slot: slot, sequence: seq, ..Default::default() }
    }

    #[test]
    fn a_restarted_actor_retires_its_old_run() {
        let mut t = RunTable::default();
        t.admit(&r("a", "run1", 0, 0)).unwrap();
        t.admit(&r("a", "run1", 0, 1)).unwrap();
        t.admit(&r("a", "run1", 1, 0)).unwrap();
        // duplicates and regressions are refused, gaps (lost in a reconnect) are not
        assert_eq!(t.admit(&r("a", "run1", 0, 1)).unwrap_err().code(), tonic::Code::InvalidArgument);
        t.admit(&r("a", "run1", 0, 5)).unwrap();
        // the actor restarts: a new run id for the same actor retires the old one
        t.admit(&r("a", "run2", 0, 0)).unwrap();
        assert!(t.is_retired("run1") && !t.is_retired("run2"));
        let e = t.admit(&r("a", "run1", 0, 6)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(e.to_string().contains("superseded"));
        // other actors are unaffected
        t.admit(&r("b", "run3", 0, 0)).unwrap();
        assert!(!t.is_retired("run3"));
    }
}
