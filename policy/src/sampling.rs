//! Sampling actions from logits on the host: the batch is small and the actor needs the
//! chosen action's log-probability anyway.

use rand::Rng;

/// Samples one action per row of `logits` ([rows × num_actions], row-major) and returns
/// (action, log π(action)).
pub fn sample_actions<R: Rng>(logits: &[f32], num_actions: usize, rng: &mut R) -> Vec<(usize, f32)> {
    logits
        .chunks_exact(num_actions)
        .map(|row| {
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = row.iter().map(|l| (l - max).exp()).sum();
            let log_z = max + sum.ln();
            let mut u = rng.random::<f32>() * sum;
            let mut chosen = num_actions - 1;
            for (a, l) in row.iter().enumerate() {
                let p = (l - max).exp();
                if u < p {
                    chosen = a;
                    break;
                }
                u -= p;
            }
            (chosen, row[chosen] - log_z)
        })
        .collect()
}

/// The most likely action per row (for evaluation), with its log π(action).
pub fn greedy_actions(logits: &[f32], num_actions: usize) -> Vec<(usize, f32)> {
    logits
        .chunks_exact(num_actions)
        .map(|row| {
            let (best, max) =
                row.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (a, &l)| if l > b.1 { (a, l) } else { b });
            let log_z = max + row.iter().map(|l| (l - max).exp()).sum::<f32>().ln();
            (best, max - log_z)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sampling_follows_the_softmax_and_reports_its_log_prob() {
        let logits = [0.0f32, (3.0f32).ln(), f32::NEG_INFINITY];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = [0usize; 3];
        for _ in 0..20_000 {
            let (a, lp) = sample_actions(&logits, 3, &mut rng)[0];
            counts[a] += 1;
            let expected = if a == 0 { 0.25f32.ln() } else { 0.75f32.ln() };
            assert!((lp - expected).abs() < 1e-5, "log-prob {lp} vs {expected}");
        }
        assert_eq!(counts[2], 0, "zero-probability action sampled");
        let frac = counts[1] as f64 / 20_000.0;
        assert!((frac - 0.75).abs() < 0.02, "p(1) = {frac}");
        let (a, lp) = greedy_actions(&logits, 3)[0];
        assert_eq!(a, 1);
        assert!((lp - 0.75f32.ln()).abs() < 1e-6, "log-prob {lp}");
    }
}
