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

/// `oni run` records episodes by default: NetHack's screen as a ttyrec that Debian's
/// `ttyplay`/`ttytime` read (and our terminal replays to NetHack's bottom line), one JSON
/// line per step, and a summary.
#[test]
fn a_nethack_run_records_episodes_that_ttyplay_replays() {
    use oni_actor::record::{list, ttyrec, StepLine, Summary};
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().display().to_string();
    let mut args =
        vec!["run", "--config", "configs/nethack-score.toml", "--run-dir", &run_dir, "--max-env-steps", "4096"];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(&["--set", "env.nethack.max_episode_steps=150", "--set", "record.every_episodes=1"]);
    let out = Command::new(oni()).args(&args).current_dir(repo_root()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let recordings = list(&dir.path().join("recordings"));
    assert!(recordings.len() >= 2, "env 0 played 3 or more 150-step episodes: {recordings:?}");
    let with = |stem: &std::path::Path, ext: &str| std::path::PathBuf::from(format!("{}{ext}", stem.display()));
    for stem in &recordings {
        let summary: Summary = serde_json::from_slice(&std::fs::read(with(stem, ".json")).unwrap()).unwrap();
        assert_eq!(summary.env, "nethack-score");
        assert!(summary.ttyrec && summary.steps >= 1 && summary.steps <= 150, "{summary:?}");
        let lines: Vec<StepLine> = std::fs::read_to_string(with(stem, ".steps.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len() as u64, summary.steps);
        assert!(lines.iter().all(|l| l.action < 28));

        let tty = with(stem, ".ttyrec");
        let frames = ttyrec::read_frames(&std::fs::read(&tty).unwrap()).unwrap();
        assert_eq!(frames.len() as u64, summary.steps + 1, "a frame per step and the first");
        // the map's frames show the bottom lines (a death's last is the list of the dead, and
        // a full-screen menu hides them too)
        let mut term = ttyrec::Terminal::new(24, 80);
        let mut with_bottom = Vec::new();
        for f in &frames {
            term.feed(&f.data);
            let screen = term.screen.text();
            with_bottom.push(screen.contains("Dlvl:") && screen.contains("HP:"));
        }
        let n = with_bottom.iter().filter(|&&b| b).count();
        assert!(with_bottom[0] && 2 * n > frames.len(), "{n} of {} frames show NetHack's bottom lines", frames.len());

        // Debian's ttyrec tools read the file: its length at 100 ms a frame
        let out = Command::new("ttytime").arg(&tty).output().expect("ttytime (Debian's ttyrec package)");
        let text = String::from_utf8_lossy(&out.stdout);
        let secs: f64 = text.split_whitespace().next().and_then(|s| s.parse().ok()).unwrap_or(-1.0);
        assert!(out.status.success(), "ttytime: {text}");
        assert!((secs - summary.steps as f64 * 0.1).abs() <= 1.0, "ttytime says {secs} s for {} steps", summary.steps);
        let out = Command::new("ttyplay").arg("-n").arg(&tty).stdin(std::process::Stdio::null()).output().unwrap();
        assert!(out.status.success(), "ttyplay: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("Dlvl:"), "ttyplay replays the screens");
    }
}
