//! The compact wire form of a group's step (`ActRequest`): crop cells as one byte each when
//! the spec has at most 256 ids (else little-endian u16), messages without their zero
//! padding, a step's caption only where it differs from the new observation's message, and
//! final observations only for truncated envs. The actor encodes, the service decodes into
//! the same batch buffers a local `VecEnv` fills, with a check of every field.

use crate::rollout::IntrinsicStep;
use oni_env::{BatchView, EpisodeRecord, ObsSpec, VecStep, MESSAGE_LEN};
use oni_proto::v1::{ActRequest, EnvEpisode, EpisodeSummary, StepResult};

pub use oni_proto::FieldError;

fn bad(field: &'static str, reason: impl Into<String>) -> FieldError {
    FieldError::new(field, reason)
}

/// Bytes per crop cell on the wire.
pub fn cell_bytes(spec: &ObsSpec) -> usize {
    if spec.num_glyphs <= 256 {
        1
    } else {
        2
    }
}

fn put_cells(out: &mut Vec<u8>, cells: &[u16], width: usize) {
    if width == 1 {
        out.extend(cells.iter().map(|&c| c as u8));
    } else {
        out.extend(cells.iter().flat_map(|c| c.to_le_bytes()));
    }
}

fn trimmed(m: &[u8]) -> &[u8] {
    let end = m.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &m[..end]
}

/// The request for the observations of `view`; `result` carries the outcome of the previous
/// request's actions (the view's `last`), absent in a stream's first request.
pub fn encode(
    spec: &ObsSpec,
    step: u64,
    view: &BatchView<'_>,
    result: bool,
    intrinsic: Option<&IntrinsicStep>,
    first_slot: usize,
) -> ActRequest {
    let w = cell_bytes(spec);
    let n = view.stats.len() / spec.stats_dim.max(1);
    let mut glyphs = Vec::with_capacity(view.glyphs.len() * w);
    put_cells(&mut glyphs, view.glyphs, w);
    let messages: Vec<&[u8]> = view.messages.chunks_exact(MESSAGE_LEN).map(trimmed).collect();
    let result = result.then(|| {
        let last = view.last;
        let (mut caption_envs, mut captions) = (Vec::new(), Vec::new());
        for (i, c) in last.captions.chunks_exact(MESSAGE_LEN).take(n).enumerate() {
            let c = trimmed(c);
            if c != messages[i] {
                caption_envs.push(i as u32);
                captions.push(c.to_vec());
            }
        }
        let mut final_glyphs = Vec::with_capacity(last.finals.glyphs.len() * w);
        put_cells(&mut final_glyphs, &last.finals.glyphs, w);
        StepResult {
            rewards: last.rewards.clone(),
            dones: last.dones.clone(),
            truncated: if last.truncated.contains(&true) { last.truncated.clone() } else { Vec::new() },
            caption_envs,
            captions,
            intrinsic_rewards: intrinsic.map(|s| s.rewards.clone()).unwrap_or_default(),
            intrinsic_decay: intrinsic.map(|s| s.decays.clone()).unwrap_or_default(),
            reward_model_version: intrinsic.map_or(0, |s| s.version),
            episodes: last
                .episodes
                .iter()
                .map(|e| {
                    let env = e.env_index - first_slot;
                    EnvEpisode {
                        env: env as u32,
                        summary: Some(EpisodeSummary {
                            extrinsic_return: e.extrinsic_return,
                            intrinsic_return: intrinsic.map_or(0.0, |s| s.finished[env]),
                            length: e.length,
                            success: e.success,
                            score: e.score,
                        }),
                    }
                })
                .collect(),
            final_envs: last.finals.envs.iter().map(|&e| e as u32).collect(),
            final_glyphs,
            final_stats: last.finals.stats.clone(),
            final_messages: last.finals.messages.chunks_exact(MESSAGE_LEN).map(|m| trimmed(m).to_vec()).collect(),
        }
    });
    ActRequest {
        hello: None,
        step,
        glyphs,
        stats: view.stats.to_vec(),
        messages: messages.into_iter().map(<[u8]>::to_vec).collect(),
        result,
    }
}

/// A decoded request, in the buffers a `VecEnv` keeps: what [`BatchView`] borrows.
pub struct Decoded {
    pub glyphs: Vec<u16>,
    pub stats: Vec<f32>,
    pub messages: Vec<u8>,
    pub last: VecStep,
    pub intrinsic: Option<IntrinsicStep>,
    /// Whether the request carried the previous step's result.
    pub has_result: bool,
}

impl Decoded {
    pub fn new(n: usize) -> Self {
        Decoded {
            glyphs: Vec::new(),
            stats: Vec::new(),
            messages: Vec::new(),
            last: VecStep::new(n),
            intrinsic: None,
            has_result: false,
        }
    }

    pub fn view(&self) -> BatchView<'_> {
        BatchView { glyphs: &self.glyphs, stats: &self.stats, messages: &self.messages, last: &self.last, screen: None }
    }
}

fn cells(
    field: &'static str,
    bytes: &[u8],
    count: usize,
    spec: &ObsSpec,
    out: &mut Vec<u16>,
) -> Result<(), FieldError> {
    let w = cell_bytes(spec);
    if bytes.len() != count * w {
        return Err(bad(field, format!("{} bytes, expected {count} cells × {w}", bytes.len())));
    }
    out.clear();
    if w == 1 {
        out.extend(bytes.iter().map(|&b| b as u16));
    } else {
        out.extend(bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])));
    }
    if let Some(&c) = out.iter().find(|&&c| c as usize >= spec.num_glyphs) {
        return Err(bad(field, format!("cell id {c} is not below the spec's {} ids", spec.num_glyphs)));
    }
    Ok(())
}

fn stats(field: &'static str, values: &[f32], count: usize, out: &mut Vec<f32>) -> Result<(), FieldError> {
    if values.len() != count {
        return Err(bad(field, format!("{} values, expected {count}", values.len())));
    }
    if let Some(i) = values.iter().position(|x| !x.is_finite() || x.abs() > 1e6) {
        return Err(bad(field, format!("value {i} is {} (must be finite, |x| ≤ 1e6)", values[i])));
    }
    out.clear();
    out.extend_from_slice(values);
    Ok(())
}

fn messages(field: &'static str, ms: &[Vec<u8>], count: usize, out: &mut Vec<u8>) -> Result<(), FieldError> {
    if ms.len() != count {
        return Err(bad(field, format!("{} messages, expected {count}", ms.len())));
    }
    out.clear();
    out.resize(count * MESSAGE_LEN, 0);
    for (i, m) in ms.iter().enumerate() {
        if m.len() > MESSAGE_LEN {
            return Err(bad(field, format!("message {i} has {} bytes, more than {MESSAGE_LEN}", m.len())));
        }
        out[i * MESSAGE_LEN..i * MESSAGE_LEN + m.len()].copy_from_slice(m);
    }
    Ok(())
}

fn per_env<T: Clone + Default>(field: &'static str, v: &[T], n: usize, empty_ok: bool) -> Result<Vec<T>, FieldError> {
    match v.len() {
        0 if empty_ok => Ok(vec![T::default(); n]),
        l if l == n => Ok(v.to_vec()),
        l => Err(bad(field, format!("{l} values for {n} envs"))),
    }
}

/// Checks `req` against a group of `n` envs with `spec` and fills `out`. `initial`: the
/// stream's first request, which has no result to carry.
pub fn decode(req: &ActRequest, spec: &ObsSpec, n: usize, initial: bool, out: &mut Decoded) -> Result<(), FieldError> {
    cells("glyphs", &req.glyphs, n * spec.crop_len(), spec, &mut out.glyphs)?;
    stats("stats", &req.stats, n * spec.stats_dim, &mut out.stats)?;
    messages("messages", &req.messages, n, &mut out.messages)?;
    out.has_result = req.result.is_some();
    out.intrinsic = None;
    let Some(r) = &req.result else {
        if initial {
            return Ok(());
        }
        return Err(bad("result", "missing: every request after the first carries the previous step's result"));
    };
    if initial {
        return Err(bad("result", "the first request of a stream has no previous step"));
    }
    let last = &mut out.last;
    last.rewards = per_env("result.rewards", &r.rewards, n, false)?;
    if let Some(i) = last.rewards.iter().position(|x| !x.is_finite()) {
        return Err(bad("result.rewards", format!("reward {i} is {}", last.rewards[i])));
    }
    last.dones = per_env("result.dones", &r.dones, n, false)?;
    last.truncated = per_env("result.truncated", &r.truncated, n, true)?;
    if let Some(i) = (0..n).find(|&i| last.truncated[i] && !last.dones[i]) {
        return Err(bad("result.truncated", format!("env {i} is truncated but not done")));
    }
    // captions: the new observation's message unless sent apart
    last.captions.clone_from(&out.messages);
    if r.caption_envs.len() != r.captions.len() {
        return Err(bad(
            "result.captions",
            format!("{} captions for {} caption_envs", r.captions.len(), r.caption_envs.len()),
        ));
    }
    for (&e, c) in r.caption_envs.iter().zip(&r.captions) {
        let e = e as usize;
        if e >= n || c.len() > MESSAGE_LEN {
            return Err(bad("result.captions", format!("env {e} of {n}, or more than {MESSAGE_LEN} bytes")));
        }
        let row = &mut last.captions[e * MESSAGE_LEN..(e + 1) * MESSAGE_LEN];
        row.fill(0);
        row[..c.len()].copy_from_slice(c);
    }
    last.episodes.clear();
    let mut finished = vec![0.0; n];
    for ep in &r.episodes {
        let e = ep.env as usize;
        let s = ep.summary.as_ref().ok_or_else(|| bad("result.episodes.summary", "missing"))?;
        if e >= n || !last.dones[e] {
            return Err(bad("result.episodes.env", format!("env {e} did not end an episode in this step")));
        }
        if !s.extrinsic_return.is_finite() || !s.intrinsic_return.is_finite() {
            return Err(bad("result.episodes.summary", "returns must be finite"));
        }
        if s.score.is_some_and(|x| !x.is_finite()) {
            return Err(bad("result.episodes.summary", "the score must be finite"));
        }
        finished[e] = s.intrinsic_return;
        last.episodes.push(EpisodeRecord {
            env_index: e, // made global by the caller (`globalise`)
            extrinsic_return: s.extrinsic_return,
            length: s.length,
            success: s.success,
            score: s.score,
        });
    }
    // final observations: one per truncated env, in env order
    let want: Vec<usize> = (0..n).filter(|&i| last.truncated[i]).collect();
    let got: Vec<usize> = r.final_envs.iter().map(|&e| e as usize).collect();
    last.finals.clear();
    if !got.is_empty() {
        if got != want {
            return Err(bad("result.final_envs", format!("{got:?}, expected the truncated envs {want:?}")));
        }
        let k = got.len();
        let (mut g, mut s, mut m) = (Vec::new(), Vec::new(), Vec::new());
        cells("result.final_glyphs", &r.final_glyphs, k * spec.crop_len(), spec, &mut g)?;
        stats("result.final_stats", &r.final_stats, k * spec.stats_dim, &mut s)?;
        messages("result.final_messages", &r.final_messages, k, &mut m)?;
        let (c, d) = (spec.crop_len(), spec.stats_dim);
        for (j, &e) in got.iter().enumerate() {
            last.finals.push(
                e,
                &g[j * c..(j + 1) * c],
                &s[j * d..(j + 1) * d],
                &m[j * MESSAGE_LEN..(j + 1) * MESSAGE_LEN],
            );
        }
    }
    if !r.intrinsic_rewards.is_empty() || !r.intrinsic_decay.is_empty() {
        let rewards = per_env("result.intrinsic_rewards", &r.intrinsic_rewards, n, false)?;
        let decays = per_env("result.intrinsic_decay", &r.intrinsic_decay, n, false)?;
        if rewards.iter().chain(&decays).any(|x| !x.is_finite() || x.abs() > 1e4) {
            return Err(bad("result.intrinsic_rewards", "values must be finite and at most 1e4 in size"));
        }
        out.intrinsic = Some(IntrinsicStep { rewards, decays, finished, version: r.reward_model_version });
    }
    Ok(())
}

/// Makes the decoded episodes' env indices global (the group's first slot added), as a
/// `VecEnv` reports them.
pub fn globalise(d: &mut Decoded, first_slot: usize) {
    for e in &mut d.last.episodes {
        e.env_index += first_slot;
    }
}

/// Bytes of a message on the wire (its protobuf encoding), for the bytes-per-step metrics.
pub fn wire_bytes<M: prost::Message>(m: &M) -> usize {
    m.encoded_len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use oni_env::GridKind;

    fn spec(num_glyphs: usize) -> ObsSpec {
        ObsSpec { crop_rows: 2, crop_cols: 3, num_glyphs, grid: GridKind::Glyphs, stats_dim: 2, num_actions: 4 }
    }

    fn msg(text: &str) -> Vec<u8> {
        let mut m = vec![0u8; MESSAGE_LEN];
        m[..text.len()].copy_from_slice(text.as_bytes());
        m
    }

    /// Two envs after a step in which env 1's episode was cut by a time limit and restarted.
    fn batch(num_glyphs: u16) -> (Vec<u16>, Vec<f32>, Vec<u8>, VecStep) {
        let glyphs: Vec<u16> = (0..12).map(|i| (i * 37) % num_glyphs).collect();
        let stats = vec![0.5, -1.0, 2.0, 1e-3];
        let messages = [msg("You see a key."), msg("Welcome back.")].concat();
        let mut last = VecStep::new(2);
        last.rewards = vec![1.0, -0.5];
        last.dones = vec![false, true];
        last.truncated = vec![false, true];
        last.captions = [msg("You see a key."), msg("You hit the wall.")].concat();
        last.finals.push(1, &glyphs[6..], &[9.0, 8.0], &msg("You hit the wall."));
        last.episodes.push(EpisodeRecord {
            env_index: 5,
            extrinsic_return: 3.5,
            length: 40,
            success: false,
            score: Some(120.0),
        });
        (glyphs, stats, messages, last)
    }

    #[test]
    fn a_step_round_trips_in_one_and_two_bytes_per_cell() {
        for (ids, width) in [(200usize, 1usize), (5977, 2)] {
            let s = spec(ids);
            let (glyphs, stats, messages, last) = batch(ids as u16);
            let view = BatchView { glyphs: &glyphs, stats: &stats, messages: &messages, last: &last, screen: None };
            let intrinsic = IntrinsicStep {
                rewards: vec![0.25, 0.0],
                decays: vec![0.5, 1.0],
                finished: vec![0.0, 1.5],
                version: 3,
            };
            let req = encode(&s, 7, &view, true, Some(&intrinsic), 4);
            assert_eq!(req.glyphs.len(), 12 * width);
            // captions equal to the new observation's message are not sent again
            let r = req.result.as_ref().unwrap();
            assert_eq!((r.caption_envs.clone(), r.captions.clone()), (vec![1], vec![b"You hit the wall.".to_vec()]));
            assert_eq!(req.messages[0], b"You see a key.".to_vec());

            let mut d = Decoded::new(2);
            decode(&req, &s, 2, false, &mut d).unwrap();
            globalise(&mut d, 4);
            assert_eq!((d.glyphs.clone(), d.stats.clone(), d.messages.clone()), (glyphs, stats, messages));
            assert_eq!(d.last.rewards, last.rewards);
            assert_eq!(d.last.dones, last.dones);
            assert_eq!(d.last.truncated, last.truncated);
            assert_eq!(d.last.captions, last.captions);
            assert_eq!(d.last.finals, last.finals);
            assert_eq!(d.last.episodes, last.episodes);
            assert_eq!(d.intrinsic, Some(intrinsic));
        }
    }

    #[test]
    fn bad_requests_name_their_field() {
        let s = spec(200);
        let (glyphs, stats, messages, last) = batch(200);
        let view = BatchView { glyphs: &glyphs, stats: &stats, messages: &messages, last: &last, screen: None };
        let good = encode(&s, 1, &view, true, None, 4);
        let mut d = Decoded::new(2);
        let field = |f: &dyn Fn(&mut ActRequest), initial: bool| {
            let mut r = good.clone();
            f(&mut r);
            decode(&r, &s, 2, initial, &mut Decoded::new(2)).unwrap_err().field
        };
        assert!(decode(&good, &s, 2, false, &mut d).is_ok());
        assert_eq!(field(&|r| r.glyphs.truncate(5), false), "glyphs");
        assert_eq!(field(&|r| r.glyphs[0] = 250, false), "glyphs");
        assert_eq!(field(&|r| r.stats[1] = f32::NAN, false), "stats");
        assert_eq!(field(&|r| r.messages.push(Vec::new()), false), "messages");
        assert_eq!(field(&|r| r.messages[0] = vec![b'x'; 300], false), "messages");
        assert_eq!(field(&|r| r.result = None, false), "result");
        assert_eq!(field(&|_| {}, true), "result");
        assert_eq!(field(&|r| r.result.as_mut().unwrap().rewards = vec![1.0], false), "result.rewards");
        assert_eq!(field(&|r| r.result.as_mut().unwrap().rewards[0] = f32::INFINITY, false), "result.rewards");
        assert_eq!(field(&|r| r.result.as_mut().unwrap().dones = vec![false, false], false), "result.truncated");
        assert_eq!(field(&|r| r.result.as_mut().unwrap().caption_envs = vec![9], false), "result.captions");
        assert_eq!(field(&|r| r.result.as_mut().unwrap().final_envs = vec![0], false), "result.final_envs");
        assert_eq!(field(&|r| r.result.as_mut().unwrap().episodes[0].env = 0, false), "result.episodes.env");
        assert_eq!(
            field(&|r| r.result.as_mut().unwrap().intrinsic_rewards = vec![0.0], false),
            "result.intrinsic_rewards"
        );
    }
}
