//! A batch of environments stepped together into contiguous buffers, with automatic reset,
//! and a worker thread that steps one batch while the caller runs inference on another
//! (double buffering).

use crate::episodes::{EpisodeRecord, EpisodeTracker};
use crate::spec::{ObsBuf, ObsSpec, StepOutcome, MESSAGE_LEN};
use crate::{Env, EnvError, Screen};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::thread::JoinHandle;

/// The final observations of the envs whose episode a time limit cut during a step, saved
/// before the automatic reset replaced them: the learner bootstraps from their value.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Finals {
    /// The batch-local index of each saved env, ascending.
    pub envs: Vec<usize>,
    pub glyphs: Vec<u16>,
    pub stats: Vec<f32>,
    pub messages: Vec<u8>,
}

impl Finals {
    pub fn clear(&mut self) {
        self.envs.clear();
        self.glyphs.clear();
        self.stats.clear();
        self.messages.clear();
    }

    pub fn push(&mut self, env: usize, glyphs: &[u16], stats: &[f32], message: &[u8]) {
        self.envs.push(env);
        self.glyphs.extend_from_slice(glyphs);
        self.stats.extend_from_slice(stats);
        self.messages.extend_from_slice(message);
    }

    /// The saved observation of the `k`-th entry: (glyphs, stats, message).
    pub fn get(&self, k: usize) -> (&[u16], &[f32], &[u8]) {
        let c = self.glyphs.len() / self.envs.len();
        let s = self.stats.len() / self.envs.len();
        (
            &self.glyphs[k * c..(k + 1) * c],
            &self.stats[k * s..(k + 1) * s],
            &self.messages[k * MESSAGE_LEN..(k + 1) * MESSAGE_LEN],
        )
    }
}

/// What `VecEnv::step` leaves in the per-env step buffers.
#[derive(Debug, Default)]
pub struct VecStep {
    pub rewards: Vec<f32>,
    /// The episode ended with this step, for whatever reason.
    pub dones: Vec<bool>,
    /// The episode ended by a time limit (a subset of `dones`); see `finals`.
    pub truncated: Vec<bool>,
    pub finals: Finals,
    /// The message each env's step produced (before any automatic reset replaced the
    /// observation): the caption of that transition. `num_envs × MESSAGE_LEN`.
    pub captions: Vec<u8>,
    pub episodes: Vec<EpisodeRecord>,
    /// Envs that failed and were restarted during this step (their step counts as done).
    pub restarts: Vec<(usize, String)>,
    /// The watched env's screen at the end of the episode it finished in this step (the
    /// automatic reset then replaced it); see `VecEnv::watch`.
    pub final_screen: Option<Screen>,
}

impl VecStep {
    /// Buffers for `n` envs.
    pub fn new(n: usize) -> Self {
        VecStep {
            rewards: vec![0.0; n],
            dones: vec![false; n],
            truncated: vec![false; n],
            finals: Finals::default(),
            captions: vec![0; n * MESSAGE_LEN],
            episodes: Vec::new(),
            restarts: Vec::new(),
            final_screen: None,
        }
    }
}

/// A batch's current observations and last step, wherever the batch lives (a `VecEnv`, or
/// envs attached over the network).
#[derive(Clone, Copy)]
pub struct BatchView<'a> {
    pub glyphs: &'a [u16],
    pub stats: &'a [f32],
    pub messages: &'a [u8],
    pub last: &'a VecStep,
    /// The watched env's screen now (`VecEnv::watch`); `None` when none is watched or it
    /// has no picture.
    pub screen: Option<&'a Screen>,
}

pub type EnvFactory = Box<dyn Fn() -> Result<Box<dyn Env>, EnvError> + Send>;

pub struct VecEnv {
    envs: Vec<Box<dyn Env>>,
    factory: EnvFactory,
    spec: ObsSpec,
    base_seed: u64,
    first_index: usize,
    episode_counter: Vec<u64>,
    episodes: EpisodeTracker,
    pub glyphs: Vec<u16>,
    pub stats: Vec<f32>,
    pub messages: Vec<u8>,
    pub last: VecStep,
    /// The env whose screens are kept (batch-local index), and its current one.
    watched: Option<usize>,
    screen: Option<Screen>,
}

/// Per-episode seed: distinct for every (base seed, env, episode) so that no two envs replay
/// the same game, yet a run is reproducible from its base seed.
pub fn episode_seed(base_seed: u64, env_index: usize, episode: u64) -> u64 {
    let mut z = base_seed
        ^ (env_index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ episode.wrapping_mul(0xD1B5_4A32_D192_ED03);
    // splitmix64 finaliser
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn obs_slot<'a>(
    spec: &ObsSpec,
    glyphs: &'a mut [u16],
    stats: &'a mut [f32],
    messages: &'a mut [u8],
    i: usize,
) -> ObsBuf<'a> {
    let (c, s) = (spec.crop_len(), spec.stats_dim);
    ObsBuf {
        glyphs: &mut glyphs[i * c..(i + 1) * c],
        stats: &mut stats[i * s..(i + 1) * s],
        message: &mut messages[i * MESSAGE_LEN..(i + 1) * MESSAGE_LEN],
    }
}

impl VecEnv {
    /// `first_index` numbers this batch's envs globally (for seeds and episode records).
    pub fn new(factory: EnvFactory, num_envs: usize, base_seed: u64, first_index: usize) -> Result<Self, EnvError> {
        let envs = (0..num_envs).map(|_| factory()).collect::<Result<Vec<_>, _>>()?;
        let spec = envs.first().map(|e| e.spec().clone()).ok_or_else(|| EnvError::BadSetting {
            key: "actor.num_envs".into(),
            reason: "must be at least 1".into(),
        })?;
        let mut v = VecEnv {
            glyphs: vec![0; num_envs * spec.crop_len()],
            stats: vec![0.0; num_envs * spec.stats_dim],
            messages: vec![0; num_envs * MESSAGE_LEN],
            last: VecStep::new(num_envs),
            episode_counter: vec![0; num_envs],
            episodes: EpisodeTracker::new(num_envs, first_index),
            envs,
            factory,
            spec,
            base_seed,
            first_index,
            watched: None,
            screen: None,
        };
        for i in 0..num_envs {
            v.reset_env(i)?;
        }
        Ok(v)
    }

    pub fn spec(&self) -> &ObsSpec {
        &self.spec
    }

    pub fn num_envs(&self) -> usize {
        self.envs.len()
    }

    pub fn view(&self) -> BatchView<'_> {
        BatchView {
            glyphs: &self.glyphs,
            stats: &self.stats,
            messages: &self.messages,
            last: &self.last,
            screen: self.screen.as_ref(),
        }
    }

    /// Keeps env `i`'s screen after every step (a recording reads it from the view), or none.
    pub fn watch(&mut self, i: Option<usize>) {
        self.watched = i.filter(|&i| i < self.envs.len());
        self.screen = self.watched.and_then(|i| self.envs[i].screen());
    }

    fn reset_env(&mut self, i: usize) -> Result<(), EnvError> {
        let seed = episode_seed(self.base_seed, self.first_index + i, self.episode_counter[i]);
        self.episode_counter[i] += 1;
        self.episodes.restart(i);
        let buf = obs_slot(&self.spec, &mut self.glyphs, &mut self.stats, &mut self.messages, i);
        let reset = self.envs[i].reset(seed, buf);
        if self.watched == Some(i) {
            self.screen = self.envs[i].screen();
        }
        reset
    }

    /// Starts a new episode in every env (their unfinished ones are abandoned, not recorded):
    /// after a central inference service lost the envs' recurrent state.
    pub fn restart_episodes(&mut self) -> Result<(), EnvError> {
        self.last = VecStep::new(self.envs.len());
        for i in 0..self.envs.len() {
            if let Err(e) = self.reset_env(i) {
                self.last.restarts.push((self.first_index + i, e.to_string()));
                self.restart_env(i)?;
            }
        }
        Ok(())
    }

    /// Replaces a failed env with a fresh instance and starts a new episode in it.
    fn restart_env(&mut self, i: usize) -> Result<(), EnvError> {
        self.envs[i] = (self.factory)()?;
        self.reset_env(i)
    }

    /// Steps every env with its action. Finished episodes are reset at once, so the
    /// observation buffers always hold the input for the next action. Errors only when a
    /// failed env cannot even be recreated; an action out of range is an error too, since it
    /// means the caller's action space does not match the env.
    pub fn step(&mut self, actions: &[usize]) -> Result<(), EnvError> {
        assert_eq!(actions.len(), self.envs.len(), "one action per env");
        self.last.episodes.clear();
        self.last.restarts.clear();
        self.last.finals.clear();
        self.last.final_screen = None;
        // Check every action first, so a bad batch leaves no env half-stepped.
        if let Some((i, &a)) = actions.iter().enumerate().find(|(_, &a)| a >= self.spec.num_actions) {
            return Err(EnvError::ActionOutOfRange {
                env: format!("env #{}", self.first_index + i),
                action: a,
                num_actions: self.spec.num_actions,
            });
        }
        for (i, &a) in actions.iter().enumerate() {
            let buf = obs_slot(&self.spec, &mut self.glyphs, &mut self.stats, &mut self.messages, i);
            let (out, failed) = match self.envs[i].step(a, buf) {
                Ok(out) => (out, false),
                Err(e) => {
                    self.last.restarts.push((self.first_index + i, e.to_string()));
                    self.messages[i * MESSAGE_LEN..(i + 1) * MESSAGE_LEN].fill(0);
                    (StepOutcome { reward: 0.0, done: true, ..Default::default() }, true)
                }
            };
            self.last.rewards[i] = out.reward;
            self.last.dones[i] = out.done;
            self.last.truncated[i] = out.done && out.truncated;
            let caption = &mut self.last.captions[i * MESSAGE_LEN..(i + 1) * MESSAGE_LEN];
            match self.envs[i].caption().filter(|_| !failed) {
                Some(c) => crate::spec::write_message(caption, c),
                None => caption.copy_from_slice(&self.messages[i * MESSAGE_LEN..(i + 1) * MESSAGE_LEN]),
            }
            if self.watched == Some(i) {
                let now = if failed { None } else { self.envs[i].screen() };
                if out.done {
                    self.last.final_screen = now;
                } else {
                    self.screen = now;
                }
            }
            let finished = self.episodes.step(i, out.reward, out.done, out.success, out.score);
            let Some(finished) = finished else { continue };
            if failed {
                self.restart_env(i)?;
                continue;
            }
            if out.truncated {
                let (c, d) = (self.spec.crop_len(), self.spec.stats_dim);
                self.last.finals.push(
                    i,
                    &self.glyphs[i * c..(i + 1) * c],
                    &self.stats[i * d..(i + 1) * d],
                    &self.messages[i * MESSAGE_LEN..(i + 1) * MESSAGE_LEN],
                );
            }
            self.last.episodes.push(finished);
            if let Err(e) = self.reset_env(i) {
                self.last.restarts.push((self.first_index + i, e.to_string()));
                self.restart_env(i)?;
            }
        }
        Ok(())
    }
}

type StepResult = Result<VecEnv, (VecEnv, EnvError)>;

/// A thread that owns one `VecEnv` between `submit` and `wait`, so stepping one batch
/// overlaps the caller's inference on the other.
pub struct StepWorker {
    tx: Option<Sender<(VecEnv, Vec<usize>)>>,
    rx: Receiver<StepResult>,
    handle: Option<JoinHandle<()>>,
}

impl Default for StepWorker {
    fn default() -> Self {
        Self::new()
    }
}

impl StepWorker {
    pub fn new() -> Self {
        let (tx, job_rx) = bounded::<(VecEnv, Vec<usize>)>(1);
        let (done_tx, rx) = bounded::<StepResult>(1);
        let handle = std::thread::Builder::new()
            .name("env-step".into())
            .spawn(move || {
                for (mut envs, actions) in job_rx {
                    let r = match envs.step(&actions) {
                        Ok(()) => Ok(envs),
                        Err(e) => Err((envs, e)),
                    };
                    if done_tx.send(r).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn env-step thread");
        StepWorker { tx: Some(tx), rx, handle: Some(handle) }
    }

    pub fn submit(&self, envs: VecEnv, actions: Vec<usize>) {
        self.tx.as_ref().expect("worker alive").send((envs, actions)).expect("env-step thread alive");
    }

    /// The batch comes back with the error, so that the caller keeps its envs.
    #[allow(clippy::result_large_err)]
    pub fn wait(&self) -> Result<VecEnv, (VecEnv, EnvError)> {
        self.rx.recv().expect("env-step thread alive")
    }
}

impl Drop for StepWorker {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Counts steps; the instance created `fail_on_instance`-th fails on its 3rd step, as a
    /// NetHack whose C side reported an error would.
    struct Flaky {
        spec: ObsSpec,
        steps: u32,
        fails: bool,
    }

    impl Env for Flaky {
        fn spec(&self) -> &ObsSpec {
            &self.spec
        }
        fn reset(&mut self, _seed: u64, obs: ObsBuf<'_>) -> Result<(), EnvError> {
            self.steps = 0;
            obs.glyphs.fill(0);
            Ok(())
        }
        fn step(&mut self, _a: usize, obs: ObsBuf<'_>) -> Result<StepOutcome, EnvError> {
            self.steps += 1;
            if self.fails && self.steps == 3 {
                return Err(EnvError::Failed { env: "flaky".into(), reason: "C side error".into() });
            }
            obs.glyphs.fill(self.steps as u16);
            // Without a failure, the episode is cut by a time limit at step 10.
            Ok(StepOutcome { reward: 1.0, done: self.steps == 10, truncated: self.steps == 10, ..Default::default() })
        }
    }

    #[test]
    fn a_failing_env_is_restarted_and_the_others_go_on() {
        let made = Arc::new(AtomicUsize::new(0));
        let m = made.clone();
        let spec = ObsSpec {
            crop_rows: 1,
            crop_cols: 1,
            num_glyphs: 100,
            stats_dim: 1,
            num_actions: 2,
            grid: Default::default(),
        };
        let factory: EnvFactory = Box::new(move || {
            let n = m.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(Flaky { spec: spec.clone(), steps: 0, fails: n == 1 }) as Box<dyn Env>)
        });
        let mut v = VecEnv::new(factory, 3, 7, 0).unwrap();
        for _ in 0..2 {
            v.step(&[0, 0, 0]).unwrap();
        }
        v.step(&[0, 0, 0]).unwrap();
        assert_eq!(v.last.restarts.len(), 1, "the failing env was not reported");
        assert_eq!(v.last.restarts[0].0, 1);
        assert!(v.last.dones[1] && !v.last.dones[0] && !v.last.dones[2]);
        assert_eq!(made.load(Ordering::SeqCst), 4, "a fresh instance replaces the failed one");
        assert!(v.last.episodes.is_empty(), "a failed episode is not recorded as finished");
        assert_eq!(v.glyphs, vec![3, 0, 3], "others stepped on; the restarted env shows its reset observation");
        // an out-of-range action is refused before any env moves
        let before = v.glyphs.clone();
        assert!(matches!(v.step(&[0, 5, 0]), Err(EnvError::ActionOutOfRange { action: 5, .. })));
        assert_eq!(v.glyphs, before);
    }

    fn spec_1x1() -> ObsSpec {
        ObsSpec { crop_rows: 1, crop_cols: 1, num_glyphs: 100, stats_dim: 1, num_actions: 2, grid: Default::default() }
    }

    #[test]
    fn a_time_limit_keeps_the_final_observation_before_the_reset() {
        let factory: EnvFactory =
            Box::new(|| Ok(Box::new(Flaky { spec: spec_1x1(), steps: 0, fails: false }) as Box<dyn Env>));
        let mut v = VecEnv::new(factory, 2, 7, 0).unwrap();
        for _ in 0..9 {
            v.step(&[0, 0]).unwrap();
            assert!(v.last.finals.envs.is_empty() && !v.last.truncated.iter().any(|&t| t));
        }
        v.step(&[0, 0]).unwrap();
        assert_eq!(v.last.dones, vec![true, true]);
        assert_eq!(v.last.truncated, vec![true, true]);
        assert_eq!(v.last.finals.envs, vec![0, 1]);
        assert_eq!(v.last.finals.glyphs, vec![10, 10], "the observation the time limit cut");
        assert_eq!(v.glyphs, vec![0, 0], "the envs were reset for the next action");
        assert_eq!(v.last.episodes.len(), 2);
        v.step(&[0, 0]).unwrap();
        assert!(v.last.finals.envs.is_empty(), "finals belong to one step");
        assert_eq!(v.last.truncated, vec![false, false]);
    }
}
