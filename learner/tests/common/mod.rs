//! Synthetic, valid rollouts for learner tests.

use oni_env::ObsSpec;
use oni_proto::v1::Rollout;

pub fn rollouts(n: usize, t: usize, h: usize, spec: &ObsSpec) -> Vec<Rollout> {
    let mut x = 99u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| Rollout {
            run_id: "r".into(),
            actor_id: "a".into(),
            env_slot: i as u32,
            length: t as u32,
            initial_state: vec![0.0; h],
            glyphs: (0..(t + 1) * spec.crop_len())
                .flat_map(|_| ((next() % spec.num_glyphs as u64) as u16).to_le_bytes())
                .collect(),
            stats: (0..(t + 1) * spec.stats_dim).map(|_| (next() % 10) as f32 / 10.0).collect(),
            messages: (0..(t + 1) * 256).map(|k| if k % 256 < 8 { (next() % 26) as u8 + b'a' } else { 0 }).collect(),
            actions: (0..t).map(|_| (next() % spec.num_actions as u64) as u32).collect(),
            behaviour_logprobs: vec![-(spec.num_actions as f32).ln(); t],
            rewards: (0..t).map(|_| (next() % 3) as f32 - 1.0).collect(),
            dones: (0..t).map(|_| next() % 7 == 0).collect(),
            captions: vec![String::new(); t],
            ..Default::default()
        })
        .collect()
}
