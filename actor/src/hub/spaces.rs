//! Declared observation spaces → the policy's observation layout, and each step's bytes →
//! the actor's batch buffers, with every check a client's bad input needs.
//!
//! The mapping: a rank-2 integer tensor is a grid of ids (embedding + convolutions, the
//! glyph encoder); every other tensor of up to `MAX_VECTOR` numbers is flattened into one
//! feature vector (the MLP encoder), squashed by symlog(x) = sign(x)·ln(1+|x|) so that raw
//! counters (NetHack's bottom line) and small physical quantities (CartPole) both stay in
//! a range the MLP trains on; the text message goes to the byte encoder.

use oni_env::{BatchView, EpisodeTracker, ObsSpec, VecStep, MESSAGE_LEN};
use oni_proto::v1::{Dtype, EnvStep, Hello};
use oni_proto::Refusal;
use serde::Serialize;

/// Largest flattened feature vector.
pub const MAX_VECTOR: usize = 4096;
/// Largest grid side.
pub const MAX_GRID_SIDE: usize = 256;
/// Most distinct ids a grid may use (ids are stored as u16).
pub const MAX_IDS: usize = 1 << 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
enum Role {
    Grid { num_ids: usize },
    Vector { offset: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Tensor {
    name: String,
    dtype: i32,
    elems: usize,
    width: usize,
    role: Role,
}

/// The layout every client of one actor must declare alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layout {
    tensors: Vec<Tensor>,
    has_message: bool,
    pub spec: ObsSpec,
}

fn bad(msg: String) -> Refusal {
    Refusal::Invalid(msg)
}

fn width(d: Dtype) -> Option<usize> {
    Some(match d {
        Dtype::Uint8 | Dtype::Int8 => 1,
        Dtype::Uint16 | Dtype::Int16 => 2,
        Dtype::Int32 | Dtype::Float32 => 4,
        Dtype::Int64 | Dtype::Float64 => 8,
        Dtype::Unspecified => return None,
    })
}

fn is_float(d: Dtype) -> bool {
    matches!(d, Dtype::Float32 | Dtype::Float64)
}

/// Default id bound of an integer dtype (its non-negative range, capped at u16).
fn dtype_ids(d: Dtype) -> Option<usize> {
    match d {
        Dtype::Uint8 => Some(256),
        Dtype::Int8 => Some(128),
        Dtype::Uint16 => Some(MAX_IDS),
        Dtype::Int16 => Some(1 << 15),
        _ => None,
    }
}

impl Layout {
    /// Checks a client's declaration and derives the policy's observation layout.
    pub fn from_hello(h: &Hello) -> Result<Layout, Refusal> {
        if h.num_actions == 0 {
            return Err(bad("field `num_actions`: the action space must have at least one discrete action".into()));
        }
        if h.observations.is_empty() && !h.has_message {
            return Err(bad("field `observations`: declare at least one observation tensor or a message".into()));
        }
        let mut tensors = Vec::new();
        let mut grid: Option<(usize, usize, usize)> = None;
        let mut vector = 0usize;
        let mut names = std::collections::HashSet::new();
        for (i, t) in h.observations.iter().enumerate() {
            let field = format!("observations[{i}] (`{}`)", t.name);
            if !names.insert(t.name.as_str()) {
                return Err(bad(format!("field {field}: the name is declared twice")));
            }
            let dtype = Dtype::try_from(t.dtype).unwrap_or(Dtype::Unspecified);
            let w = width(dtype).ok_or_else(|| {
                bad(format!(
                    "field {field}: dtype {} is not one of uint8, int8, uint16, int16, int32, int64, float32, float64",
                    t.dtype
                ))
            })?;
            if t.shape.contains(&0) {
                return Err(bad(format!("field {field}: shape {:?} has an empty dimension", t.shape)));
            }
            let elems: usize = t.shape.iter().map(|&d| d as usize).product();
            let role = if t.shape.len() == 2 && !is_float(dtype) {
                if grid.is_some() {
                    return Err(bad(format!("field {field}: a second 2-D grid; the policy encodes one grid of ids per environment (send the others flattened as float vectors)")));
                }
                let (r, c) = (t.shape[0] as usize, t.shape[1] as usize);
                if r > MAX_GRID_SIDE || c > MAX_GRID_SIDE {
                    return Err(bad(format!("field {field}: grid {r}×{c} is larger than {MAX_GRID_SIDE}×{MAX_GRID_SIDE}; send a crop around the agent")));
                }
                let num_ids = match t.num_ids as usize {
                    0 => dtype_ids(dtype).ok_or_else(|| {
                        bad(format!(
                            "field {field}: a grid of {} needs `num_ids` (how many distinct ids; at most {MAX_IDS})",
                            dtype.as_str_name()
                        ))
                    })?,
                    n if n > MAX_IDS => return Err(bad(format!("field {field}: num_ids {n} is above {MAX_IDS}"))),
                    n => n,
                };
                grid = Some((r, c, num_ids));
                Role::Grid { num_ids }
            } else if t.shape.len() <= 1 || is_float(dtype) {
                if vector + elems > MAX_VECTOR {
                    return Err(bad(format!("field {field}: the feature vectors add up to more than {MAX_VECTOR} numbers; the policy cannot encode it (declare images as 2-D grids of ids)")));
                }
                let role = Role::Vector { offset: vector };
                vector += elems;
                role
            } else {
                return Err(bad(format!(
                    "field {field}: an integer tensor of shape {:?} is neither a vector nor a 2-D grid of ids; the policy cannot encode it",
                    t.shape
                )));
            };
            tensors.push(Tensor { name: t.name.clone(), dtype: dtype as i32, elems, width: w, role });
        }
        // A missing part is a constant input of size one, so one network shape fits all.
        let (rows, cols, ids) = grid.unwrap_or((1, 1, 1));
        let spec = ObsSpec {
            crop_rows: rows,
            crop_cols: cols,
            num_glyphs: ids,
            stats_dim: vector.max(1),
            num_actions: h.num_actions as usize,
            grid: Default::default(),
        };
        Ok(Layout { tensors, has_message: h.has_message, spec })
    }

    /// Bytes one env's step takes on the wire (for the message-size limit).
    pub fn bytes_per_env(&self) -> usize {
        self.tensors.iter().map(|t| t.elems * t.width).sum::<usize>()
            + if self.has_message { MESSAGE_LEN } else { 0 }
            + 16
    }

    /// How `other` differs from this layout, naming the first field that does.
    pub fn difference(&self, other: &Layout) -> Option<String> {
        if self.spec.num_actions != other.spec.num_actions {
            return Some(format!(
                "field `num_actions`: {} actions, but this actor trains a policy with {} (one action space per cluster)",
                other.spec.num_actions, self.spec.num_actions
            ));
        }
        if self.has_message != other.has_message {
            return Some(format!(
                "field `has_message`: {}, but this actor's environments declared {}",
                other.has_message, self.has_message
            ));
        }
        if self.tensors.len() != other.tensors.len() {
            return Some(format!(
                "field `observations`: {} tensors, but this actor's environments declared {}",
                other.tensors.len(),
                self.tensors.len()
            ));
        }
        for (i, (a, b)) in self.tensors.iter().zip(&other.tensors).enumerate() {
            if a != b {
                return Some(format!(
                    "field observations[{i}] (`{}`): declared as {} but this actor's environments declared {}",
                    b.name,
                    serde_json::to_string(b).unwrap_or_default(),
                    serde_json::to_string(a).unwrap_or_default()
                ));
            }
        }
        None
    }

    /// Reads `n` envs' observation tensors into `glyphs` and `stats` (sized for `n`), checking
    /// sizes and values; `name` is the message field they came from.
    fn read_observations(
        &self,
        name: &str,
        raw_tensors: &[Vec<u8>],
        n: usize,
        glyphs: &mut [u16],
        stats: &mut [f32],
    ) -> Result<(), Refusal> {
        if raw_tensors.len() != self.tensors.len() {
            return Err(bad(format!(
                "field `{name}`: {} tensors, the Hello declared {}",
                raw_tensors.len(),
                self.tensors.len()
            )));
        }
        let spec = &self.spec;
        for (i, (t, raw)) in self.tensors.iter().zip(raw_tensors).enumerate() {
            let field = format!("{name}[{i}] (`{}`)", t.name);
            let dtype = Dtype::try_from(t.dtype).unwrap_or(Dtype::Unspecified);
            let want = n * t.elems * t.width;
            if raw.len() != want {
                return Err(bad(format!(
                    "field {field}: {} bytes, expected {want} = {n} envs × {} values × {} bytes ({})",
                    raw.len(),
                    t.elems,
                    t.width,
                    dtype.as_str_name()
                )));
            }
            let values = read_values(dtype, raw);
            match t.role {
                Role::Grid { num_ids } => {
                    for (k, v) in values.enumerate() {
                        if !(v >= 0.0 && (v as usize) < num_ids) {
                            return Err(bad(format!(
                                "field {field}: env {} has id {v} outside 0..{num_ids}",
                                k / t.elems
                            )));
                        }
                        glyphs[k] = v as u16;
                    }
                }
                Role::Vector { offset } => {
                    let sd = spec.stats_dim;
                    for (k, v) in values.enumerate() {
                        if !v.is_finite() {
                            return Err(bad(format!("field {field}: env {} has a NaN or infinite value", k / t.elems)));
                        }
                        let (env, j) = (k / t.elems, k % t.elems);
                        stats[env * sd + offset + j] = (v.signum() * v.abs().ln_1p()) as f32;
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads one step of `n` envs into `batch`, checking sizes, values and flags. On error
    /// `batch` may be half written; the caller drops the client.
    pub fn decode(&self, m: &EnvStep, n: usize, expect_initial: bool, batch: &mut Batch) -> Result<(), Refusal> {
        if m.initial != expect_initial {
            return Err(bad(if expect_initial {
                "field `initial`: the first step after Hello must carry the first observations with initial = true"
                    .into()
            } else {
                "field `initial`: only the first step may be initial".into()
            }));
        }
        self.read_observations("observations", &m.observations, n, &mut batch.glyphs, &mut batch.stats)?;
        if self.has_message {
            if m.messages.len() != n {
                return Err(bad(format!("field `messages`: {} entries, expected one per env ({n})", m.messages.len())));
            }
        } else if !m.messages.is_empty() {
            return Err(bad("field `messages`: the Hello declared no message (has_message = false)".into()));
        }
        if expect_initial {
            for (i, msg) in m.messages.iter().enumerate() {
                oni_env::spec::write_message(&mut batch.messages[i * MESSAGE_LEN..(i + 1) * MESSAGE_LEN], msg);
            }
            return Ok(());
        }
        for (name, len) in
            [("rewards", m.rewards.len()), ("terminated", m.terminated.len()), ("truncated", m.truncated.len())]
        {
            if len != n {
                return Err(bad(format!("field `{name}`: {len} entries, expected one per env ({n})")));
            }
        }
        if !m.success.is_empty() && m.success.len() != n {
            return Err(bad(format!(
                "field `success`: {} entries, expected none or one per env ({n})",
                m.success.len()
            )));
        }
        if let Some(i) = m.rewards.iter().position(|r| !r.is_finite()) {
            return Err(bad(format!("field `rewards`: env {i} has a NaN or infinite reward")));
        }
        // Without final observations (clients written before they existed) a truncation
        // counts as an ending the value does not bootstrap over.
        let finals = if m.final_observations.is_empty() {
            None
        } else {
            let cut = (0..n).filter(|&i| time_limited(m, i)).count();
            let mut f = (vec![0u16; cut * self.spec.crop_len()], vec![0f32; cut * self.spec.stats_dim]);
            self.read_observations("final_observations", &m.final_observations, cut, &mut f.0, &mut f.1)?;
            Some(f)
        };
        batch.record(m, finals.as_ref());
        Ok(())
    }
}

/// Whether env `i` of a checked step was cut by a time limit: truncated and not terminated
/// (when a client reports both, the termination wins, as in Gymnasium).
pub(crate) fn time_limited(m: &EnvStep, i: usize) -> bool {
    m.truncated[i] && !m.terminated[i]
}

/// An iterator of a little-endian tensor's values as f64 (exact for every integer dtype
/// the grid accepts).
fn read_values(d: Dtype, raw: &[u8]) -> Box<dyn Iterator<Item = f64> + '_> {
    macro_rules! le {
        ($t:ty, $n:expr) => {
            Box::new(raw.chunks_exact($n).map(|c| <$t>::from_le_bytes(c.try_into().unwrap()) as f64))
        };
    }
    match d {
        Dtype::Uint8 => Box::new(raw.iter().map(|&b| b as f64)),
        Dtype::Int8 => Box::new(raw.iter().map(|&b| b as i8 as f64)),
        Dtype::Uint16 => le!(u16, 2),
        Dtype::Int16 => le!(i16, 2),
        Dtype::Int32 => le!(i32, 4),
        Dtype::Int64 => le!(i64, 8),
        Dtype::Float32 => le!(f32, 4),
        Dtype::Float64 => le!(f64, 8),
        Dtype::Unspecified => Box::new(std::iter::empty()),
    }
}

/// The observation and step buffers of one attached client's envs, laid out as a `VecEnv`
/// holds its own, plus the episode bookkeeping a `VecEnv` would do.
pub struct Batch {
    pub glyphs: Vec<u16>,
    pub stats: Vec<f32>,
    pub messages: Vec<u8>,
    pub last: VecStep,
    episodes: EpisodeTracker,
}

impl Batch {
    pub fn new(spec: &ObsSpec, n: usize, first_index: usize) -> Self {
        Batch {
            glyphs: vec![0; n * spec.crop_len()],
            stats: vec![0.0; n * spec.stats_dim],
            messages: vec![0; n * MESSAGE_LEN],
            last: VecStep::new(n),
            episodes: EpisodeTracker::new(n, first_index),
        }
    }

    pub fn view(&self) -> BatchView<'_> {
        BatchView { glyphs: &self.glyphs, stats: &self.stats, messages: &self.messages, last: &self.last, screen: None }
    }

    /// How many envs the batch holds.
    pub fn len(&self) -> usize {
        self.episodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.episodes.is_empty()
    }

    /// The step's rewards, ends, captions and finished episodes. The step's message is both
    /// the caption of the transition and part of the next observation (a reset env starts
    /// its new episode with the last episode's final message blanked).
    /// `finals` holds the final observations (glyphs, stats) of the envs a time limit
    /// stopped, in env order, when the client sent them.
    fn record(&mut self, m: &EnvStep, finals: Option<&(Vec<u16>, Vec<f32>)>) {
        self.last.episodes.clear();
        self.last.finals.clear();
        let (c, d) = (self.glyphs.len() / self.len(), self.stats.len() / self.len());
        for i in 0..self.len() {
            let done = m.terminated[i] || m.truncated[i];
            let cut = time_limited(m, i) && finals.is_some();
            self.last.truncated[i] = cut;
            let row = i * MESSAGE_LEN..(i + 1) * MESSAGE_LEN;
            match m.messages.get(i) {
                Some(msg) => oni_env::spec::write_message(&mut self.last.captions[row.clone()], msg),
                None => self.last.captions[row.clone()].fill(0),
            }
            if let (true, Some((g, st))) = (cut, finals) {
                let k = self.last.finals.envs.len();
                self.last.finals.push(
                    i,
                    &g[k * c..(k + 1) * c],
                    &st[k * d..(k + 1) * d],
                    &self.last.captions[row.clone()],
                );
            }
            if done {
                self.messages[row].fill(0);
            } else {
                self.messages[row.clone()].copy_from_slice(&self.last.captions[row]);
            }
            self.last.rewards[i] = m.rewards[i];
            self.last.dones[i] = done;
            let success = m.success.get(i).copied().unwrap_or(false);
            if let Some(finished) = self.episodes.step(i, m.rewards[i], done, success, None) {
                self.last.episodes.push(finished);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oni_env::EpisodeRecord;
    use oni_proto::v1::TensorSpec;

    fn hello(obs: Vec<TensorSpec>, msg: bool) -> Hello {
        Hello {
            protocol_version: 1,
            observations: obs,
            has_message: msg,
            num_actions: 4,
            num_envs: 2,
            ..Default::default()
        }
    }

    fn t(name: &str, dtype: Dtype, shape: &[u32], num_ids: u32) -> TensorSpec {
        TensorSpec { name: name.into(), dtype: dtype as i32, shape: shape.to_vec(), num_ids }
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn spaces_map_to_grid_vector_and_message() {
        let l = Layout::from_hello(&hello(
            vec![
                t("glyphs", Dtype::Int16, &[3, 2], 100),
                t("blstats", Dtype::Int64, &[2], 0),
                t("pos", Dtype::Float32, &[1, 2], 0),
            ],
            true,
        ))
        .unwrap();
        assert_eq!(
            l.spec,
            ObsSpec {
                crop_rows: 3,
                crop_cols: 2,
                num_glyphs: 100,
                stats_dim: 4,
                num_actions: 4,
                grid: Default::default()
            }
        );
        let cart = Layout::from_hello(&hello(vec![t("obs", Dtype::Float32, &[4], 0)], false)).unwrap();
        assert_eq!(
            cart.spec,
            ObsSpec {
                crop_rows: 1,
                crop_cols: 1,
                num_glyphs: 1,
                stats_dim: 4,
                num_actions: 4,
                grid: Default::default()
            }
        );

        let mut b = Batch::new(&l.spec, 2, 10);
        let glyphs: Vec<u8> = (0..12i16).flat_map(|x| x.to_le_bytes()).collect();
        let bl: Vec<u8> = [0i64, 1, -1, 1000].iter().flat_map(|x| x.to_le_bytes()).collect();
        let step = EnvStep {
            initial: true,
            observations: vec![glyphs, bl, f32s(&[0.5, -2.0, 0.0, 3.0])],
            messages: vec![b"hello".to_vec(), Vec::new()],
            ..Default::default()
        };
        l.decode(&step, 2, true, &mut b).unwrap();
        assert_eq!(b.glyphs, (0..12).collect::<Vec<u16>>());
        let sl = |x: f64| (x.signum() * x.abs().ln_1p()) as f32;
        assert_eq!(b.stats, vec![0.0, sl(1.0), sl(0.5), sl(-2.0), sl(-1.0), sl(1000.0), 0.0, sl(3.0)]);
        assert_eq!(&b.messages[..5], b"hello");

        // a step: rewards and ends recorded, an episode closes, the message becomes the caption
        let mut s2 = step.clone();
        s2.initial = false;
        s2.rewards = vec![1.0, 2.0];
        s2.terminated = vec![false, true];
        s2.truncated = vec![false, false];
        s2.success = vec![false, true];
        s2.messages = vec![b"a door".to_vec(), b"you win".to_vec()];
        l.decode(&s2, 2, false, &mut b).unwrap();
        assert_eq!(b.last.dones, vec![false, true]);
        assert_eq!(
            b.last.episodes,
            vec![EpisodeRecord { env_index: 11, extrinsic_return: 2.0, length: 1, success: true, score: None }]
        );
        assert_eq!(oni_env::spec::message_text(&b.last.captions[MESSAGE_LEN..]), "you win");
        assert_eq!(oni_env::spec::message_text(&b.messages[..MESSAGE_LEN]), "a door");
        assert!(b.messages[MESSAGE_LEN..].iter().all(|&x| x == 0), "a reset env starts without the old message");
        assert!(b.last.finals.envs.is_empty() && b.last.truncated == vec![false, false], "a termination keeps nothing");

        // a time limit on env 0: its final observation (before the reset) is kept, with the
        // step's message; env 1 both terminated and truncated counts as terminated
        let mut s3 = s2.clone();
        s3.terminated = vec![false, true];
        s3.truncated = vec![true, true];
        let final_glyphs: Vec<u8> = (40..46i16).flat_map(|x| x.to_le_bytes()).collect();
        let final_bl: Vec<u8> = [7i64, 0].iter().flat_map(|x| x.to_le_bytes()).collect();
        s3.final_observations = vec![final_glyphs, final_bl, f32s(&[0.25, 0.0])];
        l.decode(&s3, 2, false, &mut b).unwrap();
        assert_eq!(b.last.dones, vec![true, true]);
        assert_eq!(b.last.truncated, vec![true, false]);
        assert_eq!(b.last.finals.envs, vec![0]);
        assert_eq!(b.last.finals.glyphs, (40..46).collect::<Vec<u16>>());
        assert_eq!(b.last.finals.stats, vec![sl(7.0), 0.0, sl(0.25), 0.0]);
        assert_eq!(oni_env::spec::message_text(&b.last.finals.messages), "a door");
        assert_eq!(b.glyphs, (0..12).collect::<Vec<u16>>(), "the next observation is the reset one");
        // a client that sends no final observations: the truncation trains as an ending
        s3.final_observations.clear();
        l.decode(&s3, 2, false, &mut b).unwrap();
        assert_eq!(b.last.truncated, vec![false, false]);
        assert!(b.last.finals.envs.is_empty());
    }

    #[test]
    fn bad_declarations_and_steps_name_the_field() {
        let err = |h: Hello| Layout::from_hello(&h).unwrap_err();
        let e = err(hello(vec![t("rgb", Dtype::Uint8, &[8, 8, 3], 0)], false));
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.to_string().contains("`rgb`") && e.to_string().contains("cannot encode"), "{e}");
        assert!(err(hello(vec![t("g", Dtype::Int32, &[4, 4], 0)], false)).to_string().contains("num_ids"));
        assert!(err(hello(vec![t("x", Dtype::Unspecified, &[4], 0)], false)).to_string().contains("dtype"));
        let mut h = hello(vec![t("x", Dtype::Float32, &[4], 0)], false);
        h.num_actions = 0;
        assert!(err(h).to_string().contains("num_actions"));

        let l = Layout::from_hello(&hello(
            vec![t("obs", Dtype::Float32, &[2], 0), t("g", Dtype::Uint8, &[2, 2], 5)],
            false,
        ))
        .unwrap();
        let mut b = Batch::new(&l.spec, 1, 0);
        let ok =
            EnvStep { initial: true, observations: vec![f32s(&[1.0, 2.0]), vec![0, 1, 2, 4]], ..Default::default() };
        l.decode(&ok, 1, true, &mut b).unwrap();
        let check = |m: EnvStep, initial: bool, needle: &str| {
            let e = l.decode(&m, 1, initial, &mut Batch::new(&l.spec, 1, 0)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.to_string().contains(needle), "`{e}` does not name {needle}");
        };
        check(EnvStep { observations: vec![f32s(&[1.0]), vec![0; 4]], ..ok.clone() }, true, "`obs`");
        check(EnvStep { observations: vec![f32s(&[f32::NAN, 1.0]), vec![0; 4]], ..ok.clone() }, true, "NaN");
        check(EnvStep { observations: vec![f32s(&[1.0, 1.0]), vec![0, 0, 0, 5]], ..ok.clone() }, true, "outside 0..5");
        check(ok.clone(), false, "`initial`");
        let step = EnvStep {
            initial: false,
            rewards: vec![f32::INFINITY],
            terminated: vec![false],
            truncated: vec![false],
            ..ok.clone()
        };
        check(step.clone(), false, "`rewards`");
        check(EnvStep { rewards: vec![0.0], terminated: vec![], ..step.clone() }, false, "`terminated`");
        check(EnvStep { rewards: vec![0.0], messages: vec![b"x".to_vec()], ..step.clone() }, false, "`messages`");
        let cut = EnvStep { rewards: vec![0.0], truncated: vec![true], ..step };
        // one final observation is due, with every declared tensor
        check(EnvStep { final_observations: vec![f32s(&[1.0, 2.0])], ..cut.clone() }, false, "`final_observations`");
        check(
            EnvStep { final_observations: vec![f32s(&[1.0]), vec![0; 4]], ..cut.clone() },
            false,
            "final_observations[0] (`obs`)",
        );
        check(
            EnvStep { final_observations: vec![f32s(&[1.0, 2.0]), vec![9; 4]], ..cut.clone() },
            false,
            "outside 0..5",
        );

        // a second client with other spaces
        let other = Layout::from_hello(&hello(
            vec![t("obs", Dtype::Float32, &[3], 0), t("g", Dtype::Uint8, &[2, 2], 5)],
            false,
        ))
        .unwrap();
        assert!(l.difference(&other).unwrap().contains("`obs`"));
        let mut h = hello(vec![t("obs", Dtype::Float32, &[2], 0), t("g", Dtype::Uint8, &[2, 2], 5)], false);
        h.num_actions = 7;
        assert!(l.difference(&Layout::from_hello(&h).unwrap()).unwrap().contains("num_actions"));
        assert!(l.difference(&l.clone()).is_none());
    }
}
