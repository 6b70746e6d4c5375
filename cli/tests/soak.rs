//! A CI-sized soak (`oni bench soak`, 2 minutes): the whole loop with the annotator, reward
//! model pulls, two actors and checkpoints every 30 s keeps its file descriptors and threads
//! flat after the warm-up, rejects no rollout a healthy actor sent, and keeps labelling; beside
//! it an attached-environment run whose Python client comes and goes stays flat too.
//! Memory is only checked for gross growth here; `oni bench soak --minutes 60` measures it.

mod support;
use std::process::Command;
use support::*;

#[test]
fn two_minutes_of_the_whole_loop_leak_no_descriptors_or_threads() {
    let out = Command::new(oni())
        .args(["bench", "soak", "--minutes", "2", "--every", "5", "--warm-minutes", "0.75", "--attach-every", "15"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last = stdout.lines().last().expect("a summary line");
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    eprintln!("{last}");
    assert_eq!(v["bench"], "soak");
    let (fw, fe) = (v["fds"]["warm"].as_i64().unwrap(), v["fds"]["end"].as_i64().unwrap());
    assert!(fe - fw <= 4, "open descriptors went from {fw} to {fe}");
    let (tw, te) = (v["threads"]["warm"].as_i64().unwrap(), v["threads"]["end"].as_i64().unwrap());
    assert!(te - tw <= 2, "threads went from {tw} to {te}");
    assert!(v["rss_mib"]["growth_pct"].as_f64().unwrap() < 50.0, "memory grew by half after the warm-up: {last}");
    // the allocator's own count of live bytes, read from the run's /metrics
    assert!(v["heap_live_mib"]["warm"].as_f64().unwrap() > 1.0, "no heap figures from /metrics: {last}");
    assert!(v["heap_live_mib"]["growth_pct"].as_f64().unwrap() < 50.0, "live heap grew by half: {last}");
    assert_eq!(v["rollouts_rejected"], 0);
    assert!(v["labels"]["end"].as_u64().unwrap() > 0, "nothing was labelled");
    assert!(v["env_steps"].as_u64().unwrap() > 100_000, "the loop barely ran: {last}");
    // the attached run, its client letting go and attaching again every 15 s
    let a = &v["attached"];
    let (fw, fe) = (a["fds"]["warm"].as_i64().unwrap(), a["fds"]["end"].as_i64().unwrap());
    assert!(fe - fw <= 4, "the attached run's descriptors went from {fw} to {fe}");
    let (tw, te) = (a["threads"]["warm"].as_i64().unwrap(), a["threads"]["end"].as_i64().unwrap());
    assert!(te - tw <= 2, "the attached run's threads went from {tw} to {te}");
    assert!(a["sessions"].as_u64().unwrap() >= 4, "the client did not come and go: {last}");
    assert!(a["env_steps"].as_u64().unwrap() > 10_000, "the attached run barely trained: {last}");
}
