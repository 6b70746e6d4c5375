//! SIGTERM to the learner and an actor: each stops in bounded time, the learner writes a
//! final checkpoint holding everything it trained, and a restart resumes from it.

mod support;
use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_each_role_in_bounded_time_and_the_learner_checkpoints_all_it_trained() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // no periodic checkpoint during the test: only the one written at shutdown
    let largs = learner_args(port, &run_dir, &["--set", "learner.checkpoint_interval_secs=3600"]);
    let mut learner = Proc::start("learner", dir.path(), &as_strs(&largs));
    let mut actor = Proc::start("actor", dir.path(), &as_strs(&actor_args(port, "a", &[])));
    wait_for_steps("training to start", Duration::from_secs(60), &addr, None, 5_000).await;
    let before = newest_checkpoint_steps(&run_dir).unwrap_or(0);

    let (st, took) = actor.terminate(Duration::from_secs(20)).expect("the actor did not stop within 20 s of SIGTERM");
    assert!(st.success(), "the actor exited with {st}: {}", actor.log_text());
    eprintln!("actor stopped {took:?} after SIGTERM");
    tokio::time::sleep(Duration::from_secs(2)).await; // the learner's queue runs dry
    let trained = info(&addr, None).await.expect("learner up").env_steps;

    let (st, took) =
        learner.terminate(Duration::from_secs(30)).expect("the learner did not stop within 30 s of SIGTERM");
    assert!(st.success(), "the learner exited with {st}: {}", learner.log_text());
    eprintln!("learner stopped {took:?} after SIGTERM");
    let saved = newest_checkpoint_steps(&run_dir).expect("a final checkpoint");
    assert!(saved > before, "no checkpoint written at shutdown");
    assert_eq!(saved, trained, "the final checkpoint lost trained steps");

    let _learner2 = Proc::start("learner2", dir.path(), &as_strs(&largs));
    let resumed = wait_for("the restarted learner", Duration::from_secs(30), || {
        let addr = addr.clone();
        async move { info(&addr, None).await.map(|i| i.env_steps) }
    })
    .await;
    assert_eq!(resumed, trained, "the restart did not resume from the final checkpoint");
}

/// Waits (polling every millisecond) until a checkpoint is being written in `run_dir`.
fn catch_a_checkpoint_write(run_dir: &std::path::Path, limit: Duration) -> bool {
    let dir = run_dir.join("checkpoints");
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        let writing = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".tmp-ckpt-"));
        if writing {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// Signals that land while a checkpoint is being written: SIGTERM finishes it and writes
/// the final one; SIGKILL leaves the previous one loadable, and the restart clears the
/// half-written directory and resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_during_a_checkpoint_write_leave_a_loadable_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let largs = learner_args(port, &run_dir, &["--set", "learner.checkpoint_interval_secs=1"]);
    let _actor = Proc::start("actor", dir.path(), &as_strs(&actor_args(port, "a", &[])));
    let mut caught = 0;
    let mut resumed_from = Vec::new();
    for round in 0..4 {
        let previous = newest_checkpoint_steps(&run_dir);
        let mut learner = Proc::start(&format!("learner{round}"), dir.path(), &as_strs(&largs));
        let at_start = wait_for_steps("the learner", Duration::from_secs(60), &addr, None, previous.unwrap_or(0)).await;
        if let Some(steps) = previous {
            let log = learner.log_text();
            let resumed = log.lines().find(|l| l.contains("resumed from checkpoint"));
            assert!(
                resumed.is_some_and(|l| l.contains(&format!("env_steps={steps}"))),
                "round {round} did not resume from the newest checkpoint ({steps} steps): {resumed:?}"
            );
        }
        resumed_from.push(at_start);
        wait_for_steps("training", Duration::from_secs(60), &addr, None, at_start + 5_000).await;
        caught += catch_a_checkpoint_write(&run_dir, Duration::from_secs(10)) as usize;
        if round % 2 == 0 {
            let (st, _) = learner.terminate(Duration::from_secs(30)).expect("stops on SIGTERM");
            assert!(st.success(), "{}", learner.log_text());
            assert!(newest_checkpoint_steps(&run_dir).unwrap() > at_start, "no final checkpoint");
        } else {
            learner.kill9();
        }
    }
    eprintln!("signals landed during {caught} of 4 checkpoint writes; resumed from {resumed_from:?}");
    assert!(caught >= 2, "too few signals landed during a write to show anything");
}

/// SIGTERM to an annotator with captions still waiting for a slow LLM: it labels them
/// before it exits (within its drain time), and a restart on the same bank knows them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_the_annotator_labels_what_it_received_first() {
    use oni_proto::v1::annotator_client::AnnotatorClient;
    use oni_proto::v1::{CaptionBatch, GetLabelsRequest};
    let dir = tempfile::tempdir().unwrap();
    let (jport, aport) = (free_port(), free_port());
    let _judge =
        Proc::start("judge", dir.path(), &["judge", "--listen", &format!("127.0.0.1:{jport}"), "--latency-ms", "1000"]);
    let args = annotator_args(
        &format!("127.0.0.1:{aport}"),
        &format!("http://127.0.0.1:{jport}"),
        &dir.path().join("annotator"),
        &["llm.batch=2", "telemetry.metrics_listen=\"\"", "annotator.drain_secs=60"],
    );
    let endpoint = format!("http://127.0.0.1:{aport}");
    let connect = || {
        let e = endpoint.clone();
        async move { AnnotatorClient::connect(e).await.ok() }
    };
    let mut annotator = Proc::start("annotator", dir.path(), &as_strs(&args));
    let mut client = wait_for("the annotator", Duration::from_secs(60), connect).await;
    // distinct questions (captions differing only in a number would share one)
    let captions: Vec<String> = ITEMS.iter().map(|w| format!("You read the {w}.")).collect();
    let batch = CaptionBatch { actor_id: "test".into(), captions: captions.clone(), counts: vec![] };
    assert_eq!(client.submit_captions(batch).await.unwrap().into_inner().queued, 12);
    let (st, took) = annotator.terminate(Duration::from_secs(60)).expect("the annotator stops within its drain time");
    assert!(st.success(), "{}", annotator.log_text());
    eprintln!("annotator drained and stopped {took:?} after SIGTERM");
    assert!(took >= Duration::from_secs(1), "it stopped before the LLM could have answered");

    let _annotator2 = Proc::start("annotator2", dir.path(), &as_strs(&args));
    let mut client = wait_for("the restarted annotator", Duration::from_secs(60), connect).await;
    let labels = client.get_labels(GetLabelsRequest { captions }).await.unwrap().into_inner().labels;
    let missing: Vec<_> = labels.iter().filter(|l| l.label.is_empty()).map(|l| &l.caption).collect();
    assert!(missing.is_empty(), "labels lost at shutdown: {missing:?}");
}
