//! One APPO update: unroll the policy over a batch of rollouts, compute V-trace targets on
//! the host from the detached values and log-probabilities, then step Adam on the loss.

use crate::batch::{HostBatch, RewardMix};
use crate::config::LearnerConfig;
use crate::loss::{appo_loss, clip_global_norm, logp_and_entropy, LossCoefs, LossInputs, Losses};
use crate::vtrace::{normalize, vtrace, VtraceInput};
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::TensorData;
use oni_env::ObsSpec;
use oni_policy::TrainingBackend;
use oni_policy::{weights, Policy, PolicyConfig};
use oni_proto::v1::Rollout;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone, Default)]
pub struct TrainReport {
    pub samples: usize,
    pub losses: Losses,
    pub grad_norm: f32,
}

pub struct Trainer<B: TrainingBackend> {
    pub model: Policy<B>,
    pub optim: OptimizerAdaptor<Adam, Policy<B>, B>,
    pub cfg: LearnerConfig,
    pub policy_cfg: PolicyConfig,
    pub spec: ObsSpec,
    pub device: B::Device,
    pub mix: RewardMix,
    /// Bumped after every update; rollouts are tagged with the version that acted.
    pub version: u64,
    pub env_steps: u64,
    pub updates: u64,
    pub rng: ChaCha8Rng,
}

fn scalar<B: Backend>(t: Tensor<B, 1>) -> f32 {
    t.into_scalar().elem::<f32>()
}

impl<B: TrainingBackend> Trainer<B> {
    pub fn new(cfg: LearnerConfig, policy_cfg: PolicyConfig, spec: ObsSpec, mix: RewardMix, device: B::Device) -> Self {
        B::seed(&device, cfg.seed);
        let model = Policy::new(&policy_cfg, &spec, &device);
        let optim = AdamConfig::new().with_epsilon(cfg.adam_epsilon).init();
        Trainer {
            model,
            optim,
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            cfg,
            policy_cfg,
            spec,
            device,
            mix,
            version: 0,
            env_steps: 0,
            updates: 0,
        }
    }

    /// The current weights in the wire format the actors load.
    pub fn weights_bytes(&self) -> Vec<u8> {
        weights::to_bytes(&self.model.valid())
    }

    pub fn fingerprint(&self) -> String {
        weights::fingerprint(&self.policy_cfg, &self.spec)
    }

    /// Trains on validated rollouts of equal length and bumps the policy version.
    pub fn train(&mut self, rollouts: &[Rollout]) -> TrainReport {
        let steps = self.cfg.rollout_len;
        let hb = HostBatch::build(rollouts, &self.spec, steps, self.mix);
        let mut report = TrainReport::default();
        for _ in 0..self.cfg.epochs.max(1) {
            report = self.update(&hb);
        }
        self.version += 1;
        self.updates += 1;
        self.env_steps += (steps * rollouts.len()) as u64;
        report
    }

    fn update(&mut self, hb: &HostBatch) -> TrainReport {
        let (terms, n) = self.loss_terms(hb);
        let grads = terms.total().backward();
        let mut grads = GradientsParams::from_grads(grads, &self.model);
        let grad_norm = clip_global_norm::<B, _>(&mut grads, &self.model, self.cfg.max_grad_norm);
        self.model = self.optim.step(self.cfg.learning_rate, self.model.clone(), grads);
        TrainReport { samples: n, losses: terms.values(), grad_norm }
    }

    /// The total loss on `rollouts` without updating (for tests and diagnostics).
    pub fn loss(&self, rollouts: &[Rollout]) -> Tensor<B, 1> {
        let hb = HostBatch::build(rollouts, &self.spec, self.cfg.rollout_len, self.mix);
        self.loss_terms(&hb).0.total()
    }

    /// Mean KL(old ‖ current) of the action distributions over the rollouts' observations.
    pub fn mean_kl_from(&self, old: &Policy<B::InnerBackend>, rollouts: &[Rollout]) -> f32 {
        let hb = HostBatch::build(rollouts, &self.spec, self.cfg.rollout_len, self.mix);
        let dev = &self.device;
        let logp = |p: &Policy<B::InnerBackend>| {
            let out = p.unroll(hb.obs(&self.spec, &self.policy_cfg, dev), hb.h0(dev), hb.resets(dev));
            burn::tensor::activation::log_softmax(out.logits, 1)
        };
        let (a, b) = (logp(old), logp(&self.model.valid()));
        scalar((a.clone().exp() * (a - b)).sum_dim(1).mean())
    }

    /// V(x'_t) of every truncated step's final observation, [T·B] (empty when none): the
    /// current network continues from the state after x_t, detached, as V-trace's targets are.
    fn final_values(&self, hb: &HostBatch, states: Tensor<B, 2>) -> Vec<f32> {
        let dev = &self.device;
        let Some(obs) = hb.final_obs::<B::InnerBackend>(&self.spec, &self.policy_cfg, dev) else {
            return Vec::new();
        };
        let at: Vec<i32> = hb.finals.iter().map(|&i| i as i32).collect();
        let at = Tensor::<B::InnerBackend, 1, Int>::from_data(TensorData::new(at, [hb.finals.len()]), dev);
        let h = states.inner().select(0, at);
        let (out, _) = self.model.valid().act(obs, h);
        let v: Vec<f32> = out.values.into_data().convert::<f32>().to_vec().unwrap();
        let mut full = vec![0.0; hb.steps * hb.batch];
        for (&i, v) in hb.finals.iter().zip(v) {
            full[i] = v;
        }
        full
    }

    fn loss_terms(&self, hb: &HostBatch) -> (crate::loss::LossTerms<B>, usize) {
        let dev = &self.device;
        let (b, steps) = (hb.batch, hb.steps);
        let n = steps * b;
        let (out, states) =
            self.model.unroll_with_states(hb.obs::<B>(&self.spec, &self.policy_cfg, dev), hb.h0(dev), hb.resets(dev));
        let final_values = self.final_values(hb, states);
        let num_actions = self.spec.num_actions;
        let logits = out.logits.slice([0..n, 0..num_actions]);
        let values_all = out.values;
        let values = values_all.clone().slice([0..n]);
        let actions = Tensor::<B, 1, Int>::from_data(TensorData::new(hb.actions.clone(), [n]), dev);

        // Host side: V-trace needs the current policy's log-probs and values, detached.
        let (target_logp, _) = logp_and_entropy(logits.clone().detach(), actions.clone());
        let target_logp: Vec<f32> = target_logp.into_data().convert::<f32>().to_vec().unwrap();
        let values_host: Vec<f32> = values_all.detach().into_data().convert::<f32>().to_vec().unwrap();
        let vt = vtrace(&VtraceInput {
            batch: b,
            behaviour_logp: &hb.behaviour_logp,
            target_logp: &target_logp,
            rewards: &hb.rewards,
            dones: &hb.dones,
            truncated: &hb.truncated,
            final_values: &final_values,
            values: &values_host,
            gamma: self.cfg.gamma,
            rho_bar: self.cfg.vtrace_rho_bar,
            c_bar: self.cfg.vtrace_c_bar,
        });
        let mut adv = vt.advantages;
        if self.cfg.normalize_advantages {
            normalize(&mut adv);
        }
        let t1 = |v: Vec<f32>| Tensor::<B, 1>::from_data(TensorData::new(v, [n]), dev);
        let terms = appo_loss(
            LossInputs {
                logits,
                values,
                actions,
                behaviour_logp: t1(hb.behaviour_logp.clone()),
                advantages: t1(adv),
                value_targets: t1(vt.vs),
            },
            &LossCoefs::from(&self.cfg),
        );
        (terms, n)
    }
}
