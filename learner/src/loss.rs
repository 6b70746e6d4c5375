//! The APPO loss (Schulman et al., 2017, PPO-clip; targets from V-trace):
//!   ratio_t = exp(log π(a_t|x_t) − log μ(a_t|x_t))
//!   L_pg    = −mean(min(ratio_t·A_t, clip(ratio_t, 1−ε, 1+ε)·A_t))
//!   L_v     = ½·mean((V(x_t) − v_t)²)
//!   L_ent   = −mean(H(π(·|x_t)))
//!   L       = L_pg + c_v·L_v + c_e·L_ent
//! and global gradient-norm clipping over all parameters.

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::AutodiffBackend;

pub struct LossInputs<B: Backend> {
    /// [N, A] logits of the current policy for the N = T·B training steps.
    pub logits: Tensor<B, 2>,
    /// [N] values V(x_t).
    pub values: Tensor<B, 1>,
    /// [N] actions taken.
    pub actions: Tensor<B, 1, Int>,
    /// [N] log μ(a_t|x_t) of the behaviour policy.
    pub behaviour_logp: Tensor<B, 1>,
    /// [N] (normalised) advantages and value targets, constants.
    pub advantages: Tensor<B, 1>,
    pub value_targets: Tensor<B, 1>,
}

pub struct LossCoefs {
    pub clip: f32,
    pub value: f32,
    pub entropy: f32,
}

impl From<&crate::config::LearnerConfig> for LossCoefs {
    fn from(c: &crate::config::LearnerConfig) -> Self {
        LossCoefs { clip: c.ppo_clip, value: c.value_coef, entropy: c.entropy_coef }
    }
}

/// Every number an update reports about its loss, named once: `appo_loss` computes each,
/// and the trainer, the metrics (`oni_learner_loss{term}`), the stats (metrics.jsonl,
/// TensorBoard) and `GetInfo`'s source read them from here. A new term is a variant, its
/// name, and its value in `appo_loss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Term {
    /// L, what the gradient is taken of.
    Total,
    /// L_pg.
    Policy,
    /// L_v.
    Value,
    /// mean H(π(·|x_t)), the entropy itself (its loss term is −H).
    Entropy,
    /// Approximate KL(μ‖π): mean(ratio − 1 − log ratio), no gradient.
    ApproxKl,
    /// The share of ratios outside [1−ε, 1+ε], no gradient.
    ClipFraction,
}

impl Term {
    pub const ALL: [Term; 6] =
        [Term::Total, Term::Policy, Term::Value, Term::Entropy, Term::ApproxKl, Term::ClipFraction];

    /// The `term` label of `oni_learner_loss` and the key under `loss` in metrics.jsonl.
    pub fn name(self) -> &'static str {
        match self {
            Term::Total => "total",
            Term::Policy => "policy",
            Term::Value => "value",
            Term::Entropy => "entropy",
            Term::ApproxKl => "approx_kl",
            Term::ClipFraction => "clip_fraction",
        }
    }
}

/// One value per `Term` (an update's, read back to the host).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Losses([f32; Term::ALL.len()]);

impl Losses {
    pub fn get(&self, t: Term) -> f32 {
        self.0[t as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = (Term, f32)> + '_ {
        Term::ALL.into_iter().map(|t| (t, self.get(t)))
    }
}

/// A map from each term's name to its value.
impl serde::Serialize for Losses {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(Term::ALL.len()))?;
        for (t, v) in self.iter() {
            m.serialize_entry(t.name(), &v)?;
        }
        m.end()
    }
}

/// The loss of one update, as tensors: `total` keeps its graph for the backward pass.
pub struct LossTerms<B: Backend> {
    terms: [Tensor<B, 1>; Term::ALL.len()],
}

impl<B: Backend> LossTerms<B> {
    pub fn get(&self, t: Term) -> Tensor<B, 1> {
        self.terms[t as usize].clone()
    }

    pub fn total(&self) -> Tensor<B, 1> {
        self.get(Term::Total)
    }

    /// Every term's value, read back (one sync per term).
    pub fn values(&self) -> Losses {
        Losses(std::array::from_fn(|i| self.terms[i].clone().into_scalar().elem::<f32>()))
    }
}

/// log π(a|x) for the taken actions and the entropy, per row.
pub fn logp_and_entropy<B: Backend>(logits: Tensor<B, 2>, actions: Tensor<B, 1, Int>) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let logp_all = log_softmax(logits, 1);
    let n = actions.dims()[0];
    let logp = logp_all.clone().gather(1, actions.reshape([n, 1])).reshape([n]);
    let entropy = (logp_all.clone().exp() * logp_all).sum_dim(1).reshape([n]).neg();
    (logp, entropy)
}

pub fn appo_loss<B: Backend>(inp: LossInputs<B>, c: &LossCoefs) -> LossTerms<B> {
    let (logp, entropy) = logp_and_entropy(inp.logits, inp.actions);
    let log_ratio = logp - inp.behaviour_logp;
    let ratio = log_ratio.clone().exp();
    let unclipped = ratio.clone() * inp.advantages.clone();
    let clipped = ratio.clone().clamp(1.0 - c.clip, 1.0 + c.clip) * inp.advantages;
    let policy = unclipped.min_pair(clipped).mean().neg();
    let value = (inp.values - inp.value_targets).powi_scalar(2).mean().mul_scalar(0.5);
    let entropy = entropy.mean();
    let total = policy.clone() + value.clone().mul_scalar(c.value) - entropy.clone().mul_scalar(c.entropy);
    let lr = log_ratio.detach();
    let approx_kl = (lr.clone().exp().sub_scalar(1.0) - lr).mean();
    let clip_fraction = ratio.detach().sub_scalar(1.0).abs().greater_elem(c.clip).float().mean();
    // in `Term::ALL`'s order
    LossTerms { terms: [total, policy, value, entropy.detach(), approx_kl, clip_fraction] }
}

struct Ids(Vec<(ParamId, usize)>);

impl<B: Backend> ModuleVisitor<B> for Ids {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push((param.id, D));
    }
}

/// Scales all gradients by min(1, max_norm / ‖g‖₂) where ‖g‖ is the norm over every
/// parameter together (as `torch.nn.utils.clip_grad_norm_`), and returns ‖g‖ before clipping.
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    grads: &mut GradientsParams,
    module: &M,
    max_norm: f32,
) -> f32 {
    let mut ids = Ids(Vec::new());
    module.visit(&mut ids);
    let mut sq = 0.0f64;
    for (id, rank) in &ids.0 {
        sq += match rank {
            1 => sq_norm::<B::InnerBackend, 1>(grads, *id),
            2 => sq_norm::<B::InnerBackend, 2>(grads, *id),
            3 => sq_norm::<B::InnerBackend, 3>(grads, *id),
            4 => sq_norm::<B::InnerBackend, 4>(grads, *id),
            r => panic!("parameter of rank {r} not supported by clip_global_norm"),
        };
    }
    let norm = sq.sqrt() as f32;
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for (id, rank) in &ids.0 {
            match rank {
                1 => rescale::<B::InnerBackend, 1>(grads, *id, scale),
                2 => rescale::<B::InnerBackend, 2>(grads, *id, scale),
                3 => rescale::<B::InnerBackend, 3>(grads, *id, scale),
                _ => rescale::<B::InnerBackend, 4>(grads, *id, scale),
            }
        }
    }
    norm
}

fn sq_norm<B: Backend, const D: usize>(grads: &GradientsParams, id: ParamId) -> f64 {
    grads.get::<B, D>(id).map(|g| g.powi_scalar(2).sum().into_scalar().elem::<f64>()).unwrap_or(0.0)
}

fn rescale<B: Backend, const D: usize>(grads: &mut GradientsParams, id: ParamId, scale: f32) {
    if let Some(g) = grads.remove::<B, D>(id) {
        grads.register::<B, D>(id, g.mul_scalar(scale));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    type B = oni_policy::CpuBackend;

    fn t1(v: &[f32]) -> Tensor<B, 1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Default::default())
    }

    /// Two steps with two actions, every term computed by hand in plain f64 here.
    #[test]
    fn appo_loss_matches_hand_computation() {
        let logits_v = [[0.0f32, 1.0], [2.0, 0.0]];
        let logits = Tensor::<B, 2>::from_data(TensorData::new(logits_v.concat(), [2, 2]), &Default::default());
        let actions = Tensor::<B, 1, Int>::from_data(TensorData::new(vec![1i32, 1], [2]), &Default::default());
        let behaviour = [(0.5f32).ln(), (0.2f32).ln()];
        let adv = [1.0f32, -2.0];
        let values = [0.5f32, -0.5];
        let targets = [1.0f32, 0.0];
        let c = LossCoefs { clip: 0.2, value: 0.5, entropy: 0.01 };
        let out = appo_loss(
            LossInputs {
                logits,
                values: t1(&values),
                actions,
                behaviour_logp: t1(&behaviour),
                advantages: t1(&adv),
                value_targets: t1(&targets),
            },
            &c,
        );

        let mut pg = 0.0f64;
        let mut ent = 0.0f64;
        for i in 0..2 {
            let z: f64 = logits_v[i].iter().map(|&l| (l as f64).exp()).sum();
            let p: Vec<f64> = logits_v[i].iter().map(|&l| (l as f64).exp() / z).collect();
            let ratio = p[1] / (behaviour[i] as f64).exp();
            let a = adv[i] as f64;
            pg += (ratio * a).min(ratio.clamp(0.8, 1.2) * a);
            ent += -p.iter().map(|q| q * q.ln()).sum::<f64>();
        }
        let pg = -pg / 2.0;
        let v = 0.5 * ((0.5f64 - 1.0).powi(2) + (-0.5f64).powi(2)) / 2.0;
        let ent = -ent / 2.0;
        let total = pg + 0.5 * v + 0.01 * ent;
        let got = out.values();
        assert_eq!(got.get(Term::Total), out.total().into_scalar());
        let got = |t: Term| got.get(t) as f64;
        assert!((got(Term::Policy) - pg).abs() < 1e-5);
        assert!((got(Term::Value) - v).abs() < 1e-6);
        assert!((got(Term::Entropy) + ent).abs() < 1e-6, "the entropy itself, not its loss term");
        assert!((got(Term::Total) - total).abs() < 1e-5);
        // ratios: p1/0.5 = 1.462 (clipped), p1/0.2 = 0.596 (clipped) → both outside ±0.2
        assert!((got(Term::ClipFraction) - 1.0).abs() < 1e-6);
        let kl: f64 = (0..2)
            .map(|i| {
                let z: f64 = logits_v[i].iter().map(|&l| (l as f64).exp()).sum();
                let lr = (logits_v[i][1] as f64).exp() / z / (behaviour[i] as f64).exp();
                lr - 1.0 - lr.ln()
            })
            .sum::<f64>()
            / 2.0;
        assert!((got(Term::ApproxKl) - kl).abs() < 1e-5);
        let names: Vec<&str> = Term::ALL.iter().map(|t| t.name()).collect();
        let json = serde_json::to_value(out.values()).unwrap();
        assert_eq!(
            json.as_object().unwrap().keys().map(String::as_str).collect::<std::collections::BTreeSet<_>>(),
            names.iter().copied().collect(),
            "every term is reported under its name"
        );
    }
}
