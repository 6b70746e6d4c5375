//! Malformed rollouts, wrong tokens and bad configs get clear errors while training goes on.

mod support;
use oni_proto::v1::{GetInfoRequest, Rollout};
use std::process::Command;
use std::time::Duration;
use support::*;
use tonic::Code;

const T: usize = 32;

/// A rollout that fits configs/keyroom.toml (9×9 crop, 16 glyphs, 6 stats, 8 actions, GRU 64).
fn valid(seq: u64) -> Rollout {
    Rollout {
        run_id: "test-run".into(),
        actor_id: "test-client".into(),
        env_slot: 0,
        sequence: seq,
        policy_version: 0,
        length: T as u32,
        initial_state: vec![0.0; 64],
        glyphs: vec![0; (T + 1) * 81 * 2],
        stats: vec![0.5; (T + 1) * 6],
        messages: vec![0; (T + 1) * 256],
        actions: vec![1; T],
        behaviour_logprobs: vec![-(8f32).ln(); T],
        rewards: vec![0.0; T],
        dones: vec![false; T],
        captions: vec![String::new(); T],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_rollouts_and_wrong_tokens_are_refused_while_training_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let token = "s3cret";
    let tok = ["--set", "transport.token=\"s3cret\""];
    let _learner = Proc::start("learner", dir.path(), &as_strs(&learner_args(port, &dir.path().join("run"), &tok)));
    let _actor = Proc::start("actor", dir.path(), &as_strs(&actor_args(port, "good", &tok)));

    let s0 = wait_for_steps("training to start", Duration::from_secs(60), &addr, Some(token), 1_000).await;

    // wrong or missing token
    for t in [None, Some("wrong")] {
        let mut c = client(&addr, t).await.unwrap();
        let st = c.get_info(GetInfoRequest {}).await.unwrap_err();
        assert_eq!(st.code(), Code::Unauthenticated, "{st:?}");
        assert!(st.message().contains("token"), "{}", st.message());
        let st = c.push_rollout(valid(0)).await.unwrap_err();
        assert_eq!(st.code(), Code::Unauthenticated);
    }

    let mut c = client(&addr, Some(token)).await.unwrap();
    let mut cases: Vec<(&str, Rollout)> = Vec::new();
    let mut r = valid(0);
    r.glyphs.pop();
    cases.push(("glyphs", r));
    let mut r = valid(0);
    r.rewards[3] = f32::NAN;
    cases.push(("rewards", r));
    let mut r = valid(0);
    r.stats[0] = f32::INFINITY;
    cases.push(("stats", r));
    let mut r = valid(0);
    r.policy_version = 1 << 40;
    cases.push(("policy_version", r));
    let mut r = valid(0);
    r.actions[0] = 8;
    cases.push(("actions", r));
    let mut r = valid(0);
    r.initial_state = vec![0.0; 3];
    cases.push(("initial_state", r));
    let mut r = valid(0);
    r.glyphs[0] = 200; // glyph id 200 ≥ 16
    cases.push(("glyphs", r));
    let mut r = valid(0);
    r.length = 7;
    cases.push(("length", r));
    let mut r = valid(0);
    r.run_id.clear();
    cases.push(("run_id", r));
    let mut r = valid(0);
    r.truncated = vec![false; T];
    r.truncated[5] = true; // a time limit that did not end the episode
    cases.push(("truncated", r));
    let mut r = valid(0);
    r.truncated = vec![false; T];
    r.truncated[5] = true;
    r.dones[5] = true; // ... and no final observation to bootstrap from
    cases.push(("final_glyphs", r));
    for (field, r) in cases {
        let st = c.push_rollout(r).await.unwrap_err();
        assert_eq!(st.code(), Code::InvalidArgument, "{field}: {st:?}");
        assert!(st.message().contains(&format!("`{field}`")), "message for {field} does not name it: {}", st.message());
    }
    // a valid rollout is accepted; the same sequence again is refused
    let ack = c.push_rollout(valid(0)).await.unwrap().into_inner();
    assert!(ack.accepted);
    let st = c.push_rollout(valid(0)).await.unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument);
    assert!(st.message().contains("`sequence`"), "{}", st.message());

    // on a stream a bad rollout is answered in its ack and the stream goes on
    let mut bad = valid(1);
    bad.behaviour_logprobs[0] = f32::NAN;
    let acks = c.stream_rollouts(tokio_stream::iter(vec![bad, valid(2)])).await.unwrap().into_inner();
    let acks: Vec<_> = tokio_stream::StreamExt::collect::<Vec<_>>(acks).await;
    assert_eq!(acks.len(), 2, "{acks:?}");
    let first = acks[0].as_ref().unwrap();
    assert!(!first.accepted && first.code == Code::InvalidArgument as i32);
    assert!(first.message.contains("`behaviour_logprobs`"), "{}", first.message);
    assert!(acks[1].as_ref().unwrap().accepted);

    // bytes that are not a rollout: INVALID_ARGUMENT, unary or on a stream
    {
        use oni_proto::raw::RawCodec;
        use tonic::codegen::http::uri::PathAndQuery;
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let ch = tonic::service::interceptor::InterceptedService::new(
            ch,
            oni_proto::AuthInterceptor::new(Some(token)).unwrap(),
        );
        let mut grpc = tonic::client::Grpc::new(ch);
        let garbage = vec![0x0a, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3];
        grpc.ready().await.unwrap();
        let path = PathAndQuery::from_static("/oni.v1.Learner/PushRollout");
        let st = grpc
            .unary(tonic::Request::new(garbage.clone()), path, RawCodec::<oni_proto::v1::RolloutAck>::default())
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
        grpc.ready().await.unwrap();
        let path = PathAndQuery::from_static("/oni.v1.Learner/StreamRollouts");
        let mut acks = grpc
            .streaming(
                tonic::Request::new(tokio_stream::iter(vec![garbage])),
                path,
                RawCodec::<oni_proto::v1::RolloutAck>::default(),
            )
            .await
            .unwrap()
            .into_inner();
        let end = tokio_stream::StreamExt::next(&mut acks).await;
        assert!(matches!(&end, Some(Err(st)) if st.code() == Code::InvalidArgument), "{end:?}");
    }

    // the well-behaved actor kept training through all of it
    wait_for_steps("training to go on", Duration::from_secs(60), &addr, Some(token), s0 + 4_000).await;

    // an actor with the wrong token stops with an error that says so
    let out = Command::new(oni())
        .args(as_strs(&actor_args(port, "intruder", &["--set", "transport.token=\"nope\""])))
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("token"), "{err}");
}

fn oni_err(args: &[&str]) -> String {
    let out = Command::new(oni()).args(args).current_dir(repo_root()).output().unwrap();
    assert!(!out.status.success(), "oni {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_configs_fail_at_start_naming_the_key() {
    let e = oni_err(&["run", "--config", "configs/keyroom.toml", "--set", "learner.bogus_key=1"]);
    assert!(e.contains("bogus_key") && e.contains("learner"), "{e}");
    let e = oni_err(&["run", "--config", "configs/keyroom.toml", "--set", "learner.batch_rollouts=\"lots\""]);
    assert!(e.contains("learner.batch_rollouts"), "{e}");
    let e = oni_err(&["run", "--config", "configs/no-such-preset.toml"]);
    assert!(e.contains("configs/no-such-preset.toml"), "{e}");
    let e = oni_err(&["run", "--config", "configs/keyroom.toml", "--set", "env.name=\"mazeworld\""]);
    assert!(e.contains("env.name") && e.contains("mazeworld"), "{e}");
    let e = oni_err(&["run", "--config", "configs/keyroom.toml", "--set", "learner.device=\"tpu\""]);
    assert!(e.contains("learner.device"), "{e}");
    // a GPU backend this build lacks: the key, the feature that adds it, and the way back
    for (key, device) in [("learner.device", "wgpu"), ("actor.device", "cuda")] {
        let e = oni_err(&["run", "--config", "configs/keyroom.toml", "--set", &format!("{key}=\"{device}\"")]);
        assert!(e.contains(&format!("`{key}` = \"{device}\" needs oni built with the {device} feature")), "{e}");
        assert!(e.contains(&format!("--features {device}")) && e.contains("set it to \"cpu\""), "{e}");
    }
    // NetHack settings: NLE's seed pair, the grid, the crop
    let nethack = |set: &str| oni_err(&["run", "--config", "configs/nethack-score.toml", "--set", set]);
    let e = nethack("env.nethack.seeds=[-1, 2]");
    assert!(e.contains("env.nethack.seeds[0]") && e.contains("-1"), "{e}");
    assert!(nethack("env.nethack.seeds=[1]").contains("env.nethack.seeds"));
    assert!(nethack("env.nethack.grid=\"pixels\"").contains("env.nethack.grid"));
    assert!(nethack("env.nethack.crop_rows=500").contains("env.nethack.crop_rows"));
    // sizes buffers are made from are bounded at start
    for set in ["actor.num_envs=10000000", "inference.queue=100000000", "actor.send_queue=1000000"] {
        let e = oni_err(&["run", "--config", "configs/keyroom.toml", "--set", set]);
        assert!(e.contains(set.split('=').next().unwrap()) && e.contains("is more than"), "{e}");
    }
    // a batch no machine has memory for stops at start with its sizes, before allocating
    let huge = ["--set", "learner.batch_rollouts=10000000", "--max-env-steps", "1"];
    let e = oni_err(&[&["run", "--config", "configs/keyroom.toml"][..], &huge].concat());
    assert!(e.contains("320000000 samples") && e.contains("learner.batch_rollouts = 10000000"), "{e}");
    assert!(e.contains("MiB is available"), "{e}");
    let e = oni_err(&[&["bench", "learner", "--config", "configs/keyroom.toml"][..], &huge[..2]].concat());
    assert!(e.contains("320000000 samples"), "{e}");
}

/// In relabel mode the reward-model puller is one of the learner's tasks: an annotator that
/// refuses it for good (it distils no reward model) stops the learner, which exits naming the
/// task and what the annotator said, rather than training on without its intrinsic reward.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_relabel_puller_stops_the_learner_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let ann = format!("127.0.0.1:{}", free_port());
    let quiet = ["telemetry.metrics_listen=\"\""];
    let args = annotator_args(&ann, "http://127.0.0.1:9", &dir.path().join("annotator"), &quiet);
    let _annotator = Proc::start("annotator", dir.path(), &as_strs(&args));
    wait_for("the annotator to listen", Duration::from_secs(30), || async {
        tokio::net::TcpStream::connect(&ann).await.ok()
    })
    .await;
    let relabel = ["--set", "learner.relabel=true", "--set", &format!("actor.annotator=\"{ann}\"")];
    let args = learner_args(free_port(), &dir.path().join("run"), &relabel);
    let mut learner = Proc::start("learner", dir.path(), &as_strs(&args));
    let t0 = std::time::Instant::now();
    while learner.alive() {
        assert!(t0.elapsed() < Duration::from_secs(60), "the learner went on: {}", learner.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = learner.log_text();
    assert!(log.contains("relabel reward-model puller") && log.contains("distils no reward model"), "{log}");
    assert!(log.contains("the learner failed"), "{log}");
}
