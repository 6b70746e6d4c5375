//! `oni`: the whole system in one process (`run`), the cluster roles (`learner`, `actor`,
//! `annotator`), the label bank (`labels`), a rule-based labelling server (`judge`), and
//! benchmarks (`bench`).

mod bench;
mod config;
mod device;
mod judge;
mod labels;
mod learning;
mod progress;
mod roles;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "oni", version, about = "Distributed actor-learner RL with LLM-distilled intrinsic rewards")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone, Debug, Default)]
pub struct Common {
    /// TOML config file (presets in configs/).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Override a config key, e.g. --set learner.learning_rate=3e-4 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Run directory (default runs/<name>).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Stop after this many env steps.
    #[arg(long)]
    pub max_env_steps: Option<u64>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Learner and actors in one process, on 127.0.0.1.
    Run(Common),
    /// The learner service of a cluster.
    Learner(Common),
    /// One actor of a cluster.
    Actor(Common),
    /// The annotator service: asks the LLM about captions and keeps the label bank.
    Annotator(Common),
    /// Inspect and export a label bank.
    #[command(subcommand)]
    Labels(labels::LabelsCmd),
    /// A deterministic labelling server (OpenAI-compatible API, answers by a keyword rule).
    Judge(judge::JudgeArgs),
    /// Throughput benchmarks; each prints one JSON object.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Run(c) => roles::run(c).await,
            Cmd::Learner(c) => roles::learner(c).await,
            Cmd::Actor(c) => roles::actor(c).await,
            Cmd::Annotator(c) => labels::annotator(c).await,
            Cmd::Labels(l) => labels::labels(l),
            Cmd::Judge(a) => judge::judge(a).await,
            Cmd::Bench(b) => bench::run(b).await,
        }
    })
}
