//! Central inference (`actor.inference = "remote"`) with real processes on 127.0.0.1: the
//! service chooses what local inference would, a remote run learns keyroom, bad requests are
//! refused by field while other actors go on, and killed actors and learners are survived.

mod support;
use oni_env::{registry::known_spec, EnvConfig, ObsSpec, MESSAGE_LEN};
use oni_inference::act::Acting;
use oni_policy::{CpuBackend, PolicyConfig};
use oni_proto::raw::RawCodec;
use oni_proto::v1::inference_client::InferenceClient;
use oni_proto::v1::{ActReply, ActRequest, GetPolicyRequest, GroupHello};
use std::time::{Duration, Instant};
use support::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

const REMOTE: &str = "actor.inference=\"remote\"";

fn keyroom() -> (PolicyConfig, ObsSpec) {
    let text = std::fs::read_to_string(repo_root().join("configs/keyroom.toml")).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    let policy: PolicyConfig = table["policy"].clone().try_into().unwrap();
    let spec = known_spec(&EnvConfig { name: "keyroom-small".into(), ..Default::default() }).unwrap().unwrap();
    (policy, spec)
}

/// One open `Act` stream: requests in, replies (or the status that ended it) out.
struct Stream {
    tx: mpsc::Sender<ActRequest>,
    replies: tonic::Streaming<ActReply>,
}

impl Stream {
    async fn open(addr: &str) -> Stream {
        let mut c = InferenceClient::connect(format!("http://{addr}")).await.expect("connect");
        let (tx, rx) = mpsc::channel(4);
        let replies = c.act(ReceiverStream::new(rx)).await.expect("Act stream").into_inner();
        Stream { tx, replies }
    }

    async fn call(&mut self, req: ActRequest) -> Result<ActReply, tonic::Status> {
        if self.tx.send(req).await.is_err() {
            return Err(tonic::Status::cancelled("stream closed"));
        }
        match tokio::time::timeout(Duration::from_secs(30), self.replies.next()).await.expect("a reply in 30 s") {
            Some(r) => r,
            None => Err(tonic::Status::cancelled("stream ended")),
        }
    }
}

fn hello(run: &str, first_slot: u32, num_envs: u32, fingerprint: &str) -> GroupHello {
    GroupHello {
        run_id: run.into(),
        actor_id: format!("test-{run}"),
        first_slot,
        num_envs,
        model_fingerprint: fingerprint.into(),
    }
}

/// A fixed batch of `n` keyroom observations (seeded), in the buffers a `VecEnv` keeps.
fn fixed_batch(spec: &ObsSpec, n: usize, seed: u64) -> (Vec<u16>, Vec<f32>, Vec<u8>) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let glyphs = (0..n * spec.crop_len()).map(|_| (next() % spec.num_glyphs as u64) as u16).collect();
    let stats = (0..n * spec.stats_dim).map(|_| (next() % 2001) as f32 / 1000.0 - 1.0).collect();
    let mut messages = vec![0u8; n * MESSAGE_LEN];
    for (i, row) in messages.chunks_exact_mut(MESSAGE_LEN).enumerate() {
        let text = format!("message {i} of {seed}");
        row[..text.len()].copy_from_slice(text.as_bytes());
    }
    (glyphs, stats, messages)
}

fn request(spec: &ObsSpec, step: u64, batch: &(Vec<u16>, Vec<f32>, Vec<u8>), n: usize) -> ActRequest {
    let last = oni_env::VecStep::new(n);
    let view = oni_env::BatchView { glyphs: &batch.0, stats: &batch.1, messages: &batch.2, last: &last, screen: None };
    oni_inference::wire::encode(spec, step, &view, step > 0, None, 0)
}

/// The same weights, observations, state and sampler seed give the same actions from the
/// learner's service as from the actor's own policy, over two steps (the service keeps the
/// recurrent state between them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_and_local_inference_choose_the_same_actions() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // no update can happen (no actor), so the weights stay those of version 0
    let largs = learner_args(port, &dir.path().join("run"), &["--set", "inference.seed=7"]);
    let _learner = Proc::start("learner", dir.path(), &as_strs(&largs));
    let (policy, spec) = keyroom();
    let fingerprint = oni_policy::fingerprint(&policy, &spec);
    let weights = wait_for("the learner's weights", Duration::from_secs(60), || async {
        let mut c = client(&addr, None).await?;
        let req =
            GetPolicyRequest { have_version: None, model_fingerprint: fingerprint.clone(), obs_spec: String::new() };
        c.get_policy(req).await.ok().map(|r| r.into_inner())
    })
    .await;

    let n = 6;
    let mut local = Acting::<CpuBackend>::new(&policy, &spec, Default::default(), Some(7));
    local.update(weights.version, &weights.weights).unwrap();
    let mut remote = Stream::open(&addr).await;
    let mut hidden = vec![0.0; n * policy.core_hidden];
    for step in 0..2u64 {
        let batch = fixed_batch(&spec, n, step + 1);
        let mine = local.choose(&batch.0, &batch.1, &batch.2, &hidden);
        hidden = mine.hidden;
        let mut req = request(&spec, step, &batch, n);
        if step == 0 {
            req.hello = Some(hello("same-actions", 0, n as u32, &fingerprint));
        }
        let theirs = remote.call(req).await.expect("the service answers");
        let want: Vec<u32> = mine.actions.iter().map(|&(a, _)| a as u32).collect();
        assert_eq!((theirs.step, theirs.policy_version), (step, weights.version));
        assert_eq!(theirs.actions, want, "step {step}: the service chose other actions than local inference");
    }
}

/// Bad requests end their own stream with INVALID_ARGUMENT (or FAILED_PRECONDITION for
/// another network) naming the field, while a remote actor trains on undisturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_by_field_and_other_actors_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let largs = learner_args(port, &dir.path().join("run"), &[]);
    let _learner = Proc::start("learner", dir.path(), &as_strs(&largs));
    let mut actor = Proc::start("actor", dir.path(), &as_strs(&actor_args(port, "a1", &["--set", REMOTE])));
    let s0 = wait_for_steps("remote training to start", Duration::from_secs(90), &addr, None, 2_000).await;

    let (policy, spec) = keyroom();
    let fp = oni_policy::fingerprint(&policy, &spec);
    let n = 4;
    let good = |step| request(&spec, step, &fixed_batch(&spec, n, 3), n);
    let first = |h: GroupHello| {
        let mut r = good(0);
        r.hello = Some(h);
        r
    };
    let refused = |code: tonic::Code, field: &'static str, r: Result<ActReply, tonic::Status>| {
        let st = r.expect_err("refused");
        assert_eq!(st.code(), code, "{field}: {st:?}");
        assert!(st.message().contains(field), "the refusal does not name `{field}`: {}", st.message());
    };
    let mut s = Stream::open(&addr).await;
    refused(tonic::Code::InvalidArgument, "hello", s.call(good(0)).await);
    let mut s = Stream::open(&addr).await;
    refused(tonic::Code::InvalidArgument, "hello.num_envs", s.call(first(hello("bad", 0, 0, &fp))).await);
    let mut s = Stream::open(&addr).await;
    refused(tonic::Code::FailedPrecondition, "network", s.call(first(hello("bad", 0, n as u32, "nope"))).await);
    let mut s = Stream::open(&addr).await;
    let mut nan = first(hello("bad", 0, n as u32, &fp));
    nan.stats[3] = f32::NAN;
    refused(tonic::Code::InvalidArgument, "stats", s.call(nan).await);
    let mut s = Stream::open(&addr).await;
    let mut short = first(hello("bad", 0, n as u32, &fp));
    short.glyphs.truncate(5);
    refused(tonic::Code::InvalidArgument, "glyphs", s.call(short).await);

    // a good stream, then requests out of order and slots another stream already serves
    let mut ok = Stream::open(&addr).await;
    ok.call(first(hello("mine", 0, n as u32, &fp))).await.expect("a good first request");
    let mut twin = Stream::open(&addr).await;
    refused(tonic::Code::InvalidArgument, "hello.first_slot", twin.call(first(hello("mine", 2, n as u32, &fp))).await);
    let r = ok.call(good(1)).await.expect("the good stream goes on");
    assert_eq!(r.actions.len(), n);
    refused(tonic::Code::InvalidArgument, "step", ok.call(good(5)).await);
    let mut later = Stream::open(&addr).await;
    let mut no_result = first(hello("other", 0, n as u32, &fp));
    later.call(no_result.clone()).await.unwrap();
    no_result.hello = None;
    no_result.step = 1;
    refused(tonic::Code::InvalidArgument, "result", later.call(no_result).await);

    // random bytes as requests: every stream ends with a status saying why, never with OK
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/oni.v1.Inference/Act");
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for case in 0..100 {
        let len = (next() % 400) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let req = tonic::Request::new(tokio_stream::iter(vec![bytes]));
        let st = match grpc.streaming(req, path.clone(), RawCodec::<ActReply>::default()).await {
            Err(st) => st,
            Ok(resp) => match tokio::time::timeout(Duration::from_secs(10), resp.into_inner().next()).await {
                Ok(Some(Err(st))) => st,
                other => panic!("case {case}: random bytes were answered {other:?}"),
            },
        };
        // (bytes that happen to decode to a hello naming some other network are refused so)
        let code = st.code();
        assert!(matches!(code, tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition), "case {case}: {st:?}");
    }

    wait_for_steps("the remote actor to keep training", Duration::from_secs(60), &addr, None, s0 + 5_000).await;
    assert!(actor.alive(), "the remote actor died:\n{}", actor.log_text());
}

/// One peer's groups and envs are capped (and all peers' together): what does not fit is
/// refused with RESOURCE_EXHAUSTED naming the setting, and a closed stream gives its share
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_past_its_share_of_groups_or_envs_is_refused_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let caps = ["--set", "inference.max_groups_per_peer=2", "--set", "inference.max_envs_per_peer=64"];
    let largs = learner_args(port, &dir.path().join("run"), &caps);
    let _learner = Proc::start("learner", dir.path(), &as_strs(&largs));
    wait_for("the learner", Duration::from_secs(60), || async { info(&addr, None).await }).await;
    let (policy, spec) = keyroom();
    let fp = oni_policy::fingerprint(&policy, &spec);
    let open = |run: &'static str, n: usize| {
        let (addr, spec, fp) = (addr.clone(), spec.clone(), fp.clone());
        async move {
            let mut s = Stream::open(&addr).await;
            let mut r = request(&spec, 0, &fixed_batch(&spec, n, 1), n);
            r.hello = Some(hello(run, 0, n as u32, &fp));
            let got = s.call(r).await;
            (s, got)
        }
    };
    let (a, got) = open("a", 40).await;
    got.expect("40 envs fit");
    let (_b, got) = open("b", 30).await;
    let st = got.expect_err("70 envs from one peer");
    assert_eq!(st.code(), tonic::Code::ResourceExhausted, "{st:?}");
    assert!(st.message().contains("inference.max_envs_per_peer"), "{}", st.message());
    let (_c, got) = open("c", 10).await;
    got.expect("50 envs fit");
    let (_d, got) = open("d", 1).await;
    let st = got.expect_err("a third group from one peer");
    assert!(st.message().contains("inference.max_groups_per_peer"), "{}", st.message());
    drop(a);
    let start = std::time::Instant::now();
    loop {
        let (_e, got) = open("e", 20).await;
        if got.is_ok() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "a closed stream's share was not given back: {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// kill -9 of a remote actor drops its partial rollouts (counted) and training goes on with
/// the other; kill -9 of the learner, restarted on its run directory: the actors reconnect by
/// themselves and start their episodes over. No half-assembled rollout reaches training.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_actors_survive_kill_9_of_an_actor_and_of_the_learner() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let port = free_port();
    let mport = free_port();
    let addr = format!("127.0.0.1:{port}");
    let metrics = format!("127.0.0.1:{mport}");
    let listen = format!("telemetry.metrics_listen=\"{metrics}\"");
    let largs = learner_args(port, &run_dir, &["--set", "learner.checkpoint_interval_secs=1", "--set", &listen]);
    let mut learner = Proc::start("learner", dir.path(), &as_strs(&largs));
    let remote = ["--set", REMOTE, "--set", "actor.backoff_max_ms=500"];
    let mut a1 = Proc::start("actor1", dir.path(), &as_strs(&actor_args(port, "a1", &remote)));
    let mut a2 = Proc::start("actor2", dir.path(), &as_strs(&actor_args(port, "a2", &remote)));
    let s0 = wait_for_steps("remote training to start", Duration::from_secs(90), &addr, None, 2_000).await;

    a1.kill9();
    let s1 =
        wait_for_steps("training to continue without actor 1", Duration::from_secs(60), &addr, None, s0 + 5_000).await;
    let text = scrape(&metrics).expect("learner metrics");
    // both of actor 1's groups (4 envs each) left; each one caught mid-rollout dropped its 4
    // unfinished rollouts (one waiting at a rollout boundary, as under backpressure, has none:
    // the unit tests of `GroupRollouts::partial` pin that down)
    let left: f64 = text
        .lines()
        .filter(|l| l.starts_with("oni_inference_groups_left_total{") && l.contains("why=\"stream closed\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(left, 2.0, "the killed actor's two groups were not removed:\n{text}");
    let dropped = sample(&text, "oni_inference_dropped_partial_rollouts_total").unwrap_or(0.0);
    assert!([0.0, 4.0, 8.0].contains(&dropped), "dropped rollouts are not whole groups of 4 envs:\n{text}");
    assert_eq!(sample(&text, "oni_inference_groups"), Some(2.0), "actor 2's two groups remain:\n{text}");
    assert!(a2.alive(), "actor 2 died: {}", a2.log_text());

    tokio::time::sleep(Duration::from_millis(1500)).await; // let a checkpoint land past s1
    learner.kill9();
    let ckpt_steps = newest_checkpoint_steps(&run_dir).expect("a checkpoint was written");
    tokio::time::sleep(Duration::from_secs(2)).await; // the actor now retries against nothing
    assert!(a2.alive(), "actor 2 gave up while the learner was down:\n{}", a2.log_text());
    let mut learner2 = Proc::start("learner2", dir.path(), &as_strs(&largs));
    let resumed = wait_for("restarted learner", Duration::from_secs(30), || {
        let addr = addr.clone();
        async move { info(&addr, None).await }
    })
    .await;
    assert!(resumed.env_steps >= ckpt_steps);
    let after = wait_for_steps(
        "actor 2 to reconnect and training to resume",
        Duration::from_secs(60),
        &addr,
        None,
        resumed.env_steps + 5_000,
    )
    .await;
    assert!(after > s1.min(ckpt_steps));
    assert!(a2.alive());
    assert!(a2.log_text().contains("restarting the group's episodes"), "{}", a2.log_text());
    let logs = learner.log_text() + &learner2.log_text();
    let bad: Vec<&str> = logs.lines().filter(|l| l.contains("rejected rollout")).collect();
    assert!(bad.is_empty(), "the learner rejected rollouts the service assembled: {bad:#?}");
    learner2.kill9();
}

/// A restarted actor (same name, new run id) supersedes the old run at the learner; an old
/// remote actor still running is told so by its streams and stops, as a local one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_remote_actor_stops() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let largs = learner_args(port, &dir.path().join("run"), &[]);
    let _learner = Proc::start("learner", dir.path(), &as_strs(&largs));
    let mut old = Proc::start("old", dir.path(), &as_strs(&actor_args(port, "twin", &["--set", REMOTE])));
    let s0 = wait_for_steps("remote training to start", Duration::from_secs(90), &addr, None, 2_000).await;
    let mut new = Proc::start("new", dir.path(), &as_strs(&actor_args(port, "twin", &["--set", REMOTE])));
    let t = Instant::now();
    while old.alive() {
        assert!(t.elapsed() < Duration::from_secs(60), "the superseded actor still runs:\n{}", old.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!old.child.wait().unwrap().success());
    assert!(old.log_text().contains("superseded"), "{}", old.log_text());
    wait_for_steps("the new actor to train", Duration::from_secs(60), &addr, None, s0 + 5_000).await;
    assert!(new.alive(), "{}", new.log_text());
}

/// `oni run --set actor.inference=remote` learns keyroom-small as far as local inference does.
#[test]
fn keyroom_small_learns_with_remote_inference() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("keyroom");
    let run_dir_s = run_dir.display().to_string();
    let mut p = Proc::start(
        "run",
        dir.path(),
        &[
            "run",
            "--config",
            "configs/keyroom.toml",
            "--run-dir",
            &run_dir_s,
            "--set",
            REMOTE,
            "--set",
            "telemetry.metrics_listen=\"\"",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(900);
    while p.alive() {
        assert!(Instant::now() < deadline, "oni run did not finish in 15 minutes:\n{}", p.log_text());
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(p.child.wait().unwrap().success(), "{}", p.log_text());
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("summary.json")).expect("summary.json")).unwrap();
    let success = summary["success_rate"].as_f64().unwrap();
    eprintln!("keyroom-small with remote inference: {summary}");
    assert!(success >= 0.8, "success rate {success} after {} steps:\n{summary}", summary["env_steps"]);
    assert_eq!(summary["rollouts_rejected"].as_u64(), Some(0), "{summary}");
}
