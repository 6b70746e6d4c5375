//! Whether one update fits in the memory the learner's device has, checked before the
//! network is built, with the sizes a user needs to pick a smaller batch or network.

use crate::LearnerConfig;
use oni_env::ObsSpec;
use oni_policy::memory::{available_bytes, UpdateMemory};
use oni_policy::PolicyConfig;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error(
    "one update of {samples} samples (learner.batch_rollouts = {batch} × learner.rollout_len = {steps}, \
     plus a bootstrap observation each) on the `{network}` network ({params} parameters, about {per_obs_kib} KiB \
     per observation) needs about {need_mib} MiB of memory, but {avail_mib} MiB is available: lower \
     learner.batch_rollouts or learner.rollout_len, or choose a smaller network (policy.*)"
)]
pub struct TooBig {
    pub samples: usize,
    pub batch: usize,
    pub steps: usize,
    pub network: String,
    pub params: usize,
    pub per_obs_kib: u64,
    pub need_mib: u64,
    pub avail_mib: u64,
}

/// Checks one update against `available` bytes and returns its estimate.
pub fn check(
    cfg: &LearnerConfig,
    policy: &PolicyConfig,
    spec: &ObsSpec,
    available: u64,
) -> Result<UpdateMemory, TooBig> {
    let m = policy.update_memory(spec, (cfg.rollout_len + 1) * cfg.batch_rollouts);
    if m.bytes() <= available {
        return Ok(m);
    }
    Err(TooBig {
        samples: cfg.rollout_len * cfg.batch_rollouts,
        batch: cfg.batch_rollouts,
        steps: cfg.rollout_len,
        network: policy.network.to_string(),
        params: m.params,
        per_obs_kib: (m.bytes() - policy.update_memory(spec, 0).bytes()) / m.observations.max(1) as u64 / 1024,
        need_mib: m.bytes() >> 20,
        avail_mib: available >> 20,
    })
}

/// `check` against what the learner's device has free: the host's available memory for
/// `cpu`. A GPU's memory is not known before the backend starts, so there the update is
/// not checked ahead (and an allocation failure surfaces from the backend).
pub fn check_device(cfg: &LearnerConfig, policy: &PolicyConfig, spec: &ObsSpec) -> Result<(), TooBig> {
    if cfg.device != oni_policy::Device::Cpu {
        return Ok(());
    }
    match available_bytes() {
        Some(avail) => check(cfg, policy, spec, avail).map(|m| {
            tracing::debug!(need_mib = m.bytes() >> 20, avail_mib = avail >> 20, "the update fits in memory");
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_too_big_names_its_sizes_and_the_keys_to_change() {
        let nethack = oni_env::nethack::NetHackConfig {
            grid: oni_env::GridKind::Tty,
            crop_rows: 12,
            crop_cols: 12,
            ..Default::default()
        };
        let spec = oni_env::nethack::spec(&nethack).unwrap();
        let policy = PolicyConfig::oni();
        let cfg = LearnerConfig { batch_rollouts: 128, rollout_len: 32, ..Default::default() };
        let need = check(&cfg, &policy, &spec, u64::MAX).unwrap().bytes();
        assert!((1u64 << 30..4u64 << 30).contains(&need), "ONI's network at 4096 samples: {need} bytes");
        let e = check(&cfg, &policy, &spec, need - 1).unwrap_err();
        assert_eq!((e.samples, e.batch, e.steps, e.params), (4096, 128, 32, 2_798_205));
        let msg = e.to_string();
        for needle in
            ["4096 samples", "learner.batch_rollouts = 128", "`oni`", "2798205 parameters", "MiB is available"]
        {
            assert!(msg.contains(needle), "{needle:?} missing from: {msg}");
        }
        assert_eq!(e.need_mib, need >> 20);
    }
}
