//! The method works: on keyroom-sparse, at one step budget, ONI-classification (labels from
//! the rule judge, `oni judge`) succeeds where the extrinsic reward alone does not.

mod support;
use std::process::Command;
use support::*;

const BUDGET: &str = "2000000";

fn train(config: &str, dir: &std::path::Path, judge: u16) -> serde_json::Value {
    let run_dir = dir.join(config.trim_end_matches(".toml"));
    let out = Command::new(oni())
        .args(["run", "--config", &format!("configs/{config}"), "--run-dir", run_dir.to_str().unwrap()])
        .args(["--max-env-steps", BUDGET, "--set", "telemetry.metrics_listen=\"\"", "--set", "run.progress_interval_secs=10"])
        .args(["--set", &format!("llm.base_url=\"http://127.0.0.1:{judge}\""), "--set", "annotator.drain_secs=0"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{config}: {log}");
    eprintln!("{config}: {}", log.lines().filter(|l| l.starts_with('[')).last().unwrap_or(""));
    serde_json::from_slice(&std::fs::read(run_dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn oni_classification_beats_the_extrinsic_reward_on_keyroom_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _judge = Proc::start("judge", dir.path(), &["judge", "--listen", &format!("127.0.0.1:{port}")]);
    let oni = train("keyroom-sparse-classification.toml", dir.path(), port);
    let ext = train("keyroom-sparse.toml", dir.path(), port);
    let (s_oni, s_ext) = (oni["success_rate"].as_f64().unwrap(), ext["success_rate"].as_f64().unwrap());
    eprintln!("success rate after {BUDGET} steps: ONI-classification {s_oni:.2}, extrinsic only {s_ext:.2}");
    assert!(oni["mean_intrinsic_return"].as_f64().unwrap() > 0.0, "no intrinsic reward reached the learner");
    assert!(s_ext < 0.05, "extrinsic-only solved the sparse task ({s_ext}): the comparison shows nothing");
    assert!(s_oni >= 0.1 && s_oni > 3.0 * s_ext, "ONI-classification {s_oni} vs extrinsic {s_ext}");
    let labels = std::fs::read_to_string(dir.path().join("keyroom-sparse-classification/labels/labels.jsonl")).unwrap();
    assert!(labels.lines().any(|l| l.contains("brass key") && l.contains("\"helpful\"")), "the key message was not labelled helpful");
}
