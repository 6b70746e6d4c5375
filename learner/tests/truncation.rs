//! A time limit bootstraps from the value of the observation it cut, computed by the
//! current network from the state the episode reached.

use oni_env::ObsSpec;
use oni_learner::batch::RewardMix;
use oni_learner::trainer::Trainer;
use oni_learner::LearnerConfig;
use oni_policy::{CpuAutodiff, PolicyConfig};
use oni_proto::v1::Rollout;

mod common;
use common::rollouts;

const T: usize = 6;

fn spec() -> ObsSpec {
    ObsSpec { crop_rows: 5, crop_cols: 5, num_glyphs: 6, stats_dim: 3, num_actions: 4, grid: Default::default() }
}

fn trainer() -> Trainer<CpuAutodiff> {
    let cfg = LearnerConfig { rollout_len: T, batch_rollouts: 4, ..Default::default() };
    let pcfg = PolicyConfig { core_hidden: 16, glyph_hidden: 16, message_bytes: 8, ..Default::default() };
    let mix = RewardMix { extrinsic_coef: 1.0, intrinsic_coef: 0.0, clip: 10.0 };
    Trainer::<CpuAutodiff>::new(cfg, pcfg, spec(), mix, Default::default())
}

/// Observation `t` of a rollout: (glyph bytes, stats, message).
fn obs_at(r: &Rollout, t: usize, s: &ObsSpec) -> (Vec<u8>, Vec<f32>, Vec<u8>) {
    let (c, d) = (s.crop_len(), s.stats_dim);
    (
        r.glyphs[2 * t * c..2 * (t + 1) * c].to_vec(),
        r.stats[t * d..(t + 1) * d].to_vec(),
        r.messages[t * 256..(t + 1) * 256].to_vec(),
    )
}

/// Cuts every rollout's last step by a time limit whose final observation is what the
/// rollout had as its bootstrap observation, and puts another episode's start there.
fn cut_last_step(uncut: &[Rollout], s: &ObsSpec) -> Vec<Rollout> {
    uncut
        .iter()
        .enumerate()
        .map(|(j, r)| {
            let mut r = r.clone();
            let (g, st, m) = obs_at(&r, T, s);
            r.dones[T - 1] = true;
            r.truncated = vec![false; T];
            r.truncated[T - 1] = true;
            (r.final_glyphs, r.final_stats, r.final_messages) = (g, st, m);
            // the next episode's first observation: another rollout's
            let (g, st, m) = obs_at(&uncut[(j + 1) % uncut.len()], 1, s);
            let (c, d) = (s.crop_len(), s.stats_dim);
            r.glyphs[2 * T * c..].copy_from_slice(&g);
            r.stats[T * d..].copy_from_slice(&st);
            r.messages[T * 256..].copy_from_slice(&m);
            r
        })
        .collect()
}

fn loss(tr: &Trainer<CpuAutodiff>, rs: &[Rollout]) -> f32 {
    tr.loss(rs).into_scalar()
}

#[test]
fn a_time_limit_on_the_last_step_trains_like_an_uncut_rollout_and_unlike_a_death() {
    let tr = trainer();
    let s = spec();
    let mut uncut = rollouts(4, T, 16, &s);
    for r in &mut uncut {
        r.dones[T - 1] = false;
    }
    let cut = cut_last_step(&uncut, &s);
    let (l_uncut, l_cut) = (loss(&tr, &uncut), loss(&tr, &cut));
    // Same targets: V(final) continues from the state after x_{T-1}, exactly as the uncut
    // rollout's bootstrap V(x_T) does; the new episode's observation is not used.
    assert!((l_uncut - l_cut).abs() <= 1e-5 * l_uncut.abs().max(1.0), "uncut {l_uncut} vs cut {l_cut}");

    let mut dead = cut.clone();
    for r in &mut dead {
        r.truncated.clear();
        r.final_glyphs.clear();
        r.final_stats.clear();
        r.final_messages.clear();
    }
    let l_dead = loss(&tr, &dead);
    assert!((l_dead - l_cut).abs() > 1e-4, "a death and a time limit gave the same loss {l_dead}");

    // the final observation is what the bootstrap reads
    let mut other = cut.clone();
    for r in &mut other {
        r.final_stats.iter_mut().for_each(|x| *x += 3.0);
    }
    let l_other = loss(&tr, &other);
    assert!((l_other - l_cut).abs() > 1e-6, "changing the final observations did not change the loss");
}
