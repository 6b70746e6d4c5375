//! The reward-model loop between real processes: `oni judge` labels, the annotator distils
//! and serves, the actor pulls and rewards; killing the annotator never stops training.

mod support;
use std::time::Duration;
use support::*;

fn actor_rm_version(metrics: &str) -> Option<f64> {
    scrape(metrics).and_then(|t| sample(&t, "oni_reward_model_version{role=\"actor\"}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_keep_their_reward_model_and_train_while_the_annotator_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let (lport, aport, jport, mport) = (free_port(), free_port(), free_port(), free_port());
    let _judge = Proc::start("judge", dir.path(), &["judge", "--listen", &format!("127.0.0.1:{jport}")]);
    let reward =
        ["--set", "reward.kind=\"hashing\"", "--set", "reward.intrinsic_coef=0.2", "--set", "reward.pull_ms=200"];
    let mut largs = learner_args(lport, &dir.path().join("learner"), &[]);
    largs.extend(reward.iter().map(|s| s.to_string()));
    let _learner = Proc::start("learner", dir.path(), &as_strs(&largs));
    let settings = ["distill.publish_interval_ms=200", "telemetry.metrics_listen=\"\"", "annotator.drain_secs=0"];
    let mut annotator_args = annotator_args(
        &format!("127.0.0.1:{aport}"),
        &format!("http://127.0.0.1:{jport}"),
        &dir.path().join("annotator"),
        &settings,
    );
    annotator_args.extend(reward.iter().map(|s| s.to_string()));
    let mut annotator = Proc::start("annotator", dir.path(), &as_strs(&annotator_args));
    let mut aargs = actor_args(
        lport,
        "a1",
        &[
            "--set",
            &format!("actor.annotator=\"127.0.0.1:{aport}\""),
            "--set",
            &format!("telemetry.metrics_listen=\"127.0.0.1:{mport}\""),
        ],
    );
    aargs.extend(reward.iter().map(|s| s.to_string()));
    let mut actor = Proc::start("actor", dir.path(), &as_strs(&aargs));
    let metrics = format!("127.0.0.1:{mport}");

    let v = wait_for("the actor to pull a reward model", Duration::from_secs(90), || async {
        actor_rm_version(&metrics).filter(|v| *v >= 1.0)
    })
    .await;
    wait_for("steps rewarded by the pulled model", Duration::from_secs(90), || async {
        scrape(&metrics).and_then(|t| sample(&t, "oni_intrinsic_rewarded_fraction")).filter(|f| *f > 0.0)
    })
    .await;

    // the annotator dies: the actor keeps its model and training goes on
    annotator.kill9();
    let v_dead = actor_rm_version(&metrics).unwrap();
    assert!(v_dead >= v);
    let addr = format!("127.0.0.1:{lport}");
    let before = info(&addr, None).await.unwrap().env_steps;
    wait_for("training to go on without the annotator", Duration::from_secs(60), || async {
        info(&addr, None).await.filter(|i| i.env_steps >= before + 20_000)
    })
    .await;
    assert!(actor.alive(), "actor died with the annotator: {}", actor.log_text());
    assert_eq!(
        actor_rm_version(&metrics),
        Some(v_dead),
        "the actor lost or changed its model while the annotator was down"
    );

    // restarted on the same store, it continues the version sequence and the actor follows
    let _annotator = Proc::start("annotator2", dir.path(), &as_strs(&annotator_args));
    wait_for("a newer reward model after the restart", Duration::from_secs(90), || async {
        actor_rm_version(&metrics).filter(|v| *v > v_dead)
    })
    .await;
    assert!(actor.alive());
}
