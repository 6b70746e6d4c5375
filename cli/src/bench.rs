//! `oni bench`: throughput numbers, each run printing one JSON object.

use crate::roles::{self, Prepared};
use crate::{device, with_backend, Common};
use anyhow::Result;
use clap::{Args, Subcommand};
use oni_actor::ActorCounters;
use oni_env::{make_env, EnvConfig, ObsBuf, MESSAGE_LEN};
use oni_learner::batch::RewardMix;
use oni_learner::trainer::Trainer;
use oni_proto::tasks::{CancellationToken, TaskGroup};
use oni_proto::v1::Rollout;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Simulation only: random actions, no policy.
    Env(EnvBench),
    /// The whole loop (actors, gRPC, learner) for a fixed time.
    E2e(E2eBench),
    /// Learner updates on synthetic rollouts (samples/s), on the configured device.
    Learner(LearnerBench),
    /// Actor inference (the policy's step on a batch of observations) on one CPU core.
    Inference(InferenceBench),
    /// Labels/s through the annotator against a plain client on the same LLM server.
    Annotator(AnnotatorBench),
    /// A judge's agreement with the labelled captions of data/judging (accuracy, κ, pairs).
    Judge(crate::judge_bench::JudgeBench),
    /// Success rate of several presets (e.g. extrinsic-only vs ONI) at one step budget.
    Learning(crate::learning::LearningBench),
    /// The run page's load time with a large label bank (HTTP, and headless chromium).
    Page(crate::page::bench::PageBench),
    /// Env-hub protocol overhead: steps/s of an instant env attached from Python, per batch size.
    Attach(AttachBench),
    /// A long run of the whole loop with the process's memory, fds, threads and label bank
    /// sampled: growth after the warm-up is a leak.
    Soak(crate::soak::SoakBench),
    /// A hostile client speaking the wire protocol against running servers: broken framing,
    /// mutated messages, resets, raw HTTP/2 frames; checks every status and that the servers
    /// live on within their memory.
    Fuzz(crate::fuzz::FuzzBench),
}

#[derive(Args)]
pub struct AttachBench {
    /// Envs per stream to measure, comma separated.
    #[arg(long, default_value = "1,64", value_delimiter = ',')]
    envs: Vec<usize>,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Python with the oni_env package (default: the project venv's).
    #[arg(long)]
    python: Option<std::path::PathBuf>,
}

#[derive(Args)]
pub struct EnvBench {
    #[arg(long, default_value = "keyroom-small")]
    env: String,
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Env instances per thread, stepped in turn as a vector env steps them.
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// NetHack's episode step cap (`env.nethack.max_episode_steps`); short caps measure resets.
    #[arg(long)]
    max_episode_steps: Option<u32>,
    /// NetHack's action set (`env.nethack.actions`): `oni` (28) or `task` (NLE's 23, as
    /// `scripts/bench_nle.py` plays).
    #[arg(long, value_parser = crate::config::parse_kind::<oni_env::nethack::ActionSet>)]
    actions: Option<oni_env::nethack::ActionSet>,
}

#[derive(Args)]
pub struct E2eBench {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// Also serve the run page, write metrics.jsonl as `oni run` does, and poll the page as
    /// an open browser tab does (what watching a run costs the training).
    #[arg(long)]
    page: bool,
}

#[derive(Args)]
pub struct InferenceBench {
    #[command(flatten)]
    common: Common,
    /// Batch sizes (envs per inference call) to measure, comma separated.
    #[arg(long, default_value = "32,64,128", value_delimiter = ',')]
    batches: Vec<usize>,
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// CPU threads the policy may use.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Args)]
pub struct LearnerBench {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_t = 10)]
    updates: usize,
    /// `torch`: also run the PyTorch reference of the same network, update and batch
    /// (scripts/bench_learner_torch.py with ~/.cache/oni/torch-venv, which
    /// scripts/torch-venv.sh installs), alternating with burn, and print both figures and
    /// their ratio.
    #[arg(long)]
    reference: Option<String>,
    /// Rounds of (burn, reference) with --reference; each figure is the median of its rounds.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

pub async fn run(cmd: BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Env(b) => bench_env(b),
        BenchCmd::E2e(b) => bench_e2e(b).await,
        BenchCmd::Page(b) => crate::page::bench::run(b).await,
        BenchCmd::Learner(b) => bench_learner(b),
        BenchCmd::Inference(b) => bench_inference(b),
        BenchCmd::Annotator(b) => bench_annotator(b).await,
        BenchCmd::Learning(b) => crate::learning::bench_learning(b).await,
        BenchCmd::Judge(b) => crate::judge_bench::bench_judge(b).await,
        BenchCmd::Attach(b) => bench_attach(b).await,
        BenchCmd::Soak(b) => crate::soak::bench_soak(b).await,
        BenchCmd::Fuzz(b) => crate::fuzz::run(b).await,
    }
}

/// Starts a random-action hub on a loopback port and runs `python -m oni_env.bench` against
/// it once per batch size; prints one JSON object with steps/s for each.
async fn bench_attach(b: AttachBench) -> Result<()> {
    let python = b.python.clone().unwrap_or_else(crate::learning::project_python);
    let mut rows = Vec::new();
    for &n in &b.envs {
        let stop = CancellationToken::new();
        let cfg = oni_actor::config::HubConfig { listen: "127.0.0.1:0".into(), ..Default::default() };
        let addr = oni_actor::hub::serve_random(cfg, stop.clone()).await?.to_string();
        let mut cmd = std::process::Command::new(&python);
        cmd.args([
            "-m",
            "oni_env.bench",
            "--address",
            &addr,
            "--num-envs",
            &n.to_string(),
            "--seconds",
            &b.seconds.to_string(),
        ]);
        let out = tokio::task::spawn_blocking(move || cmd.output()).await?.map_err(|e| {
            anyhow::anyhow!("cannot run {} (install the client: pip install ./clients/python): {e}", python.display())
        })?;
        stop.cancel();
        if !out.status.success() {
            anyhow::bail!("oni_env.bench with {n} envs failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let row: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        eprintln!("{n:>4} envs per stream: {:>9.0} steps/s", row["steps_per_second"].as_f64().unwrap_or(0.0));
        rows.push(row);
    }
    println!(
        "{}",
        json!({"benchmark": "attach", "env": "instant (python, 4 floats, 2 actions)", "actions": "uniform random, no policy", "runs": rows})
    );
    Ok(())
}

fn bench_env(b: EnvBench) -> Result<()> {
    let mut cfg = EnvConfig { name: b.env.clone(), seed: 1, ..Default::default() };
    if let Some(n) = b.max_episode_steps {
        cfg.nethack.max_episode_steps = n;
    }
    if let Some(a) = &b.actions {
        cfg.nethack.actions = *a;
    }
    make_env(&cfg)?; // fail early on an unknown name
    let deadline = Duration::from_secs_f64(b.seconds);
    let rss_start = resident_mib();
    let threads: Vec<_> = (0..b.threads.max(1))
        .map(|t| {
            let (cfg, instances) = (cfg.clone(), b.instances.max(1));
            std::thread::spawn(move || -> Result<EnvCounts> {
                let mut envs = (0..instances).map(|_| make_env(&cfg)).collect::<Result<Vec<_>, _>>()?;
                let spec = envs[0].spec().clone();
                let (mut g, mut s, mut m) =
                    (vec![0u16; spec.crop_len()], vec![0f32; spec.stats_dim], vec![0u8; MESSAGE_LEN]);
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1);
                let mut n = EnvCounts::default();
                for (i, env) in envs.iter_mut().enumerate() {
                    env.reset((t * instances + i) as u64, ObsBuf { glyphs: &mut g, stats: &mut s, message: &mut m })?;
                }
                let start = Instant::now();
                while start.elapsed() < deadline {
                    for _ in 0..4096 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let env = &mut envs[(n.steps % instances as u64) as usize];
                        let a = (x % spec.num_actions as u64) as usize;
                        let out = env.step(a, ObsBuf { glyphs: &mut g, stats: &mut s, message: &mut m })?;
                        n.steps += 1;
                        if out.done {
                            n.episodes += 1;
                            let r = Instant::now();
                            env.reset(x, ObsBuf { glyphs: &mut g, stats: &mut s, message: &mut m })?;
                            n.reset_secs += r.elapsed().as_secs_f64();
                        }
                    }
                }
                Ok(n)
            })
        })
        .collect();
    let start = Instant::now();
    let mut n = EnvCounts::default();
    for t in threads {
        let c = t.join().expect("bench thread")?;
        (n.steps, n.episodes, n.reset_secs) = (n.steps + c.steps, n.episodes + c.episodes, n.reset_secs + c.reset_secs);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"bench": "env", "env": b.env, "threads": b.threads, "instances_per_thread": b.instances,
               "steps": n.steps, "episodes": n.episodes, "seconds": secs, "steps_per_sec": n.steps as f64 / secs,
               "reset_us_mean": 1e6 * n.reset_secs / n.episodes.max(1) as f64,
               "reset_share": n.reset_secs / (secs * b.threads.max(1) as f64),
               "rss_mib_start": rss_start, "rss_mib_end": resident_mib()})
    );
    Ok(())
}

#[derive(Default)]
struct EnvCounts {
    steps: u64,
    episodes: u64,
    reset_secs: f64,
}

/// This process's resident memory (MiB), from /proc/self/statm.
fn resident_mib() -> f64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<f64>().ok()))
        .unwrap_or(0.0);
    pages * 4096.0 / (1 << 20) as f64
}

async fn bench_e2e(b: E2eBench) -> Result<()> {
    let mut common = b.common.clone();
    common.set.push("telemetry.metrics_listen=\"\"".into());
    if common.run_dir.is_none() {
        common.run_dir = Some(std::env::temp_dir().join(format!("oni-bench-e2e-{}", std::process::id())));
    }
    let mut p: Prepared = roles::prepare(&common)?;
    p.cfg.learner.listen = "127.0.0.1:0".into();
    p.cfg.learner.checkpoint_interval_secs = 1_000_000;
    if b.page {
        p.cfg.page = crate::page::PageConfig { mode: oni_proto::Switch::On, listen: "127.0.0.1:0".into() };
    }
    let metrics = roles::init_metrics(&p.cfg)?;
    let mut learner = roles::start_learner(&p).await?;
    let mut actors = TaskGroup::new();
    let mut counters = Vec::new();
    for i in 0..p.cfg.actor.count.max(1) {
        let c = Arc::new(ActorCounters::default());
        counters.push(c.clone());
        // as `oni run` records: `--set record.mode=off` measures without
        let record = p.cfg.record_plan(Some(&p.run_dir)).filter(|_| i == 0);
        roles::spawn_actor(&p.cfg, learner.addr.to_string(), i, c, &mut actors, record)?;
    }
    // Warm up until the first update went through, then measure.
    let warm = Instant::now();
    while learner.stats.snapshot().updates < 2 && warm.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let actor_steps = || counters.iter().map(|c| c.env_steps.load(Ordering::Relaxed)).sum::<u64>();
    let (l0, a0, t0) = (learner.stats.snapshot().env_steps, actor_steps(), Instant::now());
    let m0 = InferenceFigures::read(&metrics.render());
    let cpu0 = thread_cpu_seconds();
    let page = if b.page { Some(crate::page::bench::watch(&p, &mut learner).await?) } else { None };
    match page {
        Some(mut w) => {
            let end = t0 + Duration::from_secs_f64(b.seconds);
            while Instant::now() < end {
                tokio::time::sleep(Duration::from_secs_f64(p.cfg.run.progress_interval_secs.max(0.1))).await;
                w.progress.tick(&learner.stats);
            }
            w.stop.cancel();
        }
        None => tokio::time::sleep(Duration::from_secs_f64(b.seconds)).await,
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_shares(&cpu0, &thread_cpu_seconds(), secs);
    let snap = learner.stats.snapshot();
    let (l1, a1) = (snap.env_steps, actor_steps());
    let inference = InferenceFigures::read(&metrics.render()).since(&m0);
    actors.shutdown(oni_proto::tasks::STOP_DEADLINE).await?;
    learner.shutdown().await?;
    let _ = std::fs::remove_dir_all(&p.run_dir);
    println!(
        "{}",
        json!({"bench": "e2e", "env": p.cfg.env.name, "seconds": secs,
               "steps_per_sec": (l1 - l0) as f64 / secs,
               "actor_steps_per_sec": (a1 - a0) as f64 / secs,
               "updates": snap.updates, "mean_policy_lag": snap.mean_policy_lag,
               "actors": p.cfg.actor.count, "envs_per_actor": p.cfg.actor.num_envs,
               "batch_rollouts": p.cfg.learner.batch_rollouts, "rollout_len": p.cfg.learner.rollout_len,
               "inference": format!("{:?}", p.cfg.actor.inference).to_lowercase(),
               "recording": p.cfg.record_plan(Some(&p.run_dir)).is_some(), "page_watched": b.page,
               "mean_inference_batch_envs": inference.mean_batch(),
               "inference_bytes_per_env_step": inference.bytes_per_step(),
               "cpu": cpu_info(), "cpu_share_by_thread": cpu})
    );
    Ok(())
}

/// CPU seconds (user + system) of this process's threads, summed by thread name with a
/// trailing number dropped (`actor-3` counts as `actor`).
fn thread_cpu_seconds() -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return out };
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else { continue };
        // "tid (name) state ..." — the name may hold spaces and parentheses
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let name = stat[open + 1..close].trim_end_matches(|c: char| c.is_ascii_digit() || c == '-').to_string();
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        *out.entry(name).or_insert(0.0) += (ticks(11) + ticks(12)) / 100.0; // USER_HZ
    }
    out
}

/// Each thread group's share of the machine's CPU over `secs` (1.0: every core all the
/// time). `compute-pool` is rayon's pool, where the large matrix products of both the
/// learner and the actors' batched inference run (split across the cores).
fn cpu_shares(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
    secs: f64,
) -> serde_json::Value {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let shares: serde_json::Map<String, serde_json::Value> = after
        .iter()
        .map(|(name, t)| (name.clone(), t - before.get(name).copied().unwrap_or(0.0)))
        .filter(|(_, used)| *used > 0.005 * secs)
        .map(|(name, used)| (name, json!((used / (secs * cores) * 1000.0).round() / 1000.0)))
        .collect();
    serde_json::Value::Object(shares)
}

/// The central inference service's counters (zero with local inference).
#[derive(Default)]
struct InferenceFigures {
    batch_sum: f64,
    batches: f64,
    bytes_in: f64,
    bytes_out: f64,
    env_steps: f64,
}

impl InferenceFigures {
    fn read(text: &str) -> Self {
        use oni_inference::metric_names::{BATCH_ENVS, BYTES, ENV_STEPS};
        let v = |s: String| oni_telemetry::sample(text, &s).unwrap_or(0.0);
        InferenceFigures {
            batch_sum: v(format!("{BATCH_ENVS}_sum")),
            batches: v(format!("{BATCH_ENVS}_count")),
            bytes_in: v(format!("{BYTES}{{direction=\"in\"}}")),
            bytes_out: v(format!("{BYTES}{{direction=\"out\"}}")),
            env_steps: v(ENV_STEPS.to_string()),
        }
    }

    fn since(&self, before: &Self) -> Self {
        InferenceFigures {
            batch_sum: self.batch_sum - before.batch_sum,
            batches: self.batches - before.batches,
            bytes_in: self.bytes_in - before.bytes_in,
            bytes_out: self.bytes_out - before.bytes_out,
            env_steps: self.env_steps - before.env_steps,
        }
    }

    fn mean_batch(&self) -> Option<f64> {
        (self.batches > 0.0).then(|| self.batch_sum / self.batches)
    }

    /// Request and reply bytes per env step, both directions.
    fn bytes_per_step(&self) -> Option<f64> {
        (self.env_steps > 0.0).then(|| (self.bytes_in + self.bytes_out) / self.env_steps)
    }
}

/// A cell id of a NetHack-like screen: blanks half the time, else one of ~120 map, item and
/// monster characters in a few colours, so that a batch holds as few distinct cells as a
/// real one (a few hundred at most), which the image encoder's first layer depends on.
fn screen_cell(x: u64) -> u16 {
    const CHARS: &[u8] = b".#|-+@d$<>:?!%[)=*F{";
    const COLOURS: [u16; 6] = [7, 15, 3, 1, 2, 4];
    if x.is_multiple_of(2) {
        return 0;
    }
    let i = (x / 2) as usize;
    CHARS[i % CHARS.len()] as u16 + 256 * COLOURS[(i / CHARS.len()) % COLOURS.len()]
}

/// Random but valid observations for `spec` (xorshift from a seed): cell ids (screen-like
/// ones on tty grids), stats in [0, 1), messages of 24 lowercase letters.
struct Synthetic(u64);

impl Synthetic {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `n` observations laid out as `VecEnv` holds them: (cells, stats, messages).
    fn observations(&mut self, spec: &oni_env::ObsSpec, n: usize) -> (Vec<u16>, Vec<f32>, Vec<u8>) {
        let cells = (0..n * spec.crop_len())
            .map(|_| match spec.grid {
                oni_env::GridKind::Glyphs => (self.next() % spec.num_glyphs as u64) as u16,
                oni_env::GridKind::Tty => screen_cell(self.next()),
            })
            .collect();
        let stats = (0..n * spec.stats_dim).map(|_| (self.next() % 100) as f32 / 100.0).collect();
        let messages = (0..n * MESSAGE_LEN)
            .map(|k| if k % MESSAGE_LEN < 24 { b'a' + (self.next() % 26) as u8 } else { 0 })
            .collect();
        (cells, stats, messages)
    }
}

/// Random but valid rollouts shaped for the configured env and policy.
fn synthetic_rollouts(p: &Prepared, n: usize) -> Result<Vec<Rollout>> {
    let spec = oni_env::registry::env_spec(&p.cfg.env)?;
    let t = p.cfg.learner.rollout_len;
    let h = p.cfg.policy.core_hidden;
    let mut rng = Synthetic(12345);
    Ok((0..n)
        .map(|i| {
            let (cells, stats, messages) = rng.observations(&spec, t + 1);
            Rollout {
                run_id: "bench".into(),
                actor_id: "bench".into(),
                env_slot: i as u32,
                sequence: 0,
                policy_version: 0,
                length: t as u32,
                initial_state: vec![0.0; h],
                glyphs: cells.iter().flat_map(|c| c.to_le_bytes()).collect(),
                stats,
                messages,
                actions: (0..t).map(|_| (rng.next() % spec.num_actions as u64) as u32).collect(),
                behaviour_logprobs: vec![-(spec.num_actions as f32).ln(); t],
                rewards: (0..t).map(|_| (rng.next() % 2) as f32).collect(),
                dones: (0..t).map(|_| rng.next().is_multiple_of(20)).collect(),
                captions: vec![String::new(); t],
                // No time limits: the PyTorch reference has none to mirror.
                ..Default::default()
            }
        })
        .collect())
}

/// One burn measurement: (seconds, samples, parameters).
fn burn_learner_round(p: &Prepared, rollouts: &[Rollout], updates: usize) -> Result<(f64, usize, usize)> {
    use burn::module::Module;
    let spec = oni_env::registry::env_spec(&p.cfg.env)?;
    let kind = device::check("learner.device", p.cfg.learner.device)?;
    let mix = RewardMix { extrinsic_coef: 1.0, intrinsic_coef: 0.0, clip: 10.0 };
    Ok(with_backend!(kind, autodiff, |B, dev| {
        let mut tr = Trainer::<B>::new(p.cfg.learner.clone(), p.cfg.policy.clone(), spec.clone(), mix, dev);
        let params = tr.model.num_params();
        tr.train(rollouts); // warm-up (kernel compilation on GPU)
        let start = Instant::now();
        let mut samples = 0;
        for _ in 0..updates.max(1) {
            samples += tr.train(rollouts).samples;
        }
        let _ = tr.weights_bytes(); // forces the device queue to drain
        (start.elapsed().as_secs_f64(), samples, params)
    }))
}

/// The actor's inference per env step: host observations → tensors, the policy's step,
/// logits and state back to the host, sampling; on `threads` cores.
fn bench_inference(b: InferenceBench) -> Result<()> {
    use burn::prelude::*;
    use oni_policy::{sampling::sample_actions, CpuBackend, ObsBatch, Policy};
    use rand::SeedableRng;
    let mut common = b.common.clone();
    common.set.push("telemetry.metrics_listen=\"\"".into());
    let cfg = crate::config::load(common.config.as_deref(), &common.set)?;
    let spec = oni_env::registry::env_spec(&cfg.env)?;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(b.threads.max(1)).build()?;
    let dev = Default::default();
    let policy = Policy::<CpuBackend>::new(&cfg.policy, &spec, &dev);
    let h = cfg.policy.core_hidden;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut rows = Vec::new();
    for &n in &b.batches {
        let (glyphs, stats, messages) = Synthetic(99 + n as u64).observations(&spec, n);
        let mut hidden = vec![0.0f32; n * h];
        let (calls, secs) = pool.install(|| {
            let mut step = || {
                let batch = ObsBatch::<CpuBackend>::from_host(&spec, &cfg.policy, &glyphs, &stats, &messages, &dev);
                let state =
                    Tensor::<CpuBackend, 2>::from_data(burn::tensor::TensorData::new(hidden.clone(), [n, h]), &dev);
                let (out, next_state) = policy.act(batch, state);
                hidden = next_state.into_data().convert::<f32>().to_vec().expect("f32 state");
                let logits: Vec<f32> = out.logits.into_data().convert::<f32>().to_vec().expect("f32 logits");
                sample_actions(&logits, spec.num_actions, &mut rng).len()
            };
            step(); // warm-up
            let start = Instant::now();
            let mut calls = 0u64;
            while start.elapsed().as_secs_f64() < b.seconds {
                step();
                calls += 1;
            }
            (calls, start.elapsed().as_secs_f64())
        });
        let steps = calls as f64 * n as f64;
        eprintln!("batch {n:>4}: {:>8.0} env steps/s, {:>7.1} µs per env step", steps / secs, secs / steps * 1e6);
        rows.push(json!({"batch": n, "calls": calls, "seconds": secs, "steps_per_sec": steps / secs,
                         "us_per_step": secs / steps * 1e6}));
    }
    println!(
        "{}",
        json!({"bench": "inference", "env": cfg.env.name, "network": cfg.policy.network,
                          "threads": b.threads, "runs": rows})
    );
    Ok(())
}

/// The batch and settings for the PyTorch reference, as flat little-endian files.
fn write_reference_batch(p: &Prepared, rollouts: &[Rollout], dir: &std::path::Path) -> Result<()> {
    use oni_learner::batch::HostBatch;
    let spec = oni_env::registry::env_spec(&p.cfg.env)?;
    let l = &p.cfg.learner;
    let mix = RewardMix { extrinsic_coef: 1.0, intrinsic_coef: 0.0, clip: 10.0 };
    let hb = HostBatch::build(rollouts, &spec, l.rollout_len, mix);
    std::fs::create_dir_all(dir)?;
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    std::fs::write(dir.join("cells.u16"), hb.glyphs.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())?;
    std::fs::write(dir.join("stats.f32"), f32s(&hb.stats))?;
    std::fs::write(dir.join("messages.u8"), &hb.messages)?;
    std::fs::write(dir.join("resets.f32"), f32s(&hb.resets))?;
    std::fs::write(dir.join("actions.i32"), hb.actions.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())?;
    std::fs::write(dir.join("behaviour.f32"), f32s(&hb.behaviour_logp))?;
    std::fs::write(dir.join("rewards.f32"), f32s(&hb.rewards))?;
    std::fs::write(dir.join("dones.u8"), hb.dones.iter().map(|&d| d as u8).collect::<Vec<u8>>())?;
    std::fs::write(dir.join("atlas.f32"), f32s(oni_policy::font::atlas()))?;
    let mut meta = serde_json::to_value(&p.cfg.policy)?;
    let extra = json!({
        "crop_rows": spec.crop_rows, "crop_cols": spec.crop_cols, "num_glyphs": spec.num_glyphs,
        "stats_dim": spec.stats_dim, "num_actions": spec.num_actions,
        "rollout_len": l.rollout_len, "batch_rollouts": rollouts.len(), "learning_rate": l.learning_rate,
        "adam_epsilon": l.adam_epsilon, "gamma": l.gamma, "ppo_clip": l.ppo_clip, "value_coef": l.value_coef,
        "entropy_coef": l.entropy_coef, "max_grad_norm": l.max_grad_norm,
    });
    meta.as_object_mut().expect("policy config is a table").extend(extra.as_object().expect("object").clone());
    std::fs::write(dir.join("meta.json"), serde_json::to_vec(&meta)?)?;
    Ok(())
}

/// The python that runs the reference: $ONI_TORCH_PYTHON, else the torch venv (installed by
/// scripts/torch-venv.sh on first use).
fn torch_python() -> Result<String> {
    if let Ok(p) = std::env::var("ONI_TORCH_PYTHON") {
        return Ok(p);
    }
    let out = std::process::Command::new("scripts/torch-venv.sh")
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run scripts/torch-venv.sh (run oni from the repository root): {e}"))?;
    anyhow::ensure!(out.status.success(), "scripts/torch-venv.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Debian's jemalloc, preloaded into the reference so that PyTorch gets the allocator
/// treatment `oni` gives itself (glibc's malloc hands big buffers back to the kernel and
/// faults them in again every update).
const JEMALLOC: &str = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";

/// The PyTorch variants `oni bench learner --reference torch` runs: ONI's way (the image and
/// `Conv2d`), the first layer as our lookup, and the fused `nn.GRU` over reset segments.
fn torch_variants(network: &str) -> Vec<(&'static str, [&'static str; 4])> {
    let mut v = vec![("oni_way", ["--screen", "image", "--core", "cell"])];
    if network == "oni" {
        v.push(("lookup", ["--screen", "lookup", "--core", "cell"]));
    }
    v.push(("gru_segments", ["--screen", "image", "--core", "gru"]));
    v
}

/// One run of the PyTorch reference on the batch in `dir`.
fn torch_round(dir: &std::path::Path, updates: usize, device: &str, args: &[&str]) -> Result<serde_json::Value> {
    let python = torch_python()?;
    let mut cmd = std::process::Command::new(&python);
    cmd.arg("scripts/bench_learner_torch.py")
        .arg(dir)
        .args(["--updates", &updates.max(1).to_string(), "--device", device])
        .args(args);
    if std::path::Path::new(JEMALLOC).exists() {
        // oni's own settings (cli/src/main.rs): keep freed pages for reuse
        cmd.env("LD_PRELOAD", JEMALLOC).env("MALLOC_CONF", "oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1");
    }
    let out = cmd.output()?;
    anyhow::ensure!(out.status.success(), "the PyTorch reference failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(serde_json::from_str(text.lines().last().unwrap_or(""))?)
}

/// The machine a figure was measured on: the CPU's model, the instruction-set extensions
/// that matter to matrix kernels, its cores and those this process may use (a `taskset`
/// shows here).
pub fn cpu_info() -> serde_json::Value {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let flags = field("flags");
    let flags: std::collections::HashSet<&str> = flags.split_whitespace().collect();
    let features: Vec<&str> = [
        "avx2",
        "fma",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_vnni",
        "avx512_bf16",
        "avx512_fp16",
        "amx_tile",
        "amx_bf16",
    ]
    .into_iter()
    .filter(|f| flags.contains(f))
    .collect();
    // family/model tell CPU generations apart where a VM's model name is generic
    // ("Intel(R) Xeon(R) Processor"): 6/143 Sapphire Rapids, 6/207 Emerald Rapids, 25/17 Zen 4
    let family_model = format!("{}/{}", field("cpu family"), field("model\t"));
    json!({"model": field("model name"), "family_model": family_model, "cpu_features": features, "avx512": flags.contains("avx512f"),
           "cores": info.lines().filter(|l| l.starts_with("processor")).count(),
           "cores_allowed": std::thread::available_parallelism().map_or(0, |n| n.get())})
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn bench_learner(b: LearnerBench) -> Result<()> {
    let mut common = b.common.clone();
    common.set.push("telemetry.metrics_listen=\"\"".into());
    if common.run_dir.is_none() {
        common.run_dir = Some(std::env::temp_dir().join(format!("oni-bench-learner-{}", std::process::id())));
    }
    let p = roles::prepare(&common)?;
    let spec = oni_env::registry::env_spec(&p.cfg.env)?;
    oni_learner::fits::check_device(&p.cfg.learner, &p.cfg.policy, &spec)?;
    let memory = p.cfg.policy.update_memory(&spec, (p.cfg.learner.rollout_len + 1) * p.cfg.learner.batch_rollouts);
    let rollouts = synthetic_rollouts(&p, p.cfg.learner.batch_rollouts)?;
    let head = json!({"bench": "learner", "device": p.cfg.learner.device, "env": p.cfg.env.name,
        "cpu": cpu_info(), "gemm_kernel": oni_policy::cpu_level(), "fused_kernels": oni_policy::simd_level(),
        "network": p.cfg.policy.network, "batch_rollouts": p.cfg.learner.batch_rollouts,
        "rollout_len": p.cfg.learner.rollout_len, "updates": b.updates,
        "memory_estimate_mib": memory.bytes() >> 20});
    let result = match b.reference.as_deref() {
        None => {
            let (secs, samples, params) = burn_learner_round(&p, &rollouts, b.updates)?;
            let mut v = head;
            v.as_object_mut().unwrap().extend(
                json!({"params": params, "seconds": secs,
                "samples_per_sec": samples as f64 / secs, "steps_per_sec": samples as f64 / secs})
                .as_object()
                .unwrap()
                .clone(),
            );
            v
        }
        Some("torch") => {
            let dir = p.run_dir.join("reference-batch");
            write_reference_batch(&p, &rollouts, &dir)?;
            let variants = torch_variants(&p.cfg.policy.network.to_string());
            let (mut burn, mut params) = (vec![], 0);
            let mut torch: Vec<Vec<f64>> = vec![vec![]; variants.len()];
            let mut last = vec![json!(null); variants.len()];
            for round in 0..b.rounds.max(1) {
                let (secs, samples, n) = burn_learner_round(&p, &rollouts, b.updates)?;
                params = n;
                burn.push(samples as f64 / secs);
                let mut line = format!("round {}: burn {:.0}", round + 1, burn[round]);
                for (i, (name, args)) in variants.iter().enumerate() {
                    last[i] = torch_round(&dir, b.updates, p.cfg.learner.device.name(), args)?;
                    torch[i].push(last[i]["samples_per_sec"].as_f64().unwrap_or(0.0));
                    line.push_str(&format!(", torch {name} {:.0}", torch[i][round]));
                }
                eprintln!("{line} samples/s");
            }
            let bm = median(burn.clone());
            let mut refs = serde_json::Map::new();
            for (i, (name, _)) in variants.iter().enumerate() {
                let tm = median(torch[i].clone());
                let l = &last[i];
                refs.insert(
                    name.to_string(),
                    json!({"samples_per_sec": tm, "rounds": torch[i], "ratio": bm / tm.max(1e-9),
                           "screen": l["screen"], "core": l["core"], "params": l["params"]}),
                );
            }
            let first = &last[0];
            let oni_way = median(torch[0].clone());
            let mut v = head;
            v.as_object_mut().unwrap().extend(
                json!({"params": params, "samples_per_sec": bm, "steps_per_sec": bm, "rounds": burn,
                "ratio_vs_reference": bm / oni_way.max(1e-9),
                "burn": {"version": "0.21", "backend": p.cfg.learner.device.name(),
                         "threads": rayon::current_num_threads(), "gemm_kernel": oni_policy::cpu_level(), "fused_kernels": oni_policy::simd_level(),
                         "allocator": "jemalloc (built in; oversize_threshold:0, decay off)"},
                "reference": {"framework": "torch", "version": first["torch"], "threads": first["threads"],
                              "allocator": first["allocator"], "malloc_conf": first["malloc_conf"],
                              "cpu_capability": first["cpu_capability"], "mkldnn": first["mkldnn"],
                              "samples_per_sec": oni_way, "variants": refs}})
                .as_object()
                .unwrap()
                .clone(),
            );
            v
        }
        Some(other) => anyhow::bail!("--reference {other}: the only reference is `torch`"),
    };
    let _ = std::fs::remove_dir_all(&p.run_dir);
    println!("{result}");
    Ok(())
}

#[derive(Args)]
pub struct AnnotatorBench {
    #[command(flatten)]
    common: Common,
    /// OpenAI-compatible server, e.g. http://127.0.0.1:8090
    #[arg(long)]
    llm: String,
    #[arg(long, default_value_t = 200)]
    captions: usize,
}

/// Labels/s through the annotator (every caption submitted twice) against the same server
/// driven directly by a plain concurrent client with the same prompts, batches and
/// concurrency; and LLM prompts per unique caption.
pub async fn bench_annotator(b: AnnotatorBench) -> Result<()> {
    use oni_annotator::Core;
    use oni_annotator::{FileBank, LabelBank, LlmClient};
    let mut common = b.common.clone();
    common.set.push(format!("llm.base_url=\"{}\"", b.llm));
    common.set.push("telemetry.metrics_listen=\"\"".into());
    // the plain client below posts batches to /v1/completions: the annotator must too
    common.set.push("llm.api=\"completions\"".into());
    // captions that differ only in a number: each must be its own question here
    common.set.push("annotator.caption_key=[]".into());
    let cfg = crate::config::load(common.config.as_deref(), &common.set)?;
    let tag = std::process::id();
    let captions = |set: &str| -> Vec<String> {
        (0..b.captions).map(|i| format!("You see here {i} {set} gold pieces.")).collect()
    };

    // direct: plain reqwest, same prompts and batching, `concurrency` requests in flight
    let direct_caps = captions("direct");
    let prompts: Vec<String> = direct_caps.iter().map(|c| cfg.prompts.classification_prompt(c)).collect();
    let http = reqwest::Client::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(cfg.llm.concurrency.max(1)));
    let t0 = Instant::now();
    let url = format!("{}/v1/completions", b.llm.trim_end_matches('/'));
    let grammar = r#"root ::= "{\"helpful\": " ("true" | "false") "}""#;
    let jobs = prompts.chunks(cfg.llm.batch.max(1)).map(|chunk| {
        let (http, sem, url) = (http.clone(), sem.clone(), url.clone());
        let body = json!({"model": cfg.llm.model, "prompt": chunk, "temperature": cfg.llm.temperature,
                          "max_tokens": cfg.llm.max_tokens, "grammar": grammar});
        async move {
            let _p = sem.acquire().await.unwrap();
            let v: serde_json::Value = http.post(url).json(&body).send().await?.json().await?;
            Ok::<usize, reqwest::Error>(v["choices"].as_array().map_or(0, |c| c.len()))
        }
    });
    let answered: usize = futures::future::join_all(jobs).await.into_iter().map(|r| r.unwrap_or(0)).sum();
    let direct_secs = t0.elapsed().as_secs_f64();

    // through the annotator
    let dir = std::env::temp_dir().join(format!("oni-bench-annotator-{tag}"));
    let bank: Arc<dyn LabelBank> = Arc::new(FileBank::open(&dir)?);
    let llm = LlmClient::new(cfg.llm.clone())?;
    let core = Core::new(cfg.annotator.clone(), cfg.prompts.clone(), llm, bank.clone())?;
    let mut workers = TaskGroup::new();
    core.spawn_workers(&mut workers);
    let caps = captions("annotated");
    let t1 = Instant::now();
    for half in caps.chunks(caps.len().div_ceil(2).max(1)) {
        core.submit(half).map_err(|e| anyhow::anyhow!("{e}"))?;
        core.submit(half).map_err(|e| anyhow::anyhow!("{e}"))?; // duplicates must not be asked again
    }
    while bank.len()? < caps.len() && t1.elapsed() < Duration::from_secs(3600) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let annot_secs = t1.elapsed().as_secs_f64();
    workers.shutdown(oni_proto::tasks::STOP_DEADLINE).await?;
    let _ = std::fs::remove_dir_all(&dir);
    let direct = answered as f64 / direct_secs;
    let through = bank.len()? as f64 / annot_secs;
    println!(
        "{}",
        json!({"bench": "annotator", "llm": b.llm, "captions": b.captions, "batch": cfg.llm.batch,
               "concurrency": cfg.llm.concurrency,
               "labels_per_sec": through, "direct_labels_per_sec": direct, "ratio": through / direct,
               "llm_prompts_per_unique_caption": core.llm().prompts_sent() as f64 / b.captions as f64})
    );
    Ok(())
}
