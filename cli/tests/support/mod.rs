//! Helpers for tests that start real `oni` processes on 127.0.0.1.
#![allow(dead_code)]

use oni_proto::v1::learner_client::LearnerClient;
use oni_proto::v1::{GetInfoRequest, LearnerInfo};
use oni_proto::AuthInterceptor;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub use oni_test_support::*;

pub fn oni() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_oni"))
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A child process killed (SIGKILL) when dropped; its stderr goes to a log file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn start(name: &str, dir: &Path, args: &[&str]) -> Proc {
        Proc::spawn(name, dir, Command::new(oni()).args(args))
    }

    /// Starts `cmd` (from the repository root, logging at info to `dir/name.log`).
    pub fn spawn(name: &str, dir: &Path, cmd: &mut Command) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let f = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = cmd
            .current_dir(repo_root())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(f))
            .spawn()
            .expect("start oni");
        Proc { child, log }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub type Client = LearnerClient<InterceptedService<Channel, AuthInterceptor>>;

pub async fn client(addr: &str, token: Option<&str>) -> Option<Client> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .ok()?;
    Some(LearnerClient::with_interceptor(ch, AuthInterceptor::new(token).unwrap()))
}

pub async fn info(addr: &str, token: Option<&str>) -> Option<LearnerInfo> {
    let mut c = client(addr, token).await?;
    c.get_info(GetInfoRequest {}).await.ok().map(|r| r.into_inner())
}

/// Polls `f` until it yields, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the learner at `addr` has trained at least `min` env steps; returns the count.
pub async fn wait_for_steps(what: &str, timeout: Duration, addr: &str, token: Option<&str>, min: u64) -> u64 {
    wait_for(
        what,
        timeout,
        || async move { info(addr, token).await.filter(|i| i.env_steps >= min).map(|i| i.env_steps) },
    )
    .await
}

/// Learner arguments for a small keyroom run on `port` in `run_dir`.
pub fn learner_args(port: u16, run_dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "learner".into(),
        "--config".into(),
        "configs/keyroom.toml".into(),
        "--run-dir".into(),
        run_dir.display().to_string(),
        "--set".into(),
        format!("learner.listen=\"127.0.0.1:{port}\""),
        "--set".into(),
        "telemetry.metrics_listen=\"\"".into(),
        "--set".into(),
        "learner.batch_rollouts=8".into(),
        "--set".into(),
        "run.max_env_steps=0".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

pub fn actor_args(port: u16, id: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "actor".into(),
        "--config".into(),
        "configs/keyroom.toml".into(),
        "--run-dir".into(),
        std::env::temp_dir().join(format!("oni-actor-{id}-{port}")).display().to_string(),
        "--set".into(),
        format!("actor.learner=\"127.0.0.1:{port}\""),
        "--set".into(),
        format!("actor.actor_id=\"{id}\""),
        "--set".into(),
        "actor.num_envs=8".into(),
        "--set".into(),
        "telemetry.metrics_listen=\"\"".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// `oni annotator` arguments: keyroom's config, serving on `listen`, asking the LLM at
/// `llm_url`, its run directory `run_dir`; `sets` are further `key=value` settings.
pub fn annotator_args(listen: &str, llm_url: &str, run_dir: &Path, sets: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["annotator", "--config", "configs/keyroom.toml", "--run-dir"].map(String::from).into();
    v.push(run_dir.display().to_string());
    let own = [format!("annotator.listen=\"{listen}\""), format!("llm.base_url=\"{llm_url}\"")];
    for s in own.iter().map(String::as_str).chain(sets.iter().copied()) {
        v.extend(["--set".to_string(), s.to_string()]);
    }
    v
}

/// Words for captions that ask distinct questions.
pub const ITEMS: [&str; 12] =
    ["ring", "wand", "scroll", "amulet", "gem", "potion", "dagger", "helmet", "cloak", "lamp", "shield", "whistle"];

pub fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The Prometheus text of a `/metrics` endpoint, or `None` while it does not answer.
pub fn scrape(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// The value of the first sample of `series` (a metric name with its labels, exactly as
/// exported) in a scrape.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    oni_telemetry::sample(text, series)
}

/// The env steps of the newest checkpoint in a run directory.
/// `env_steps=N` of the last line of a learner's log holding `event` ("checkpoint written",
/// "resumed from checkpoint").
pub fn logged_steps(log: &str, event: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains(event))?;
    line.split("env_steps=").nth(1)?.split_whitespace().next()?.parse().ok()
}

pub fn newest_checkpoint_steps(run_dir: &Path) -> Option<u64> {
    let mut dirs: Vec<_> = std::fs::read_dir(run_dir.join("checkpoints")).ok()?.flatten().map(|e| e.path()).collect();
    dirs.retain(|p| p.file_name().unwrap().to_str().unwrap().starts_with("ckpt-"));
    dirs.sort();
    let state = std::fs::read(dirs.last()?.join("state.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&state).ok()?;
    v["env_steps"].as_u64()
}

impl Proc {
    /// Sends SIGTERM and waits up to `limit` for the process to exit; its status and how
    /// long it took, or None if it is still running.
    pub fn terminate(&mut self, limit: Duration) -> Option<(std::process::ExitStatus, Duration)> {
        let start = std::time::Instant::now();
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        while start.elapsed() < limit {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some((st, start.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// Starts `oni args` inside a network namespace.
pub fn start_in(net: &Netns, name: &str, dir: &Path, args: &[&str]) -> Proc {
    Proc::spawn(name, dir, net.command(oni()).args(args))
}

/// The sum of every sample of a metric family in a scrape (all label sets).
pub fn family_sum(text: &str, family: &str) -> f64 {
    text.lines()
        .filter(|l| l.strip_prefix(family).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        + 0.0 // an empty sum is -0
}
