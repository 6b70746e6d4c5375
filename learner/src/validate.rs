//! Checks a rollout against the network's shapes before it may reach training. Every
//! rejection names the offending field.

use oni_env::{ObsSpec, MESSAGE_LEN};
use oni_proto::v1::Rollout;
pub use oni_proto::FieldError as Invalid;

fn bad(field: &'static str, reason: impl Into<String>) -> Invalid {
    Invalid::new(field, reason)
}

fn len(field: &'static str, got: usize, want: usize) -> Result<(), Invalid> {
    if got == want {
        Ok(())
    } else {
        Err(bad(field, format!("has {got} entries, expected {want}")))
    }
}

fn finite(field: &'static str, v: &[f32]) -> Result<(), Invalid> {
    match v.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(bad(field, format!("entry {i} is {} (NaN/inf not allowed)", v[i]))),
    }
}

/// Finite and within ±`limit`: values far beyond what an env or reward model produces would
/// overflow the network's sums or the value loss.
fn bounded(field: &'static str, v: &[f32], limit: f32) -> Result<(), Invalid> {
    finite(field, v)?;
    match v.iter().position(|x| x.abs() > limit) {
        None => Ok(()),
        Some(i) => Err(bad(field, format!("entry {i} = {} is beyond ±{limit}", v[i]))),
    }
}

/// Observation features: ours are scaled to about [-1, 1], attached envs' are symlog'd (≤ 710).
pub const MAX_STAT: f32 = 1e6;
/// Intrinsic rewards: a reward model's output times a decay in [0, 1].
pub const MAX_INTRINSIC: f32 = 1e4;

/// The least behaviour log-probability a sampled action can have.
pub const MIN_LOGPROB: f32 = -50.0;

pub struct Shape<'a> {
    pub spec: &'a ObsSpec,
    pub rollout_len: usize,
    pub hidden: usize,
}

/// Validates everything that does not depend on learner state.
pub fn check(r: &Rollout, s: &Shape<'_>, current_version: u64) -> Result<(), Invalid> {
    let t = s.rollout_len;
    if r.run_id.is_empty() {
        return Err(bad("run_id", "is empty"));
    }
    if r.actor_id.is_empty() {
        return Err(bad("actor_id", "is empty"));
    }
    if r.length as usize != t {
        return Err(bad("length", format!("is {}, the learner trains on rollouts of {t}", r.length)));
    }
    if r.policy_version > current_version {
        return Err(bad(
            "policy_version",
            format!("{} is from the future (the learner is at {current_version})", r.policy_version),
        ));
    }
    len("initial_state", r.initial_state.len(), s.hidden)?;
    finite("initial_state", &r.initial_state)?;
    // a GRU's state is a blend of its last state and a tanh: it never leaves [-1, 1]
    if let Some(i) = r.initial_state.iter().position(|x| x.abs() > 1.0 + 1e-3) {
        return Err(bad(
            "initial_state",
            format!("entry {i} = {} is outside [-1, 1] (not a GRU state)", r.initial_state[i]),
        ));
    }
    len("glyphs", r.glyphs.len(), (t + 1) * s.spec.crop_len() * 2)?;
    if let Some(i) =
        r.glyphs.chunks_exact(2).position(|c| u16::from_le_bytes([c[0], c[1]]) as usize >= s.spec.num_glyphs)
    {
        return Err(bad("glyphs", format!("entry {i} is not a glyph id below {}", s.spec.num_glyphs)));
    }
    len("stats", r.stats.len(), (t + 1) * s.spec.stats_dim)?;
    bounded("stats", &r.stats, MAX_STAT)?;
    len("messages", r.messages.len(), (t + 1) * MESSAGE_LEN)?;
    len("actions", r.actions.len(), t)?;
    if let Some(i) = r.actions.iter().position(|&a| a as usize >= s.spec.num_actions) {
        return Err(bad("actions", format!("entry {i} = {} is not below {}", r.actions[i], s.spec.num_actions)));
    }
    len("behaviour_logprobs", r.behaviour_logprobs.len(), t)?;
    finite("behaviour_logprobs", &r.behaviour_logprobs)?;
    if let Some(i) = r.behaviour_logprobs.iter().position(|&l| l > 1e-4) {
        return Err(bad("behaviour_logprobs", format!("entry {i} is positive (not a log-probability)")));
    }
    // an action taken with probability below e^-50 is not a sample of the policy, and its
    // importance ratio π/μ would overflow the loss
    if let Some(i) = r.behaviour_logprobs.iter().position(|&l| l < MIN_LOGPROB) {
        return Err(bad(
            "behaviour_logprobs",
            format!(
                "entry {i} = {} is below {MIN_LOGPROB} (an action the behaviour policy never takes)",
                r.behaviour_logprobs[i]
            ),
        ));
    }
    len("rewards", r.rewards.len(), t)?;
    finite("rewards", &r.rewards)?;
    len("dones", r.dones.len(), t)?;
    len("captions", r.captions.len(), t)?;
    if !r.intrinsic_rewards.is_empty() {
        len("intrinsic_rewards", r.intrinsic_rewards.len(), t)?;
        bounded("intrinsic_rewards", &r.intrinsic_rewards, MAX_INTRINSIC)?;
    }
    if !r.intrinsic_decay.is_empty() {
        len("intrinsic_decay", r.intrinsic_decay.len(), t)?;
        if let Some(i) = r.intrinsic_decay.iter().position(|d| !(0.0..=1.0).contains(d)) {
            return Err(bad("intrinsic_decay", format!("entry {i} is not in [0, 1]")));
        }
    }
    let cut = if r.truncated.is_empty() {
        0
    } else {
        len("truncated", r.truncated.len(), t)?;
        if let Some(i) = r.truncated.iter().zip(&r.dones).position(|(&tr, &d)| tr && !d) {
            return Err(bad(
                "truncated",
                format!("entry {i} is set but dones {i} is not (a truncation ends the episode)"),
            ));
        }
        r.truncated.iter().filter(|&&x| x).count()
    };
    len("final_glyphs", r.final_glyphs.len(), cut * s.spec.crop_len() * 2)?;
    if let Some(i) =
        r.final_glyphs.chunks_exact(2).position(|c| u16::from_le_bytes([c[0], c[1]]) as usize >= s.spec.num_glyphs)
    {
        return Err(bad("final_glyphs", format!("entry {i} is not a glyph id below {}", s.spec.num_glyphs)));
    }
    len("final_stats", r.final_stats.len(), cut * s.spec.stats_dim)?;
    bounded("final_stats", &r.final_stats, MAX_STAT)?;
    len("final_messages", r.final_messages.len(), cut * MESSAGE_LEN)?;
    for e in &r.episodes {
        if !e.extrinsic_return.is_finite() || !e.intrinsic_return.is_finite() {
            return Err(bad("episodes", "episode return is NaN/inf"));
        }
        if e.score.is_some_and(|s| !s.is_finite()) {
            return Err(bad("episodes", "episode score is NaN/inf"));
        }
    }
    Ok(())
}
