//! `oni run --config configs/keyroom.toml` learns keyroom-small from the extrinsic reward on
//! a 2-core CPU, leaves a complete run directory, and serves Prometheus metrics meanwhile.

mod support;
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use support::*;

fn scrape(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

#[test]
fn keyroom_small_reaches_success_rate_0_8() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("keyroom");
    let mport = free_port();
    let listen = format!("telemetry.metrics_listen=\"127.0.0.1:{mport}\"");
    let run_dir_s = run_dir.display().to_string();
    let mut p = Proc::start(
        "run",
        dir.path(),
        &["run", "--config", "configs/keyroom.toml", "--run-dir", &run_dir_s, "--set", &listen],
    );

    // While it trains, /metrics carries the core families.
    let start = Instant::now();
    let mut text = String::new();
    while start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_secs(3));
        text = scrape(mport).unwrap_or_default();
        if text.contains("oni_policy_lag_versions_bucket") && text.contains("oni_episode_return_bucket") {
            break;
        }
    }
    for family in [
        "oni_env_steps_total{role=\"actor\"}",
        "oni_env_steps_total{role=\"learner\"}",
        "oni_policy_lag_versions_bucket",
        "oni_episode_return_bucket{kind=\"extrinsic\"",
        "oni_episodes_total",
        "oni_queue_depth{queue=\"learner_rollouts\"}",
        "oni_learner_loss{term=\"policy\"}",
        "oni_learner_grad_norm",
        "oni_learner_approx_kl",
        "oni_learner_clip_fraction",
        "oni_policy_version",
        "oni_process_resident_memory_bytes",
    ] {
        assert!(text.contains(family), "/metrics lacks {family}:\n{text}");
    }

    let deadline = Instant::now() + Duration::from_secs(600);
    while p.alive() {
        assert!(Instant::now() < deadline, "oni run did not finish in 10 minutes:\n{}", p.log_text());
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(p.child.wait().unwrap().success(), "{}", p.log_text());

    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("summary.json")).expect("summary.json")).unwrap();
    for key in ["env_steps", "wall_seconds", "steps_per_second", "episodes", "success_rate", "mean_extrinsic_return"] {
        assert!(summary.get(key).is_some(), "summary.json lacks {key}: {summary}");
    }
    let success = summary["success_rate"].as_f64().unwrap();
    assert!(success >= 0.8, "success rate {success} after {} steps:\n{summary}", summary["env_steps"]);
    assert!(summary["env_steps"].as_u64().unwrap() >= 1_000_000);

    assert!(run_dir.join("config.toml").exists());
    let rows = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert!(rows.lines().count() >= 3, "metrics.jsonl too short");
    let ckpts: Vec<_> = std::fs::read_dir(run_dir.join("checkpoints"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("ckpt-"))
        .collect();
    assert!(!ckpts.is_empty(), "no checkpoint written");
    for f in ["model.bin", "optim.bin", "state.json", "config.toml"] {
        assert!(ckpts[0].path().join(f).exists(), "checkpoint lacks {f}");
    }
}
