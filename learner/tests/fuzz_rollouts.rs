//! Rollouts mutated at random, field by field: validation refuses them with the field's name
//! or accepts them, never panics, and whatever it accepts trains to a finite loss.

use oni_env::ObsSpec;
use oni_learner::batch::RewardMix;
use oni_learner::trainer::Trainer;
use oni_learner::validate::{check, Shape};
use oni_learner::LearnerConfig;
use oni_policy::{CpuAutodiff, PolicyConfig};
use oni_proto::v1::Rollout;
use rand::{Rng, SeedableRng};

mod common;
use common::rollouts;

const T: usize = 6;
const H: usize = 16;

fn spec() -> ObsSpec {
    ObsSpec { crop_rows: 5, crop_cols: 5, num_glyphs: 6, stats_dim: 3, num_actions: 4, grid: Default::default() }
}

/// A value that is wrong in some way about as often as it is right.
fn wild(rng: &mut impl Rng) -> f32 {
    match rng.random_range(0..8) {
        0 => f32::NAN,
        1 => f32::INFINITY,
        2 => -1e30,
        3 => 1e30,
        _ => rng.random_range(-2.0..2.0),
    }
}

fn resize<T: Clone>(rng: &mut impl Rng, v: &mut Vec<T>, fill: T) {
    match rng.random_range(0..4) {
        0 => v.clear(),
        1 => v.truncate(v.len().saturating_sub(1)),
        2 => v.push(fill),
        _ => v.extend(std::iter::repeat_n(fill, rng.random_range(1..64))),
    }
}

fn mutate(rng: &mut impl Rng, r: &mut Rollout, s: &ObsSpec) {
    match rng.random_range(0..16) {
        0 => r.length = rng.random_range(0..2 * T as u32),
        1 => resize(rng, &mut r.initial_state, 0.0),
        2 if !r.glyphs.is_empty() => {
            let i = rng.random_range(0..r.glyphs.len());
            r.glyphs[i] = rng.random();
        }
        3 => resize(rng, &mut r.glyphs, 0),
        4 if !r.stats.is_empty() => {
            let i = rng.random_range(0..r.stats.len());
            r.stats[i] = wild(rng);
        }
        5 => resize(rng, &mut r.messages, 7),
        6 if r.actions.len() == T => {
            let i = rng.random_range(0..T);
            r.actions[i] = rng.random_range(0..2 * s.num_actions as u32);
        }
        7 if r.behaviour_logprobs.len() == T => {
            let i = rng.random_range(0..T);
            r.behaviour_logprobs[i] = wild(rng);
        }
        8 if r.rewards.len() == T => {
            let i = rng.random_range(0..T);
            r.rewards[i] = wild(rng);
        }
        9 => resize(rng, &mut r.dones, true),
        10 => {
            r.intrinsic_rewards = vec![0.5; T];
            r.intrinsic_rewards[rng.random_range(0..T)] = wild(rng);
            if rng.random_bool(0.3) {
                resize(rng, &mut r.intrinsic_rewards, 0.0);
            }
        }
        11 => r.intrinsic_decay = (0..T).map(|_| rng.random_range(-0.5..1.5)).collect(),
        12 if r.dones.len() == T => {
            // a time limit, with or without its final observation and the done flag
            let t = rng.random_range(0..T);
            r.truncated = vec![false; T];
            r.truncated[t] = true;
            r.dones[t] = rng.random_bool(0.8);
            if rng.random_bool(0.7) {
                r.final_glyphs = vec![0; 2 * s.crop_len()];
                r.final_stats = (0..s.stats_dim).map(|_| wild(rng)).collect();
                r.final_messages = vec![0; 256];
            }
        }
        13 => resize(rng, &mut r.final_glyphs, 9),
        14 => {
            let i = rng.random_range(0..r.initial_state.len().max(1));
            if let Some(x) = r.initial_state.get_mut(i) {
                *x = wild(rng);
            }
        }
        _ => r.policy_version = rng.random(),
    }
}

#[test]
fn mutated_rollouts_are_refused_by_field_or_train_to_a_finite_loss() {
    let s = spec();
    let cfg = LearnerConfig { rollout_len: T, batch_rollouts: 1, ..Default::default() };
    let pcfg = PolicyConfig { core_hidden: H, glyph_hidden: 16, message_bytes: 8, ..Default::default() };
    let mix = RewardMix { extrinsic_coef: 1.0, intrinsic_coef: 1.0, clip: 10.0 };
    let tr = Trainer::<CpuAutodiff>::new(cfg, pcfg, s.clone(), mix, Default::default());
    let shape = Shape { spec: &s, rollout_len: T, hidden: H };
    let base = rollouts(1, T, H, &s).remove(0);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let fields = [
        "length",
        "initial_state",
        "glyphs",
        "stats",
        "messages",
        "actions",
        "behaviour_logprobs",
        "rewards",
        "dones",
        "captions",
        "intrinsic_rewards",
        "intrinsic_decay",
        "truncated",
        "final_glyphs",
        "final_stats",
        "final_messages",
        "policy_version",
        "run_id",
        "actor_id",
        "episodes",
    ];
    let (mut refused, mut trained) = (0, 0);
    for case in 0..3_000 {
        let mut r = base.clone();
        for _ in 0..rng.random_range(1..4) {
            mutate(&mut rng, &mut r, &s);
        }
        match check(&r, &shape, 1 << 20) {
            Err(e) => {
                assert!(fields.contains(&e.field), "case {case}: refused naming no field: {e}");
                refused += 1;
            }
            Ok(()) => {
                let loss = tr.loss(std::slice::from_ref(&r)).into_scalar();
                assert!(loss.is_finite(), "case {case}: an accepted rollout gave loss {loss}: {r:?}");
                trained += 1;
            }
        }
    }
    eprintln!("{refused} mutated rollouts refused by field, {trained} accepted and trained");
    assert!(refused > 100 && trained > 100, "the mutations should both break and keep rollouts valid");
}
