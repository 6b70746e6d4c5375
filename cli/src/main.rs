//! `oni`: the whole system in one process (`run`), the cluster roles (`learner`, `actor`,
//! `annotator`), the label bank (`labels`), a rule-based labelling server (`judge`), and
//! benchmarks (`bench`).

mod alloc;
mod bench;
mod certs;
mod config;
mod device;
mod eval;
mod fuzz;
mod heap;
mod judge;
mod judge_bench;
mod labels;
mod learning;
mod page;
mod progress;
mod reference;
mod roles;
mod soak;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// The learner allocates and frees tensors of up to hundreds of MB on every update, many of
/// them zeroed. With glibc's allocator each was fresh mmap'ed memory, and jemalloc's
/// defaults hand big or idle blocks back to the kernel, to be zeroed again on first touch:
/// page faults took a third of the update. Here jemalloc caches every size and keeps what it
/// has (the process stays at its peak size, reached in the first updates): the update ran
/// 1.3–1.5× faster than with 30–60 s decay. Zeroed blocks are zeroed in place (`alloc`).
#[global_allocator]
static ALLOC: alloc::Allocator = alloc::Allocator;

#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1\0";

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
    /// Plays a run's checkpoint for N episodes and reports return, score and success with
    /// 95 % confidence intervals.
    Eval(eval::EvalArgs),
    /// Inspect and export a label bank.
    #[command(subcommand)]
    Labels(labels::LabelsCmd),
    /// A deterministic labelling server (OpenAI-compatible API, answers by a keyword rule).
    Judge(judge::JudgeArgs),
    /// Throughput benchmarks; each prints one JSON object.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Container healthcheck: exits 0 when this host's role serves its metrics endpoint.
    Health(HealthArgs),
    /// Makes a private CA and a server certificate for `[transport.tls]`.
    Certs(certs::CertsArgs),
    /// The configuration: resolved, or every key documented.
    #[command(subcommand)]
    Config(ConfigCmd),
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Prints the resolved config (file, environment and --set applied; the token left out).
    Show(Common),
    /// Prints every key with its default and meaning (docs/config.md).
    Reference,
}

#[derive(Args)]
struct HealthArgs {
    /// host:port of the metrics endpoint to probe.
    #[arg(long, default_value = "127.0.0.1:9100")]
    metrics: String,
    #[arg(long, default_value_t = 3.0)]
    timeout_secs: f64,
}

/// The Prometheus text a `/metrics` endpoint at `host:port` serves.
pub fn scrape_metrics(endpoint: &str, timeout: std::time::Duration) -> Result<String> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let addr = endpoint.to_socket_addrs()?.next().ok_or_else(|| anyhow::anyhow!("cannot resolve {endpoint}"))?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {endpoint}\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    anyhow::ensure!(
        body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"),
        "metrics endpoint answered: {}",
        body.lines().next().unwrap_or("")
    );
    Ok(body)
}

/// GET /metrics and look for oni's own families: a process that is up but not yet serving
/// (or a different server on the port) is unhealthy.
fn health(a: HealthArgs) -> Result<()> {
    let body = scrape_metrics(&a.metrics, std::time::Duration::from_secs_f64(a.timeout_secs))?;
    anyhow::ensure!(body.contains("oni_"), "no oni metrics at {}", a.metrics);
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // burn's CPU backend runs its large matrix products on rayon's global pool; named, its
    // threads are told apart from whichever role happened to start the pool first
    rayon::ThreadPoolBuilder::new().thread_name(|i| format!("compute-pool-{i}")).build_global()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Run(c) => roles::run(c).await,
            Cmd::Learner(c) => roles::learner(c).await,
            Cmd::Actor(c) => roles::actor(c).await,
            Cmd::Annotator(c) => labels::annotator(c).await,
            Cmd::Labels(l) => labels::labels(l),
            Cmd::Judge(a) => judge::judge(a).await,
            Cmd::Eval(a) => eval::eval(a).await,
            Cmd::Bench(b) => bench::run(b).await,
            Cmd::Health(a) => health(a),
            Cmd::Certs(a) => certs::certs(a),
            Cmd::Config(ConfigCmd::Show(c)) => {
                print!("{}", config::load(c.config.as_deref(), &c.set)?.to_toml());
                Ok(())
            }
            Cmd::Config(ConfigCmd::Reference) => {
                print!("{}", reference::render());
                Ok(())
            }
        }
    })
}
