//! Learner + two actor processes on 127.0.0.1: actors and the learner are killed with
//! SIGKILL mid-stream and the system recovers by itself.

mod support;
use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_and_learner_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let largs = learner_args(port, &run_dir, &["--set", "learner.checkpoint_interval_secs=1"]);
    let mut learner = Proc::start("learner", dir.path(), &as_strs(&largs));
    let mut a1 = Proc::start("actor1", dir.path(), &as_strs(&actor_args(port, "a1", &[])));
    let mut a2 = Proc::start("actor2", dir.path(), &as_strs(&actor_args(port, "a2", &[])));

    let s0 = wait_for_steps("training to start", Duration::from_secs(60), &addr, None, 2_000).await;

    // kill -9 one actor mid-stream: training goes on with the other
    a1.kill9();
    let s1 =
        wait_for_steps("training to continue without actor 1", Duration::from_secs(30), &addr, None, s0 + 5_000).await;
    assert!(a2.alive(), "actor 2 died: {}", a2.log_text());

    // a restarted actor (same name, new run id) joins by itself; the old run is retired
    let mut a1b = Proc::start("actor1b", dir.path(), &as_strs(&actor_args(port, "a1", &[])));
    let _ = wait_for("restarted actor to be admitted", Duration::from_secs(30), || {
        let log = learner.log_text();
        async move { log.contains("actor restarted; retiring its old run").then_some(()) }
    })
    .await;
    let s2 =
        wait_for_steps("training with the restarted actor", Duration::from_secs(30), &addr, None, s1 + 5_000).await;

    // kill -9 the learner; restarted on the same run directory it resumes from its newest
    // checkpoint and both actors reconnect by themselves
    tokio::time::sleep(Duration::from_millis(1500)).await; // let a checkpoint land past s2
    learner.kill9();
    let ckpt_steps = newest_checkpoint_steps(&run_dir).expect("a checkpoint was written");
    assert!(ckpt_steps >= s0, "checkpoint at {ckpt_steps} steps is older than the run's progress {s0}");
    tokio::time::sleep(Duration::from_secs(2)).await; // actors now retry against nothing
    assert!(a2.alive() && a1b.alive(), "an actor gave up while the learner was down");
    let mut learner2 = Proc::start("learner2", dir.path(), &as_strs(&largs));
    let resumed = wait_for("restarted learner", Duration::from_secs(30), || {
        let addr = addr.clone();
        async move { info(&addr, None).await }
    })
    .await;
    assert!(
        resumed.env_steps >= ckpt_steps,
        "resumed at {} steps, below the checkpoint's {ckpt_steps}",
        resumed.env_steps
    );
    assert!(resumed.policy_version > 0, "policy version was not restored");
    let after = wait_for_steps(
        "actors to reconnect and training to resume",
        Duration::from_secs(60),
        &addr,
        None,
        resumed.env_steps + 5_000,
    )
    .await;
    assert!(after > s2.min(ckpt_steps));
    assert!(learner2.log_text().contains("resumed from checkpoint"));
    assert!(a2.alive() && a1b.alive());
    // Nothing the killed processes left half-sent reached validation as a rollout. The only
    // rejections allowed are rollouts acted by weights newer than the restored checkpoint.
    let logs = learner.log_text() + &learner2.log_text();
    let bad: Vec<&str> =
        logs.lines().filter(|l| l.contains("rejected rollout") && !l.contains("field=\"policy_version\"")).collect();
    assert!(bad.is_empty(), "learner rejected rollouts: {bad:#?}");
    learner2.kill9();
}

/// Checkpoints on a disk that fills up: training goes on, each failure is counted, the last
/// good checkpoint stays whole and no half-written one keeps room; once there is room again
/// a checkpoint follows within seconds, and a restart resumes from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_checkpoints_not_training() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("disk"), "48m");
    let run_dir = disk.path.join("run");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let metrics = format!("127.0.0.1:{}", free_port());
    let largs = learner_args(
        port,
        &run_dir,
        &["--set", "learner.checkpoint_interval_secs=2", "--set", &format!("telemetry.metrics_listen=\"{metrics}\"")],
    );
    let mut learner = Proc::start("learner", dir.path(), &as_strs(&largs));
    let _actor = Proc::start("actor", dir.path(), &as_strs(&actor_args(port, "a", &[])));
    wait_for("a first checkpoint", Duration::from_secs(90), || async { newest_checkpoint_steps(&run_dir) }).await;

    let filler = disk.fill();
    let good = newest_checkpoint_steps(&run_dir).unwrap();
    let failures = |text: &str| sample(text, "oni_checkpoint_failures_total").unwrap_or(0.0);
    wait_for("a failed checkpoint to be counted", Duration::from_secs(30), || {
        let m = metrics.clone();
        async move { scrape(&m).filter(|t| failures(t) >= 2.0).map(|_| ()) }
    })
    .await;
    let full_at = info(&addr, None).await.expect("the learner answers on a full disk").env_steps;
    wait_for_steps("training to go on with the disk full", Duration::from_secs(60), &addr, None, full_at + 20_000)
        .await;
    assert!(learner.alive(), "{}", learner.log_text());
    let ckpts = run_dir.join("checkpoints");
    let names: Vec<String> =
        std::fs::read_dir(&ckpts).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(!names.iter().any(|n| n.starts_with(".tmp")), "a half-written checkpoint was left: {names:?}");
    assert!(newest_checkpoint_steps(&run_dir).unwrap() >= good, "the last good checkpoint was lost");
    assert!(learner.log_text().contains("checkpoint failed"), "the failure was not logged");

    // room again: a checkpoint within seconds, not a whole interval later
    std::fs::remove_file(filler).unwrap();
    let before = info(&addr, None).await.unwrap().env_steps;
    let saved = wait_for("a checkpoint once there is room", Duration::from_secs(20), || async {
        newest_checkpoint_steps(&run_dir).filter(|&s| s >= before)
    })
    .await;
    let (st, _) = learner.terminate(Duration::from_secs(30)).expect("the learner stops on SIGTERM");
    assert!(st.success(), "{}", learner.log_text());
    let last = newest_checkpoint_steps(&run_dir).unwrap();
    assert!(last >= saved);
    let _learner2 = Proc::start("learner2", dir.path(), &as_strs(&largs));
    let resumed = wait_for("the restarted learner", Duration::from_secs(60), || {
        let addr = addr.clone();
        async move { info(&addr, None).await.map(|i| i.env_steps) }
    })
    .await;
    assert!(resumed >= last, "resumed at {resumed}, below the last checkpoint's {last}");
}
