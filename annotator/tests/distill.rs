//! Ranking questions are asked once per pair; labels are distilled into reward models that
//! GetRewardModel serves, that survive a restart, and that are not published before both
//! classes have been seen.

mod common;
use common::*;
use oni_annotator::llm::Api;
use oni_annotator::service::AnnotatorService;
use oni_annotator::{AnnotatorConfig, Core};
use oni_annotator::{FileBank, LabelBank, LlmClient, LlmConfig, PairKey, Preference, PromptConfig};
use oni_proto::tasks::TaskGroup;
use oni_proto::v1::annotator_client::AnnotatorClient;
use oni_proto::v1::RewardModelRequest;
use oni_reward_model::{DistillConfig, Kind, RewardModel};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn core(url: &str, bank: Arc<dyn LabelBank>, pairs_per_caption: usize) -> Arc<Core> {
    let llm = LlmClient::new(LlmConfig {
        base_url: url.into(),
        api: Api::Completions,
        batch: 4,
        concurrency: 2,
        timeout_ms: 2000,
        ..Default::default()
    })
    .unwrap();
    let cfg = AnnotatorConfig { retry_pause_ms: 100, pairs_per_caption, ..Default::default() };
    Core::new(cfg, PromptConfig::default(), llm, bank).unwrap()
}

// Training happens only when answers arrive, and how they batch up depends on timing: enough
// steps per batch that one batch fits the eight captions whatever the seed.
fn distill() -> DistillConfig {
    DistillConfig {
        heldout_fraction: 0.0,
        min_per_class: 2,
        publish_interval_ms: 0,
        tick_ms: 50,
        steps_per_batch: 400,
        ..Default::default()
    }
}

async fn until(what: &str, secs: u64, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(secs), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn captions() -> Vec<String> {
    let mut c: Vec<String> =
        ["brass", "iron", "old", "rusty"].iter().map(|a| format!("You see here a {a} key.")).collect();
    c.extend(["newt", "rat", "jackal", "bat"].iter().map(|m| format!("You hit the {m}.")));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranking_pairs_are_asked_once_each_and_stored_with_their_answers() {
    let script = Arc::new(Mutex::new(Script { auto: true, ..Default::default() }));
    let url = serve(script.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let bank: Arc<dyn LabelBank> = Arc::new(FileBank::open(dir.path()).unwrap());
    let c = core(&url, bank.clone(), 3);
    let mut tasks = TaskGroup::new();
    c.spawn_workers(&mut tasks);
    let caps = captions();
    for cap in &caps {
        c.submit(std::slice::from_ref(cap)).unwrap();
        c.submit(std::slice::from_ref(cap)).unwrap(); // a duplicate adds no pairs
    }
    until("labels and pairs answered", 20, || c.backlog() + c.in_flight() == 0 && bank.len().unwrap() == caps.len())
        .await;
    let pairs = bank.pairs().unwrap();
    // the first caption has no partner, then up to 3 each
    assert!(pairs.len() >= caps.len() - 1 && pairs.len() <= 3 * (caps.len() - 1), "{} pairs", pairs.len());
    let keys: HashSet<PairKey> = pairs.iter().map(PairKey::of).collect();
    assert_eq!(keys.len(), pairs.len(), "a pair was asked twice");
    for p in &pairs {
        let want = match (p.first.contains("key"), p.second.contains("key")) {
            (true, false) => Preference::First,
            (false, true) => Preference::Second,
            _ => Preference::Tie,
        };
        assert_eq!(p.preference, want, "{p:?}");
        assert_eq!(p.prompt_hash, PromptConfig::default().ranking_hash());
    }
    let asked: usize =
        script.lock().unwrap().requests.iter().map(|r| r["prompt"].as_array().map_or(1, |a| a.len())).sum();
    assert_eq!(asked, caps.len() + pairs.len(), "LLM asked more than once per caption or pair");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_are_distilled_served_over_grpc_and_resumed_after_a_restart() {
    let script = Arc::new(Mutex::new(Script { auto: true, ..Default::default() }));
    let url = serve(script.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let version;
    {
        let bank: Arc<dyn LabelBank> = Arc::new(FileBank::open(dir.path()).unwrap());
        let c = core(&url, bank.clone(), 0);
        let mut tasks = TaskGroup::new();
        c.spawn_workers(&mut tasks);
        c.start_distiller(Kind::Classification, distill(), &mut tasks).unwrap();

        // one class only: nothing is published
        c.submit(&captions()[4..]).unwrap();
        until("unhelpful labels", 20, || bank.len().unwrap() == 4).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(c.reward_model_since(0).is_none(), "published a classifier that has seen one class");

        c.submit(&captions()[..4]).unwrap();
        until("a published classifier", 30, || c.reward_model_since(0).is_some()).await;
        // the model keeps improving as it trains: wait until it fits the labels
        let fits = |c: &Core| {
            let p = c.reward_model_since(0).unwrap();
            let m = RewardModel::decode(&p.bytes).unwrap();
            m.rewards(&["You see here a brass key.", "You hit the newt."]) == vec![1.0, 0.0]
        };
        until("a classifier that fits its labels", 60, || fits(&c)).await;

        // served over gRPC: a snapshot when asked since 0, "unchanged" when up to date
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let transport = Default::default();
        let router =
            oni_proto::transport::server_builder(&transport, oni_annotator::service::MESSAGE_LIMIT, "annotator")
                .unwrap()
                .add_service(AnnotatorService::server(c.clone()));
        oni_proto::transport::spawn_server(router, listener, tasks.token(), "annotator", &transport).unwrap();
        let mut client = AnnotatorClient::connect(format!("http://{addr}")).await.unwrap();
        let r = client.get_reward_model(RewardModelRequest { since_version: 0 }).await.unwrap().into_inner();
        assert!(!r.unchanged && r.kind == "classification" && r.version >= 1);
        let m = RewardModel::decode(&r.snapshot).unwrap();
        assert_eq!(m.version(), r.version);
        let r2 = client.get_reward_model(RewardModelRequest { since_version: u64::MAX }).await.unwrap().into_inner();
        assert!(r2.unchanged && r2.snapshot.is_empty());
        tasks.shutdown(Duration::from_secs(10)).await.unwrap();
        version = c.reward_model_version();
        assert_eq!(bank.latest_snapshot().unwrap().unwrap().0, version, "the served version is stored");
    }
    // restarted on the same store: serves the stored version at once, then carries on from it
    let bank: Arc<dyn LabelBank> = Arc::new(FileBank::open(dir.path()).unwrap());
    let c = core(&url, bank, 0);
    let mut tasks = TaskGroup::new();
    c.start_distiller(Kind::Classification, distill(), &mut tasks).unwrap();
    assert_eq!(c.reward_model_version(), version);
    until("a newer version after the restart", 30, || c.reward_model_version() > version).await;
    let m = RewardModel::decode(&c.reward_model_since(version).unwrap().bytes).unwrap();
    assert_eq!(
        m.rewards(&["You see here a rusty key.", "You hit the bat."]),
        vec![1.0, 0.0],
        "resumed weights fit at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_annotator_without_a_reward_model_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let bank: Arc<dyn LabelBank> = Arc::new(FileBank::open(dir.path()).unwrap());
    let c = core("http://127.0.0.1:9", bank, 0);
    let tasks = TaskGroup::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let t = Default::default();
    let router = oni_proto::transport::server_builder(&t, oni_annotator::service::MESSAGE_LIMIT, "annotator")
        .unwrap()
        .add_service(AnnotatorService::server(c));
    oni_proto::transport::spawn_server(router, listener, tasks.token(), "annotator", &t).unwrap();
    let mut client = AnnotatorClient::connect(format!("http://{addr}")).await.unwrap();
    let e = client.get_reward_model(RewardModelRequest { since_version: 0 }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("reward.kind"), "{}", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_published_model_is_scored_against_the_bank_and_a_gold_set() {
    let script = Arc::new(Mutex::new(Script { auto: true, ..Default::default() }));
    let url = serve(script.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let bank: Arc<dyn LabelBank> = Arc::new(FileBank::open(dir.path()).unwrap());
    let c = core(&url, bank, 0);
    let mut tasks = TaskGroup::new();
    c.spawn_workers(&mut tasks);
    assert_eq!(c.reward_model_accuracy(), Default::default(), "no model, no accuracy");
    // unseen captions of the same kinds: the classifier must generalise to be right on them
    let gold = vec![("You see here a silver key.".to_string(), true), ("You hit the gnome.".to_string(), false)];
    c.start_scored_distiller(Kind::Classification, distill(), gold, &mut tasks).unwrap();
    c.submit(&captions()).unwrap();
    until("a model right on the bank and on the gold set", 60, || {
        let a = c.reward_model_accuracy();
        a.bank == Some(1.0) && a.gold == Some(1.0)
    })
    .await;
    assert_eq!(c.reward_model_accuracy().heldout, None, "nothing held out (heldout_fraction 0)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_of_another_prompt_or_caption_rule_are_kept_apart_and_asked_again() {
    let script = Arc::new(Mutex::new(Script { auto: true, ..Default::default() }));
    let url = serve(script.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let bank: Arc<dyn LabelBank> = Arc::new(FileBank::open(dir.path()).unwrap());
    let hash = PromptConfig::default().classification_hash();
    let model = LlmConfig::default().model;
    let rec = |caption: &str, label, prompt_hash: &str, rule: Option<&str>| oni_annotator::LabelRecord {
        caption: caption.into(),
        label,
        prompt_hash: prompt_hash.into(),
        model: model.clone(),
        raw_answer: String::new(),
        latency_ms: 0,
        time_ms: 1,
        tokens: None,
        asked_as: rule.map(|_| "You see here a brass key.".into()),
        rule: rule.map(String::from),
    };
    use oni_annotator::Label::*;
    // wrong on purpose, so that using them would show
    bank.put(&[
        rec("You hit the newt.", Helpful, "0123456789abcdef", None),
        rec("You see here an old key.", Unhelpful, &hash, Some("key=letters")),
        rec("You hit the rat.", Unhelpful, &hash, None),
    ])
    .unwrap();
    let c = core(&url, bank.clone(), 0);
    assert_eq!(c.label_of("You hit the rat.").unwrap(), Some(Unhelpful), "this run's own answer is used");
    assert_eq!(c.label_of("You hit the newt.").unwrap(), None, "another prompt's answer is not");
    assert_eq!(c.label_of("You see here an old key.").unwrap(), None, "another caption rule's derived answer is not");
    let mut tasks = TaskGroup::new();
    c.spawn_workers(&mut tasks);
    let ack =
        c.submit(&["You hit the newt.".into(), "You see here an old key.".into(), "You hit the rat.".into()]).unwrap();
    assert_eq!((ack.queued, ack.known), (2, 1));
    until("both asked again", 20, || c.label_of("You see here an old key.").unwrap().is_some()).await;
    until("both asked again", 20, || c.label_of("You hit the newt.").unwrap().is_some()).await;
    assert_eq!(c.label_of("You see here an old key.").unwrap(), Some(Helpful));
    assert_eq!(c.label_of("You hit the newt.").unwrap(), Some(Unhelpful));
}
