//! However many distinct captions a client sends, the annotator's memory stays within its
//! caps: 2 × 200 000 unique captions through the intake (`Core::submit`, what SubmitCaptions
//! calls), answered by a scripted judge, with the bank's memory, the distillation dataset, the
//! backlogs and the pair pool capped at 20 000. After the first 200 000 the caps are full; the
//! second 200 000 must leave every map at or under its cap and the heap where it was.

mod common;
use common::*;
use oni_annotator::llm::{Api, Constrain};
use oni_annotator::{AnnotatorConfig, Core, FileBank, LabelBank, LlmClient, LlmConfig, MapSizes, PromptConfig};
use oni_proto::tasks::TaskGroup;
use oni_reward_model::{DistillConfig, Kind};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The system allocator, counting the bytes allocated and not yet freed: the live heap, free
/// of what the allocator keeps cached (which RSS is not).
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            LIVE.fetch_add(l.size() as isize, Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            LIVE.fetch_add(l.size() as isize, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size() as isize, Relaxed);
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, size) };
        if !q.is_null() {
            LIVE.fetch_add(size as isize - l.size() as isize, Relaxed);
        }
        q
    }
}

#[global_allocator]
static HEAP: Counting = Counting;

const CAP: usize = 20_000;

/// One test at a time: the heap is the whole process's.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const PER_PHASE: usize = 200_000;

fn mib(bytes: isize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn rss_bytes() -> isize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: isize = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// A word of lowercase letters for `i` (no digits: the `numbers` key rule must not merge
/// them; the `x` keeps them from being a pet's name).
fn word(mut i: usize) -> String {
    let mut w = String::from("x");
    loop {
        w.push((b'a' + (i % 26) as u8) as char);
        i /= 26;
        if i == 0 {
            return w;
        }
    }
}

/// The `i`-th caption, each distinct: mostly a question of its own (half helpful), some
/// asking the same question as the caption before (`numbers` rule: the second waits for the
/// first's answer), some of two messages judged one by one.
fn caption(i: usize) -> String {
    let w = word(i);
    match i % 16 {
        5 => format!("You see here a {w} key. You hit the {w} newt."),
        6 | 14 => format!("You pick up 3 {} darts.", word(i / 8)),
        7 | 15 => format!("You pick up 4 {} darts.", word(i / 8)),
        n if n % 2 == 0 => format!("You see here a {w} key."),
        _ => format!("You hit the {w} newt."),
    }
}

async fn until(what: &str, secs: u64, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(secs), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The larger of each size.
fn peak(a: MapSizes, b: MapSizes) -> MapSizes {
    MapSizes {
        answers_by_question: a.answers_by_question.max(b.answers_by_question),
        backlog: a.backlog.max(b.backlog),
        in_flight: a.in_flight.max(b.in_flight),
        waiting_questions: a.waiting_questions.max(b.waiting_questions),
        waiting_captions: a.waiting_captions.max(b.waiting_captions),
        composites: a.composites.max(b.composites),
        pair_backlog: a.pair_backlog.max(b.pair_backlog),
        pairs_pending: a.pairs_pending.max(b.pairs_pending),
        pair_pool: a.pair_pool.max(b.pair_pool),
    }
}

/// Submits captions `from..from + PER_PHASE` in calls of 4096, keeping the backlog from
/// overflowing (so that every one is answered), then waits until all are; returns the
/// largest sizes seen after each call.
async fn flood(c: &Core, from: usize) -> MapSizes {
    let all: Vec<String> = (from..from + PER_PHASE).map(caption).collect();
    let mut most = MapSizes::default();
    for call in all.chunks(4096) {
        let ack = c.submit(call).unwrap();
        assert_eq!(ack.rejected, 0);
        most = peak(most, c.map_sizes());
        until("the backlog to shrink", 60, || c.map_sizes().backlog <= CAP / 2).await;
    }
    until("every caption and pair answered", 60, || c.backlog() + c.in_flight() == 0).await;
    peak(most, c.map_sizes())
}

/// Every map at or under `cap` (what is in flight: at most a request's worth per worker).
fn within_caps(s: &MapSizes, cap: usize) {
    assert!(s.answers_by_question <= cap, "{s:?}");
    assert!(s.backlog <= cap && s.pair_backlog <= cap && s.pair_pool <= cap, "{s:?}");
    assert!(s.waiting_captions <= cap && s.composites <= cap, "{s:?}");
    assert!(s.waiting_questions <= s.backlog + s.in_flight, "{s:?}");
    assert!(s.pairs_pending <= cap + 2 * 256 && s.in_flight <= 2 * 256, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unique_captions_leaves_every_map_within_its_cap_and_the_heap_flat() {
    let _one = SERIAL.lock().await;
    let t0 = Instant::now();
    let script = Arc::new(Mutex::new(Script { auto: true, forget: true, ..Default::default() }));
    let url = serve(script).await;
    // in memory where there is one: the bank syncs every write
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.unwrap();
    let bank: Arc<dyn LabelBank> = Arc::new(FileBank::open_with(dir.path(), CAP).unwrap());
    let llm = LlmClient::new(LlmConfig {
        base_url: url,
        api: Api::Completions,
        batch: 256,
        concurrency: 2,
        adaptive: false,
        constrain: Constrain::None,
        ..Default::default()
    })
    .unwrap();
    let cfg = AnnotatorConfig {
        backlog_capacity: CAP,
        pair_backlog_capacity: CAP,
        pair_pool: CAP,
        pairs_per_caption: 1,
        split_messages: true,
        ..Default::default()
    };
    let c = Core::new(cfg, PromptConfig::default(), llm, bank.clone()).unwrap();
    let mut tasks = TaskGroup::new();
    c.spawn_workers(&mut tasks);
    let distill = DistillConfig { max_items: CAP, publish_interval_ms: 5_000, ..Default::default() };
    c.start_distiller(Kind::Hashing, distill, &mut tasks).unwrap();

    let mut heaps = Vec::new();
    for phase in 0..2 {
        let most = flood(&c, phase * PER_PHASE).await;
        tokio::time::sleep(Duration::from_millis(300)).await; // the distiller takes the last answers
        let (heap, rss) = (LIVE.load(Relaxed), rss_bytes());
        eprintln!(
            "after {} captions ({:.1}s): heap {:.1} MiB, RSS {:.1} MiB, bank {}, largest {most:?}",
            (phase + 1) * PER_PHASE,
            t0.elapsed().as_secs_f64(),
            mib(heap),
            mib(rss),
            bank.len().unwrap()
        );
        within_caps(&most, CAP);
        assert!(bank.len().unwrap() <= CAP);
        heaps.push(heap);
    }
    let answered = c.answered();
    assert!(answered >= 2 * PER_PHASE as u64, "only {answered} answers: the flood was not labelled");
    // unbounded, the answers by question alone added ~70 MiB here (~0.37 KiB a caption)
    let (heap1, heap2) = (heaps[0], heaps[1]);
    assert!(
        heap2 - heap1 < 10 << 20,
        "the heap grew from {:.1} to {:.1} MiB over the second {PER_PHASE} captions",
        mib(heap1),
        mib(heap2)
    );
}

/// With the LLM away nothing is answered, and captions asking a question already queued wait
/// for it: however many arrive, at most `backlog_capacity` wait (the oldest go),
/// and the captions of several messages with them. Once the LLM is back the newest get their
/// answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captions_waiting_for_a_queued_question_are_capped_too() {
    let _one = SERIAL.lock().await;
    const SMALL: usize = 1000;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    // room for every answer, so that the last check sees which were given
    let bank: Arc<dyn LabelBank> = Arc::new(FileBank::open_with(dir.path(), 10 * SMALL).unwrap());
    let llm = LlmClient::new(LlmConfig {
        base_url: format!("http://127.0.0.1:{port}"),
        api: Api::Completions,
        batch: 64,
        ..Default::default()
    })
    .unwrap();
    let cfg = AnnotatorConfig {
        backlog_capacity: SMALL,
        pair_backlog_capacity: SMALL,
        pair_pool: SMALL,
        pairs_per_caption: 2,
        split_messages: true,
        retry_pause_ms: 100,
        ..Default::default()
    };
    let c = Core::new(cfg, PromptConfig::default(), llm, bank).unwrap();
    // one question (`numbers` rule), then captions of two messages, one of them that question
    let same: Vec<String> = (0..50_000).map(|n| format!("You see here {n} gold pieces.")).collect();
    let two: Vec<String> =
        (0..50_000).map(|n| format!("You see here {n} gold pieces. You hit the {} newt.", word(n))).collect();
    // and the newest, waiting for the first question again
    let late: Vec<String> = (50_000..50_100).map(|n| format!("You see here {n} gold pieces.")).collect();
    let mut most = MapSizes::default();
    for call in same.chunks(4096).chain(two.chunks(4096)).chain(late.chunks(4096)) {
        c.submit(call).unwrap();
        most = peak(most, c.map_sizes());
    }
    eprintln!("largest {most:?}");
    within_caps(&most, SMALL);
    assert_eq!(most.waiting_captions, SMALL, "the cap was reached");
    assert!(most.composites > 0);

    let script = Arc::new(Mutex::new(Script { auto: true, forget: true, ..Default::default() }));
    serve_on(script, port).await;
    let mut tasks = TaskGroup::new();
    c.spawn_workers(&mut tasks);
    until("the LLM to answer what waits", 30, || c.backlog() + c.in_flight() == 0).await;
    let s = c.map_sizes();
    assert_eq!((s.waiting_questions, s.waiting_captions, s.composites), (0, 0, 0), "{s:?}");
    assert!(c.label_of(late.last().unwrap()).unwrap().is_some(), "the newest caption was answered");
    assert!(c.label_of(&same[1]).unwrap().is_none(), "an old one went at the cap");
}
