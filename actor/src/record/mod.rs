//! Episode recordings: now and then an actor records one episode of its first env into a
//! directory, as NetHack's ttyrec (where the env has a picture) and one JSON line per step
//! (action, extrinsic and intrinsic reward, the caption and the judge's label for it), with
//! a summary beside them. Files are written under a `.part` name and renamed when the
//! episode ends, so a reader never sees half a recording; the directory is capped in count
//! and bytes, the oldest recordings going first.

pub mod ttyrec;

use crate::intrinsic::Rewarder;
use oni_env::spec::message_text;
use oni_env::{BatchView, MESSAGE_LEN};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use ttyrec::TtyrecWriter;

/// `[record]`: episodes an actor records while it trains (its first env's): a recording
/// starts at the actor's start, then at the next episode once `every_seconds` passed or
/// `every_episodes` ended since the last one began.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RecordConfig {
    /// Whether an actor records episodes (a cluster actor into `record.dir`).
    pub mode: oni_proto::Switch,
    /// Seconds from the start of one recording to the next (0: not by time).
    pub every_seconds: f64,
    /// Episodes (of all the actor's envs) from the start of one recording to the next (0: not
    /// by count).
    pub every_episodes: u64,
    /// Recordings kept in the directory; the oldest are deleted first.
    pub max_files: usize,
    /// Bytes all recordings in the directory may take; a recording that alone outgrows it is
    /// abandoned.
    pub max_bytes: u64,
    /// Directory of the recordings; `""`: `recordings` in the run directory (`oni run`) or in
    /// the working directory (`oni actor`).
    pub dir: String,
    /// Time between frames when a recording is replayed (`ttyplay`).
    pub frame_ms: u64,
}

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig {
            mode: oni_proto::Switch::Auto,
            every_seconds: 300.0,
            every_episodes: 0,
            max_files: 20,
            max_bytes: 256 << 20,
            dir: String::new(),
            frame_ms: 100,
        }
    }
}

/// What a recording actor is given: the settings and the resolved directory.
#[derive(Debug, Clone)]
pub struct RecordPlan {
    pub cfg: RecordConfig,
    pub dir: PathBuf,
}

/// One step of a recording, as its JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLine {
    pub step: u64,
    pub action: usize,
    /// The env's reward.
    pub reward: f32,
    /// `r_int · N_ep^(−β)` (before α_int), where the actor computes an intrinsic reward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intrinsic: Option<f32>,
    pub caption: String,
    /// Whether the judge had answered this caption when the reward model was made.
    #[serde(default)]
    pub judged: bool,
    /// Its answer where the reward model carries it: `helpful` or `unhelpful`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// A finished recording's summary (`<name>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub env: String,
    pub actor: String,
    /// Unix time the episode was recorded from, seconds.
    pub started: f64,
    pub steps: u64,
    pub extrinsic_return: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intrinsic_return: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    pub success: bool,
    /// The policy version that chose the first action.
    pub policy_version: u64,
    /// Whether `<name>.ttyrec` exists (the env has a picture).
    pub ttyrec: bool,
    pub frame_ms: u64,
}

struct Recording {
    stem: PathBuf,
    tty: Option<TtyrecWriter<BufWriter<File>>>,
    steps: BufWriter<File>,
    bytes: u64,
    n: u64,
    extrinsic: f64,
    intrinsic: Option<f64>,
    started: SystemTime,
    version: u64,
}

fn with_suffix(stem: &Path, suffix: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

const PART: &str = ".part";

/// A recording's three files: `<stem>.ttyrec`, `<stem>.steps.jsonl`, `<stem>.json`.
fn files(stem: &Path) -> [PathBuf; 3] {
    [".ttyrec", ".steps.jsonl", ".json"].map(|s| with_suffix(stem, s))
}

impl Recording {
    fn paths(&self) -> [PathBuf; 3] {
        files(&self.stem)
    }

    fn discard(self) {
        for p in self.paths() {
            let _ = std::fs::remove_file(with_suffix(&p, PART));
        }
    }
}

/// Records one episode now and then; lives on a stepping thread.
pub struct Recorder {
    plan: RecordPlan,
    who: String,
    env: String,
    last_start: Option<Instant>,
    episodes_since: u64,
    /// The watched env is at the start of an episode.
    at_start: bool,
    action: Option<usize>,
    current: Option<Recording>,
    /// Recordings this recorder started (names stay distinct within a millisecond).
    started: u64,
    broken: bool,
}

impl Recorder {
    /// Records the env at batch-local index 0 of the group whose offset is 0. `who` names
    /// the actor in file names.
    pub fn new(plan: RecordPlan, who: &str, env: &str) -> Self {
        let who: String =
            who.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        Recorder {
            plan,
            who,
            env: env.to_string(),
            last_start: None,
            episodes_since: 0,
            at_start: true,
            action: None,
            current: None,
            started: 0,
            broken: false,
        }
    }

    fn due(&self) -> bool {
        let cfg = &self.plan.cfg;
        let Some(last) = self.last_start else { return true };
        (cfg.every_seconds > 0.0 && last.elapsed().as_secs_f64() >= cfg.every_seconds)
            || (cfg.every_episodes > 0 && self.episodes_since >= cfg.every_episodes)
    }

    /// The group at `offset` chose `actions` for the observations `view` shows.
    pub fn chose(&mut self, offset: usize, view: &BatchView<'_>, actions: &[usize], version: u64) {
        if offset != 0 || self.broken {
            return;
        }
        if self.current.is_none() && self.at_start && self.due() {
            if let Err(e) = self.start(view, version) {
                self.fail(e);
            }
        }
        self.action = actions.first().copied();
    }

    /// The group at `offset` finished a step; `rewarder` is its intrinsic reward, if any.
    pub fn stepped(&mut self, offset: usize, view: &BatchView<'_>, rewarder: Option<&Rewarder>) {
        self.episodes_since += view.last.episodes.len() as u64;
        if offset != 0 || view.last.dones.is_empty() {
            return;
        }
        let done = view.last.dones[0];
        self.at_start = done;
        if self.current.is_none() {
            return;
        }
        let paid = rewarder.and_then(|r| r.paid(0));
        let line = StepLine {
            step: self.current.as_ref().map_or(0, |c| c.n) + 1,
            action: self.action.unwrap_or(0),
            reward: view.last.rewards[0],
            intrinsic: paid.as_ref().map(|p| p.reward),
            caption: message_text(&view.last.captions[..MESSAGE_LEN]),
            judged: paid.as_ref().is_some_and(|p| p.judged),
            label: paid.and_then(|p| p.label).map(|h| if h { "helpful" } else { "unhelpful" }.to_string()),
        };
        let screen = if done { view.last.final_screen.as_ref().or(view.screen) } else { view.screen };
        let result = self.append(&line, screen);
        if let Err(e) = result {
            self.fail(e);
            return;
        }
        if self.current.as_ref().is_some_and(|c| c.bytes > self.plan.cfg.max_bytes) {
            tracing::warn!("record: an episode outgrew record.max_bytes = {}; it is not kept", self.plan.cfg.max_bytes);
            self.abandon();
            return;
        }
        if done {
            let episode = view.last.episodes.iter().find(|e| e.env_index == offset);
            let result = self.finish(episode);
            if let Err(e) = result {
                self.fail(e);
            }
        }
    }

    /// Drops the recording in progress (its env left or its episode was cut short).
    pub fn abandon(&mut self) {
        if let Some(c) = self.current.take() {
            c.discard();
        }
        self.at_start = true;
    }

    fn fail(&mut self, e: std::io::Error) {
        tracing::warn!(dir = %self.plan.dir.display(), "record: {e}; this actor stops recording");
        self.abandon();
        self.broken = true;
    }

    fn start(&mut self, view: &BatchView<'_>, version: u64) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.plan.dir)?;
        let started = SystemTime::now();
        let ms = started.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        let stem = self.plan.dir.join(format!("{ms:015}-{}-{:06}", self.who, self.started));
        self.started += 1;
        let steps = BufWriter::new(File::create(with_suffix(&stem, &format!(".steps.jsonl{PART}")))?);
        let mut rec =
            Recording { tty: None, steps, bytes: 0, n: 0, extrinsic: 0.0, intrinsic: None, started, version, stem };
        if let Some(screen) = view.screen {
            let file = BufWriter::new(File::create(with_suffix(&rec.stem, &format!(".ttyrec{PART}")))?);
            let mut tty = TtyrecWriter::new(file, started, Duration::from_millis(self.plan.cfg.frame_ms));
            tty.push(screen)?;
            rec.bytes = tty.bytes();
            rec.tty = Some(tty);
        }
        self.current = Some(rec);
        self.last_start = Some(Instant::now());
        self.episodes_since = 0;
        Ok(())
    }

    fn append(&mut self, line: &StepLine, screen: Option<&oni_env::Screen>) -> std::io::Result<()> {
        let c = self.current.as_mut().expect("recording");
        let mut text = serde_json::to_vec(line).expect("a step line serialises");
        text.push(b'\n');
        c.steps.write_all(&text)?;
        c.bytes += text.len() as u64;
        if let (Some(tty), Some(screen)) = (c.tty.as_mut(), screen) {
            let before = tty.bytes();
            tty.push(screen)?;
            c.bytes += tty.bytes() - before;
        }
        c.n += 1;
        c.extrinsic += line.reward as f64;
        if let Some(r) = line.intrinsic {
            *c.intrinsic.get_or_insert(0.0) += r as f64;
        }
        Ok(())
    }

    fn finish(&mut self, episode: Option<&oni_env::EpisodeRecord>) -> std::io::Result<()> {
        let mut c = self.current.take().expect("recording");
        let summary = Summary {
            env: self.env.clone(),
            actor: self.who.clone(),
            started: c.started.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64(),
            steps: c.n,
            extrinsic_return: c.extrinsic,
            intrinsic_return: c.intrinsic,
            score: episode.and_then(|e| e.score),
            success: episode.is_some_and(|e| e.success),
            policy_version: c.version,
            ttyrec: c.tty.is_some(),
            frame_ms: self.plan.cfg.frame_ms,
        };
        let done = (|| -> std::io::Result<()> {
            if let Some(tty) = c.tty.take() {
                tty.finish()?;
            }
            c.steps.flush()?;
            let json = serde_json::to_vec_pretty(&summary).expect("a summary serialises");
            std::fs::write(with_suffix(&c.stem, &format!(".json{PART}")), json)?;
            // the summary last: a recording is listed once its summary is there
            for p in c.paths() {
                let part = with_suffix(&p, PART);
                if part.exists() {
                    std::fs::rename(part, p)?;
                }
            }
            Ok(())
        })();
        if done.is_err() {
            c.discard();
            return done;
        }
        prune(&self.plan.dir, self.plan.cfg.max_files, self.plan.cfg.max_bytes);
        Ok(())
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// The finished recordings in `dir`, oldest first: each one's path without extension.
pub fn list(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut stems: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let stem = name.strip_suffix(".json")?;
            Some(p.with_file_name(stem))
        })
        .collect();
    stems.sort();
    stems
}

/// Deletes the oldest finished recordings until at most `max_files` are left and they take
/// at most `max_bytes`.
pub fn prune(dir: &Path, max_files: usize, max_bytes: u64) {
    let stems = list(dir);
    let size = |stem: &Path| files(stem).iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum::<u64>();
    let sizes: Vec<u64> = stems.iter().map(|s| size(s)).collect();
    let mut total: u64 = sizes.iter().sum();
    let mut count = stems.len();
    for (stem, bytes) in stems.iter().zip(sizes) {
        if count <= max_files && total <= max_bytes {
            break;
        }
        // the summary first, so the recording stops being listed before its parts go
        let [tty, steps, json] = files(stem);
        for p in [json, tty, steps] {
            let _ = std::fs::remove_file(p);
        }
        count -= 1;
        total -= bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::ttyrec::{read_frames, Terminal};
    use super::*;
    use oni_env::vec_env::EnvFactory;
    use oni_env::{make_env, EnvConfig, VecEnv};

    fn keyroom(n: usize) -> VecEnv {
        let cfg = EnvConfig::default();
        let factory: EnvFactory = Box::new(move || make_env(&cfg));
        VecEnv::new(factory, n, 7, 0).unwrap()
    }

    /// Steps `envs` with a fixed action pattern, through the recorder, until `recordings`
    /// more are finished; returns the screens env 0 showed in each recorded episode, and
    /// its actions and captions.
    fn play(envs: &mut VecEnv, rec: &mut Recorder, recordings: usize) -> Vec<Vec<oni_env::Screen>> {
        let mut shown: Vec<Vec<oni_env::Screen>> = Vec::new();
        let mut said: Vec<(usize, String)> = Vec::new();
        let mut t = 0usize;
        let mut finished = 0;
        while finished < recordings {
            let actions: Vec<usize> = (0..envs.num_envs()).map(|i| (t * 7 + i * 3) % 4).collect();
            let starting = rec.current.is_none();
            rec.chose(0, &envs.view(), &actions, 5);
            if starting && rec.current.is_some() {
                shown.push(vec![envs.view().screen.unwrap().clone()]);
            }
            envs.step(&actions).unwrap();
            let view = envs.view();
            if rec.current.is_some() {
                let s = if view.last.dones[0] { view.last.final_screen.clone() } else { view.screen.cloned() };
                shown.last_mut().unwrap().push(s.unwrap());
                said.push((actions[0], message_text(&view.last.captions[..MESSAGE_LEN])));
            }
            let recording = rec.current.is_some();
            rec.stepped(0, &view, None);
            if recording && rec.current.is_none() {
                finished += 1;
                let stem = list(&rec.plan.dir).pop().unwrap();
                let lines = std::fs::read_to_string(with_suffix(&stem, ".steps.jsonl")).unwrap();
                let got: Vec<(usize, String)> = lines
                    .lines()
                    .map(|l| serde_json::from_str::<StepLine>(l).unwrap())
                    .map(|l| (l.action, l.caption))
                    .collect();
                assert_eq!(got, std::mem::take(&mut said), "each line holds the step's action and caption");
            }
            t += 1;
            assert!(t < 100_000, "no recording finished");
        }
        shown
    }

    #[test]
    fn an_episode_is_recorded_frame_by_frame_and_the_directory_stays_capped() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RecordConfig { every_seconds: 0.0, every_episodes: 1, max_files: 2, ..RecordConfig::default() };
        let mut rec = Recorder::new(RecordPlan { cfg, dir: dir.path().to_path_buf() }, "actor 0/x", "keyroom-small");
        let mut envs = keyroom(3);
        envs.watch(Some(0));
        let shown = play(&mut envs, &mut rec, 1);
        let stems = list(dir.path());
        assert_eq!(stems.len(), 1);
        assert!(stems[0].file_name().unwrap().to_str().unwrap().ends_with("-actor_0_x-000000"), "{stems:?}");
        let summary: Summary =
            serde_json::from_slice(&std::fs::read(with_suffix(&stems[0], ".json")).unwrap()).unwrap();
        let lines: Vec<StepLine> = std::fs::read_to_string(with_suffix(&stems[0], ".steps.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // the first recording starts with the actor's first episode and lasts all of it
        assert_eq!(summary.steps as usize, lines.len());
        assert_eq!(shown[0].len(), lines.len() + 1, "the first frame plus one per step");
        assert_eq!((summary.env.as_str(), summary.policy_version, summary.ttyrec), ("keyroom-small", 5, true));
        assert_eq!(lines.iter().map(|l| l.step).collect::<Vec<_>>(), (1..=lines.len() as u64).collect::<Vec<_>>());
        assert_eq!(lines.iter().map(|l| l.reward as f64).sum::<f64>(), summary.extrinsic_return);
        assert!(lines.iter().all(|l| l.intrinsic.is_none() && !l.judged), "no reward model here");
        let ttyrec = std::fs::read(with_suffix(&stems[0], ".ttyrec")).unwrap();
        let frames = read_frames(&ttyrec).unwrap();
        assert_eq!(frames.len(), shown[0].len());
        let mut term = Terminal::new(shown[0][0].rows, shown[0][0].cols);
        for (f, want) in frames.iter().zip(&shown[0]) {
            term.feed(&f.data);
            assert_eq!(term.screen.text(), want.text());
        }

        // later episodes: the oldest recordings go once more than max_files are kept, and
        // nothing half-written is left beside them
        let first = stems[0].clone();
        play(&mut envs, &mut rec, 2);
        let now = list(dir.path());
        assert_eq!(now.len(), 2, "{now:?}");
        assert!(!now.contains(&first), "the oldest went first");
        drop(rec);
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names.len(), 6, "three files per recording, no .part left: {names:?}");
    }

    #[test]
    fn a_recording_over_the_byte_cap_is_dropped_and_recording_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RecordConfig { every_seconds: 0.0, every_episodes: 1, max_bytes: 3000, ..RecordConfig::default() };
        let mut rec = Recorder::new(RecordPlan { cfg, dir: dir.path().to_path_buf() }, "a", "keyroom-small");
        let mut envs = keyroom(1);
        envs.watch(Some(0));
        for t in 0..1000 {
            let a = [t % 4];
            rec.chose(0, &envs.view(), &a, 1);
            envs.step(&a).unwrap();
            rec.stepped(0, &envs.view(), None);
        }
        assert!(list(dir.path()).is_empty());
        assert!(!rec.broken, "a recording too large is not an error");
        drop(rec);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "abandoned parts are deleted");
    }

    #[test]
    fn an_unwritable_directory_stops_recording_without_stopping_the_actor() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let plan = RecordPlan { cfg: RecordConfig::default(), dir: file.path().join("sub") };
        let mut rec = Recorder::new(plan, "a", "keyroom-small");
        let mut envs = keyroom(1);
        envs.watch(Some(0));
        rec.chose(0, &envs.view(), &[0], 1);
        assert!(rec.broken && rec.current.is_none());
        envs.step(&[0]).unwrap();
        rec.stepped(0, &envs.view(), None);
    }
}
