//! The live progress line, `metrics.jsonl` rows and `summary.json` of a run directory.

use oni_learner::{LearnerStats, StatsSnapshot, Term};
use oni_telemetry::tensorboard::EventWriter;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Serialize)]
struct Row<'a> {
    wall_seconds: f64,
    steps_per_second: f64,
    #[serde(flatten)]
    stats: &'a StatsSnapshot,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    oni: Option<OniRow>,
}

/// How an online ONI run stands at a row: what the judge has answered, how right the
/// reward model is, how much of what the agents meet is judged, and what was paid for
/// (since the previous row). The diagnosis of a cold start.
#[derive(Serialize)]
struct OniRow {
    /// Answers stored by the annotator so far, and captions waiting for the LLM.
    labels: u64,
    label_backlog: usize,
    rm_version: u64,
    rm_accuracy: oni_annotator::distill::Accuracy,
    /// Share of the steps with a message whose caption the served model's labels cover.
    labelled_share: Option<f64>,
    /// The captions paid the most since the previous row: (caption, steps paid, sum paid).
    paid_top: Vec<(String, u64, f64)>,
}

/// Captions named in each row's `paid_top`.
const PAID_TOP: usize = 8;

pub struct Progress {
    jsonl: Option<std::fs::File>,
    tensorboard: Option<EventWriter>,
    last_steps: u64,
    last_time: Instant,
    started: Instant,
    start_steps: u64,
    sps: f64,
    annotator: Option<std::sync::Arc<oni_annotator::Core>>,
    last_answered: u64,
    /// Where the captions met and paid are summed for the run page.
    met: Option<std::sync::Arc<crate::page::data::MetCounts>>,
}

#[derive(Serialize)]
pub struct Summary {
    pub name: String,
    pub env: String,
    pub env_steps: u64,
    /// Env steps this process ran (excludes steps restored from a checkpoint).
    pub env_steps_this_run: u64,
    pub wall_seconds: f64,
    pub steps_per_second: f64,
    pub episodes: u64,
    /// Successful episodes over the whole run.
    pub successes: u64,
    pub success_rate: f64,
    pub mean_extrinsic_return: f64,
    pub mean_intrinsic_return: f64,
    pub mean_episode_length: f64,
    /// The env's own score over the last 100 episodes (NetHack's in-game score), where it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_score: Option<f64>,
    pub policy_version: u64,
    pub updates: u64,
    pub mean_policy_lag: f64,
    pub rollouts_dropped: u64,
    pub rollouts_rejected: u64,
}

impl Progress {
    pub fn new(run_dir: Option<&Path>, stats: &LearnerStats) -> Self {
        let jsonl = run_dir
            .and_then(|d| std::fs::OpenOptions::new().create(true).append(true).open(d.join("metrics.jsonl")).ok());
        let s = stats.snapshot().env_steps;
        Progress {
            jsonl,
            tensorboard: None,
            last_steps: s,
            last_time: Instant::now(),
            started: Instant::now(),
            start_steps: s,
            sps: 0.0,
            annotator: None,
            last_answered: 0,
            met: None,
        }
    }

    /// Also writes each row's numbers as TensorBoard scalars in `<run_dir>/tensorboard`.
    pub fn add_tensorboard(&mut self, run_dir: &Path) -> Result<(), oni_telemetry::tensorboard::TensorBoardError> {
        self.tensorboard = Some(EventWriter::create(&run_dir.join("tensorboard"))?);
        Ok(())
    }

    /// Adds the annotator's labels and reward-model version to the progress line.
    pub fn with_annotator(mut self, core: Option<std::sync::Arc<oni_annotator::Core>>) -> Self {
        self.annotator = core;
        self
    }

    /// Also sums what the actors met and were paid into `met` (the run page's label table).
    pub fn with_met(mut self, met: Option<std::sync::Arc<crate::page::data::MetCounts>>) -> Self {
        self.met = met;
        self
    }

    pub fn tick(&mut self, stats: &LearnerStats) {
        let snap = stats.snapshot();
        let now = Instant::now();
        let dt = now.duration_since(self.last_time).as_secs_f64().max(1e-9);
        self.sps = (snap.env_steps.saturating_sub(self.last_steps)) as f64 / dt;
        self.last_steps = snap.env_steps;
        self.last_time = now;
        let wall = now.duration_since(self.started).as_secs_f64();
        let oni = self.annotator.as_ref().map_or(String::new(), |a| {
            let answered = a.answered();
            let rate = answered.saturating_sub(self.last_answered) as f64 / dt;
            self.last_answered = answered;
            format!(
                " | int {:+.3} | labels {answered} ({rate:.1}/s, {} waiting) | rm v{}",
                snap.mean_intrinsic_return,
                a.backlog(),
                a.reward_model_version()
            )
        });
        let score = snap.mean_score.map(|s| format!(" | score {s:.1}")).unwrap_or_default();
        eprintln!(
            "[{wall:7.1}s] steps {:>10} | {:>8.0} SPS | episodes {:>7} | success {:.2} | return {:+.3}{score}{oni} | len {:5.1} | lag {:4.1} | v{} | ent {:.3} | kl {:.4}",
            snap.env_steps,
            self.sps,
            snap.episodes,
            snap.success_rate,
            snap.mean_extrinsic_return,
            snap.mean_episode_length,
            snap.mean_policy_lag,
            snap.policy_version,
            snap.loss.get(Term::Entropy),
            snap.loss.get(Term::ApproxKl),
        );
        if self.jsonl.is_none() && self.tensorboard.is_none() {
            return;
        }
        let oni = self.annotator.as_ref().map(|a| {
            let ledger = oni_actor::intrinsic::take_ledger();
            if let Some(met) = &self.met {
                met.add(&ledger.captions);
            }
            OniRow {
                labels: a.answered(),
                label_backlog: a.backlog(),
                rm_version: a.reward_model_version(),
                rm_accuracy: a.reward_model_accuracy(),
                labelled_share: ledger.labelled_share(),
                paid_top: ledger.top(PAID_TOP),
            }
        });
        let row = serde_json::to_value(Row { wall_seconds: wall, steps_per_second: self.sps, stats: &snap, oni })
            .expect("a row is plain data");
        if let Some(f) = &mut self.jsonl {
            let _ = writeln!(f, "{row}");
        }
        if let Some(tb) = &mut self.tensorboard {
            let mut scalars = Vec::new();
            numbers(&row, &mut String::new(), &mut scalars);
            if let Err(e) = tb.scalars(snap.env_steps, &scalars) {
                tracing::warn!("{e}; no more TensorBoard scalars this run");
                self.tensorboard = None;
            }
        }
    }

    pub fn summary(&self, name: &str, env: &str, stats: &LearnerStats) -> Summary {
        let s = stats.snapshot();
        let wall = self.started.elapsed().as_secs_f64();
        let this_run = s.env_steps.saturating_sub(self.start_steps);
        Summary {
            name: name.into(),
            env: env.into(),
            env_steps: s.env_steps,
            env_steps_this_run: this_run,
            wall_seconds: wall,
            steps_per_second: this_run as f64 / wall.max(1e-9),
            episodes: s.episodes,
            successes: s.successes,
            success_rate: s.success_rate,
            mean_extrinsic_return: s.mean_extrinsic_return,
            mean_intrinsic_return: s.mean_intrinsic_return,
            mean_episode_length: s.mean_episode_length,
            mean_score: s.mean_score,
            policy_version: s.policy_version,
            updates: s.updates,
            mean_policy_lag: s.mean_policy_lag,
            rollouts_dropped: s.rollouts_dropped,
            rollouts_rejected: s.rollouts_rejected,
        }
    }
}

/// Every number in `v` with its path of keys joined by `/` (`rm_accuracy/gold`): the scalars a
/// row gives TensorBoard. Lists (the captions paid) and text have no curve and are left out.
fn numbers(v: &serde_json::Value, path: &mut String, out: &mut Vec<(String, f64)>) {
    match v {
        serde_json::Value::Number(n) => out.extend(n.as_f64().map(|x| (path.clone(), x))),
        serde_json::Value::Object(map) => {
            for (k, child) in map {
                let len = path.len();
                if !path.is_empty() {
                    path.push('/');
                }
                path.push_str(k);
                numbers(child, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

pub fn write_summary(run_dir: &Path, summary: &Summary) -> std::io::Result<PathBuf> {
    let path = run_dir.join("summary.json");
    let tmp = run_dir.join(".summary.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(summary).unwrap())?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}
