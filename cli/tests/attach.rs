//! Environments attached from Python (`clients/python`, the `oni_env` package) to a real
//! `oni run` over the env hub: CartPole trains, MiniHack's messages become the annotator's
//! captions, and every kind of bad client is refused while a good one keeps stepping.

mod support;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// The project venv's python, where scripts/setup.sh installed `oni_env` and its deps.
fn python() -> PathBuf {
    let p = oni_cache().join("venv/bin/python");
    assert!(p.exists(), "{} missing: run scripts/setup.sh", p.display());
    p
}

/// A Python client process, killed when dropped.
struct Py(Child);

impl Py {
    fn start(args: &[&str], log: &Path) -> Py {
        let f = std::fs::File::create(log).unwrap();
        let child = Command::new(python())
            .args(args)
            .current_dir(repo_root().join("clients/python"))
            .env("PYTHONWARNINGS", "ignore")
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f))
            .spawn()
            .expect("start python");
        Py(child)
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `oni run` with `config`, its hub on `hub`, as a child whose stderr goes to `dir/oni.log`.
fn oni_run(config: &str, dir: &Path, hub: u16, extra: &[&str]) -> Child {
    let log = std::fs::File::create(dir.join("oni.log")).unwrap();
    Command::new(oni())
        .args(["run", "--config", config, "--run-dir", dir.join("run").to_str().unwrap()])
        .args(["--set", "telemetry.metrics_listen=\"\"", "--set", &format!("actor.hub.listen=\"127.0.0.1:{hub}\"")])
        .args(extra)
        .current_dir(repo_root())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start oni run")
}

fn wait_exit(child: &mut Child, limit: Duration, dir: &Path) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            panic!(
                "oni run did not finish in {limit:?}:\n{}",
                std::fs::read_to_string(dir.join("oni.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("run/summary.json")).unwrap()).unwrap()
}

fn wait_port(port: u16) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(30), "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_cartpole_attached_from_python_trains() {
    cartpole_trains(&[]);
}

/// The same with the learner's central inference choosing the actions.
#[test]
fn a_cartpole_attached_from_python_trains_with_remote_inference() {
    cartpole_trains(&["--set", "actor.inference=\"remote\""]);
}

fn cartpole_trains(extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let hub = free_port();
    let mut args = vec!["--max-env-steps", "250000"];
    args.extend_from_slice(extra);
    let mut run = oni_run("configs/attached-cartpole.toml", dir.path(), hub, &args);
    wait_port(hub);
    let addr = format!("127.0.0.1:{hub}");
    let _client =
        Py::start(&["examples/cartpole.py", "--address", &addr, "--num-envs", "16"], &dir.path().join("client.log"));
    let status = wait_exit(&mut run, Duration::from_secs(400), dir.path());
    assert!(status.success(), "{}", std::fs::read_to_string(dir.path().join("oni.log")).unwrap());

    // the mean return at the first progress row with 100 episodes against the end of the run
    let jsonl = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = jsonl.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let early = rows.iter().find(|r| r["episodes"].as_u64().unwrap_or(0) >= 100).expect("100 episodes")
        ["mean_extrinsic_return"]
        .as_f64()
        .unwrap();
    let s = summary(dir.path());
    let last = s["mean_extrinsic_return"].as_f64().unwrap();
    eprintln!(
        "CartPole over the env hub {extra:?}: mean return {early:.1} early, {last:.1} after {} steps",
        s["env_steps"]
    );
    assert!(s["env_steps"].as_u64().unwrap() >= 250_000);
    // A uniformly random policy balances about 22 steps on average; the first progress row
    // with 100 episodes already reflects a few updates, more of them the faster the learner.
    assert!(last >= 100.0 && last > early, "return did not rise: {early:.1} -> {last:.1}");
    assert_eq!(s["rollouts_rejected"].as_u64(), Some(0));

    // `oni run` recorded the first client's first env: lines and a summary, no picture
    let recorded = oni_actor::record::list(&dir.path().join("run/recordings"));
    assert!(!recorded.is_empty(), "no recording of the attached env");
    let path = |ext: &str| PathBuf::from(format!("{}{ext}", recorded[0].display()));
    let summary: oni_actor::record::Summary = serde_json::from_slice(&std::fs::read(path(".json")).unwrap()).unwrap();
    assert_eq!((summary.env.as_str(), summary.ttyrec), ("attached", false));
    assert!(!path(".ttyrec").exists());
    let lines = std::fs::read_to_string(path(".steps.jsonl")).unwrap();
    assert_eq!(lines.lines().count() as u64, summary.steps);
    let rewards: f64 =
        lines.lines().map(|l| serde_json::from_str::<oni_actor::record::StepLine>(l).unwrap().reward as f64).sum();
    assert_eq!(rewards, summary.extrinsic_return);
    assert!(
        summary.steps >= 1 && summary.extrinsic_return == summary.steps as f64,
        "CartPole pays 1 a step: {summary:?}"
    );
}

#[test]
fn minihack_messages_reach_the_annotator_as_captions() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, judge) = (free_port(), free_port());
    let _judge = Proc::start("judge", dir.path(), &["judge", "--listen", &format!("127.0.0.1:{judge}")]);
    let llm = format!("llm.base_url=\"http://127.0.0.1:{judge}\"");
    let mut run =
        oni_run("configs/attached-minihack.toml", dir.path(), hub, &["--max-env-steps", "12000", "--set", &llm]);
    wait_port(hub);
    let addr = format!("127.0.0.1:{hub}");
    let _client = Py::start(
        &["examples/minihack_keyroom.py", "--address", &addr, "--num-envs", "4"],
        &dir.path().join("client.log"),
    );
    let status = wait_exit(&mut run, Duration::from_secs(400), dir.path());
    let log = std::fs::read_to_string(dir.path().join("oni.log")).unwrap();
    assert!(status.success(), "{log}");
    assert!(log.contains("env=MiniHack-KeyRoom-S5-v0"), "the client did not attach:\n{log}");

    let labels = std::fs::read_to_string(dir.path().join("run/labels/labels.jsonl")).expect("a label bank");
    let captions: Vec<String> = labels
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["caption"].as_str().map(str::to_string))
        .collect();
    eprintln!("{} captions labelled, e.g. {:?}", captions.len(), captions.iter().take(5).collect::<Vec<_>>());
    // NetHack's own wording, which only the attached MiniHack env produces in this run
    assert!(
        captions
            .iter()
            .any(|c| c.contains("solid stone") || c.contains("wall") || c.contains("key") || c.contains("door")),
        "no MiniHack message among the captions: {captions:?}"
    );
}

#[test]
fn bad_clients_are_refused_while_a_good_one_keeps_training() {
    let dir = tempfile::tempdir().unwrap();
    let hub = free_port();
    let mut run = oni_run(
        "configs/attached-cartpole.toml",
        dir.path(),
        hub,
        &[
            "--max-env-steps",
            "0",
            "--set",
            "transport.token=\"sekret\"",
            "--set",
            "actor.hub.max_clients=2",
            "--set",
            "run.max_seconds=300",
        ],
    );
    wait_port(hub);
    let addr = format!("127.0.0.1:{hub}");
    let out: Output = Command::new(python())
        .args(["tests/bad_inputs.py", "--address", &addr, "--token", "sekret"])
        .current_dir(repo_root().join("clients/python"))
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{text}");
    // SIGTERM: the run ends cleanly and writes its summary
    let _ = Command::new("kill").args(["-TERM", &run.id().to_string()]).status();
    let status = wait_exit(&mut run, Duration::from_secs(60), dir.path());
    assert!(out.status.success(), "bad-input script failed:\n{text}");
    assert!(status.success(), "{}", std::fs::read_to_string(dir.path().join("oni.log")).unwrap());
    let s = summary(dir.path());
    assert!(s["env_steps"].as_u64().unwrap() > 0, "nothing was trained");
    assert_eq!(s["rollouts_rejected"].as_u64(), Some(0), "a rollout from a bad or killed client reached the learner");
}

#[test]
fn the_shipped_python_stubs_match_the_proto() {
    let out = Command::new(python())
        .args(["gen_stubs.py", "--check"])
        .current_dir(repo_root().join("clients/python"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Env steps the run in `dir` has trained so far (from its progress log).
fn trained_steps(dir: &Path) -> u64 {
    let text = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["env_steps"].as_u64())
        .max()
        .unwrap_or(0)
}

fn wait_trained(dir: &Path, what: &str) {
    let t = Instant::now();
    while trained_steps(dir) == 0 {
        assert!(t.elapsed() < Duration::from_secs(120), "{what}: nothing trained");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_client_reconnects_when_its_actor_dies_and_comes_back() {
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let hub = free_port();
    let forever = ["--max-env-steps", "0", "--set", "run.max_seconds=300", "--set", "run.progress_interval_secs=0.5"];
    let mut run = oni_run("configs/attached-cartpole.toml", first.path(), hub, &forever);
    wait_port(hub);
    let addr = format!("127.0.0.1:{hub}");
    let log = first.path().join("client.log");
    let mut client = Py::start(&["examples/cartpole.py", "--address", &addr, "--num-envs", "8"], &log);
    wait_trained(first.path(), "first run");
    let _ = run.kill(); // SIGKILL: the stream breaks mid-step
    let _ = run.wait();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        client.0.try_wait().unwrap().is_none(),
        "the client gave up when its actor died:\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let mut again = oni_run("configs/attached-cartpole.toml", second.path(), hub, &forever);
    wait_trained(second.path(), "the restarted run (the client did not reconnect)");
    let _ = again.kill();
    let _ = again.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("reconnecting"), "no reconnect logged:\n{text}");
}
