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
        &[
            "run",
            "--config",
            "configs/keyroom.toml",
            "--run-dir",
            &run_dir_s,
            "--set",
            &listen,
            "--set",
            "learner.tensorboard=true",
        ],
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
        "oni_learner_grad_norm",
        "oni_policy_version",
        "oni_process_resident_memory_bytes",
    ] {
        assert!(text.contains(family), "/metrics lacks {family}:\n{text}");
    }
    for term in oni_learner::Term::ALL {
        let family = format!("oni_learner_loss{{term=\"{}\"}}", term.name());
        assert!(text.contains(&family), "/metrics lacks {family}:\n{text}");
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
    tensorboard_has_every_row(&run_dir, &rows);
    eval_plays_the_checkpoint(&run_dir);
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

/// TensorBoard's own reader finds every number of every `metrics.jsonl` row, at the row's
/// env step, in the run's event files.
fn tensorboard_has_every_row(run_dir: &std::path::Path, rows: &str) {
    const READ: &str = "import json, sys\n\
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n\
ea = EventAccumulator(sys.argv[1], size_guidance={'scalars': 0})\n\
ea.Reload()\n\
print(json.dumps({t: [[e.step, e.value] for e in ea.Scalars(t)] for t in ea.Tags()['scalars']}))";
    let out = std::process::Command::new(oni_cache().join("venv/bin/python"))
        .args(["-c", READ])
        .arg(run_dir.join("tensorboard"))
        .output()
        .expect("the project venv's python");
    assert!(out.status.success(), "tensorboard's reader failed: {}", String::from_utf8_lossy(&out.stderr));
    let read: std::collections::HashMap<String, Vec<(u64, f64)>> = serde_json::from_slice(&out.stdout).unwrap();
    let rows: Vec<serde_json::Value> = rows.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut expected: std::collections::HashMap<String, Vec<(u64, f64)>> = Default::default();
    for row in &rows {
        let step = row["env_steps"].as_u64().unwrap();
        let mut flat = Vec::new();
        numbers(row, "", &mut flat);
        for (tag, v) in flat {
            expected.entry(tag).or_default().push((step, v));
        }
    }
    assert!(expected.len() >= 10, "too few numbers in a row: {:?}", expected.keys());
    for (tag, points) in &expected {
        let got = read.get(tag).unwrap_or_else(|| panic!("TensorBoard lacks `{tag}`; it has {:?}", read.keys()));
        assert_eq!(got.len(), points.len(), "`{tag}`: {} points in TensorBoard, {} rows", got.len(), points.len());
        for ((s1, v1), (s2, v2)) in got.iter().zip(points) {
            assert_eq!(s1, s2, "`{tag}`: step");
            assert!((v1 - v2).abs() <= 1e-6 * v2.abs().max(1.0), "`{tag}` at step {s2}: {v1} against {v2}");
        }
    }
}

fn numbers(v: &serde_json::Value, path: &str, out: &mut Vec<(String, f64)>) {
    match v {
        serde_json::Value::Number(n) => out.push((path.to_string(), n.as_f64().unwrap())),
        serde_json::Value::Object(m) => {
            for (k, c) in m {
                numbers(c, &if path.is_empty() { k.clone() } else { format!("{path}/{k}") }, out);
            }
        }
        _ => {}
    }
}

/// `oni eval` plays the trained checkpoint: its success rate is the training run's (≥ 0.8
/// there) within sampling noise, the report's interval holds its mean, and a config of
/// another network or env is refused naming both.
fn eval_plays_the_checkpoint(run_dir: &std::path::Path) {
    let rd = run_dir.display().to_string();
    let out = std::process::Command::new(oni())
        .args(["eval", "--run-dir", &rd, "--episodes", "200", "--json", "-"])
        .output()
        .unwrap();
    assert!(out.status.success(), "oni eval failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["env"], "keyroom-small");
    assert_eq!(report["per_episode"].as_array().unwrap().len(), 200);
    let s = &report["summary"]["success_rate"];
    let (mean, lo, hi) = (s["mean"].as_f64().unwrap(), s["ci95"][0].as_f64().unwrap(), s["ci95"][1].as_f64().unwrap());
    assert!(mean >= 0.6 && lo <= mean && mean <= hi && hi - lo < 0.2, "success {s}");
    let successes = report["per_episode"].as_array().unwrap().iter().filter(|e| e["success"] == true).count();
    assert_eq!(successes as f64 / 200.0, mean);

    // --record: the episodes the first env of each loop played, each as long as its lines
    let rec = run_dir.join("eval-recordings");
    let out = std::process::Command::new(oni())
        .args(["eval", "--run-dir", &rd, "--episodes", "20", "--loops", "1", "--record"])
        .arg(&rec)
        .output()
        .unwrap();
    assert!(out.status.success(), "oni eval --record failed: {}", String::from_utf8_lossy(&out.stderr));
    let recorded = oni_actor::record::list(&rec);
    assert!(!recorded.is_empty(), "nothing recorded");
    for stem in &recorded {
        let path = |ext: &str| std::path::PathBuf::from(format!("{}{ext}", stem.display()));
        let summary: oni_actor::record::Summary =
            serde_json::from_slice(&std::fs::read(path(".json")).unwrap()).unwrap();
        let lines = std::fs::read_to_string(path(".steps.jsonl")).unwrap();
        assert_eq!(lines.lines().count() as u64, summary.steps);
        let frames = oni_actor::record::ttyrec::read_frames(&std::fs::read(path(".ttyrec")).unwrap()).unwrap();
        assert_eq!(frames.len() as u64, summary.steps + 1);
    }

    let refused = |set: &str, wants: &[&str]| {
        let out = std::process::Command::new(oni())
            .args(["eval", "--run-dir", &rd, "--episodes", "5", "--set", set])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{set}: accepted");
        for w in wants {
            assert!(err.contains(w), "{set}: the refusal lacks `{w}`: {err}");
        }
    };
    refused("policy.core_hidden=32", &["holds network", "this config builds network"]);
    refused("env.name=\"keyroom-sparse\"", &["trained on env `keyroom-small`", "plays env `keyroom-sparse`"]);
}
