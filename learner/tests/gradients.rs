//! Every parameter of the policy receives a gradient from the APPO loss, and one update
//! changes the policy's action distribution.

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use oni_env::ObsSpec;
use oni_learner::batch::RewardMix;
use oni_learner::trainer::Trainer;
use oni_learner::LearnerConfig;
use oni_policy::{CpuAutodiff, PolicyConfig};

mod common;
use common::rollouts;

struct Ids(Vec<(ParamId, usize)>);
impl<B: Backend> ModuleVisitor<B> for Ids {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        self.0.push((p.id, D));
    }
}

fn spec() -> ObsSpec {
    ObsSpec { crop_rows: 5, crop_cols: 5, num_glyphs: 6, stats_dim: 3, num_actions: 4, grid: Default::default() }
}

#[test]
fn every_parameter_gets_a_gradient_and_an_update_moves_the_policy() {
    let cfg = LearnerConfig { rollout_len: 6, batch_rollouts: 4, learning_rate: 1e-2, ..Default::default() };
    let pcfg = PolicyConfig { core_hidden: 16, glyph_hidden: 16, message_bytes: 8, ..Default::default() };
    let mix = RewardMix { extrinsic_coef: 1.0, intrinsic_coef: 0.0, clip: 10.0 };
    let mut tr = Trainer::<CpuAutodiff>::new(cfg, pcfg.clone(), spec(), mix, Default::default());
    let data = rollouts(4, 6, 16, &spec());

    // gradients of a plain forward/loss reach every parameter
    let loss = tr.loss(&data);
    let grads = GradientsParams::from_grads(loss.backward(), &tr.model);
    let mut ids = Ids(Vec::new());
    tr.model.visit(&mut ids);
    let missing: Vec<_> = ids
        .0
        .iter()
        .filter(|(id, rank)| match rank {
            1 => grads.get::<<CpuAutodiff as burn::tensor::backend::AutodiffBackend>::InnerBackend, 1>(*id).is_none(),
            _ => grads.get::<<CpuAutodiff as burn::tensor::backend::AutodiffBackend>::InnerBackend, 2>(*id).is_none(),
        })
        .collect();
    assert!(missing.is_empty(), "{} of {} parameters got no gradient", missing.len(), ids.0.len());

    let before = tr.model.valid();
    let w0 = tr.weights_bytes();
    for _ in 0..3 {
        tr.train(&data);
    }
    assert_ne!(tr.weights_bytes(), w0);
    let kl = tr.mean_kl_from(&before, &data);
    assert!(kl > 1e-4, "three updates at lr 1e-2 barely moved the policy: KL {kl}");
}
