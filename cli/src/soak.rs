//! `oni bench soak`: the whole loop (learner, two actors, the annotator with a rule judge,
//! reward-model pulls, checkpoints every 30 s) run for a long time in an `oni run` child,
//! beside a second `oni run` serving attached environments to a Python client that lets go
//! and attaches again every minute; both children's memory, file descriptors and threads and
//! the label bank's size are sampled as they go. A system that leaks shows it here as growth
//! after the warm-up.

use crate::judge::{self, Rule};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct SoakBench {
    #[arg(long, default_value = "configs/keyroom-sparse-classification.toml")]
    config: PathBuf,
    #[arg(long, default_value_t = 60.0)]
    minutes: f64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 10)]
    every: u64,
    /// Growth is measured from this minute on (default: 5, or a third of a shorter run).
    #[arg(long)]
    warm_minutes: Option<f64>,
    /// Where the run directory goes (default: a temporary directory, removed afterwards).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Seconds each attached-client session lasts before it lets go and attaches again (0:
    /// no attached run).
    #[arg(long, default_value_t = 60.0)]
    attach_every: f64,
}

/// A child process killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The attached-environment run and its churning client.
struct Attached {
    run: Child,
    _client: Child,
    dir: PathBuf,
    /// The run's `/metrics` endpoint.
    metrics: String,
}

/// Starts `oni run` on configs/attached-cartpole.toml in `dir` for `seconds`, its hub on a
/// free port, and the Python client that attaches for `every` seconds at a time.
fn start_attached(exe: &Path, dir: &Path, seconds: u64, every: f64) -> Result<Attached> {
    let hub = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string();
    std::fs::create_dir_all(dir)?;
    let log = std::fs::File::create(dir.join("soak.log"))?;
    let run = std::process::Command::new(exe)
        .args(["run", "--config", "configs/attached-cartpole.toml", "--run-dir"])
        .arg(dir)
        .args(["--set", &format!("actor.hub.listen=\"{hub}\""), "--set", "run.max_env_steps=0"])
        .args([
            "--set",
            &format!("run.max_seconds={seconds}"),
            "--set",
            &format!("telemetry.metrics_listen=\"{metrics}\""),
        ])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting the attached-environment run")?;
    let run = Child(run);
    let t = Instant::now();
    while std::net::TcpStream::connect(hub).is_err() {
        anyhow::ensure!(t.elapsed() < Duration::from_secs(60), "the attached run's hub did not open on {hub}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let client_log = std::fs::File::create(dir.join("client.log"))?;
    let client = std::process::Command::new(crate::learning::project_python())
        .arg("clients/python/tests/churn.py")
        .args(["--address", &hub.to_string(), "--every", &every.to_string()])
        .env("PYTHONWARNINGS", "ignore")
        .env("PYTHONPATH", "clients/python")
        .stdout(client_log.try_clone()?)
        .stderr(client_log)
        .spawn()
        .context("starting the attached client (the project venv's python)")?;
    Ok(Attached { run, _client: Child(client), dir: dir.to_path_buf(), metrics })
}

/// Sessions the churning client finished.
fn sessions(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("client.log"))
        .map_or(0, |t| t.lines().filter(|l| l.starts_with("{\"session\"")).count() as u64)
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    secs: f64,
    rss_kib: u64,
    fds: u64,
    threads: u64,
    labels: u64,
    env_steps: u64,
    /// The allocator's live and resident bytes (from the run's `/metrics`), in KiB.
    heap_live_kib: u64,
    heap_resident_kib: u64,
}

fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()
}

fn count_dir(path: &str) -> u64 {
    std::fs::read_dir(path).map(|d| d.count() as u64).unwrap_or(0)
}

fn count_lines(path: &Path) -> u64 {
    std::fs::read(path).map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64).unwrap_or(0)
}

fn last_env_steps(metrics: &Path) -> u64 {
    let text = std::fs::read_to_string(metrics).unwrap_or_default();
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v["env_steps"].as_u64())
        .unwrap_or(0)
}

/// The heap gauges of the process serving `/metrics` at `endpoint`, in KiB (0 when unread).
fn heap_kib(endpoint: &str) -> (u64, u64) {
    let Ok(text) = crate::scrape_metrics(endpoint, Duration::from_secs(5)) else {
        return (0, 0);
    };
    let kib = |name: &str| (oni_telemetry::sample(&text, name).unwrap_or(0.0) / 1024.0) as u64;
    (kib(oni_telemetry::metric_names::HEAP_ALLOCATED), kib(oni_telemetry::metric_names::HEAP_RESIDENT))
}

/// The highest value of the first and of the last fifth of the samples after the warm-up:
/// memory that the allocator hands back now and then moves in a saw-tooth, so growth is read
/// from peak to peak rather than from two single samples.
fn peaks(samples: &[Sample], warm: f64, value: impl Fn(&Sample) -> u64) -> Option<(u64, u64)> {
    let after: Vec<u64> = samples.iter().filter(|s| s.secs >= warm).map(value).collect();
    let w = (after.len() / 5).max(1);
    let first = after.iter().take(w).max()?;
    let last = after.iter().rev().take(w).max()?;
    Some((*first, *last))
}

fn sample(pid: u32, run_dir: &Path, started: Instant, metrics: &str) -> Sample {
    let (heap_live_kib, heap_resident_kib) = heap_kib(metrics);
    Sample {
        heap_live_kib,
        heap_resident_kib,
        secs: started.elapsed().as_secs_f64(),
        rss_kib: proc_status_kib(pid, "VmRSS:").unwrap_or(0),
        fds: count_dir(&format!("/proc/{pid}/fd")),
        threads: count_dir(&format!("/proc/{pid}/task")),
        labels: count_lines(&run_dir.join("labels/labels.jsonl")),
        env_steps: last_env_steps(&run_dir.join("metrics.jsonl")),
    }
}

pub async fn bench_soak(b: SoakBench) -> Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let judge_addr = listener.local_addr()?;
    let prompts = crate::config::load(Some(&b.config), &[])?.prompts;
    tokio::spawn(judge::serve(listener, Rule::new(prompts, judge::DEFAULT_KEYWORDS)));
    let temp = std::env::temp_dir().join(format!("oni-soak-{}", std::process::id()));
    let run_dir = b.run_dir.clone().unwrap_or_else(|| temp.clone());
    std::fs::create_dir_all(&run_dir).with_context(|| format!("--run-dir {}", run_dir.display()))?;
    let seconds = (b.minutes * 60.0).round().max(1.0) as u64;
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string();
    let sets = [
        "annotator.enabled=true".to_string(),
        format!("llm.base_url=\"http://{judge_addr}\""),
        "learner.checkpoint_interval_secs=30".into(),
        "actor.count=2".into(),
        format!("run.max_seconds={seconds}"),
        "run.max_env_steps=0".into(),
        format!("telemetry.metrics_listen=\"{metrics}\""),
    ];
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(["run", "--config"]).arg(&b.config).arg("--run-dir").arg(&run_dir);
    for s in &sets {
        cmd.args(["--set", s]);
    }
    let log = std::fs::File::create(run_dir.join("soak.log"))?;
    cmd.stdout(log.try_clone()?).stderr(log);
    let mut child = cmd.spawn().context("starting oni run")?;
    let pid = child.id();
    let mut attached = if b.attach_every > 0.0 {
        Some(start_attached(&std::env::current_exe()?, &run_dir.join("attached"), seconds, b.attach_every)?)
    } else {
        None
    };
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut attached_samples = Vec::new();
    eprintln!("soak: oni run (pid {pid}) for {:.1} min, sampling every {} s", b.minutes, b.every);
    let status = loop {
        tokio::time::sleep(Duration::from_secs(b.every.max(1))).await;
        if let Some(st) = child.try_wait()? {
            break st;
        }
        let s = sample(pid, &run_dir, started, &metrics);
        if s.secs + 2.0 > seconds as f64 {
            continue; // the run is stopping: its threads and files are going away
        }
        let a = attached.as_ref().map(|a| sample(a.run.0.id(), &a.dir, started, &a.metrics));
        println!(
            "{}",
            json!({"secs": s.secs, "rss_mib": s.rss_kib as f64 / 1024.0,
                   "heap_live_mib": s.heap_live_kib as f64 / 1024.0, "heap_resident_mib": s.heap_resident_kib as f64 / 1024.0,
                   "fds": s.fds, "threads": s.threads,
                   "labels": s.labels, "env_steps": s.env_steps,
                   "attached": a.map(|a| json!({"rss_mib": a.rss_kib as f64 / 1024.0, "fds": a.fds, "threads": a.threads,
                                                 "heap_live_mib": a.heap_live_kib as f64 / 1024.0,
                                                 "env_steps": a.env_steps}))})
        );
        samples.push(s);
        attached_samples.extend(a);
    };
    if !status.success() {
        bail!("oni run ended with {status}; see {}", run_dir.join("soak.log").display());
    }
    if let Some(a) = attached.as_mut() {
        let st = a.run.0.wait()?;
        anyhow::ensure!(st.success(), "the attached run ended with {st}; see {}", a.dir.join("soak.log").display());
    }
    let warm = b.warm_minutes.unwrap_or((b.minutes / 3.0).min(5.0)) * 60.0;
    let Some(first) = samples.iter().find(|s| s.secs >= warm).copied() else {
        bail!("no sample after the warm-up ({warm:.0} s): run longer");
    };
    let last = *samples.last().expect("a sample");
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(run_dir.join("summary.json"))?)?;
    let growth = |a: u64, b: u64| 100.0 * (b as f64 - a as f64) / (a as f64).max(1.0);
    let peak_report = |samples: &[Sample]| {
        peaks(samples, warm, |s| s.rss_kib).map(
            |(a, b)| json!({"first_mib": a as f64 / 1024.0, "last_mib": b as f64 / 1024.0, "growth_pct": growth(a, b)}),
        )
    };
    let attached_report = match (attached_samples.iter().find(|s| s.secs >= warm), attached_samples.last()) {
        (Some(w), Some(e)) => json!({
            "rss_mib": {"warm": w.rss_kib as f64 / 1024.0, "end": e.rss_kib as f64 / 1024.0,
                        "growth_pct": growth(w.rss_kib, e.rss_kib)},
            "rss_peaks": peak_report(&attached_samples),
            "heap_live_mib": {"warm": w.heap_live_kib as f64 / 1024.0, "end": e.heap_live_kib as f64 / 1024.0},
            "fds": {"warm": w.fds, "end": e.fds},
            "threads": {"warm": w.threads, "end": e.threads},
            "env_steps": e.env_steps,
            "sessions": attached.as_ref().map_or(0, |a| sessions(&a.dir)),
        }),
        _ => serde_json::Value::Null,
    };
    let steps_per_sec = (last.env_steps - first.env_steps) as f64 / (last.secs - first.secs).max(1e-9);
    println!(
        "{}",
        json!({
            "bench": "soak", "config": b.config, "minutes": b.minutes, "warm_seconds": warm,
            "rss_mib": {"warm": first.rss_kib as f64 / 1024.0, "end": last.rss_kib as f64 / 1024.0,
                        "growth_pct": growth(first.rss_kib, last.rss_kib)},
            "rss_peaks": peak_report(&samples),
            "heap_live_mib": {"warm": first.heap_live_kib as f64 / 1024.0, "end": last.heap_live_kib as f64 / 1024.0,
                              "growth_pct": growth(first.heap_live_kib, last.heap_live_kib)},
            "heap_resident_mib": {"warm": first.heap_resident_kib as f64 / 1024.0,
                                  "end": last.heap_resident_kib as f64 / 1024.0},
            "fds": {"warm": first.fds, "end": last.fds},
            "threads": {"warm": first.threads, "end": last.threads},
            "labels": {"warm": first.labels, "end": last.labels},
            "env_steps": last.env_steps, "steps_per_sec_after_warm": steps_per_sec,
            "rollouts_rejected": summary["rollouts_rejected"], "success_rate": summary["success_rate"],
            "attached": attached_report,
        })
    );
    if b.run_dir.is_none() {
        let _ = std::fs::remove_dir_all(&temp);
    }
    Ok(())
}
