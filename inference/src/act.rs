//! Choosing actions: one forward pass of the policy over a batch of observations and their
//! recurrent states, then sampling on the host. The actor's local inference and the central
//! service both act through [`Acting`], so the same weights, observations, state and seed
//! give the same actions wherever inference runs.

use burn::prelude::*;
use burn::tensor::TensorData;
use oni_env::ObsSpec;
use oni_policy::sampling::{greedy_actions, sample_actions};
use oni_policy::{weights, ObsBatch, Policy, PolicyBackend, PolicyConfig, WeightsError};
use rand::SeedableRng;

/// A policy with its newest weights, on one device, and the sampler's random stream.
pub struct Acting<B: PolicyBackend> {
    pub spec: ObsSpec,
    cfg: PolicyConfig,
    device: B::Device,
    policy: Policy<B>,
    /// `u64::MAX` until weights are loaded.
    pub version: u64,
    rng: rand::rngs::StdRng,
}

/// What one batch's forward pass chose.
pub struct Chosen {
    /// (action, log π(action)) per env.
    pub actions: Vec<(usize, f32)>,
    /// The recurrent state after the step, `[n · H]`.
    pub hidden: Vec<f32>,
}

impl<B: PolicyBackend> Acting<B> {
    /// `seed`: the sampler's seed (`None`: from the OS).
    pub fn new(cfg: &PolicyConfig, spec: &ObsSpec, device: B::Device, seed: Option<u64>) -> Self {
        Acting {
            policy: Policy::<B>::new(cfg, spec, &device),
            spec: spec.clone(),
            cfg: cfg.clone(),
            device,
            version: u64::MAX,
            rng: match seed {
                Some(s) => rand::rngs::StdRng::seed_from_u64(s),
                None => rand::rngs::StdRng::from_os_rng(),
            },
        }
    }

    pub fn hidden_size(&self) -> usize {
        self.cfg.core_hidden
    }

    /// Loads `bytes` as version `version` unless that version is loaded already.
    pub fn update(&mut self, version: u64, bytes: &[u8]) -> Result<bool, WeightsError> {
        if version == self.version {
            return Ok(false);
        }
        self.policy = weights::load_bytes(self.policy.clone(), bytes)?;
        self.version = version;
        Ok(true)
    }

    /// One step for `n` envs: `glyphs` [n · crop], `stats` [n · stats_dim], `messages`
    /// [n · 256], `hidden` [n · H].
    pub fn choose(&mut self, glyphs: &[u16], stats: &[f32], messages: &[u8], hidden: &[f32]) -> Chosen {
        self.choose_with(glyphs, stats, messages, hidden, false)
    }

    /// As `choose`; `greedy` takes each env's most likely action instead of a sample
    /// (evaluation).
    pub fn choose_with(
        &mut self,
        glyphs: &[u16],
        stats: &[f32],
        messages: &[u8],
        hidden: &[f32],
        greedy: bool,
    ) -> Chosen {
        let n = stats.len() / self.spec.stats_dim.max(1);
        let h = self.cfg.core_hidden;
        let batch = ObsBatch::<B>::from_host(&self.spec, &self.cfg, glyphs, stats, messages, &self.device);
        let state = Tensor::<B, 2>::from_data(TensorData::new(hidden.to_vec(), [n, h]), &self.device);
        let (out, next) = self.policy.act(batch, state);
        let hidden = next.into_data().convert::<f32>().to_vec().expect("f32 state");
        let logits: Vec<f32> = out.logits.into_data().convert::<f32>().to_vec().expect("f32 logits");
        let actions = if greedy {
            greedy_actions(&logits, self.spec.num_actions)
        } else {
            sample_actions(&logits, self.spec.num_actions, &mut self.rng)
        };
        Chosen { actions, hidden }
    }
}
