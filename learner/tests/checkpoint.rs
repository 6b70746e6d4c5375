//! Checkpoints restore the exact training state; a broken newest checkpoint falls back to
//! the previous one.

use oni_env::ObsSpec;
use oni_learner::batch::RewardMix;
use oni_learner::checkpoint;
use oni_learner::trainer::Trainer;
use oni_learner::LearnerConfig;
use oni_policy::{CpuAutodiff, PolicyConfig};
use rand::RngCore;

mod common;

fn trainer(seed: u64) -> Trainer<CpuAutodiff> {
    let cfg = LearnerConfig { rollout_len: 6, batch_rollouts: 4, learning_rate: 1e-2, seed, ..Default::default() };
    let pcfg = PolicyConfig { core_hidden: 16, glyph_hidden: 16, message_bytes: 8, ..Default::default() };
    let spec =
        ObsSpec { crop_rows: 5, crop_cols: 5, num_glyphs: 6, stats_dim: 3, num_actions: 4, grid: Default::default() };
    let mix = RewardMix { extrinsic_coef: 1.0, intrinsic_coef: 0.0, clip: 10.0 };
    Trainer::new(cfg, pcfg, spec, mix, Default::default())
}

#[test]
fn round_trip_restores_weights_optimiser_counters_and_rng() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::rollouts(4, 6, 16, &trainer(1).spec);
    let mut a = trainer(1);
    for _ in 0..3 {
        a.train(&data);
    }
    a.rng.next_u64();
    let path = checkpoint::save(dir.path(), &a, "name = \"t\"", 3).unwrap();
    assert!(path.ends_with("ckpt-000000000003"));

    let mut b = trainer(2); // different initial weights and seed
    let state = checkpoint::resume_latest(dir.path(), &mut b).expect("resumes");
    assert_eq!(state.version, 3);
    assert_eq!((b.version, b.env_steps, b.updates), (a.version, a.env_steps, a.updates));
    assert_eq!(b.weights_bytes(), a.weights_bytes());
    assert_eq!(b.rng.next_u64(), a.rng.next_u64());
    // the optimiser state came back too: the next update is identical
    a.train(&data);
    b.train(&data);
    assert_eq!(a.weights_bytes(), b.weights_bytes(), "Adam moments were not restored");
}

#[test]
fn corrupt_newest_checkpoint_falls_back_and_keep_prunes() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::rollouts(4, 6, 16, &trainer(1).spec);
    let mut a = trainer(1);
    let mut saved = Vec::new();
    for _ in 0..4 {
        a.train(&data);
        saved.push(checkpoint::save(dir.path(), &a, "", 2).unwrap());
    }
    let left = checkpoint::list(dir.path());
    assert_eq!(left.len(), 2, "keep=2 leaves two: {left:?}");
    // a half-written leftover and a corrupted newest checkpoint
    std::fs::create_dir_all(dir.path().join(".tmp-ckpt-000000000009-1")).unwrap();
    std::fs::write(saved[3].join("model.bin"), b"garbage").unwrap();
    let mut b = trainer(1);
    let state = checkpoint::resume_latest(dir.path(), &mut b).expect("falls back");
    assert_eq!(state.version, 3);
}
