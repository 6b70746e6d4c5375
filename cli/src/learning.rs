//! `oni bench learning`: does the method work? Trains each preset (by default keyroom-sparse
//! with the extrinsic reward only, and with ONI-hashing, -classification and -ranking) for
//! the same step budget and several seeds, each in a fresh `oni run` child process with a
//! fresh label bank, and writes the success-rate curves (CSV), a table (Markdown + JSON) and,
//! where matplotlib is available, a PNG plot to the output directory. Where the env keeps a
//! score (NetHack), the table adds each run's final mean return and score, and the plot
//! shows their curves instead of the success rate. The LLM is an
//! in-process rule judge (`oni judge`) unless `--llm` names a real server.

use crate::judge::{self, Rule};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Deserialize;
use serde_json::json;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args)]
pub struct LearningBench {
    /// Presets to compare.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "configs/keyroom-sparse.toml,configs/keyroom-sparse-hashing.toml,configs/keyroom-sparse-classification.toml,configs/keyroom-sparse-ranking.toml"
    )]
    configs: Vec<PathBuf>,
    /// Seeds per preset (env.seed = 1..=seeds).
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Env steps per run (default: each preset's run.max_env_steps).
    #[arg(long)]
    steps: Option<u64>,
    /// An OpenAI-compatible LLM server to judge with, instead of the rule judge.
    #[arg(long)]
    llm: Option<String>,
    /// Model name to send to `--llm`.
    #[arg(long)]
    model: Option<String>,
    /// Where the table, curves and plot go.
    #[arg(long, default_value = "docs/results")]
    out: PathBuf,
    /// File name stem of the outputs.
    #[arg(long, default_value = "keyroom-sparse")]
    name: String,
    /// Extra overrides for every run (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Start every run's label bank from this run directory's bank (its `labels/`), so a slow
    /// judge's earlier answers are reused instead of asked again.
    #[arg(long, value_name = "RUN_DIR")]
    bank_from: Option<PathBuf>,
    /// Train nothing: rebuild the table, curves and plot from the run directories an earlier
    /// call left in `--out`/runs (same presets, seeds and name), keeping that call's
    /// provenance from its `<name>.json`.
    #[arg(long)]
    from_runs: bool,
}

#[derive(Deserialize)]
struct Row {
    env_steps: u64,
    episodes: u64,
    success_rate: f64,
    #[serde(default)]
    mean_intrinsic_return: f64,
    #[serde(default)]
    mean_extrinsic_return: f64,
    #[serde(default)]
    mean_score: Option<f64>,
    /// An ONI run's diagnosis (`oni run` with an annotator): answers stored, share of steps
    /// judged, and the reward model's accuracy.
    #[serde(default)]
    labels: Option<u64>,
    #[serde(default)]
    labelled_share: Option<f64>,
    #[serde(default)]
    rm_accuracy: Option<RmAccuracy>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct RmAccuracy {
    bank: Option<f64>,
    gold: Option<f64>,
}

#[derive(Deserialize)]
struct RunSummary {
    success_rate: f64,
    env_steps: u64,
    wall_seconds: f64,
    #[serde(default)]
    mean_extrinsic_return: f64,
    #[serde(default)]
    mean_score: Option<f64>,
}

struct Outcome {
    variant: String,
    seed: u64,
    rows: Vec<Row>,
    summary: RunSummary,
}

/// Copies a run's file bank (labels and pairs; its reward-model snapshots stay behind, so
/// the new run distils its own) into `dest`.
fn warm_bank(from_run: &Path, dest: &Path) -> Result<()> {
    let src = from_run.join("labels");
    if !src.join("labels.jsonl").exists() {
        bail!(
            "--bank-from {}: no label bank there ({} is missing)",
            from_run.display(),
            src.join("labels.jsonl").display()
        );
    }
    std::fs::create_dir_all(dest)?;
    for table in ["labels.jsonl", "pairs.jsonl"] {
        if src.join(table).exists() {
            std::fs::copy(src.join(table), dest.join(table))
                .with_context(|| format!("copying {}", src.join(table).display()))?;
        }
    }
    Ok(())
}

/// Where a results file came from, so it can be checked and rerun: the commit, the exact
/// command, each preset as resolved (its file, overrides and the hash of the resolved
/// config), the seeds, the budget, the judge (model and prompt hashes) and the bank.
fn provenance(b: &LearningBench, llm: &str) -> Result<serde_json::Value> {
    use sha2::{Digest, Sha256};
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown (not a git checkout)".into());
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let mut presets = Vec::new();
    for config in &b.configs {
        let cfg = crate::config::load(Some(config), &b.set)?;
        let resolved = toml::to_string(&cfg).context("resolving a preset")?;
        let judge = cfg.reward.kind.map(|_| {
            json!({"classification_prompt_hash": cfg.prompts.classification_hash(), "ranking_prompt_hash": cfg.prompts.ranking_hash(),
                   "goal": cfg.prompts.goal, "temperature": cfg.llm.temperature, "api": format!("{:?}", cfg.llm.api).to_lowercase(),
                   "split_messages": cfg.annotator.split_messages, "caption_key": cfg.annotator.caption_key})
        });
        presets.push(json!({"config": config.display().to_string(), "name": cfg.name, "reward": cfg.reward.kind.map(|k| k.name()),
                            "config_sha256": format!("{:x}", Sha256::digest(resolved.as_bytes())), "judge": judge}));
    }
    let cpu = crate::bench::cpu_info();
    let binary_sha256 = std::env::current_exe()
        .and_then(std::fs::read)
        .map(|b| format!("{:x}", Sha256::digest(&b)))
        .unwrap_or_default();
    Ok(json!({
        "commit": commit,
        "dirty": dirty,
        "binary_sha256": binary_sha256,
        "command": std::env::args().map(|a| if a.contains([' ', '"', '\'']) { format!("'{a}'") } else { a }).collect::<Vec<_>>().join(" "),
        "presets": presets,
        "overrides": b.set,
        "seeds": (1..=b.seeds).collect::<Vec<_>>(),
        "budget_env_steps": b.steps,
        "judge": match &b.llm { Some(url) => json!({"kind": "llm", "url": url, "model": b.model}), None => json!({"kind": "rule", "url": llm}) },
        "bank": match &b.bank_from { Some(p) => json!({"from": p.display().to_string()}), None => json!("cold") },
        "cpu": cpu,
        "date_unix": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    }))
}

/// The provenance of the call whose runs `--from-runs` reads: its results file must say.
fn earlier_provenance(b: &LearningBench) -> Result<serde_json::Value> {
    let path = b.out.join(format!("{}.json", b.name));
    let earlier: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).with_context(|| format!("--from-runs: {}", path.display()))?)
            .with_context(|| format!("--from-runs: {}", path.display()))?;
    match earlier.get("provenance") {
        Some(p) if PROVENANCE_KEYS.iter().all(|k| !p[*k].is_null()) => Ok(p.clone()),
        _ => bail!("--from-runs: {} has no provenance; its runs cannot be traced, rerun them", path.display()),
    }
}

/// The provenance fields every results file must carry (`scripts/plot_learning.py` checks
/// the same list).
pub const PROVENANCE_KEYS: [&str; 7] = ["commit", "command", "presets", "seeds", "budget_env_steps", "judge", "bank"];

pub async fn bench_learning(b: LearningBench) -> Result<()> {
    let llm = match &b.llm {
        Some(url) => url.clone(),
        None => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let prompts = crate::config::load(None, &[])?.prompts;
            tokio::spawn(judge::serve(listener, Rule::new(prompts, judge::DEFAULT_KEYWORDS)));
            format!("http://{addr}")
        }
    };
    std::fs::create_dir_all(b.out.join("runs")).with_context(|| format!("--out {}", b.out.display()))?;
    let provenance = if b.from_runs { earlier_provenance(&b)? } else { provenance(&b, &llm)? };
    let exe = std::env::current_exe()?;
    let mut outcomes = Vec::new();
    for config in &b.configs {
        let cfg = crate::config::load(Some(config), &b.set)?;
        let variant = match cfg.reward.kind {
            None => "extrinsic".to_string(),
            Some(k) => format!("oni-{}", k.name()),
        };
        for seed in 1..=b.seeds {
            let run_dir = b.out.join("runs").join(format!("{}-{variant}-s{seed}", b.name));
            if b.from_runs {
                outcomes.push(
                    read_outcome(&run_dir, &variant, seed)
                        .with_context(|| format!("--from-runs: {}", run_dir.display()))?,
                );
                continue;
            }
            if run_dir.exists() {
                std::fs::remove_dir_all(&run_dir)?;
            }
            std::fs::create_dir_all(&run_dir)?;
            if let Some(from) = &b.bank_from {
                warm_bank(from, &run_dir.join("labels"))?;
            }
            let mut args: Vec<String> = vec!["run".into(), "--config".into(), config.display().to_string()];
            args.extend(["--run-dir".into(), run_dir.display().to_string()]);
            let mut sets = vec![
                format!("env.seed={seed}"),
                format!("llm.base_url={llm}"),
                "telemetry.metrics_listen=".into(),
                "run.progress_interval_secs=5".into(),
                "annotator.drain_secs=0".into(),
            ];
            if let Some(m) = &b.model {
                sets.push(format!("llm.model={m}"));
            }
            if let Some(s) = b.steps {
                sets.push(format!("run.max_env_steps={s}"));
            }
            sets.extend(b.set.iter().cloned());
            for s in sets {
                args.extend(["--set".into(), s]);
            }
            let log = std::fs::File::create(run_dir.join("log.txt"))?;
            eprintln!("{variant} seed {seed}: training ({})", run_dir.display());
            let start = Instant::now();
            let mut cmd = std::process::Command::new(&exe);
            cmd.args(&args).stdout(log.try_clone()?).stderr(log);
            let status = tokio::task::spawn_blocking(move || cmd.status()).await??;
            if !status.success() {
                bail!("{variant} seed {seed} failed ({status}); see {}", run_dir.join("log.txt").display());
            }
            let outcome = read_outcome(&run_dir, &variant, seed)?;
            eprintln!(
                "{variant} seed {seed}: success {:.2} after {} steps in {:.0}s",
                outcome.summary.success_rate,
                outcome.summary.env_steps,
                start.elapsed().as_secs_f64()
            );
            outcomes.push(outcome);
        }
    }
    let report = write_report(&b, &llm, &outcomes, provenance)?;
    println!("{report}");
    Ok(())
}

fn read_outcome(run_dir: &Path, variant: &str, seed: u64) -> Result<Outcome> {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl"))?;
    let rows = text.lines().filter_map(|l| serde_json::from_str::<Row>(l).ok()).collect();
    let summary: RunSummary = serde_json::from_slice(&std::fs::read(run_dir.join("summary.json"))?)?;
    Ok(Outcome { variant: variant.into(), seed, rows, summary })
}

/// Writes `<name>.csv` (curves), `<name>.json` and `<name>.md` (table), and the plot.
fn write_report(
    b: &LearningBench,
    llm: &str,
    outcomes: &[Outcome],
    mut provenance: serde_json::Value,
) -> Result<serde_json::Value> {
    let mut csv = String::from(
        "variant,seed,env_steps,episodes,success_rate,mean_intrinsic_return,mean_extrinsic_return,mean_score,labels,labelled_share,rm_accuracy_bank,rm_accuracy_gold\n",
    );
    let opt = |x: Option<f64>| x.map(|v| format!("{v:.4}")).unwrap_or_default();
    for o in outcomes {
        for r in &o.rows {
            let score = r.mean_score.map(|s| format!("{s:.2}")).unwrap_or_default();
            let acc = r.rm_accuracy.unwrap_or_default();
            writeln!(
                csv,
                "{},{},{},{},{:.4},{:.4},{:.4},{score},{},{},{},{}",
                o.variant,
                o.seed,
                r.env_steps,
                r.episodes,
                r.success_rate,
                r.mean_intrinsic_return,
                r.mean_extrinsic_return,
                r.labels.map(|l| l.to_string()).unwrap_or_default(),
                opt(r.labelled_share),
                opt(acc.bank),
                opt(acc.gold),
            )?;
        }
    }
    let scored = outcomes.iter().any(|o| o.summary.mean_score.is_some());
    let csv_path = b.out.join(format!("{}.csv", b.name));
    std::fs::write(&csv_path, csv)?;

    let mut variants: Vec<&str> = outcomes.iter().map(|o| o.variant.as_str()).collect();
    variants.dedup();
    let judge = if b.llm.is_some() { format!("LLM server {llm}") } else { "rule judge (key, door, stair)".into() };
    let mut md = format!(
        "# {}: success rate after a fixed budget\n\nJudge: {judge}. Seeds: {}. Each cell: the run's final success rate (recent episodes).\n\n| variant | steps | {} | mean |\n|---|---|{}---|\n",
        b.name,
        b.seeds,
        (1..=b.seeds).map(|s| format!("seed {s}")).collect::<Vec<_>>().join(" | "),
        "---|".repeat(b.seeds as usize)
    );
    let mut table = serde_json::Map::new();
    let mut score_md = String::from(
        "\nThe env keeps a score: each run's mean extrinsic return and mean in-game score over its last 100 episodes.\n\n| variant | return per seed | mean return | score per seed | mean score |\n|---|---|---|---|---|\n",
    );
    for v in &variants {
        let runs: Vec<&Outcome> = outcomes.iter().filter(|o| o.variant == *v).collect();
        let rates: Vec<f64> = runs.iter().map(|o| o.summary.success_rate).collect();
        let mean = rates.iter().sum::<f64>() / rates.len().max(1) as f64;
        let steps = runs.iter().map(|o| o.summary.env_steps).max().unwrap_or(0);
        let cells: Vec<String> = rates.iter().map(|r| format!("{r:.2}")).collect();
        writeln!(md, "| {v} | {steps} | {} | **{mean:.2}** |", cells.join(" | "))?;
        let wall: f64 = runs.iter().map(|o| o.summary.wall_seconds).sum::<f64>() / runs.len().max(1) as f64;
        let returns: Vec<f64> = runs.iter().map(|o| o.summary.mean_extrinsic_return).collect();
        let scores: Vec<Option<f64>> = runs.iter().map(|o| o.summary.mean_score).collect();
        table.insert(
            v.to_string(),
            json!({"success_rates": rates, "mean_success_rate": mean, "env_steps": steps, "mean_wall_seconds": wall,
                   "final_mean_returns": returns, "final_mean_scores": scores}),
        );
        let n = runs.len().max(1) as f64;
        let scores: Vec<f64> = scores.iter().map(|s| s.unwrap_or(0.0)).collect();
        let cells = |xs: &[f64], p: usize| xs.iter().map(|x| format!("{x:.p$}")).collect::<Vec<_>>().join(", ");
        writeln!(
            score_md,
            "| {v} | {} | **{:.2}** | {} | **{:.1}** |",
            cells(&returns, 2),
            returns.iter().sum::<f64>() / n,
            cells(&scores, 1),
            scores.iter().sum::<f64>() / n
        )?;
    }
    if scored {
        md.push_str(&score_md);
    }
    // the budget a run actually had (a preset's own run.max_env_steps where --steps is absent)
    provenance["budget_env_steps"] = json!(outcomes.iter().map(|o| o.summary.env_steps).max().unwrap_or(0));
    if let Some(k) = PROVENANCE_KEYS.iter().find(|k| provenance[**k].is_null()) {
        bail!("internal: the results' provenance lacks `{k}`");
    }
    let png = b.out.join(format!("{}.png", b.name));
    let json_path = b.out.join(format!("{}.json", b.name));
    let mut report = json!({"benchmark": "learning", "name": b.name, "judge": judge, "seeds": b.seeds, "variants": table,
                            "provenance": provenance, "plot": null});
    std::fs::write(&json_path, serde_json::to_vec_pretty(&report)?)?;
    let columns = if scored { "mean_extrinsic_return,mean_score" } else { "success_rate" };
    let plotted = std::process::Command::new(project_python())
        .args([Path::new("scripts/plot_learning.py"), &json_path, &png, Path::new(columns)])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if plotted {
        let what = if scored { "return and in-game score" } else { "success rate" };
        writeln!(md, "\n![{what} against env steps]({}.png)", b.name)?;
        report["plot"] = json!(png.display().to_string());
        std::fs::write(&json_path, serde_json::to_vec_pretty(&report)?)?;
    } else {
        eprintln!("note: no plot written (scripts/plot_learning.py needs python3 with matplotlib)");
    }
    let p = &report["provenance"];
    writeln!(
        md,
        "\nProvenance: commit `{}`{}; budget {} env steps per run; bank {}; seeds {}. Command:\n\n```\n{}\n```\n\nPer-seed figures, presets (config hashes) and the judge's prompt hashes: [{}.json]({}.json).",
        p["commit"].as_str().unwrap_or(""),
        if p["dirty"].as_bool() == Some(true) { " (with uncommitted changes)" } else { "" },
        p["budget_env_steps"],
        p["bank"],
        b.seeds,
        p["command"].as_str().unwrap_or(""),
        b.name,
        b.name
    )?;
    std::fs::write(b.out.join(format!("{}.md", b.name)), md)?;
    Ok(report)
}

/// The project's venv (scripts/setup.sh: nle, matplotlib, oni_env) when present, else the
/// system python3.
pub fn project_python() -> PathBuf {
    let cache = std::env::var_os("ONI_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/oni")));
    cache.map(|c| c.join("venv/bin/python")).filter(|p| p.exists()).unwrap_or_else(|| PathBuf::from("python3"))
}
