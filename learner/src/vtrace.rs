//! V-trace off-policy targets (Espeholt et al., 2018, eq. 1), on the host.
//!
//! With ρ_t = min(ρ̄, π(a_t|x_t)/μ(a_t|x_t)), c_t = min(c̄, π/μ) and γ_t = γ·(1 − done_t):
//!   δ_t = ρ_t (r_t + γ_t V(x_{t+1}) − V(x_t))
//!   v_t = V(x_t) + δ_t + γ_t c_t (v_{t+1} − V(x_{t+1})),   v_T = V(x_T)
//! and the policy-gradient advantage is A_t = ρ_t (r_t + γ_t v_{t+1} − V(x_t)).
//!
//! A time limit is not a death (Pardo et al., 2018): when step t was truncated, its successor
//! is the episode's final observation x'_t, not x_{t+1} (the next episode's start). Then
//!   δ_t = ρ_t (r_t + γ V(x'_t) − V(x_t)),   v_t = V(x_t) + δ_t,   A_t = δ_t
//! (the trace stops: nothing after x'_t was observed, so v(x'_t) = V(x'_t)).

/// Inputs are time-major `[T][B]` flattened as t·B + b; `values` holds T+1 rows.
pub struct VtraceInput<'a> {
    pub batch: usize,
    pub behaviour_logp: &'a [f32],
    pub target_logp: &'a [f32],
    pub rewards: &'a [f32],
    pub dones: &'a [bool],
    /// Empty, or `[T][B]`: done_t came from a time limit (then `final_values` holds V(x'_t)).
    pub truncated: &'a [bool],
    /// Empty, or `[T][B]`, read where `truncated` is set.
    pub final_values: &'a [f32],
    pub values: &'a [f32],
    pub gamma: f32,
    pub rho_bar: f32,
    pub c_bar: f32,
}

pub struct VtraceOutput {
    /// Value targets v_t, `[T][B]`.
    pub vs: Vec<f32>,
    /// Policy-gradient advantages A_t, `[T][B]`.
    pub advantages: Vec<f32>,
}

pub fn vtrace(inp: &VtraceInput<'_>) -> VtraceOutput {
    let b = inp.batch;
    let steps = inp.rewards.len() / b;
    assert_eq!(inp.values.len(), (steps + 1) * b, "values need T+1 rows");
    assert!(inp.truncated.is_empty() || inp.truncated.len() == steps * b, "truncated needs T rows or none");
    let truncated = |i: usize| inp.truncated.get(i).copied().unwrap_or(false);
    let mut vs = vec![0.0f32; steps * b];
    let mut adv = vec![0.0f32; steps * b];
    for j in 0..b {
        // v_{t+1} − V(x_{t+1}), zero beyond the bootstrap
        let mut next_correction = 0.0f32;
        let mut next_vs = inp.values[steps * b + j];
        for t in (0..steps).rev() {
            let i = t * b + j;
            let ratio = (inp.target_logp[i] - inp.behaviour_logp[i]).exp();
            let rho = ratio.min(inp.rho_bar);
            let c = ratio.min(inp.c_bar);
            let v = inp.values[i];
            if truncated(i) {
                let delta = rho * (inp.rewards[i] + inp.gamma * inp.final_values[i] - v);
                vs[i] = v + delta;
                adv[i] = delta;
                next_correction = delta;
                next_vs = vs[i];
                continue;
            }
            let discount = if inp.dones[i] { 0.0 } else { inp.gamma };
            let v_next = inp.values[i + b];
            let delta = rho * (inp.rewards[i] + discount * v_next - v);
            vs[i] = v + delta + discount * c * next_correction;
            adv[i] = rho * (inp.rewards[i] + discount * next_vs - v);
            next_correction = vs[i] - v;
            next_vs = vs[i];
        }
    }
    VtraceOutput { vs, advantages: adv }
}

/// Normalises advantages to zero mean and unit variance across the batch.
pub fn normalize(adv: &mut [f32]) {
    let n = adv.len().max(1) as f32;
    let mean = adv.iter().sum::<f32>() / n;
    let var = adv.iter().map(|a| (a - mean).powi(2)).sum::<f32>() / n;
    let std = var.sqrt().max(1e-8);
    for a in adv {
        *a = (*a - mean) / std;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On-policy (π = μ, ρ = c = 1) V-trace reduces to n-step returns bootstrapped with V:
    /// v_t = Σ_k γ^k r_{t+k} + γ^{T−t} V(x_T), cut at episode ends.
    #[test]
    fn on_policy_equals_discounted_returns() {
        let rewards = [1.0, 0.0, 2.0, 0.5];
        let dones = [false, true, false, false];
        let values = [0.3, -0.2, 0.7, 0.1, 1.5];
        let lp = [-0.5f32; 4];
        let out = vtrace(&VtraceInput {
            batch: 1,
            behaviour_logp: &lp,
            target_logp: &lp,
            rewards: &rewards,
            dones: &dones,
            truncated: &[],
            final_values: &[],
            values: &values,
            gamma: 0.9,
            rho_bar: 1.0,
            c_bar: 1.0,
        });
        // worked by hand:
        let v3 = 0.5 + 0.9 * 1.5; // 1.85
        let v2 = 2.0 + 0.9 * v3; // 3.665
        let v1 = 0.0; // episode ended after step 1
        let v0 = 1.0 + 0.9 * v1;
        let expected = [v0, v1, v2, v3];
        for (g, e) in out.vs.iter().zip(expected) {
            assert!((g - e).abs() < 1e-5, "{:?} vs {expected:?}", out.vs);
        }
        // A_t = r_t + γ_t v_{t+1} − V(x_t)
        let adv_expected = [1.0 + 0.9 * v1 - 0.3, 0.0 - (-0.2), 2.0 + 0.9 * v3 - 0.7, 0.5 + 0.9 * 1.5 - 0.1];
        for (g, e) in out.advantages.iter().zip(adv_expected) {
            assert!((g - e).abs() < 1e-5, "{:?} vs {adv_expected:?}", out.advantages);
        }
    }

    /// Off-policy: truncated importance weights, worked step by step for T = 2.
    #[test]
    fn off_policy_truncates_importance_weights() {
        let behaviour = [(0.5f32).ln(), (0.5f32).ln()];
        let target = [(0.25f32).ln(), (0.9f32).ln()]; // ratios 0.5 and 1.8 → ρ = c = 0.5, 1.0
        let rewards = [1.0, 1.0];
        let dones = [false, false];
        let values = [0.0, 0.0, 2.0];
        let out = vtrace(&VtraceInput {
            batch: 1,
            behaviour_logp: &behaviour,
            target_logp: &target,
            rewards: &rewards,
            dones: &dones,
            truncated: &[],
            final_values: &[],
            values: &values,
            gamma: 0.5,
            rho_bar: 1.0,
            c_bar: 1.0,
        });
        // t=1: δ = 1·(1 + 0.5·2 − 0) = 2; v1 = 0 + 2 + 0 = 2
        // t=0: δ = 0.5·(1 + 0.5·0 − 0) = 0.5; v0 = 0 + 0.5 + 0.5·0.5·(2 − 0) = 1.0
        assert!((out.vs[1] - 2.0).abs() < 1e-5 && (out.vs[0] - 1.0).abs() < 1e-5, "{:?}", out.vs);
        // A0 = 0.5·(1 + 0.5·2 − 0) = 1.0; A1 = 1·(1 + 0.5·2 − 0) = 2
        assert!((out.advantages[0] - 1.0).abs() < 1e-5 && (out.advantages[1] - 2.0).abs() < 1e-5);
    }

    #[test]
    fn batch_columns_are_independent() {
        // two envs interleaved time-major must equal each computed alone
        let r = [1.0, -1.0, 0.0, 2.0];
        let d = [false, false, true, false];
        let v = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6];
        let lp = [0.0f32; 4];
        let both = vtrace(&VtraceInput {
            batch: 2,
            behaviour_logp: &lp,
            target_logp: &lp,
            rewards: &r,
            dones: &d,
            truncated: &[],
            final_values: &[],
            values: &v,
            gamma: 0.9,
            rho_bar: 1.0,
            c_bar: 1.0,
        });
        for j in 0..2 {
            let rj = [r[j], r[2 + j]];
            let dj = [d[j], d[2 + j]];
            let vj = [v[j], v[2 + j], v[4 + j]];
            let one = vtrace(&VtraceInput {
                batch: 1,
                behaviour_logp: &lp[..2],
                target_logp: &lp[..2],
                rewards: &rj,
                dones: &dj,
                truncated: &[],
                final_values: &[],
                values: &vj,
                gamma: 0.9,
                rho_bar: 1.0,
                c_bar: 1.0,
            });
            assert_eq!(one.vs, vec![both.vs[j], both.vs[2 + j]]);
        }
    }

    /// A time limit bootstraps from the final observation's value and cuts the trace; the
    /// same step as a death would end the return. T = 3, worked by hand.
    #[test]
    fn truncation_bootstraps_from_the_final_observation() {
        let rewards = [1.0, 0.0, 2.0];
        let dones = [false, true, false];
        let truncated = [false, true, false];
        let final_values = [0.0, 4.0, 0.0];
        let values = [0.3, -0.2, 0.7, 1.5];
        let lp = [-0.5f32; 3];
        let run = |target: &[f32], truncated: &[bool]| {
            vtrace(&VtraceInput {
                batch: 1,
                behaviour_logp: &lp,
                target_logp: target,
                rewards: &rewards,
                dones: &dones,
                truncated,
                final_values: &final_values,
                values: &values,
                gamma: 0.9,
                rho_bar: 1.0,
                c_bar: 1.0,
            })
        };
        let close = |got: &[f32], want: &[f32]| {
            assert!(got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-5), "{got:?} vs {want:?}")
        };
        let out = run(&lp, &truncated);
        // v2 = 2 + 0.9·1.5 = 3.35; v1 = 0 + 0.9·V(x'_1) = 3.6 (not from v2: that is the next
        // episode); v0 = 1 + 0.9·v1 = 4.24
        close(&out.vs, &[4.24, 3.6, 3.35]);
        // A1 = 0 + 0.9·4 − (−0.2) = 3.8; A0 = 1 + 0.9·3.6 − 0.3 = 3.94; A2 = 2 + 1.35 − 0.7
        close(&out.advantages, &[3.94, 3.8, 2.65]);
        // As a death the same step ends the return: v1 = 0, v0 = 1.
        let dead = run(&lp, &[]);
        close(&dead.vs[..2], &[1.0, 0.0]);
        // Off-policy at the truncated step (ρ = c = 0.5): v1 = −0.2 + 0.5·(0 + 3.6 + 0.2) = 1.7,
        // with no c·(v2 − V(x2)) term from the next episode.
        let target = [-0.5, -0.5 + 0.5f32.ln(), -0.5];
        let off = run(&target, &truncated);
        close(&off.vs[1..], &[1.7, 3.35]);
        close(&off.advantages[1..2], &[0.5 * 3.8]);
    }
}
