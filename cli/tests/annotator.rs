//! `oni run` with the annotator on and a real llama-server: the actors' captions are
//! labelled into the run's label bank, which `oni labels` lists and exports.

mod support;
use std::process::Command;
use support::*;

fn oni_out(args: &[&str]) -> String {
    let out = Command::new(oni()).args(args).current_dir(repo_root()).output().unwrap();
    assert!(out.status.success(), "oni {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `oni run` of 60 000 steps with the annotator asking the LLM at `base` (`llm.base_url=…`).
fn run_with_the_annotator(common: &[&str], base: &str) {
    let mut args = vec!["run"];
    args.extend(common);
    let sets = ["annotator.enabled=true", base, "telemetry.metrics_listen=\"\""];
    args.extend(["--max-env-steps", "60000"]);
    for s in sets {
        args.extend(["--set", s]);
    }
    let out = Command::new(oni()).args(&args).current_dir(repo_root()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn captions_from_a_run_are_labelled_by_a_real_llm_and_exported() {
    let port = free_port();
    let _llm = llama_server(port);
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().display().to_string();
    let base = format!("llm.base_url=\"http://127.0.0.1:{port}\"");
    let common = ["--config", "configs/keyroom.toml", "--run-dir", &run_dir];
    run_with_the_annotator(&common, &base);

    let mut ls = vec!["labels", "list"];
    ls.extend(common);
    // labelling runs beside training; give the last captions a moment if the run was short
    let list = oni_out(&ls);
    let lines: Vec<&str> = list.lines().collect();
    assert!(!lines.is_empty(), "no labels in the run's bank");
    // the run waits for its captions to be labelled before it ends: the key's message, seen
    // in nearly every keyroom-small episode, is there
    assert!(lines.iter().any(|l| l.ends_with("\tk - a brass key.")), "{list}");
    // they are the game's own messages
    let known = [
        "gold pieces.",
        "brass key.",
        "door",
        "stairs",
        "staircase",
        "pick up",
        "go down",
        "objects here",
        "newt",
        "fountain",
    ];
    for l in &lines {
        assert!(known.iter().any(|k| l.contains(k)), "not a keyroom message: {l}");
    }
    for l in &lines {
        let (label, _) = l.split_once('\t').unwrap();
        assert!(["helpful", "unhelpful", "unknown"].contains(&label), "{l}");
    }
    let mut st = vec!["labels", "stats"];
    st.extend(common);
    assert!(oni_out(&st).starts_with(&format!("{} labels", lines.len())));
    let mut ex = vec!["labels", "export", "--format", "csv"];
    ex.extend(common);
    let csv = oni_out(&ex);
    assert!(csv.starts_with("caption,label,prompt_hash,model,raw_answer,latency_ms,time_ms"));
    assert_eq!(csv.lines().count(), lines.len() + 1);
    let mut ex = vec!["labels", "export", "--format", "jsonl"];
    ex.extend(common);
    let jsonl = oni_out(&ex);
    for l in jsonl.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["model"], "local");
        assert!(v["prompt_hash"].as_str().unwrap().len() == 16);
    }
    // every caption is in the bank once
    let mut captions: Vec<&str> = lines.iter().map(|l| l.split_once('\t').unwrap().1).collect();
    let n = captions.len();
    captions.sort();
    captions.dedup();
    assert_eq!(captions.len(), n, "a caption was labelled twice");

    // a second run starts from this run's answers: imported once, nothing asked again
    let warm = tempfile::tempdir().unwrap();
    let warm_dir = warm.path().display().to_string();
    let warm_common = ["--config", "configs/keyroom.toml", "--run-dir", &warm_dir];
    let from = dir.path().join("labels").display().to_string();
    let mut im = vec!["labels", "import", "--from", &from];
    im.extend(warm_common);
    assert!(oni_out(&im).starts_with(&format!("imported {n} labels")), "first import");
    assert!(oni_out(&im).starts_with("imported 0 labels"), "a second import adds nothing");
    run_with_the_annotator(&warm_common, &base);
    // the bank file holds one record per caption: a caption answered before was not asked again
    let file = std::fs::read_to_string(warm.path().join("labels/labels.jsonl")).unwrap();
    let mut asked: Vec<String> = file
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["caption"].as_str().unwrap().to_string())
        .collect();
    let total = asked.len();
    assert!(total >= n);
    asked.sort();
    asked.dedup();
    assert_eq!(asked.len(), total, "the warm run asked the LLM again about a caption it had");
}
