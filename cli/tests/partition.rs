//! Network partitions between real processes in separate network namespaces joined by a
//! veth pair: every packet between them is dropped for 30 s (no reset, no error, as when a
//! switch fails), then the link comes back. Needs root (CI has it) for `ip netns` and
//! iptables.

mod support;
use oni_proto::v1::annotator_client::AnnotatorClient;
use oni_proto::v1::{CaptionBatch, GetLabelsRequest};
use std::time::{Duration, Instant};
use support::*;

const PARTITION: Duration = Duration::from_secs(30);

/// Actor and learner on two hosts: during the partition the actor holds its bounded queue
/// and stays up; after it, the actor reconnects and training resumes. Rollouts lost in flight
/// are counted (sequence gaps at the learner, no more than the actor counted), none arrives
/// twice and none is refused as corrupt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actor_and_learner_come_back_from_a_partition() {
    let dir = tempfile::tempdir().unwrap();
    let net = Netns::new(1);
    let port = free_port();
    let addr = format!("{}:{port}", net.host);
    let (lm, am) = (format!("127.0.0.1:{}", free_port()), format!("{}:{}", net.peer, free_port()));
    let largs = learner_args(
        port,
        &dir.path().join("run"),
        &["--set", &format!("learner.listen=\"{addr}\""), "--set", &format!("telemetry.metrics_listen=\"{lm}\"")],
    );
    let _learner = Proc::start("learner", dir.path(), &as_strs(&largs));
    let aargs = actor_args(
        port,
        "a",
        &[
            "--set",
            &format!("actor.learner=\"{addr}\""),
            "--set",
            &format!("telemetry.metrics_listen=\"{am}\""),
            // a partition is noticed by the missing acks
            "--set",
            "actor.ack_timeout_ms=5000",
        ],
    );
    let mut actor = start_in(&net, "actor", dir.path(), &as_strs(&aargs));
    wait_for_steps("training across the link", Duration::from_secs(90), &addr, None, 10_000).await;

    net.cut(&[]);
    let cut_at = info(&addr, None).await.unwrap().env_steps;
    tokio::time::sleep(PARTITION).await;
    let during = info(&addr, None).await.unwrap().env_steps;
    assert!(actor.alive(), "the actor died in the partition: {}", actor.log_text());
    net.heal();
    let healed = Instant::now();
    wait_for_steps("training to resume", Duration::from_secs(90), &addr, None, during + 5_000).await;
    let resumed_after = healed.elapsed();

    let learner_metrics = scrape(&lm).expect("learner metrics");
    let actor_metrics = scrape(&am).expect("actor metrics");
    let gaps = family_sum(&learner_metrics, "oni_rollout_sequence_gaps_total");
    let dropped = family_sum(&actor_metrics, "oni_rollouts_dropped_total");
    let rejected = family_sum(&learner_metrics, "oni_rollouts_rejected_total");
    eprintln!(
        "partition: {cut_at} steps at the cut, {during} after {PARTITION:?}; training resumed {resumed_after:?} after \
         the link came back; rollouts lost in flight: {dropped} (actor), {gaps} sequence gaps (learner); rejected: {rejected}"
    );
    assert!(actor.log_text().contains("rollout stream broke"), "the actor never noticed the partition");
    assert!(gaps <= dropped, "the learner missed {gaps} rollouts but the actor counted only {dropped} lost");
    assert_eq!(rejected, 0.0, "rollouts were refused (repeated or corrupt) after the partition");
}

async fn labels_of(client: &mut AnnotatorClient<tonic::transport::Channel>, captions: &[String]) -> Vec<String> {
    let req = GetLabelsRequest { captions: captions.to_vec() };
    match client.get_labels(req).await {
        Ok(r) => r.into_inner().labels.into_iter().map(|l| l.label).collect(),
        Err(_) => vec![],
    }
}

async fn all_labelled(client: &mut AnnotatorClient<tonic::transport::Channel>, captions: &[String]) -> bool {
    let labels = labels_of(client, captions).await;
    labels.len() == captions.len() && labels.iter().all(|l| !l.is_empty())
}

/// The annotator on one host, Redis and a (slow) LLM server on the other. Answers that come
/// back while Redis is cut off are kept and stored once it returns (the LLM is not asked
/// again); captions that wait while the LLM is cut off are asked once it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_annotator_comes_back_from_partitions_from_redis_and_the_llm() {
    let dir = tempfile::tempdir().unwrap();
    let net = Netns::new(2);
    let (rport, jport, aport, mport) = (free_port(), free_port(), free_port(), free_port());
    let _redis = redis_server(&net.host, rport, dir.path(), Persistence::None);
    let judge = ["judge", "--listen", &format!("{}:{jport}", net.host), "--latency-ms", "2000"];
    let _judge = Proc::start("judge", dir.path(), &judge);
    wait_listening_on(&net.host, jport, "the rule judge");
    let metrics = format!("{}:{mport}", net.peer);
    let (redis_url, metrics_at) = (
        format!("label_bank.redis_url=\"redis://{}:{rport}\"", net.host),
        format!("telemetry.metrics_listen=\"{metrics}\""),
    );
    let args = annotator_args(
        &format!("{}:{aport}", net.peer),
        &format!("http://{}:{jport}", net.host),
        &dir.path().join("annotator"),
        &["llm.timeout_ms=10000", "label_bank.kind=\"redis\"", &redis_url, &metrics_at, "annotator.drain_secs=0"],
    );
    let mut annotator = start_in(&net, "annotator", dir.path(), &as_strs(&args));
    let endpoint = format!("http://{}:{aport}", net.peer);
    let mut client = wait_for("the annotator", Duration::from_secs(60), || {
        let e = endpoint.clone();
        async move { AnnotatorClient::connect(e).await.ok() }
    })
    .await;
    let submit = |captions: Vec<String>| CaptionBatch { actor_id: "test".into(), captions, counts: vec![] };

    // Redis cut off while the LLM thinks about a batch
    // distinct questions (captions differing only in a number would share one)
    let first: Vec<String> = ITEMS[..8].iter().map(|w| format!("You see here a {w}.")).collect();
    let ack = client.submit_captions(submit(first.clone())).await.unwrap().into_inner();
    assert_eq!(ack.queued, 8);
    net.cut(&[rport]);
    tokio::time::sleep(PARTITION).await;
    assert!(annotator.alive(), "the annotator died without Redis: {}", annotator.log_text());
    net.heal();
    let healed = Instant::now();
    wait_for("the answers to be stored once Redis is back", Duration::from_secs(60), || {
        let (mut c, f) = (client.clone(), first.clone());
        async move { all_labelled(&mut c, &f).await.then_some(()) }
    })
    .await;
    let stored_after = healed.elapsed();
    let m = scrape(&metrics).expect("annotator metrics");
    assert!(
        family_sum(&m, "oni_label_bank_write_failures_total") >= 1.0,
        "the partition was not felt: {}",
        annotator.log_text()
    );
    assert_eq!(family_sum(&m, "oni_annotator_requeued_total"), 0.0, "answers were thrown away and asked again");

    // the LLM cut off while captions wait
    let second: Vec<String> = ITEMS[4..].iter().map(|w| format!("You find a {w} behind the door.")).collect();
    net.cut(&[jport]);
    let ack = client.submit_captions(submit(second.clone())).await.unwrap().into_inner();
    assert_eq!(ack.queued, 8);
    tokio::time::sleep(PARTITION).await;
    assert!(labels_of(&mut client, &second).await.iter().all(String::is_empty), "labelled without an LLM");
    assert!(annotator.alive(), "the annotator died without its LLM: {}", annotator.log_text());
    net.heal();
    let healed = Instant::now();
    wait_for("the waiting captions to be asked once the LLM is back", Duration::from_secs(90), || {
        let (mut c, s) = (client.clone(), second.clone());
        async move { all_labelled(&mut c, &s).await.then_some(()) }
    })
    .await;
    let labelled_after = healed.elapsed();
    let m = scrape(&metrics).expect("annotator metrics");
    let labels = family_sum(&m, "oni_labels_total");
    eprintln!(
        "annotator partitions: answers stored {stored_after:?} after Redis came back, captions labelled \
         {labelled_after:?} after the LLM came back; {labels} labels stored for 16 captions"
    );
    assert_eq!(labels, 16.0, "a caption was labelled twice or not at all");
}
