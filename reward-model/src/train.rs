//! Distillation: the annotator's labels (or pair preferences) into a reward model.
//!
//! - classification: cross-entropy `−log p(y | m)` on the binary labels;
//! - ranking: Bradley–Terry, `P(a ≻ b) = σ(r(a) − r(b))`, loss `−[y log σ(d) + (1−y) log σ(−d)]`
//!   with `y` = 1, 0 or ½ for first better, second better, tie;
//! - hashing: no training, the table is the labels.
//!
//! A fixed fraction of items (chosen by a hash of the caption or pair, so the split is
//! stable across restarts) is held out for the accuracy figure and never trained on.
//! Schedule (ONI's): `steps_per_batch` gradient steps each time new labels arrive while the
//! dataset is smaller than `dataset_limit`, then one step per tick.

use crate::fifo::FifoMap;
use crate::kind::Kind;
use crate::net::{encode, ByteCnn, NetConfig};
use crate::snapshot::{Snapshot, SnapshotError};
use crate::{Backend, TrainBackend};
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::activation::{log_sigmoid, log_softmax};
use burn::tensor::TensorData;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// `[distill]`: how the annotator trains the reward model from the labels.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DistillConfig {
    /// Gradient steps each time a batch of new labels arrives (ONI: 32)…
    pub steps_per_batch: usize,
    /// …while the dataset is smaller than this (ONI: 25 000); then one step per tick.
    pub dataset_limit: usize,
    /// Most items (labelled captions, or pairs) the dataset holds; a new one beyond it
    /// replaces the oldest of its split (train or held-out), so memory stays bounded however
    /// many distinct captions arrive.
    pub max_items: usize,
    /// The tick of the one-step-per-tick phase.
    pub tick_ms: u64,
    /// Captions (or pairs) per gradient step.
    pub batch_size: usize,
    /// Adam's step size.
    pub learning_rate: f64,
    /// Share of items held out for the accuracy figure.
    pub heldout_fraction: f32,
    /// Examples of each class (classification), or decisive pairs (ranking), needed before
    /// a first snapshot is published.
    pub min_per_class: usize,
    /// Classification: pay each caption the LLM has judged its label, and let the network
    /// judge only captions without one. Off is ONI's way (the network judges everything);
    /// on, the labels that arrive in the first seconds of a cold run are paid exactly
    /// instead of through a network fitted to a handful of them (docs/results/oni-online.md).
    pub bank_first: bool,
    /// Least time between two published snapshots.
    pub publish_interval_ms: u64,
    /// τ on p(helpful) (classification).
    pub threshold: f32,
    /// τ on the standardised score (ranking).
    pub rank_threshold: f32,
    pub net: NetConfig,
}

impl Default for DistillConfig {
    fn default() -> Self {
        DistillConfig {
            steps_per_batch: 32,
            dataset_limit: 25_000,
            max_items: 200_000,
            tick_ms: 1000,
            batch_size: 64,
            learning_rate: 1e-3,
            heldout_fraction: 0.1,
            min_per_class: 2,
            bank_first: true,
            publish_interval_ms: 1000,
            threshold: 0.5,
            rank_threshold: 0.5,
            net: NetConfig::default(),
        }
    }
}

/// A labelled caption (unknown labels are never examples).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub caption: String,
    pub helpful: bool,
}

/// A ranked pair: `target` is P(first ≻ second): 1, 0 or ½.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub first: String,
    pub second: String,
    pub target: f32,
}

/// Items in the dataset, indexed by key so a re-label replaces the old answer, each split
/// capped (`max_items`, shared in proportion) by forgetting its oldest item.
struct Split<T> {
    train: FifoMap<String, T>,
    heldout: FifoMap<String, T>,
}

impl<T> Split<T> {
    fn new(max_items: usize, heldout_fraction: f32) -> Self {
        let held = ((max_items as f32 * heldout_fraction).ceil() as usize).max(1);
        Split { train: FifoMap::new(max_items.saturating_sub(held).max(1)), heldout: FifoMap::new(held) }
    }

    /// Adds or replaces; returns true for a new item.
    fn put(&mut self, key: String, item: T, heldout_fraction: f32) -> bool {
        let held = (fnv(&key) % 10_000) as f32 / 10_000.0 < heldout_fraction;
        if held {
            self.heldout.put(key, item)
        } else {
            self.train.put(key, item)
        }
    }

    fn len(&self) -> usize {
        self.train.len() + self.heldout.len()
    }

    fn evicted(&self) -> u64 {
        self.train.evicted() + self.heldout.evicted()
    }
}

use crate::snapshot::caption_hash as fnv;

pub struct Distiller {
    kind: Kind,
    cfg: DistillConfig,
    labels: Split<Example>,
    pairs: Split<Pair>,
    net: Option<ByteCnn<TrainBackend>>,
    optim: OptimizerAdaptor<Adam, ByteCnn<TrainBackend>, TrainBackend>,
    rng: StdRng,
    steps: u64,
}

impl Distiller {
    pub fn new(kind: Kind, cfg: DistillConfig, seed: u64) -> Self {
        let device = Default::default();
        // the network's initial weights come from the backend's generator: seed it, so that
        // a distiller is reproducible from its seed
        <TrainBackend as burn::tensor::backend::Backend>::seed(&device, seed);
        let net = (kind != Kind::Hashing).then(|| ByteCnn::new(&cfg.net, kind.outputs(), &device));
        Distiller {
            kind,
            // hashing keeps nothing back: it is a table, not a learner
            labels: Split::new(cfg.max_items, if kind == Kind::Hashing { 0.0 } else { cfg.heldout_fraction }),
            pairs: Split::new(cfg.max_items, cfg.heldout_fraction),
            net,
            optim: AdamConfig::new().init(),
            rng: StdRng::seed_from_u64(seed),
            steps: 0,
            cfg,
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn config(&self) -> &DistillConfig {
        &self.cfg
    }

    /// Continues from a stored snapshot's weights (a restarted annotator). A snapshot of
    /// another kind or network is ignored: training starts afresh.
    pub fn resume(&mut self, snap: &Snapshot) -> Result<(), SnapshotError> {
        if snap.kind != self.kind || snap.net != self.cfg.net || self.net.is_none() {
            return Ok(());
        }
        let net = self.net.take().unwrap();
        self.net = Some(oni_policy::weights::load_bytes(net, &snap.weights)?);
        Ok(())
    }

    /// Adds labels; returns how many captions are new to the dataset.
    pub fn add_labels(&mut self, examples: impl IntoIterator<Item = Example>) -> usize {
        let f = self.cfg.heldout_fraction;
        // hashing keeps every label: it is a table, not a learner
        let f = if self.kind == Kind::Hashing { 0.0 } else { f };
        examples.into_iter().filter(|e| self.labels.put(e.caption.clone(), e.clone(), f)).count()
    }

    pub fn add_pairs(&mut self, pairs: impl IntoIterator<Item = Pair>) -> usize {
        let f = self.cfg.heldout_fraction;
        pairs
            .into_iter()
            .filter(|p| {
                let (lo, hi) = if p.first <= p.second { (&p.first, &p.second) } else { (&p.second, &p.first) };
                self.pairs.put(format!("{lo}\u{1f}{hi}"), p.clone(), f)
            })
            .count()
    }

    /// Items forgotten because the dataset was full (`max_items`).
    pub fn evicted(&self) -> u64 {
        self.labels.evicted() + self.pairs.evicted()
    }

    /// Items this kind learns from.
    pub fn dataset_len(&self) -> usize {
        match self.kind {
            Kind::Ranking => self.pairs.len(),
            _ => self.labels.len(),
        }
    }

    /// Gradient steps to take now: `new_batch` says labels just arrived.
    pub fn steps_due(&self, new_batch: bool) -> usize {
        if self.kind == Kind::Hashing || self.trainable() == 0 {
            0
        } else if self.dataset_len() < self.cfg.dataset_limit {
            if new_batch {
                self.cfg.steps_per_batch
            } else {
                0
            }
        } else {
            1
        }
    }

    fn trainable(&self) -> usize {
        match self.kind {
            Kind::Ranking => self.pairs.train.len(),
            _ => self.labels.train.len(),
        }
    }

    /// Whether a snapshot may be published: enough of each class (or decisive pairs).
    pub fn ready(&self) -> Result<(), String> {
        let m = self.cfg.min_per_class.max(1);
        match self.kind {
            Kind::Hashing if self.labels.len() == 0 => Err("no labels yet".into()),
            Kind::Hashing => Ok(()),
            Kind::Classification => {
                let pos = self.labels.train.iter().filter(|e| e.helpful).count();
                let neg = self.labels.train.len() - pos;
                if pos < m || neg < m {
                    Err(format!("{pos} helpful and {neg} unhelpful training labels; {m} of each needed"))
                } else {
                    Ok(())
                }
            }
            Kind::Ranking => {
                let decisive = self.pairs.train.iter().filter(|p| p.target != 0.5).count();
                if decisive < m {
                    Err(format!("{decisive} decisive training pairs; {m} needed"))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Takes `n` gradient steps on random minibatches; returns the mean loss.
    pub fn train(&mut self, n: usize) -> Option<f32> {
        if n == 0 || self.trainable() == 0 {
            return None;
        }
        let mut total = 0.0;
        for _ in 0..n {
            total += self.step();
        }
        Some(total / n as f32)
    }

    fn step(&mut self) -> f32 {
        let device = Default::default();
        let b = self.cfg.batch_size.max(1);
        let net = self.net.take().expect("a network kind");
        let loss = match self.kind {
            Kind::Classification => {
                let picks: Vec<&Example> =
                    (0..b).map(|_| self.labels.train.at(self.rng.random_range(0..self.labels.train.len()))).collect();
                let captions: Vec<&str> = picks.iter().map(|e| e.caption.as_str()).collect();
                let onehot: Vec<f32> =
                    picks.iter().flat_map(|e| if e.helpful { [0.0, 1.0] } else { [1.0, 0.0] }).collect();
                let y = Tensor::<TrainBackend, 2>::from_data(TensorData::new(onehot, [b, 2]), &device);
                let logp = log_softmax(net.forward(encode(&captions, &device)), 1);
                (logp * y).sum_dim(1).mean().neg()
            }
            Kind::Ranking => {
                let picks: Vec<&Pair> =
                    (0..b).map(|_| self.pairs.train.at(self.rng.random_range(0..self.pairs.train.len()))).collect();
                let first: Vec<&str> = picks.iter().map(|p| p.first.as_str()).collect();
                let second: Vec<&str> = picks.iter().map(|p| p.second.as_str()).collect();
                let y = Tensor::<TrainBackend, 1>::from_data(
                    TensorData::new(picks.iter().map(|p| p.target).collect::<Vec<_>>(), [b]),
                    &device,
                );
                let d = (net.forward(encode(&first, &device)) - net.forward(encode(&second, &device))).reshape([b]);
                let ll = y.clone() * log_sigmoid(d.clone()) + (y.neg() + 1.0) * log_sigmoid(d.neg());
                ll.mean().neg()
            }
            Kind::Hashing => unreachable!("hashing has no network"),
        };
        let value = loss.clone().into_scalar();
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        self.net = Some(self.optim.step(self.cfg.learning_rate, net, grads));
        self.steps += 1;
        value
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    fn inference_net(&self) -> Option<ByteCnn<Backend>> {
        self.net.as_ref().map(|n| n.valid())
    }

    /// Builds the snapshot of the current model as `version`.
    pub fn snapshot(&self, version: u64) -> Snapshot {
        let mut snap = Snapshot {
            version,
            kind: self.kind,
            threshold: self.cfg.threshold,
            norm_mean: 0.0,
            norm_std: 1.0,
            net: self.cfg.net,
            table: Vec::new(),
            weights: Vec::new(),
            trained_on: self.dataset_len() as u64,
            heldout_accuracy: None,
            labelled: self.labelled_hashes(),
            bank_labels: Vec::new(),
        };
        match self.kind {
            Kind::Hashing => {
                snap.table = self
                    .labels
                    .train
                    .iter()
                    .chain(&self.labels.heldout)
                    .map(|e| (e.caption.clone(), e.helpful))
                    .collect();
                snap.table.sort();
            }
            Kind::Classification | Kind::Ranking => {
                if self.kind == Kind::Classification && self.cfg.bank_first {
                    // the held-out labels too: they are kept from the network's training to
                    // measure it, but the judge's answer is known (a NetHack run paid "You
                    // can't go up here." through the network on 31 000 steps after the judge
                    // had called it unhelpful, because its hash fell in the held-out tenth)
                    snap.bank_labels = self
                        .labels
                        .train
                        .iter()
                        .chain(&self.labels.heldout)
                        .map(|e| (fnv(&e.caption), e.helpful))
                        .collect();
                    snap.bank_labels.sort_unstable();
                }
                let net = self.inference_net().expect("network");
                snap.weights = oni_policy::weights::to_bytes(&net);
                if self.kind == Kind::Ranking {
                    snap.threshold = self.cfg.rank_threshold;
                    let (m, s) = self.score_stats(&net);
                    snap.norm_mean = m;
                    snap.norm_std = s;
                }
                snap.heldout_accuracy = self.heldout_accuracy_of(&snap);
            }
        }
        snap
    }

    /// Mean and standard deviation of the raw ranking score over every caption in the pairs.
    fn score_stats(&self, net: &ByteCnn<Backend>) -> (f32, f32) {
        let mut captions: Vec<&str> = self
            .pairs
            .train
            .iter()
            .chain(&self.pairs.heldout)
            .flat_map(|p| [p.first.as_str(), p.second.as_str()])
            .collect();
        captions.sort_unstable();
        captions.dedup();
        if captions.is_empty() {
            return (0.0, 1.0);
        }
        let mut raw = Vec::with_capacity(captions.len());
        for chunk in captions.chunks(256) {
            let y = net.forward(encode::<Backend>(chunk, &Default::default()));
            raw.extend(y.into_data().convert::<f32>().to_vec::<f32>().expect("f32"));
        }
        let n = raw.len() as f32;
        let mean = raw.iter().sum::<f32>() / n;
        let var = raw.iter().map(|r| (r - mean) * (r - mean)).sum::<f32>() / n;
        (mean, var.sqrt().max(1e-3))
    }

    /// The captions the labels (or pairs) cover, hashed, sorted.
    fn labelled_hashes(&self) -> Vec<u64> {
        let mut out: Vec<u64> = match self.kind {
            Kind::Ranking => self
                .pairs
                .train
                .iter()
                .chain(&self.pairs.heldout)
                .flat_map(|p| [fnv(&p.first), fnv(&p.second)])
                .collect(),
            _ => self.labels.train.iter().chain(&self.labels.heldout).map(|e| fnv(&e.caption)).collect(),
        };
        out.sort_unstable();
        out.dedup();
        out
    }

    /// How often `model` pays exactly the captions the bank calls helpful, over every
    /// labelled caption the dataset holds (at most `BANK_SAMPLE` of them, spread evenly):
    /// the distillation's own fidelity, which the held-out accuracy only samples.
    pub fn bank_accuracy(&self, model: &crate::RewardModel) -> Option<f32> {
        const BANK_SAMPLE: usize = 1024;
        let all: Vec<&Example> = self.labels.train.iter().chain(&self.labels.heldout).collect();
        let step = all.len().div_ceil(BANK_SAMPLE).max(1);
        model.agreement(all.iter().step_by(step).map(|e| (e.caption.as_str(), e.helpful)))
    }

    /// The network's own accuracy on the held-out split, which it was not trained on: labels
    /// predicted right (classification), or the better message of decisive pairs scored
    /// higher (ranking). The bank's labels are left out, or it would score the answers it
    /// carries.
    fn heldout_accuracy_of(&self, snap: &Snapshot) -> Option<f32> {
        let model = crate::RewardModel::from_snapshot(Snapshot { bank_labels: Vec::new(), ..snap.clone() }).ok()?;
        match self.kind {
            Kind::Classification => {
                model.agreement(self.labels.heldout.iter().map(|e| (e.caption.as_str(), e.helpful)))
            }
            Kind::Ranking => {
                let decisive: Vec<&Pair> = self.pairs.heldout.iter().filter(|p| p.target != 0.5).collect();
                if decisive.is_empty() {
                    return None;
                }
                let a = model.scores(&decisive.iter().map(|p| p.first.as_str()).collect::<Vec<_>>());
                let b = model.scores(&decisive.iter().map(|p| p.second.as_str()).collect::<Vec<_>>());
                let right =
                    decisive.iter().zip(a.iter().zip(&b)).filter(|(p, (a, b))| (p.target > 0.5) == (a > b)).count();
                Some(right as f32 / decisive.len() as f32)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// However many distinct captions arrive, the dataset holds at most `max_items`,
    /// forgetting the oldest; a re-label of a held caption does not grow it.
    #[test]
    fn the_dataset_is_capped_and_forgets_its_oldest_items() {
        for kind in [Kind::Classification, Kind::Hashing] {
            let cfg = DistillConfig { max_items: 100, ..Default::default() };
            let mut d = Distiller::new(kind, cfg, 1);
            let example = |i: usize| Example { caption: format!("caption {i}"), helpful: i.is_multiple_of(2) };
            assert_eq!(d.add_labels((0..1000).map(example)), 1000, "{kind:?}");
            assert!(d.dataset_len() <= 100 && d.dataset_len() >= 90, "{kind:?}: {} items", d.dataset_len());
            assert_eq!(d.evicted() as usize, 1000 - d.dataset_len());
            let held = d.dataset_len();
            assert_eq!(d.add_labels((990..1000).map(example)), 0, "the newest captions are still held");
            assert_eq!(d.dataset_len(), held);
            assert_eq!(d.add_labels((0..10).map(example)), 10, "the oldest ones were forgotten");
        }
        let cfg = DistillConfig { max_items: 50, ..Default::default() };
        let mut d = Distiller::new(Kind::Ranking, cfg, 1);
        let pair = |i: usize| Pair { first: format!("a {i}"), second: format!("b {i}"), target: 1.0 };
        d.add_pairs((0..500).map(pair));
        assert!(d.dataset_len() <= 50, "{} pairs", d.dataset_len());
    }

    /// A distiller resumed from a snapshot (a restarted annotator) goes on learning: its
    /// loaded weights still receive gradients, so training moves them.
    #[test]
    fn a_resumed_distiller_keeps_learning() {
        let cfg = DistillConfig { heldout_fraction: 0.0, ..Default::default() };
        let example = |i: usize| Example { caption: format!("caption {i} {}", i % 2), helpful: i.is_multiple_of(2) };
        let mut first = Distiller::new(Kind::Classification, cfg.clone(), 1);
        first.add_labels((0..40).map(example));
        first.train(5);
        let snap = first.snapshot(1);
        let mut resumed = Distiller::new(Kind::Classification, cfg, 2);
        resumed.resume(&snap).unwrap();
        assert_eq!(resumed.snapshot(1).weights, snap.weights, "resumed from the snapshot's weights");
        resumed.add_labels((0..40).map(example));
        resumed.train(5);
        assert_ne!(resumed.snapshot(2).weights, snap.weights, "training after a resume changed nothing");
    }
}
