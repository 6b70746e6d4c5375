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
