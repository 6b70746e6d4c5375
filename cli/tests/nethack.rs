//! The NetHack presets run end to end (`oni run`, and the learner/actor roles), and a
//! missing library fails at start with the way to install it.

mod support;
use std::process::Command;
use std::time::Duration;
use support::*;

/// Narrower layers for the presets' networks (ONI's convolutions stay as they are).
const SMALL: &[&str] = &[
    "--set",
    "policy.core_hidden=64",
    "--set",
    "policy.screen_hidden=64",
    "--set",
    "policy.glyph_hidden=64",
    "--set",
    "policy.glyph_conv_layers=0",
    "--set",
    "policy.message_bytes=32",
    "--set",
    "learner.batch_rollouts=8",
    "--set",
    "actor.num_envs=8",
    "--set",
    "telemetry.metrics_listen=\"\"",
];

#[test]
fn nethack_presets_run_in_one_process() {
    for preset in [
        "configs/nethack-score.toml",
        "configs/nethack-score-small.toml",
        "configs/nethack-oracle.toml",
        "configs/nethack-staircase-lvl3.toml",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().display().to_string();
        let mut args = vec!["run", "--config", preset, "--run-dir", &run_dir, "--max-env-steps", "4096"];
        args.extend_from_slice(SMALL);
        let out = Command::new(oni()).args(&args).current_dir(repo_root()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{preset}: {err}");
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("summary.json")).unwrap()).unwrap();
        assert!(summary["env_steps"].as_u64().unwrap() >= 4096, "{preset}: {summary}");
        assert!(summary["env"].as_str().unwrap().starts_with("nethack-"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nethack_trains_across_learner_and_actor_processes() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let preset = ["--config", "configs/nethack-score.toml"];
    let mut l = learner_args(port, &dir.path().join("run"), SMALL);
    l.splice(1..3, preset.iter().map(|s| s.to_string()));
    let mut a = actor_args(port, "nh", SMALL);
    a.splice(1..3, preset.iter().map(|s| s.to_string()));
    let _learner = Proc::start("learner", dir.path(), &as_strs(&l));
    let mut actor = Proc::start("actor", dir.path(), &as_strs(&a));
    wait_for("NetHack rollouts to be trained on", Duration::from_secs(90), || {
        let addr = addr.clone();
        async move { info(&addr, None).await.filter(|i| i.env_steps >= 2048 && i.policy_version >= 2) }
    })
    .await;
    assert!(actor.alive(), "{}", actor.log_text());
}

#[test]
fn missing_nle_fails_at_start_saying_how_to_install_it() {
    let out = Command::new(oni())
        .args(["run", "--config", "configs/nethack-score.toml", "--set", "env.nethack.nle_dir=\"/nonexistent/nle\""])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("libnethack.so") && err.contains("nle==1.3.0") && err.contains("scripts/setup.sh"), "{err}");
}
