//! `oni bench learning` writes results that can be traced back to their run (commit, command,
//! presets with config hashes, seeds, budget, judge, bank), and the plotting script refuses a
//! results file without that provenance.

mod support;
use std::process::Command;
use support::*;

#[test]
fn results_carry_their_provenance_and_unprovenanced_results_are_not_plotted() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    let status = Command::new(oni())
        .current_dir(repo_root())
        .args([
            "bench",
            "learning",
            "--configs",
            "configs/keyroom-sparse.toml,configs/keyroom-sparse-classification.toml",
        ])
        .args(["--seeds", "1", "--steps", "30000", "--name", "prov", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("prov.json")).unwrap()).unwrap();
    let p = &report["provenance"];
    let commit = p["commit"].as_str().unwrap();
    assert!(commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit()), "commit {commit:?}");
    let command = p["command"].as_str().unwrap();
    assert!(command.contains("bench learning") && command.contains("--steps 30000"), "{command}");
    assert_eq!(p["seeds"], serde_json::json!([1]));
    assert!(p["budget_env_steps"].as_u64().unwrap() >= 30000);
    assert_eq!((p["judge"]["kind"].as_str(), p["bank"].as_str()), (Some("rule"), Some("cold")));
    let presets = p["presets"].as_array().unwrap();
    assert_eq!(presets.len(), 2);
    assert!(presets[0]["judge"].is_null(), "the extrinsic preset asks no judge");
    let hash = presets[1]["judge"]["classification_prompt_hash"].as_str().unwrap();
    assert_eq!(hash.len(), 16);
    assert_eq!(presets[1]["config_sha256"].as_str().unwrap().len(), 64);
    let md = std::fs::read_to_string(out.join("prov.md")).unwrap();
    assert!(md.contains(commit) && md.contains("--steps 30000"), "{md}");

    // the plotting script takes the results file, and refuses one without provenance
    let mut bare = report.clone();
    bare.as_object_mut().unwrap().remove("provenance");
    let bare_path = out.join("bare.json");
    std::fs::write(&bare_path, serde_json::to_vec(&bare).unwrap()).unwrap();
    std::fs::copy(out.join("prov.csv"), out.join("bare.csv")).unwrap();
    let plot = |results: &std::path::Path| {
        Command::new("python3")
            .arg(repo_root().join("scripts/plot_learning.py"))
            .arg(results)
            .arg(out.join("x.png"))
            .output()
            .unwrap()
    };
    let refused = plot(&bare_path);
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && why.contains("no provenance"), "{why}");
    let mut partial = report.clone();
    partial["provenance"]["commit"] = serde_json::json!("");
    std::fs::write(&bare_path, serde_json::to_vec(&partial).unwrap()).unwrap();
    let refused = plot(&bare_path);
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && why.contains("lacks commit"), "{why}");
}
