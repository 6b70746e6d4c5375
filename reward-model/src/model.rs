//! A loaded reward model: captions in, intrinsic rewards (0 or 1) out.

use crate::kind::Kind;
use crate::net::{encode, ByteCnn};
use crate::snapshot::{Snapshot, SnapshotError};
use crate::Backend;
use burn::tensor::activation::softmax;
use std::collections::HashMap;

#[allow(clippy::large_enum_variant)] // one per model
enum Inner {
    Hashing(HashMap<String, bool>),
    Net(ByteCnn<Backend>),
}

pub struct RewardModel {
    snapshot: Snapshot,
    inner: Inner,
    labelled: std::collections::HashSet<u64>,
    /// `Snapshot::bank_labels`: captions paid their LLM label rather than the network's.
    bank: HashMap<u64, bool>,
}

/// Captions scored per forward pass.
const CHUNK: usize = 256;

impl RewardModel {
    pub fn from_snapshot(snapshot: Snapshot) -> Result<Self, SnapshotError> {
        let inner = match snapshot.kind {
            Kind::Hashing => Inner::Hashing(snapshot.table.iter().cloned().collect()),
            kind => {
                // the sizes come from the snapshot's header: bounded before anything is allocated
                let n = &snapshot.net;
                if [n.embed, n.channels, n.hidden].iter().any(|&d| d == 0 || d > crate::net::MAX_DIM) {
                    return Err(SnapshotError::Malformed(format!(
                        "network sizes {n:?} outside 1..={}",
                        crate::net::MAX_DIM
                    )));
                }
                let net = ByteCnn::<Backend>::new(&snapshot.net, kind.outputs(), &Default::default());
                Inner::Net(oni_policy::weights::load_bytes(net, &snapshot.weights)?)
            }
        };
        let labelled = snapshot.labelled.iter().copied().collect();
        let bank = snapshot.bank_labels.iter().copied().collect();
        Ok(RewardModel { snapshot, inner, labelled, bank })
    }

    /// Decodes and loads an encoded snapshot (checksum and kind checked).
    pub fn decode(bytes: &[u8]) -> Result<Self, SnapshotError> {
        Self::from_snapshot(Snapshot::decode(bytes)?)
    }

    pub fn version(&self) -> u64 {
        self.snapshot.version
    }

    pub fn kind(&self) -> Kind {
        self.snapshot.kind
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The model's raw judgement of each caption: the label (1/0) for hashing, p(helpful)
    /// for classification, the standardised score for ranking.
    pub fn scores(&self, captions: &[&str]) -> Vec<f32> {
        match &self.inner {
            Inner::Hashing(t) => {
                captions.iter().map(|c| if t.get(*c).copied().unwrap_or(false) { 1.0 } else { 0.0 }).collect()
            }
            Inner::Net(net) => {
                let mut out = Vec::with_capacity(captions.len());
                for chunk in captions.chunks(CHUNK) {
                    let y = net.forward(encode::<Backend>(chunk, &Default::default()));
                    let v: Vec<f32> = match self.snapshot.kind {
                        Kind::Ranking => {
                            let raw: Vec<f32> = y.into_data().convert::<f32>().to_vec().expect("f32");
                            let (m, s) = (self.snapshot.norm_mean, self.snapshot.norm_std.max(1e-6));
                            raw.into_iter().map(|r| (r - m) / s).collect()
                        }
                        _ => {
                            let p = softmax(y, 1).slice([0..chunk.len(), 1..2]);
                            p.into_data().convert::<f32>().to_vec().expect("f32")
                        }
                    };
                    out.extend(v);
                }
                out
            }
        }
    }

    /// Share of labelled captions the model pays exactly when their label is helpful;
    /// `None` without any.
    pub fn agreement<'a>(&self, labelled: impl IntoIterator<Item = (&'a str, bool)>) -> Option<f32> {
        let (captions, labels): (Vec<&str>, Vec<bool>) = labelled.into_iter().unzip();
        if captions.is_empty() {
            return None;
        }
        let right = self.rewards(&captions).iter().zip(&labels).filter(|(r, &h)| (**r > 0.0) == h).count();
        Some(right as f32 / captions.len() as f32)
    }

    /// Whether the LLM has judged this (normalised) caption: it is among the labels the
    /// model was distilled from.
    pub fn is_labelled(&self, caption: &str) -> bool {
        self.labelled.contains(&crate::snapshot::caption_hash(caption))
    }

    /// The judge's answer for a (normalised) caption where the model carries it: the
    /// hashing table's labels, or classification's bank labels (`distill.bank_first`).
    pub fn label(&self, caption: &str) -> Option<bool> {
        match &self.inner {
            Inner::Hashing(t) => t.get(caption).copied(),
            Inner::Net(_) => self.bank.get(&crate::snapshot::caption_hash(caption)).copied(),
        }
    }

    /// `r_int` of each caption: 1 where the model judges it progress, else 0. An empty
    /// caption (no message this step) earns 0.
    pub fn rewards(&self, captions: &[&str]) -> Vec<f32> {
        let scores = self.scores(captions);
        let tau = match self.snapshot.kind {
            Kind::Hashing => 0.5,
            _ => self.snapshot.threshold,
        };
        let paid = |c: &str, s: f32| match self.bank.get(&crate::snapshot::caption_hash(c)) {
            Some(&helpful) => helpful,
            None => s > tau,
        };
        captions.iter().zip(scores).map(|(c, s)| if !c.is_empty() && paid(c, s) { 1.0 } else { 0.0 }).collect()
    }
}
