//! Each env's running return and length, and the record of an episode when it ends: the
//! bookkeeping every batch of envs does, built-in (`VecEnv`) or attached (the env hub).

/// An episode that finished during a step.
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeRecord {
    pub env_index: usize,
    pub extrinsic_return: f32,
    pub length: u32,
    pub success: bool,
    /// The env's score at the episode's end, where it keeps one (`StepOutcome::score`).
    pub score: Option<f32>,
}

#[derive(Debug, Clone)]
pub struct EpisodeTracker {
    first_index: usize,
    returns: Vec<f32>,
    lengths: Vec<u32>,
}

impl EpisodeTracker {
    /// `n` envs whose global indices start at `first_index`.
    pub fn new(n: usize, first_index: usize) -> Self {
        EpisodeTracker { first_index, returns: vec![0.0; n], lengths: vec![0; n] }
    }

    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// Counts a step of env `i`; when it ended the episode, returns the episode's record and
    /// starts the next one.
    pub fn step(
        &mut self,
        i: usize,
        reward: f32,
        done: bool,
        success: bool,
        score: Option<f32>,
    ) -> Option<EpisodeRecord> {
        self.returns[i] += reward;
        self.lengths[i] += 1;
        if !done {
            return None;
        }
        let record = EpisodeRecord {
            env_index: self.first_index + i,
            extrinsic_return: self.returns[i],
            length: self.lengths[i],
            success,
            score,
        };
        self.restart(i);
        Some(record)
    }

    /// Forgets env `i`'s unfinished episode (the env was reset before it ended).
    pub fn restart(&mut self, i: usize) {
        self.returns[i] = 0.0;
        self.lengths[i] = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_each_envs_episode_and_starts_over_at_its_end() {
        let mut t = EpisodeTracker::new(2, 10);
        assert_eq!(t.step(0, 1.0, false, false, Some(1.0)), None);
        assert_eq!(t.step(1, 0.5, false, false, None), None);
        let r = t.step(0, 2.0, true, true, Some(3.0)).unwrap();
        assert_eq!(
            r,
            EpisodeRecord { env_index: 10, extrinsic_return: 3.0, length: 2, success: true, score: Some(3.0) }
        );
        assert_eq!(t.step(0, 4.0, true, false, None).unwrap().extrinsic_return, 4.0, "env 0 started over");
        t.restart(1);
        assert_eq!(
            t.step(1, 1.0, true, false, None).unwrap(),
            EpisodeRecord { env_index: 11, extrinsic_return: 1.0, length: 1, success: false, score: None }
        );
    }
}
