//! The annotator service asks the LLM once per unique caption, across duplicates, restarts
//! and an LLM outage, and never blocks the caller.

mod common;
use common::*;
use oni_annotator::llm::Api;
use oni_annotator::{AnnotatorConfig, Core};
use oni_annotator::{FileBank, Label, LabelBank, LlmClient, LlmConfig, PromptConfig};
use oni_proto::tasks::TaskGroup;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn llm(url: &str) -> LlmClient {
    LlmClient::new(LlmConfig {
        base_url: url.into(),
        api: Api::Completions,
        batch: 4,
        concurrency: 2,
        retries: 1,
        backoff_base_ms: 10,
        backoff_max_ms: 20,
        breaker_failures: 2,
        breaker_open_ms: 200,
        timeout_ms: 2000,
        ..Default::default()
    })
    .unwrap()
}

fn core(url: &str, bank: Arc<dyn LabelBank>) -> Arc<Core> {
    // every distinct caption its own question: these tests count prompts per caption
    let cfg = AnnotatorConfig { retry_pause_ms: 100, caption_key: vec![], ..Default::default() };
    Core::new(cfg, PromptConfig::default(), llm(url), bank).unwrap()
}

/// One caption per request, `concurrency` requests at once, no adaptive limit.
fn one_per_request(url: String, concurrency: usize, timeout_ms: u64) -> LlmClient {
    let cfg = LlmConfig {
        base_url: url,
        api: Api::Completions,
        concurrency,
        adaptive: false,
        timeout_ms,
        ..Default::default()
    };
    assert_eq!(cfg.batch, 1);
    LlmClient::new(cfg).unwrap()
}

async fn until(what: &str, secs: u64, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(secs), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn prompts_asked(script: &Arc<Mutex<Script>>) -> usize {
    script.lock().unwrap().requests.iter().map(|r| r["prompt"].as_array().map_or(1, |a| a.len())).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_unique_caption_is_asked_exactly_once_across_duplicates_and_restarts() {
    let script = Arc::new(Mutex::new(Script { auto: true, ..Default::default() }));
    let url = serve(script.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let unique: Vec<String> = (0..40).map(|i| format!("You see here {i} gold pieces.")).collect();
    {
        let bank: Arc<dyn LabelBank> = Arc::new(FileBank::open(dir.path()).unwrap());
        let c = core(&url, bank.clone());
        let mut tasks = TaskGroup::new();
        c.spawn_workers(&mut tasks);
        // every caption five times, in overlapping calls, some with extra whitespace
        for round in 0..5 {
            let batch: Vec<String> =
                unique.iter().map(|u| if round % 2 == 0 { u.clone() } else { format!("  {u}\n") }).collect();
            let ack = c.submit(&batch).unwrap();
            assert_eq!(ack.queued + ack.known, 40);
        }
        until("all labelled", 20, || bank.len().unwrap() == 40).await;
        tasks.shutdown(Duration::from_secs(10)).await.unwrap();
        assert_eq!(prompts_asked(&script), 40, "LLM asked more than once per caption");
        assert!(bank.all().unwrap().iter().all(|r| r.label == Label::Unhelpful && !r.raw_answer.is_empty()));
    }
    // a restarted annotator on the same bank asks nothing again
    let bank: Arc<dyn LabelBank> = Arc::new(FileBank::open(dir.path()).unwrap());
    let c = core(&url, bank);
    let ack = c.submit(&unique).unwrap();
    assert_eq!((ack.queued, ack.known), (0, 40));
    assert_eq!(c.label_of("You see here 3 gold pieces.").unwrap(), Some(Label::Unhelpful));
    let ack = c.submit(&["".into(), " \t ".into()]).unwrap();
    assert_eq!(ack.rejected, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captions_that_arrive_while_the_llm_is_down_are_labelled_when_it_returns() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let bank: Arc<dyn LabelBank> = Arc::new(FileBank::open(dir.path()).unwrap());
    let c = core(&url, bank.clone());
    let mut tasks = TaskGroup::new();
    c.spawn_workers(&mut tasks);
    let captions: Vec<String> = (0..20).map(|i| format!("message {i}")).collect();
    // submitting never waits for the LLM
    let t = Instant::now();
    let ack = c.submit(&captions).unwrap();
    assert!(t.elapsed() < Duration::from_millis(200));
    assert_eq!(ack.queued, 20);
    tokio::time::sleep(Duration::from_millis(800)).await; // failed tries, circuit open
    assert_eq!(bank.len().unwrap(), 0);
    assert_eq!(c.backlog() + c.in_flight(), 20, "captions were lost while the LLM was down");

    let script = Arc::new(Mutex::new(Script { auto: true, ..Default::default() }));
    serve_on(script.clone(), port).await;
    until("every caption labelled after the LLM came back", 20, || bank.len().unwrap() == 20).await;
    assert_eq!(prompts_asked(&script), 20);
}

/// The file bank on a disk that fills up mid-batch: answers that cannot be written are kept
/// and written once there is room (the LLM is not asked again), and the file holds each
/// caption once, with no torn record, before and after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_keeps_every_answer_and_tears_no_record() {
    let script = Arc::new(Mutex::new(Script { auto: true, ..Default::default() }));
    let url = serve(script.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let disk = oni_test_support::Tmpfs::mount(&dir.path().join("disk"), "1m");
    let bank_dir = disk.path.join("bank");
    let bank: Arc<dyn LabelBank> = Arc::new(FileBank::open(&bank_dir).unwrap());
    let c = core(&url, bank.clone());
    let mut tasks = TaskGroup::new();
    c.spawn_workers(&mut tasks);
    let first: Vec<String> = (0..20).map(|i| format!("You see here {i} gold pieces.")).collect();
    c.submit(&first).unwrap();
    until("the first captions stored", 20, || bank.len().unwrap() == 20).await;

    // two pages of room left: some of the next answers fit, one write is cut short
    let filler = disk.fill();
    let f = std::fs::OpenOptions::new().write(true).open(&filler).unwrap();
    f.set_len(f.metadata().unwrap().len() - 8192).unwrap();
    drop(f); // an open file keeps its room after it is removed
    let long = "a very long message ".repeat(20);
    let second: Vec<String> = (0..40).map(|i| format!("Message {i}: {long}")).collect();
    c.submit(&second).unwrap();
    // the workers hold the answers the disk refused and ask nothing more meanwhile
    until("answers the disk refuses", 20, || prompts_asked(&script) > 20 + 4).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (stored, asked) = (bank.len().unwrap(), prompts_asked(&script));
    assert!(stored < asked, "all {asked} answers were stored on a full disk");
    assert!(asked < 60, "the LLM was kept busy while no answer could be stored");

    std::fs::remove_file(&filler).unwrap();
    until("the kept answers stored once there is room", 30, || bank.len().unwrap() == 60).await;
    tasks.shutdown(Duration::from_secs(10)).await.unwrap();
    assert_eq!(prompts_asked(&script), 60, "answers were thrown away and asked again");
    let text = std::fs::read_to_string(bank_dir.join("labels.jsonl")).unwrap();
    let mut seen = std::collections::HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let r: oni_annotator::LabelRecord =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("line {} is not a whole record ({e}): {line}", n + 1));
        assert!(seen.insert(r.caption.clone()), "{} stored twice", r.caption);
    }
    assert_eq!(seen.len(), 60);
    assert_eq!(FileBank::open(&bank_dir).unwrap().len().unwrap(), 60);
    eprintln!("{stored} of {asked} answers fitted on the full disk; the rest were kept and written after");
}

/// Captions that differ only in a number, an inventory letter or the pet's species ask one
/// question: one prompt, every caption labelled under its own text with the caption that
/// was asked beside it, and a restarted annotator answers new such captions from the bank.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captions_asking_the_same_question_share_one_prompt() {
    let script = Arc::new(Mutex::new(Script { auto: true, auto_delay_ms: 200, ..Default::default() }));
    let url = serve(script.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = || AnnotatorConfig { retry_pause_ms: 100, ..Default::default() };
    let gold: Vec<String> = (1..=30).map(|i| format!("You see here {i} gold pieces.")).collect();
    let keys = [
        "k - a brass key.",
        "j - a brass key.",
        "You swap places with your kitten.",
        "You swap places with your little dog.",
    ];
    {
        let bank: Arc<dyn LabelBank> = Arc::new(FileBank::open(dir.path()).unwrap());
        let c = Core::new(cfg(), PromptConfig::default(), llm(&url), bank.clone()).unwrap();
        let mut tasks = TaskGroup::new();
        c.spawn_workers(&mut tasks);
        // the first gold caption waits at the (slow) LLM while the others arrive
        let ack = c.submit(&gold[..1]).unwrap();
        assert_eq!(ack.queued, 1);
        let ack = c.submit(&gold[1..]).unwrap();
        assert_eq!((ack.queued, ack.known), (0, 29));
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        assert_eq!(c.submit(&keys).unwrap().queued, 2);
        until("every caption labelled", 20, || bank.len().unwrap() == 34).await;
        tasks.shutdown(Duration::from_secs(10)).await.unwrap();
        assert_eq!(prompts_asked(&script), 3, "captions asking the same question were asked apiece");
        let all = bank.all().unwrap();
        let first = all.iter().find(|r| r.caption == gold[0]).unwrap();
        assert_eq!((first.label, first.asked_as.as_deref()), (Label::Unhelpful, None));
        let later = all.iter().find(|r| r.caption == gold[29]).unwrap();
        assert_eq!((later.label, later.asked_as.as_deref()), (Label::Unhelpful, Some(gold[0].as_str())));
        let key = all.iter().find(|r| r.caption == "j - a brass key.").unwrap();
        assert_eq!((key.label, key.asked_as.as_deref()), (Label::Helpful, Some("k - a brass key.")));
    }
    // restarted on the same bank: a new count of gold is answered without a prompt
    let bank: Arc<dyn LabelBank> = Arc::new(FileBank::open(dir.path()).unwrap());
    let c = Core::new(cfg(), PromptConfig::default(), llm(&url), bank.clone()).unwrap();
    let ack = c.submit(&["You see here 977 gold pieces.".to_string()]).unwrap();
    assert_eq!((ack.queued, ack.known), (0, 1));
    assert_eq!(c.label_of("You see here 977 gold pieces.").unwrap(), Some(Label::Unhelpful));
    assert_eq!(prompts_asked(&script), 3);
    // with no rule, every distinct caption is its own question
    let plain = AnnotatorConfig { caption_key: vec![], ..cfg() };
    let c = Core::new(plain, PromptConfig::default(), llm(&url), bank).unwrap();
    assert_eq!(c.submit(&["You see here 978 gold pieces.".to_string()]).unwrap().queued, 1);
}

/// A caption of several messages is judged by its messages: progress beside a setback is
/// helpful, each message is asked once however many captions hold it, and a caption whose
/// messages were all answered before needs no prompt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captions_are_judged_message_by_message() {
    let script = Arc::new(Mutex::new(Script { auto: true, auto_delay_ms: 100, ..Default::default() }));
    let url = serve(script.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let bank: Arc<dyn LabelBank> = Arc::new(FileBank::open(dir.path()).unwrap());
    let cfg = AnnotatorConfig { retry_pause_ms: 100, split_messages: true, ..Default::default() };
    let c = Core::new(cfg, PromptConfig::default(), llm(&url), bank.clone()).unwrap();
    let mut tasks = TaskGroup::new();
    c.spawn_workers(&mut tasks);
    let caps: Vec<String> = [
        "k - a brass key. The newt bites!",
        "You see here 3 gold pieces. The newt bites!",
        "The newt bites!",
        "You see here 4 gold pieces. k - a brass key.",
    ]
    .map(String::from)
    .into();
    let ack = c.submit(&caps).unwrap();
    assert_eq!(ack.queued + ack.known, 4);
    // the three distinct questions: "k - a brass key.", "The newt bites!", "You see here 3 gold pieces."
    until("every caption labelled", 20, || caps.iter().all(|x| c.label_of(x).unwrap().is_some())).await;
    assert_eq!(prompts_asked(&script), 3);
    let label = |x: &str| c.label_of(x).unwrap().unwrap();
    assert_eq!(label("k - a brass key. The newt bites!"), Label::Helpful, "the bite hid the key");
    assert_eq!(label("You see here 3 gold pieces. The newt bites!"), Label::Unhelpful);
    assert_eq!(label("You see here 4 gold pieces. k - a brass key."), Label::Helpful);
    let rec = bank.all().unwrap().into_iter().find(|r| r.caption == caps[0]).unwrap();
    assert_eq!(rec.asked_as.as_deref(), Some("k - a brass key. | The newt bites!"));
    // every message answered before: no prompt
    let ack = c.submit(&["The newt bites! j - a brass key.".to_string()]).unwrap();
    assert_eq!((ack.queued, ack.known), (0, 1));
    assert_eq!(label("The newt bites! j - a brass key."), Label::Helpful);
    tasks.shutdown(Duration::from_secs(10)).await.unwrap();
    assert_eq!(prompts_asked(&script), 3);
}

/// `annotator.batch` = 1 (the default): a worker takes one caption at a time, so a fast
/// answer is stored while a slow one is still out. (With 8, one worker took all three and
/// stored none until the slowest answered: on a CPU judge, seconds of finished answers held
/// back at a cold start.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_answer_is_stored_when_it_arrives_not_when_its_batch_is_done() {
    let script = Arc::new(Mutex::new(Script { auto: true, ..Default::default() }));
    // whichever caption is asked first waits 4 s for its answer
    script.lock().unwrap().replies.push_back(Reply(200, completions(&[(0, r#"{"helpful": false}"#)]), 4000));
    let url = serve(script.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let bank: Arc<dyn LabelBank> = Arc::new(FileBank::open(dir.path()).unwrap());
    let llm = one_per_request(url, 2, 20_000);
    let cfg = AnnotatorConfig { retry_pause_ms: 100, ..Default::default() };
    assert_eq!(cfg.batch, 1);
    let c = Core::new(cfg, PromptConfig::default(), llm, bank.clone()).unwrap();
    let mut tasks = TaskGroup::new();
    c.spawn_workers(&mut tasks);
    c.submit(&["You hit the newt.".into(), "You see here a brass key.".into(), "It's a wall.".into()]).unwrap();
    let t = Instant::now();
    while !(bank.len().unwrap() == 2 && script.lock().unwrap().in_flight == 1) {
        assert!(t.elapsed() < Duration::from_secs(20), "the fast answers were not stored while the slow one was out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    while bank.len().unwrap() < 3 {
        assert!(t.elapsed() < Duration::from_secs(20), "the slow answer never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The question whose captions the actors met most is asked first, however long ago it
/// arrived (on NetHack, failed-action messages met from the first steps on); with
/// `annotator.ask_order = "newest"` (ONI's order), the newest is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_most_met_waiting_caption_is_asked_first() {
    use oni_annotator::intake::AskOrder;
    for (order, first, second) in [
        (AskOrder::Frequent, "You can't go up here.", "Rare message three."),
        (AskOrder::Newest, "Rare message nine.", "Rare message eight."),
    ] {
        let script = Arc::new(Mutex::new(Script { auto: true, ..Default::default() }));
        let url = serve(script.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let bank: Arc<dyn LabelBank> = Arc::new(FileBank::open(dir.path()).unwrap());
        let llm = one_per_request(url, 1, 5000);
        let cfg = AnnotatorConfig { ask_order: order, ..Default::default() };
        let c = Core::new(cfg, PromptConfig::default(), llm, bank.clone()).unwrap();
        let words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
        let mut captions = vec!["You can't go up here.".to_string()];
        captions.extend(words.iter().map(|w| format!("Rare message {w}.")));
        assert_eq!(c.submit(&captions).unwrap().queued, 11);
        let met = [("You can't go up here.".into(), 500), ("Rare message three.".into(), 2), ("Not sent.".into(), 9)];
        assert_eq!(c.met(&met), 2, "only waiting captions are counted");
        let mut tasks = TaskGroup::new();
        c.spawn_workers(&mut tasks);
        until("every caption answered", 20, || bank.len().unwrap() == 11).await;
        let asked: Vec<String> = script.lock().unwrap().requests.iter().map(|r| r["prompt"].to_string()).collect();
        assert_eq!(asked.len(), 11);
        assert!(asked[0].contains(first), "{order:?}: asked first: {}", asked[0]);
        assert!(asked[1].contains(second), "{order:?}: asked second: {}", asked[1]);
    }
}

/// A server that takes longer than the shutdown deadline to answer (a busy llama-server with
/// a long queue) does not hold the annotator up: the stop drops the requests in flight and
/// their questions go back to the backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_does_not_wait_for_a_slow_llm_and_keeps_its_questions() {
    let script = Arc::new(Mutex::new(Script { auto: true, auto_delay_ms: 60_000, ..Default::default() }));
    let url = serve(script.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let bank: Arc<dyn LabelBank> = Arc::new(FileBank::open(dir.path()).unwrap());
    let cfg = AnnotatorConfig { caption_key: vec![], ..Default::default() };
    let c = Core::new(cfg, PromptConfig::default(), one_per_request(url, 2, 120_000), bank.clone()).unwrap();
    let mut tasks = TaskGroup::new();
    c.spawn_workers(&mut tasks);
    let captions: Vec<String> = (0..4).map(|i| format!("You see here {i} gold pieces.")).collect();
    c.submit(&captions).unwrap();
    until("two requests in flight", 10, || script.lock().unwrap().in_flight == 2).await;
    tasks.shutdown(Duration::from_secs(3)).await.expect("the workers stop while their requests wait");
    assert_eq!(bank.len().unwrap(), 0);
    assert_eq!((c.in_flight(), c.backlog()), (0, 4), "every question back in the backlog");
}
