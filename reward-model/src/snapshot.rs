//! The snapshot a reward model travels and is stored as: a small JSON header (version, kind,
//! threshold, standardisation, network sizes, and for hashing the table) and the network's
//! weights in the policy's checked wire format, all under one CRC32. A snapshot that fails
//! its checksum or names an unknown kind is refused whole.

use crate::kind::Kind;
use crate::net::NetConfig;
use oni_policy::weights::crc32;
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 4] = b"ONRM";
const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SnapshotError {
    #[error("reward-model snapshot is truncated or malformed ({0})")]
    Malformed(String),
    #[error("reward-model snapshot checksum mismatch (corrupted in transit or in the store?)")]
    Checksum,
    #[error("reward-model snapshot has unknown kind `{0}` (this build knows hashing, classification, ranking)")]
    UnknownKind(String),
    #[error("reward-model weights do not fit: {0}")]
    Weights(#[from] oni_policy::WeightsError),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub version: u64,
    pub kind: Kind,
    /// τ: on p(helpful) for classification, on the standardised score for ranking.
    pub threshold: f32,
    /// Standardisation of the ranking score (μ, σ); (0, 1) otherwise.
    pub norm_mean: f32,
    pub norm_std: f32,
    pub net: NetConfig,
    /// Hashing: each labelled caption and whether the LLM judged it helpful.
    pub table: Vec<(String, bool)>,
    /// Network weights (`oni_policy::weights` format); empty for hashing.
    pub weights: Vec<u8>,
    /// Labels or pairs the model was trained on, and its held-out accuracy when measured.
    pub trained_on: u64,
    pub heldout_accuracy: Option<f32>,
    /// Every caption the model's labels cover (`caption_hash` of each): which steps the LLM
    /// has already judged, for the labelled-share diagnosis. Never used to reward.
    pub labelled: Vec<u64>,
    /// Classification with `distill.bank_first`: every label, training and held-out
    /// (`caption_hash`, helpful). A caption the LLM has judged is paid its label; the network judges only the
    /// rest, so an early model fitted to a handful of labels cannot pay a frequent caption the
    /// LLM already called unhelpful.
    pub bank_labels: Vec<(u64, bool)>,
}

/// The 64-bit FNV-1a hash a snapshot's `labelled` list holds for a (normalised) caption.
pub fn caption_hash(caption: &str) -> u64 {
    caption.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

#[derive(Serialize, Deserialize)]
struct Header {
    version: u64,
    kind: String,
    threshold: f32,
    norm_mean: f32,
    norm_std: f32,
    net: NetConfig,
    table: Vec<(String, bool)>,
    trained_on: u64,
    heldout_accuracy: Option<f32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    labelled: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    bank_labels: Vec<(u64, bool)>,
}

impl Snapshot {
    pub fn encode(&self) -> Vec<u8> {
        let header = Header {
            version: self.version,
            kind: self.kind.name().into(),
            threshold: self.threshold,
            norm_mean: self.norm_mean,
            norm_std: self.norm_std,
            net: self.net,
            table: self.table.clone(),
            trained_on: self.trained_on,
            heldout_accuracy: self.heldout_accuracy,
            labelled: self.labelled.clone(),
            bank_labels: self.bank_labels.clone(),
        };
        let h = serde_json::to_vec(&header).expect("header serialises");
        let mut out = Vec::with_capacity(h.len() + self.weights.len() + 20);
        out.extend(MAGIC);
        out.extend(FORMAT.to_le_bytes());
        out.extend((h.len() as u32).to_le_bytes());
        out.extend(&h);
        out.extend((self.weights.len() as u32).to_le_bytes());
        out.extend(&self.weights);
        let crc = crc32(&out);
        out.extend(crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        let bad = |what: &str| SnapshotError::Malformed(what.into());
        if bytes.len() < 20 || &bytes[..4] != MAGIC {
            return Err(bad("bad header"));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        if crc32(body) != u32::from_le_bytes(tail.try_into().unwrap()) {
            return Err(SnapshotError::Checksum);
        }
        let u32_at = |at: usize| -> Result<usize, SnapshotError> {
            body.get(at..at + 4)
                .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
                .ok_or_else(|| bad("truncated"))
        };
        if u32_at(4)? != FORMAT as usize {
            return Err(bad("unknown format version"));
        }
        let hlen = u32_at(8)?;
        let h = body.get(12..12 + hlen).ok_or_else(|| bad("truncated header"))?;
        let header: Header = serde_json::from_slice(h).map_err(|e| SnapshotError::Malformed(format!("header: {e}")))?;
        let kind = Kind::parse(&header.kind).ok_or_else(|| SnapshotError::UnknownKind(header.kind.clone()))?;
        let wlen = u32_at(12 + hlen)?;
        let weights = body.get(16 + hlen..16 + hlen + wlen).ok_or_else(|| bad("truncated weights"))?;
        if body.len() != 16 + hlen + wlen {
            return Err(bad("trailing bytes"));
        }
        Ok(Snapshot {
            version: header.version,
            kind,
            threshold: header.threshold,
            norm_mean: header.norm_mean,
            norm_std: header.norm_std,
            net: header.net,
            table: header.table,
            weights: weights.to_vec(),
            trained_on: header.trained_on,
            heldout_accuracy: header.heldout_accuracy,
            labelled: header.labelled,
            bank_labels: header.bank_labels,
        })
    }
}
