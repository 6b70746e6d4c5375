//! The wire format for policy weights: every float parameter in module order, with its
//! shape, and a CRC32 over the whole. Loading checks each shape against the receiving
//! network, so a mismatched or corrupted payload is an error, never garbage weights.

use crate::config::PolicyConfig;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::TensorData;
use oni_env::ObsSpec;

const MAGIC: &[u8; 4] = b"ONIW";
const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WeightsError {
    #[error("weights payload is truncated or malformed ({0})")]
    Malformed(&'static str),
    #[error("weights checksum mismatch (corrupted in transit?)")]
    Checksum,
    #[error("weights have {got} tensors, this network has {expected}")]
    TensorCount { got: usize, expected: usize },
    #[error("weight tensor #{index} has shape {got:?}, this network expects {expected:?}")]
    Shape { index: usize, got: Vec<usize>, expected: Vec<usize> },
}

struct Collect {
    out: Vec<u8>,
    count: u32,
}

impl<B: Backend> ModuleVisitor<B> for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val();
        let dims = t.dims();
        self.out.extend((D as u32).to_le_bytes());
        for d in dims {
            self.out.extend((d as u32).to_le_bytes());
        }
        let data = t.into_data().convert::<f32>();
        for v in data.as_slice::<f32>().expect("f32 after convert") {
            self.out.extend(v.to_le_bytes());
        }
        self.count += 1;
    }
}

/// Serialises every float parameter of `module`.
pub fn to_bytes<B: Backend, M: Module<B>>(module: &M) -> Vec<u8> {
    let mut c = Collect { out: Vec::new(), count: 0 };
    module.visit(&mut c);
    let mut out = Vec::with_capacity(c.out.len() + 16);
    out.extend(MAGIC);
    out.extend(FORMAT.to_le_bytes());
    out.extend(c.count.to_le_bytes());
    out.extend(c.out);
    let crc = crc32(&out);
    out.extend(crc.to_le_bytes());
    out
}

struct Parsed {
    shapes: Vec<Vec<usize>>,
    values: Vec<Vec<f32>>,
}

/// CRC-32 (IEEE).
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

fn parse(bytes: &[u8]) -> Result<Parsed, WeightsError> {
    if bytes.len() < 16 || &bytes[..4] != MAGIC {
        return Err(WeightsError::Malformed("bad header"));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    if crc32(body) != u32::from_le_bytes(tail.try_into().unwrap()) {
        return Err(WeightsError::Checksum);
    }
    let mut r = Reader { b: &body[4..] };
    if r.u32()? != FORMAT {
        return Err(WeightsError::Malformed("unknown format version"));
    }
    let n = r.u32()? as usize;
    // each tensor takes at least 4 bytes: a count beyond that is a lie, not an allocation
    let cap = n.min(r.b.len() / 4);
    let mut p = Parsed { shapes: Vec::with_capacity(cap), values: Vec::with_capacity(cap) };
    for _ in 0..n {
        let rank = r.u32()? as usize;
        if rank > 8 {
            return Err(WeightsError::Malformed("tensor rank"));
        }
        let shape = (0..rank).map(|_| r.u32().map(|d| d as usize)).collect::<Result<Vec<_>, _>>()?;
        let len =
            shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or(WeightsError::Malformed("tensor size"))?;
        let raw = r.take(len.checked_mul(4).ok_or(WeightsError::Malformed("tensor size"))?)?;
        p.values.push(raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect());
        p.shapes.push(shape);
    }
    if !r.b.is_empty() {
        return Err(WeightsError::Malformed("trailing bytes"));
    }
    Ok(p)
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WeightsError> {
        if self.b.len() < n {
            return Err(WeightsError::Malformed("truncated"));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u32(&mut self) -> Result<u32, WeightsError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
}

struct Shapes(Vec<Vec<usize>>);

impl<B: Backend> ModuleVisitor<B> for Shapes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.val().dims().to_vec());
    }
}

struct Load<'a> {
    parsed: &'a mut Parsed,
    next: usize,
}

impl<B: Backend> ModuleMapper<B> for Load<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let i = self.next;
        self.next += 1;
        let values = std::mem::take(&mut self.parsed.values[i]);
        let shape = self.parsed.shapes[i].clone();
        param.map(|t| {
            // a trainable network stays trainable: the loaded tensor is a new leaf, which
            // autodiff tracks only when asked
            let tracked = t.is_require_grad();
            let loaded = Tensor::from_data(TensorData::new(values, shape), &t.device());
            if tracked {
                loaded.require_grad()
            } else {
                loaded
            }
        })
    }
}

/// Loads weights produced by `to_bytes` into a network of the same architecture.
pub fn load_bytes<B: Backend, M: Module<B>>(module: M, bytes: &[u8]) -> Result<M, WeightsError> {
    let mut parsed = parse(bytes)?;
    let mut shapes = Shapes(Vec::new());
    module.visit(&mut shapes);
    if shapes.0.len() != parsed.shapes.len() {
        return Err(WeightsError::TensorCount { got: parsed.shapes.len(), expected: shapes.0.len() });
    }
    for (index, (got, expected)) in parsed.shapes.iter().zip(&shapes.0).enumerate() {
        if got != expected {
            return Err(WeightsError::Shape { index, got: got.clone(), expected: expected.clone() });
        }
    }
    Ok(module.map(&mut Load { parsed: &mut parsed, next: 0 }))
}

/// Identifies an architecture: actors refuse weights built for another one.
pub fn fingerprint(cfg: &PolicyConfig, spec: &ObsSpec) -> String {
    let text = format!("{cfg:?}|{spec:?}");
    format!("{:08x}", crc32(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CpuBackend, Policy};

    fn spec() -> ObsSpec {
        ObsSpec { crop_rows: 5, crop_cols: 5, num_glyphs: 8, stats_dim: 3, num_actions: 4, grid: Default::default() }
    }

    #[test]
    fn round_trip_is_exact_and_corruption_is_refused() {
        let dev = Default::default();
        let cfg = PolicyConfig { core_hidden: 16, glyph_hidden: 16, ..Default::default() };
        let a = Policy::<CpuBackend>::new(&cfg, &spec(), &dev);
        let b = Policy::<CpuBackend>::new(&cfg, &spec(), &dev);
        let bytes = to_bytes(&a);
        let b = load_bytes(b, &bytes).unwrap();
        assert_eq!(to_bytes(&b), bytes, "reloaded network serialises identically");

        let mut bad = bytes.clone();
        bad[40] ^= 1;
        assert_eq!(load_bytes(b.clone(), &bad).unwrap_err(), WeightsError::Checksum);
        assert!(matches!(
            load_bytes(b.clone(), &bytes[..20]),
            Err(WeightsError::Malformed(_)) | Err(WeightsError::Checksum)
        ));

        let other = Policy::<CpuBackend>::new(&PolicyConfig { core_hidden: 8, ..cfg.clone() }, &spec(), &dev);
        assert!(matches!(load_bytes(other, &bytes), Err(WeightsError::Shape { .. })));
        assert_ne!(fingerprint(&cfg, &spec()), fingerprint(&PolicyConfig::default(), &spec()));
    }

    /// Weights loaded into a network being trained (a resumed reward model, a learner) keep
    /// receiving gradients.
    #[test]
    fn loaded_weights_stay_trainable() {
        struct Tracked(Vec<bool>);
        impl<B: Backend> ModuleVisitor<B> for Tracked {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
                self.0.push(p.val().is_require_grad());
            }
        }
        let dev = Default::default();
        let cfg = PolicyConfig { core_hidden: 16, glyph_hidden: 16, ..Default::default() };
        let bytes = to_bytes(&Policy::<CpuBackend>::new(&cfg, &spec(), &dev));
        let trained = load_bytes(Policy::<crate::CpuAutodiff>::new(&cfg, &spec(), &dev), &bytes).unwrap();
        let mut tracked = Tracked(Vec::new());
        trained.visit(&mut tracked);
        assert!(!tracked.0.is_empty() && tracked.0.iter().all(|t| *t), "{:?}", tracked.0);
        // and a network used only for inference stays untracked
        let plain = load_bytes(Policy::<CpuBackend>::new(&cfg, &spec(), &dev), &bytes).unwrap();
        let mut tracked = Tracked(Vec::new());
        plain.visit(&mut tracked);
        assert!(tracked.0.iter().all(|t| !*t));
    }
}
