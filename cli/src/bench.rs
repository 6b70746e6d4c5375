//! `oni bench`: throughput numbers, each run printing one JSON object.

use crate::roles::{self, Prepared};
use crate::{device, with_backend, Common};
use anyhow::Result;
use clap::{Args, Subcommand};
use oni_actor::stepping::ActorCounters;
use oni_env::{make_env, EnvConfig, ObsBuf, MESSAGE_LEN};
use oni_learner::batch::RewardMix;
use oni_learner::trainer::Trainer;
use oni_proto::v1::Rollout;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Simulation only: random actions, no policy.
    Env(EnvBench),
    /// The whole loop (actors, gRPC, learner) for a fixed time.
    E2e(E2eBench),
    /// Learner updates on synthetic rollouts (samples/s), on the configured device.
    Learner(LearnerBench),
    /// Labels/s through the annotator against a plain client on the same LLM server.
    Annotator(AnnotatorBench),
    /// Success rate of several presets (e.g. extrinsic-only vs ONI) at one step budget.
    Learning(crate::learning::LearningBench),
    /// Env-hub protocol overhead: steps/s of an instant env attached from Python, per batch size.
    Attach(AttachBench),
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
}

#[derive(Args)]
pub struct E2eBench {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
}

#[derive(Args)]
pub struct LearnerBench {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_t = 10)]
    updates: usize,
}

pub async fn run(cmd: BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Env(b) => bench_env(b),
        BenchCmd::E2e(b) => bench_e2e(b).await,
        BenchCmd::Learner(b) => bench_learner(b),
        BenchCmd::Annotator(b) => bench_annotator(b).await,
        BenchCmd::Learning(b) => crate::learning::bench_learning(b).await,
        BenchCmd::Attach(b) => bench_attach(b).await,
    }
}

/// Starts a random-action hub on a loopback port and runs `python -m oni_env.bench` against
/// it once per batch size; prints one JSON object with steps/s for each.
async fn bench_attach(b: AttachBench) -> Result<()> {
    let python = b.python.clone().unwrap_or_else(crate::learning::project_python);
    let mut rows = Vec::new();
    for &n in &b.envs {
        let (stop_tx, stop_rx) = watch::channel(false);
        let cfg = oni_actor::config::HubConfig { listen: "127.0.0.1:0".into(), ..Default::default() };
        let addr = oni_actor::hub::serve_random(cfg, stop_rx).await?.to_string();
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
        let _ = stop_tx.send(true);
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
    let cfg = EnvConfig { name: b.env.clone(), seed: 1, ..Default::default() };
    make_env(&cfg)?; // fail early on an unknown name
    let deadline = Duration::from_secs_f64(b.seconds);
    let threads: Vec<_> = (0..b.threads.max(1))
        .map(|t| {
            let cfg = cfg.clone();
            std::thread::spawn(move || -> Result<(u64, u64)> {
                let mut env = make_env(&cfg)?;
                let spec = env.spec().clone();
                let (mut g, mut s, mut m) =
                    (vec![0u16; spec.crop_len()], vec![0f32; spec.stats_dim], vec![0u8; MESSAGE_LEN]);
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1);
                let mut episodes = 0u64;
                env.reset(t as u64, ObsBuf { glyphs: &mut g, stats: &mut s, message: &mut m })?;
                let start = Instant::now();
                let mut steps = 0u64;
                while start.elapsed() < deadline {
                    for _ in 0..4096 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let a = (x % spec.num_actions as u64) as usize;
                        let out = env.step(a, ObsBuf { glyphs: &mut g, stats: &mut s, message: &mut m })?;
                        if out.done {
                            episodes += 1;
                            env.reset(x, ObsBuf { glyphs: &mut g, stats: &mut s, message: &mut m })?;
                        }
                    }
                    steps += 4096;
                }
                Ok((steps, episodes))
            })
        })
        .collect();
    let start = Instant::now();
    let mut steps = 0;
    let mut episodes = 0;
    for t in threads {
        let (s, e) = t.join().expect("bench thread")?;
        steps += s;
        episodes += e;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"bench": "env", "env": b.env, "threads": b.threads, "steps": steps, "episodes": episodes,
               "seconds": secs, "steps_per_sec": steps as f64 / secs})
    );
    Ok(())
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
    roles::init_metrics(&p.cfg)?;
    let learner = roles::start_learner(&p).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut counters = Vec::new();
    let mut actors = Vec::new();
    for i in 0..p.cfg.actor.count.max(1) {
        let c = Arc::new(ActorCounters::default());
        counters.push(c.clone());
        actors.push(roles::spawn_actor(&p.cfg, learner.addr.to_string(), i, c, stop_rx.clone())?);
    }
    // Warm up until the first update went through, then measure.
    let warm = Instant::now();
    while learner.stats.snapshot().updates < 2 && warm.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let actor_steps = || counters.iter().map(|c| c.env_steps.load(Ordering::Relaxed)).sum::<u64>();
    let (l0, a0, t0) = (learner.stats.snapshot().env_steps, actor_steps(), Instant::now());
    tokio::time::sleep(Duration::from_secs_f64(b.seconds)).await;
    let secs = t0.elapsed().as_secs_f64();
    let snap = learner.stats.snapshot();
    let (l1, a1) = (snap.env_steps, actor_steps());
    let _ = stop_tx.send(true);
    for a in actors {
        let _ = a.await;
    }
    learner.shutdown().await;
    let _ = std::fs::remove_dir_all(&p.run_dir);
    println!(
        "{}",
        json!({"bench": "e2e", "env": p.cfg.env.name, "seconds": secs,
               "steps_per_sec": (l1 - l0) as f64 / secs,
               "actor_steps_per_sec": (a1 - a0) as f64 / secs,
               "updates": snap.updates, "mean_policy_lag": snap.mean_policy_lag,
               "actors": p.cfg.actor.count, "envs_per_actor": p.cfg.actor.num_envs,
               "batch_rollouts": p.cfg.learner.batch_rollouts, "rollout_len": p.cfg.learner.rollout_len})
    );
    Ok(())
}

/// Random but valid rollouts shaped for the configured env and policy.
fn synthetic_rollouts(p: &Prepared, n: usize) -> Result<Vec<Rollout>> {
    let spec = oni_env::registry::env_spec(&p.cfg.env)?;
    let t = p.cfg.learner.rollout_len;
    let h = p.cfg.policy.core_hidden;
    let mut x = 12345u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    Ok((0..n)
        .map(|i| Rollout {
            run_id: "bench".into(),
            actor_id: "bench".into(),
            env_slot: i as u32,
            sequence: 0,
            policy_version: 0,
            length: t as u32,
            initial_state: vec![0.0; h],
            glyphs: (0..(t + 1) * spec.crop_len())
                .flat_map(|_| ((next() % spec.num_glyphs as u64) as u16).to_le_bytes())
                .collect(),
            stats: (0..(t + 1) * spec.stats_dim).map(|_| (next() % 100) as f32 / 100.0).collect(),
            messages: vec![0; (t + 1) * MESSAGE_LEN],
            actions: (0..t).map(|_| (next() % spec.num_actions as u64) as u32).collect(),
            behaviour_logprobs: vec![-(spec.num_actions as f32).ln(); t],
            rewards: (0..t).map(|_| (next() % 2) as f32).collect(),
            dones: (0..t).map(|_| next() % 20 == 0).collect(),
            captions: vec![String::new(); t],
            intrinsic_rewards: vec![],
            reward_model_version: 0,
            episodes: vec![],
            intrinsic_decay: vec![],
        })
        .collect())
}

fn bench_learner(b: LearnerBench) -> Result<()> {
    let mut common = b.common.clone();
    common.set.push("telemetry.metrics_listen=\"\"".into());
    if common.run_dir.is_none() {
        common.run_dir = Some(std::env::temp_dir().join(format!("oni-bench-learner-{}", std::process::id())));
    }
    let p = roles::prepare(&common)?;
    let rollouts = synthetic_rollouts(&p, p.cfg.learner.batch_rollouts)?;
    let spec = oni_env::registry::env_spec(&p.cfg.env)?;
    let kind = device::parse("learner.device", &p.cfg.learner.device)?;
    let mix = RewardMix { extrinsic_coef: 1.0, intrinsic_coef: 0.0, clip: 10.0 };
    let (secs, samples) = with_backend!(kind, autodiff, |B, dev| {
        let mut tr = Trainer::<B>::new(p.cfg.learner.clone(), p.cfg.policy.clone(), spec.clone(), mix, dev);
        tr.train(&rollouts); // warm-up (kernel compilation on GPU)
        let start = Instant::now();
        let mut samples = 0;
        for _ in 0..b.updates.max(1) {
            samples += tr.train(&rollouts).samples;
        }
        let _ = tr.weights_bytes(); // forces the device queue to drain
        (start.elapsed().as_secs_f64(), samples)
    });
    let _ = std::fs::remove_dir_all(&p.run_dir);
    println!(
        "{}",
        json!({"bench": "learner", "device": p.cfg.learner.device, "env": p.cfg.env.name,
               "batch_rollouts": p.cfg.learner.batch_rollouts, "rollout_len": p.cfg.learner.rollout_len,
               "updates": b.updates, "seconds": secs, "samples_per_sec": samples as f64 / secs,
               "steps_per_sec": samples as f64 / secs})
    );
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
    use oni_annotator::service::Core;
    use oni_annotator::{FileBank, LabelBank, LlmClient};
    let mut common = b.common.clone();
    common.set.push(format!("llm.base_url=\"{}\"", b.llm));
    common.set.push("telemetry.metrics_listen=\"\"".into());
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
    let (stop_tx, stop) = watch::channel(false);
    let workers = core.spawn_workers(stop);
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
    let _ = stop_tx.send(true);
    for w in workers {
        let _ = w.await;
    }
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
