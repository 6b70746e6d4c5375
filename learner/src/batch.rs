//! Validated rollouts → time-major host arrays and tensors for one update.

use burn::prelude::*;
use burn::tensor::TensorData;
use oni_env::{ObsSpec, MESSAGE_LEN};
use oni_policy::{ObsBatch, PolicyConfig};
use oni_proto::v1::Rollout;

/// B rollouts of T steps, laid out time-major (index t·B + b).
pub struct HostBatch {
    pub steps: usize,
    pub batch: usize,
    pub glyphs: Vec<u16>,
    pub stats: Vec<f32>,
    pub messages: Vec<u8>,
    pub initial_state: Vec<f32>,
    /// [(T+1)·B]: 1 where the state is zeroed before observation t.
    pub resets: Vec<f32>,
    pub actions: Vec<i32>,
    pub behaviour_logp: Vec<f32>,
    pub rewards: Vec<f32>,
    pub dones: Vec<bool>,
    /// [T·B], empty when no step of the batch hit a time limit.
    pub truncated: Vec<bool>,
    /// The final observations of the truncated steps: where each belongs (t·B + b) and the
    /// observations themselves, in the same order.
    pub finals: Vec<usize>,
    pub final_glyphs: Vec<u16>,
    pub final_stats: Vec<f32>,
    pub final_messages: Vec<u8>,
}

/// How the learner turns the rollout's rewards into the training reward:
/// r = α_ext · clip(r_ext, ±c) + α_int · r_int (the actor already applied the per-episode
/// count decay to r_int).
#[derive(Debug, Clone, Copy)]
pub struct RewardMix {
    pub extrinsic_coef: f32,
    pub intrinsic_coef: f32,
    pub clip: f32,
}

impl HostBatch {
    pub fn build(rollouts: &[Rollout], spec: &ObsSpec, steps: usize, mix: RewardMix) -> Self {
        let b = rollouts.len();
        let crop = spec.crop_len();
        let sd = spec.stats_dim;
        let hidden = rollouts.first().map_or(0, |r| r.initial_state.len());
        let obs_n = (steps + 1) * b;
        let mut hb = HostBatch {
            steps,
            batch: b,
            glyphs: vec![0; obs_n * crop],
            stats: vec![0.0; obs_n * sd],
            messages: vec![0; obs_n * MESSAGE_LEN],
            initial_state: Vec::with_capacity(b * hidden),
            resets: vec![0.0; obs_n],
            actions: vec![0; steps * b],
            behaviour_logp: vec![0.0; steps * b],
            rewards: vec![0.0; steps * b],
            dones: vec![false; steps * b],
            truncated: Vec::new(),
            finals: Vec::new(),
            final_glyphs: Vec::new(),
            final_stats: Vec::new(),
            final_messages: Vec::new(),
        };
        for (j, r) in rollouts.iter().enumerate() {
            hb.initial_state.extend_from_slice(&r.initial_state);
            for t in 0..=steps {
                let dst = t * b + j;
                for k in 0..crop {
                    let o = 2 * (t * crop + k);
                    hb.glyphs[dst * crop + k] = u16::from_le_bytes([r.glyphs[o], r.glyphs[o + 1]]);
                }
                hb.stats[dst * sd..(dst + 1) * sd].copy_from_slice(&r.stats[t * sd..(t + 1) * sd]);
                hb.messages[dst * MESSAGE_LEN..(dst + 1) * MESSAGE_LEN]
                    .copy_from_slice(&r.messages[t * MESSAGE_LEN..(t + 1) * MESSAGE_LEN]);
                if t > 0 && r.dones[t - 1] {
                    hb.resets[dst] = 1.0;
                }
            }
            for t in 0..steps {
                let dst = t * b + j;
                hb.actions[dst] = r.actions[t] as i32;
                hb.behaviour_logp[dst] = r.behaviour_logprobs[t];
                let ext = r.rewards[t].clamp(-mix.clip, mix.clip);
                let int = r.intrinsic_rewards.get(t).copied().unwrap_or(0.0);
                hb.rewards[dst] = mix.extrinsic_coef * ext + mix.intrinsic_coef * int;
                hb.dones[dst] = r.dones[t];
            }
            if r.truncated.contains(&true) {
                hb.truncated.resize(steps * b, false);
                let cut = r.truncated.iter().enumerate().filter(|(_, &x)| x).map(|(t, _)| t);
                for (k, t) in cut.enumerate() {
                    hb.truncated[t * b + j] = true;
                    hb.finals.push(t * b + j);
                    let g = &r.final_glyphs[2 * k * crop..2 * (k + 1) * crop];
                    hb.final_glyphs.extend(g.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])));
                    hb.final_stats.extend_from_slice(&r.final_stats[k * sd..(k + 1) * sd]);
                    hb.final_messages.extend_from_slice(&r.final_messages[k * MESSAGE_LEN..(k + 1) * MESSAGE_LEN]);
                }
            }
        }
        hb
    }

    /// The final observations of the truncated steps (None when there are none).
    pub fn final_obs<B: Backend>(
        &self,
        spec: &ObsSpec,
        policy: &PolicyConfig,
        device: &B::Device,
    ) -> Option<ObsBatch<B>> {
        (!self.finals.is_empty()).then(|| {
            ObsBatch::from_host(spec, policy, &self.final_glyphs, &self.final_stats, &self.final_messages, device)
        })
    }

    pub fn obs<B: Backend>(&self, spec: &ObsSpec, policy: &PolicyConfig, device: &B::Device) -> ObsBatch<B> {
        ObsBatch::from_host(spec, policy, &self.glyphs, &self.stats, &self.messages, device)
    }

    pub fn h0<B: Backend>(&self, device: &B::Device) -> Tensor<B, 2> {
        let h = self.initial_state.len() / self.batch.max(1);
        Tensor::from_data(TensorData::new(self.initial_state.clone(), [self.batch, h]), device)
    }

    pub fn resets<B: Backend>(&self, device: &B::Device) -> Tensor<B, 2> {
        Tensor::from_data(TensorData::new(self.resets.clone(), [self.steps + 1, self.batch]), device)
    }
}
