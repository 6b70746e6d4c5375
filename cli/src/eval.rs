//! `oni eval`: plays a run's checkpoint for N episodes, on the run's env, with the run's
//! reward model where it has one, and reports each episode and the means with 95 %
//! confidence intervals, as text and JSON.

use crate::config::{self, Config};
use crate::{device, with_backend};
use anyhow::{bail, Context, Result};
use clap::Args;
use oni_actor::eval::{EvalEpisode, EvalPlan};
use oni_actor::ActorSetup;
use oni_learner::checkpoint::{self, CheckpointState};
use oni_proto::tasks::CancellationToken;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Args)]
pub struct EvalArgs {
    /// The run directory (its `config.toml` and `checkpoints/`).
    #[arg(long)]
    run_dir: PathBuf,
    /// A checkpoint directory (default: the run's newest that loads).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Episodes to play.
    #[arg(long, default_value_t = 100)]
    episodes: usize,
    /// The most likely action at every step instead of a sample from the policy.
    #[arg(long)]
    greedy: bool,
    /// Stepping loops side by side, each with up to `actor.num_envs` envs (default: one per
    /// core). Built-in envs only; attached ones are as many as their clients bring.
    #[arg(long)]
    loops: Option<usize>,
    /// A config to play with instead of the run's `config.toml` (its network and env must be
    /// the checkpoint's).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a config key, e.g. --set env.seed=7 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Also write the report as JSON to this file (`-`: stdout, instead of the text).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Record the episodes the first env of each loop plays into this directory (ttyrec
    /// where the env has a picture, a JSON line per step, a summary), as training does.
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
}

/// The checkpoint to play: the one named, else the newest whose state reads.
fn choose_checkpoint(a: &EvalArgs) -> Result<(PathBuf, CheckpointState)> {
    if let Some(p) = &a.checkpoint {
        return Ok((p.clone(), checkpoint::read_state(p)?));
    }
    let dir = a.run_dir.join("checkpoints");
    let mut why = Vec::new();
    for p in checkpoint::list(&dir) {
        match checkpoint::read_state(&p) {
            Ok(s) => return Ok((p, s)),
            Err(e) => why.push(e.to_string()),
        }
    }
    if why.is_empty() {
        bail!(
            "no checkpoint in {} (a run writes one every learner.checkpoint_interval_secs and when it stops)",
            dir.display()
        );
    }
    bail!("no checkpoint in {} loads: {}", dir.display(), why.join("; "))
}

/// The config to play with (the run's, or `--config`), refused when its env is not the one
/// the checkpoint was trained on, naming both. (A different network is refused by its
/// fingerprint once the observation layout is known.)
fn config_for(a: &EvalArgs, ckpt: &Path) -> Result<Config> {
    let theirs_path = ckpt.join("config.toml");
    let theirs = config::load(Some(&theirs_path), &[]).with_context(|| format!("checkpoint {}", ckpt.display()))?;
    let ours_path = a.config.clone().unwrap_or_else(|| a.run_dir.join("config.toml"));
    let ours = config::load(Some(&ours_path), &a.set)?;
    if theirs.env.name != ours.env.name {
        bail!(
            "checkpoint {} was trained on env `{}`, but the config to play ({}{}) plays env `{}`: evaluate it on its own env",
            ckpt.display(),
            theirs.env.name,
            ours_path.display(),
            if a.set.is_empty() { "" } else { " with --set" },
            ours.env.name
        );
    }
    Ok(ours)
}

pub async fn eval(a: EvalArgs) -> Result<()> {
    if a.episodes == 0 {
        bail!("--episodes must be at least 1");
    }
    let (ckpt, state) = choose_checkpoint(&a)?;
    let cfg = config_for(&a, &ckpt)?;
    oni_telemetry::init_logging(&cfg.telemetry.log_level);
    let spec = oni_env::registry::known_spec(&cfg.env)?;
    let weights: oni_actor::eval::WeightsFor = {
        let (ckpt, policy, fingerprint) = (ckpt.clone(), cfg.policy.clone(), state.fingerprint.clone());
        let env = cfg.env.name.clone();
        Box::new(move |spec: &oni_env::ObsSpec| {
            let ours = oni_policy::fingerprint(&policy, spec);
            if ours != fingerprint {
                return Err(format!(
                    "checkpoint {} holds network {fingerprint}, but this config builds network {ours} \
                     ({} network over env `{env}`'s observations): the [policy] section or the observation \
                     settings differ from the run's",
                    ckpt.display(),
                    policy.network,
                ));
            }
            checkpoint::load_policy_weights(&ckpt, &policy, spec).map_err(|e| e.to_string())
        })
    };
    let reward = reward_model(&cfg, &a.run_dir)?;
    let loops = match &spec {
        Some(_) => a.loops.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1),
        None => 1,
    };
    let mut actor = cfg.actor.clone();
    // no env steps for nothing: at most as many envs as episodes
    actor.num_envs = actor.num_envs.min(a.episodes.div_ceil(loops)).max(1);
    let setup = ActorSetup {
        cfg: actor,
        env: cfg.env.clone(),
        policy: cfg.policy.clone(),
        spec,
        rollout_len: cfg.learner.rollout_len,
        transport: cfg.transport.clone(),
        index: 0,
        intrinsic: None,
        record: a.record.clone().map(|dir| oni_actor::record::RecordPlan {
            cfg: oni_actor::record::RecordConfig {
                every_seconds: 0.0,
                every_episodes: 1,
                max_files: usize::MAX,
                max_bytes: u64::MAX,
                ..cfg.record.clone()
            },
            dir,
        }),
    };
    let plan = EvalPlan {
        episodes: a.episodes,
        greedy: a.greedy,
        loops,
        seed: cfg.env.seed,
        reward: reward.as_ref().map(|r| (r.model.clone(), cfg.reward.decay())),
    };
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        crate::roles::shutdown_signal().await;
        on_signal.cancel();
    });
    let kind = device::check("actor.device", cfg.actor.device)?;
    let started = std::time::Instant::now();
    let episodes =
        with_backend!(kind, inference, |B, dev| oni_actor::eval::evaluate::<B>(setup, dev, weights, plan, stop).await)?;
    let secs = started.elapsed().as_secs_f64();
    if episodes.is_empty() {
        bail!("stopped before any episode ended");
    }
    let report =
        Report { args: &a, cfg: &cfg, ckpt: &ckpt, state: &state, reward: reward.as_ref(), episodes: &episodes, secs };
    let json = report.json();
    match a.json.as_deref() {
        Some(p) if p == Path::new("-") => println!("{}", serde_json::to_string_pretty(&json)?),
        Some(p) => {
            std::fs::write(p, serde_json::to_vec_pretty(&json)?).with_context(|| format!("--json {}", p.display()))?;
            print!("{}", report.text());
        }
        None => print!("{}", report.text()),
    }
    Ok(())
}

/// The run's newest stored reward model, when the run has a reward kind.
struct StoredModel {
    model: Arc<oni_reward_model::RewardModel>,
    version: u64,
}

fn reward_model(cfg: &Config, run_dir: &Path) -> Result<Option<StoredModel>> {
    if cfg.reward.kind.is_none() {
        return Ok(None);
    }
    let dir = crate::roles::file_bank_dir(cfg, run_dir);
    if matches!(cfg.label_bank.kind, config::BankKind::File) && !dir.exists() {
        eprintln!("note: no label bank at {}: the intrinsic return is not measured", dir.display());
        return Ok(None);
    }
    let bank = crate::roles::open_bank(cfg, run_dir)?;
    let Some((version, bytes)) = bank.latest_snapshot()? else {
        eprintln!("note: the run's label bank holds no reward model yet: the intrinsic return is not measured");
        return Ok(None);
    };
    let model = oni_reward_model::RewardModel::decode(&bytes)
        .map_err(|e| anyhow::anyhow!("the run's stored reward model v{version} is unreadable: {e}"))?;
    Ok(Some(StoredModel { model: Arc::new(model), version }))
}

/// Mean and the half-width of its 95 % confidence interval (normal approximation).
fn mean_ci(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, f64::NAN);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, 1.96 * (var / n).sqrt())
}

/// The Wilson score interval of a success rate (95 %), sound near 0 and 1 where the normal
/// approximation is not.
fn wilson(successes: usize, n: usize) -> (f64, f64) {
    let (n, p, z) = (n as f64, successes as f64 / n as f64, 1.96f64);
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / (1.0 + z * z / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

struct Report<'a> {
    args: &'a EvalArgs,
    cfg: &'a Config,
    ckpt: &'a Path,
    state: &'a CheckpointState,
    reward: Option<&'a StoredModel>,
    episodes: &'a [EvalEpisode],
    secs: f64,
}

impl Report<'_> {
    fn columns(&self) -> Vec<(&'static str, Vec<f64>)> {
        let e = self.episodes;
        let mut cols = vec![
            ("return", e.iter().map(|x| x.extrinsic_return as f64).collect()),
            ("length", e.iter().map(|x| x.length as f64).collect()),
        ];
        if e.iter().all(|x| x.score.is_some()) {
            cols.push(("score", e.iter().map(|x| x.score.unwrap_or_default() as f64).collect()));
        }
        if e.iter().all(|x| x.intrinsic_return.is_some()) {
            cols.push(("intrinsic_return", e.iter().map(|x| x.intrinsic_return.unwrap_or_default() as f64).collect()));
        }
        cols
    }

    fn json(&self) -> serde_json::Value {
        let n = self.episodes.len();
        let successes = self.episodes.iter().filter(|e| e.success).count();
        let (lo, hi) = wilson(successes, n);
        let mut summary = serde_json::Map::new();
        summary.insert("episodes".into(), json!(n));
        summary.insert("success_rate".into(), json!({"mean": successes as f64 / n as f64, "ci95": [lo, hi]}));
        for (name, xs) in self.columns() {
            let (m, h) = mean_ci(&xs);
            summary.insert(name.into(), json!({"mean": m, "ci95": [m - h, m + h]}));
        }
        json!({
            "run_dir": self.args.run_dir,
            "checkpoint": self.ckpt,
            "policy_version": self.state.version,
            "env_steps_trained": self.state.env_steps,
            "env": self.cfg.env.name,
            "actions": if self.args.greedy { "greedy" } else { "sampled" },
            "reward_model_version": self.reward.map(|r| r.version),
            "wall_seconds": self.secs,
            "summary": summary,
            "per_episode": self.episodes,
        })
    }

    fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "{}: checkpoint {} (policy v{}, {} env steps trained), env {}, {} episodes, {} actions, {:.1} s",
            self.args.run_dir.display(),
            self.ckpt.file_name().map_or_else(|| self.ckpt.display().to_string(), |n| n.to_string_lossy().into_owned()),
            self.state.version,
            self.state.env_steps,
            self.cfg.env.name,
            self.episodes.len(),
            if self.args.greedy { "greedy" } else { "sampled" },
            self.secs
        );
        if let Some(r) = self.reward {
            let _ = writeln!(
                t,
                "intrinsic return: the run's reward model v{} (β {}, γ {}), without α_int",
                r.version, self.cfg.reward.beta, self.cfg.reward.run_gamma
            );
        }
        let cols = self.columns();
        let _ = write!(t, "{:>7} {:>9}", "episode", "success");
        for (name, _) in &cols {
            let _ = write!(t, " {name:>16}");
        }
        let _ = writeln!(t);
        for (i, e) in self.episodes.iter().enumerate() {
            let _ = write!(t, "{:>7} {:>9}", i + 1, if e.success { "yes" } else { "no" });
            for (_, xs) in &cols {
                let _ = write!(t, " {:>16.3}", xs[i]);
            }
            let _ = writeln!(t);
        }
        let n = self.episodes.len();
        let successes = self.episodes.iter().filter(|e| e.success).count();
        let (lo, hi) = wilson(successes, n);
        let _ = writeln!(t, "mean over {n} episodes, with 95 % confidence intervals:");
        let _ = writeln!(t, "  {:<17} {:.3}  [{lo:.3}, {hi:.3}]", "success_rate", successes as f64 / n as f64);
        for (name, xs) in &cols {
            let (m, h) = mean_ci(xs);
            let _ = writeln!(t, "  {name:<17} {m:.3} ± {h:.3}");
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_against_hand_worked_values() {
        // mean 2, sample variance 2/3 over 4 values → 1.96 · √(2/3) / √4
        let (m, h) = mean_ci(&[1.0, 2.0, 2.0, 3.0]);
        assert!((m - 2.0).abs() < 1e-12);
        assert!((h - 1.96 * (2.0f64 / 3.0).sqrt() / 2.0).abs() < 1e-12, "{h}");
        // Wilson, 8 of 10: centre (0.8 + 0.19208) / 1.38416 = 0.71676, half-width 0.22658
        let (lo, hi) = wilson(8, 10);
        assert!((lo - 0.4902).abs() < 1e-3 && (hi - 0.9433).abs() < 1e-3, "[{lo}, {hi}]");
        // all successes: the upper end is 1 and the lower end below it
        let (lo, hi) = wilson(20, 20);
        assert!(hi > 0.9999 && (lo - 0.8389).abs() < 1e-3, "[{lo}, {hi}]");
    }
}
