//! The distillation loop: every answer the annotator stores also goes to a reward model in
//! training (`oni_reward_model::Distiller`, on its own thread, since training is CPU work
//! that must not stall the gRPC server). After training it publishes a new snapshot
//! version, keeps it in the label store (so a restarted annotator serves and continues from
//! it), and hands it to `GetRewardModel`.

use crate::bank::LabelBank;
use crate::label::{Label, LabelRecord, PairRecord};
use oni_reward_model::{DistillConfig, Distiller, Example, Kind, Pair, Snapshot};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A newly stored answer.
#[derive(Debug, Clone)]
pub enum Answered {
    Label(LabelRecord),
    Pair(PairRecord),
}

/// The snapshot being served.
#[derive(Debug, Clone)]
pub struct Published {
    pub version: u64,
    pub kind: Kind,
    pub bytes: Arc<Vec<u8>>,
    pub accuracy: Accuracy,
}

/// How right a published reward model is: the share of labelled captions it pays exactly
/// when they are helpful, against three references (each `None` where there is nothing
/// to score against).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Accuracy {
    /// Labels it was not trained on (`distill.heldout_fraction`).
    pub heldout: Option<f32>,
    /// Every label the distillation dataset holds.
    pub bank: Option<f32>,
    /// The hand-labelled set `annotator.gold`.
    pub gold: Option<f32>,
}

/// What the distiller reads answers as: only those of the current prompts and model.
#[derive(Debug, Clone)]
pub struct AnswerFilter {
    pub classification_hash: String,
    pub ranking_hash: String,
    pub model: String,
    /// `annotator::derivation_rule`: derived answers of another rule are not this run's.
    pub rule: String,
}

impl AnswerFilter {
    fn example(&self, r: &LabelRecord) -> Option<Example> {
        let helpful = match r.label {
            Label::Helpful => true,
            Label::Unhelpful => false,
            Label::Unknown => return None,
        };
        crate::annotator::usable_answer(r, &self.classification_hash, &self.model, &self.rule)
            .then(|| Example { caption: r.caption.clone(), helpful })
    }

    fn pair(&self, r: &PairRecord) -> Option<Pair> {
        let target = r.preference.target()?;
        (r.prompt_hash == self.ranking_hash && r.model == self.model).then(|| Pair {
            first: r.first.clone(),
            second: r.second.clone(),
            target,
        })
    }
}

pub struct DistillLoop {
    distiller: Distiller,
    filter: AnswerFilter,
    bank: Arc<dyn LabelBank>,
    served: Arc<Mutex<Option<Published>>>,
    version: u64,
    /// `annotator.gold`: (caption, helpful) to score each snapshot against.
    gold: Vec<(String, bool)>,
}

impl DistillLoop {
    /// Loads the stored answers and the newest stored snapshot (served at once, and its
    /// weights continued from when it is of the same kind).
    pub fn new(
        kind: Kind,
        cfg: DistillConfig,
        filter: AnswerFilter,
        bank: Arc<dyn LabelBank>,
        served: Arc<Mutex<Option<Published>>>,
    ) -> Result<Self, crate::BankError> {
        let mut distiller = Distiller::new(kind, cfg, rand::random());
        let mut version = 0;
        if let Some((v, bytes)) = bank.latest_snapshot()? {
            version = v;
            match Snapshot::decode(&bytes) {
                Ok(snap) if snap.kind == kind => {
                    if let Err(e) = distiller.resume(&snap) {
                        tracing::warn!("stored reward model v{v} does not fit, training afresh: {e}");
                    }
                    let accuracy = Accuracy { heldout: snap.heldout_accuracy, ..Accuracy::default() };
                    *served.lock().unwrap() = Some(Published { version: v, kind, bytes: Arc::new(bytes), accuracy });
                    metrics::gauge!(oni_reward_model::metric_names::REWARD_MODEL_VERSION, "role" => "annotator")
                        .set(v as f64);
                }
                Ok(snap) => {
                    tracing::info!("stored reward model v{v} is {}, this run distils {}", snap.kind.name(), kind.name())
                }
                Err(e) => tracing::warn!("stored reward model v{v} is unreadable, not serving it: {e}"),
            }
        }
        distiller.add_labels(bank.all()?.iter().filter_map(|r| filter.example(r)));
        if kind == Kind::Ranking {
            distiller.add_pairs(bank.pairs()?.iter().filter_map(|r| filter.pair(r)));
        }
        tracing::info!(
            kind = kind.name(),
            items = distiller.dataset_len(),
            version,
            "reward-model distillation starting"
        );
        Ok(DistillLoop { distiller, filter, bank, served, version, gold: Vec::new() })
    }

    /// Scores every published snapshot against these labelled captions too.
    pub fn scored_against(mut self, gold: Vec<(String, bool)>) -> Self {
        self.gold = gold;
        self
    }

    fn add(&mut self, a: Answered) -> usize {
        match a {
            Answered::Label(r) => self.distiller.add_labels(self.filter.example(&r)),
            Answered::Pair(r) if self.distiller.kind() == Kind::Ranking => {
                self.distiller.add_pairs(self.filter.pair(&r))
            }
            Answered::Pair(_) => 0,
        }
    }

    /// Runs until `answers` closes or `stop` is cancelled.
    pub fn run(mut self, answers: mpsc::Receiver<Answered>, stop: &oni_proto::tasks::CancellationToken) {
        let cfg = self.distiller.config().clone();
        let tick = Duration::from_millis(cfg.tick_ms.max(1));
        let interval = Duration::from_millis(cfg.publish_interval_ms);
        let mut last_publish: Option<Instant> = None;
        // everything loaded at start is "new" until the first publish
        let mut dirty = self.distiller.dataset_len() > 0;
        let mut new_batch = dirty;
        while !stop.is_cancelled() {
            if !new_batch {
                match answers.recv_timeout(tick) {
                    Ok(a) => {
                        new_batch = self.add(a) > 0;
                        while let Ok(a) = answers.try_recv() {
                            new_batch |= self.add(a) > 0;
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
            metrics::gauge!(crate::metric_names::DATASET_SIZE).set(self.distiller.dataset_len() as f64);
            metrics::gauge!(crate::metric_names::DATASET_EVICTED).set(self.distiller.evicted() as f64);
            let steps = self.distiller.steps_due(new_batch);
            if let Some(loss) = self.distiller.train(steps) {
                metrics::counter!(crate::metric_names::REWARD_MODEL_TRAIN_STEPS).increment(steps as u64);
                metrics::gauge!(crate::metric_names::REWARD_MODEL_LOSS).set(loss as f64);
            }
            dirty |= new_batch || steps > 0;
            new_batch = false;
            if dirty && last_publish.is_none_or(|t| t.elapsed() >= interval) {
                match self.distiller.ready() {
                    Ok(()) => {
                        self.publish();
                        last_publish = Some(Instant::now());
                        dirty = false;
                    }
                    Err(why) => tracing::debug!("reward model not published yet: {why}"),
                }
            }
        }
    }

    fn publish(&mut self) {
        self.version += 1;
        let snap = self.distiller.snapshot(self.version);
        let bytes = snap.encode();
        if let Err(e) = self.bank.put_snapshot(self.version, &bytes) {
            tracing::warn!("could not store reward model v{}: {e}", self.version);
        }
        // one model for both scores (the held-out one came with the snapshot)
        let model = oni_reward_model::RewardModel::from_snapshot(snap.clone()).ok();
        let accuracy = Accuracy {
            heldout: snap.heldout_accuracy,
            bank: model.as_ref().and_then(|m| self.distiller.bank_accuracy(m)),
            gold: model.as_ref().and_then(|m| m.agreement(self.gold.iter().map(|(c, h)| (c.as_str(), *h)))),
        };
        if let Some(acc) = snap.heldout_accuracy {
            metrics::gauge!(crate::metric_names::HELDOUT_ACCURACY).set(acc as f64);
        }
        for (against, acc) in [("heldout", accuracy.heldout), ("bank", accuracy.bank), ("gold", accuracy.gold)] {
            if let Some(a) = acc {
                metrics::gauge!(crate::metric_names::ACCURACY, "against" => against).set(a as f64);
            }
        }
        metrics::gauge!(oni_reward_model::metric_names::REWARD_MODEL_VERSION, "role" => "annotator")
            .set(self.version as f64);
        tracing::debug!(version = self.version, trained_on = snap.trained_on, accuracy = ?snap.heldout_accuracy, "reward model published");
        *self.served.lock().unwrap() =
            Some(Published { version: self.version, kind: snap.kind, bytes: Arc::new(bytes), accuracy });
    }
}
