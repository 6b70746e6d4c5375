//! `oni bench page`: how long the run page takes to load with a large label bank. A file
//! bank of `--captions` answers and a classification reward model distilled from them are
//! served as `oni run` serves them; the page's requests are timed over HTTP, and the whole
//! page in headless chromium where it is installed.

use super::data::MetCounts;
use super::{LabelSource, PageConfig, Sources};
use anyhow::{Context, Result};
use clap::Args;
use oni_annotator::{FileBank, Label, LabelBank, LabelRecord};
use oni_reward_model::{DistillConfig, Distiller, Example, Kind};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

#[derive(Args)]
pub struct PageBench {
    /// Answers in the label bank.
    #[arg(long, default_value_t = 10_000)]
    captions: usize,
    /// Times each request is made; figures are the median and the slowest.
    #[arg(long, default_value_t = 20)]
    requests: usize,
    /// Also load the whole page in headless chromium this many times (0: not).
    #[arg(long, default_value_t = 3)]
    browser: usize,
}

const MONSTERS: [&str; 12] = [
    "newt",
    "jackal",
    "grid bug",
    "kobold",
    "sewer rat",
    "gnome",
    "fox",
    "coyote",
    "lichen",
    "goblin",
    "acid blob",
    "yellow mold",
];

/// A NetHack-like caption, distinct for each `i`, and whether the rubric calls it helpful.
fn caption(i: usize) -> (String, bool) {
    let m = MONSTERS[i % MONSTERS.len()];
    match i % 4 {
        0 => (format!("You kill the {m}! ({i})"), true),
        1 => (format!("The {m} bites! ({i})"), false),
        2 => (format!("You see here {i} gold pieces."), true),
        _ => (format!("You hear some noises in the distance. ({i})"), false),
    }
}

pub async fn run(b: PageBench) -> Result<()> {
    let dir = tempfile::tempdir().context("a temporary directory for the bank")?;
    let bank = FileBank::open(dir.path()).context("the bench's file bank")?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    let records: Vec<LabelRecord> = (0..b.captions)
        .map(|i| {
            let (caption, helpful) = caption(i);
            LabelRecord {
                caption,
                label: if helpful { Label::Helpful } else { Label::Unhelpful },
                prompt_hash: "bench".into(),
                model: "bench".into(),
                raw_answer: format!("{{\"helpful\": {helpful}}}"),
                latency_ms: 100,
                time_ms: now - (b.captions - i) as u64 * 1000,
                tokens: Some(300),
                asked_as: None,
                rule: None,
            }
        })
        .collect();
    bank.put(&records).context("filling the bench's bank")?;
    // a reward model as the annotator serves it: classification, distilled from the bank
    let mut distiller = Distiller::new(Kind::Classification, DistillConfig::default(), 1);
    distiller
        .add_labels(records.iter().map(|r| Example { caption: r.caption.clone(), helpful: r.label == Label::Helpful }));
    distiller.train(50);
    let model = Arc::new(distiller.snapshot(1).encode());
    // half the captions met, as a long run's ledger would have them
    let met = Arc::new(MetCounts::default());
    met.add(
        &(0..b.captions)
            .step_by(2)
            .map(|i| {
                let n = (b.captions - i) as u64;
                (caption(i).0, oni_actor::intrinsic::Booked { met: n, paid_steps: n / 2, paid: n as f64 * 0.1 })
            })
            .collect::<HashMap<_, _>>(),
    );
    let bank: Arc<dyn LabelBank> = Arc::new(bank);
    let sources = Sources {
        name: "page-bench".into(),
        env: "keyroom-small".into(),
        run_dir: dir.path().to_path_buf(),
        recordings: None,
        labels: Ok(LabelSource { bank, served: Box::new(move || Some((1, model.clone()))) }),
        met,
        token: None,
    };
    let cfg = PageConfig { mode: oni_proto::Switch::On, listen: "127.0.0.1:0".into() };
    let listener = super::bind(&cfg, false).await?;
    let addr = listener.local_addr()?;
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(super::serve(listener, sources, stop.clone()));

    let client = reqwest::Client::new();
    let mut figures = serde_json::Map::new();
    let paths = [
        ("html", "/".to_string()),
        ("script", "/page.js".into()),
        ("labels_first_page", "/api/labels?offset=0&limit=50&order=met".into()),
        ("labels_newest", "/api/labels?offset=0&limit=50&order=recent".into()),
        ("labels_last_page", format!("/api/labels?offset={}&limit=50&order=met", b.captions.saturating_sub(50))),
        ("labels_search", "/api/labels?offset=0&limit=50&q=bites".into()),
    ];
    for (name, path) in &paths {
        let mut ms = Vec::with_capacity(b.requests);
        let mut bytes = 0;
        for _ in 0..b.requests.max(1) {
            let t = Instant::now();
            let body = client.get(format!("http://{addr}{path}")).send().await?.error_for_status()?.bytes().await?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            bytes = body.len();
        }
        figures.insert(name.to_string(), json!({ "path": path, "bytes": bytes, "ms": stats(&mut ms) }));
    }

    let browser = if b.browser > 0 { browse(&format!("http://{addr}/"), b.browser).await? } else { json!(null) };
    stop.cancel();
    let _ = server.await;
    println!(
        "{}",
        json!({ "bench": "page", "captions": b.captions, "requests": b.requests, "http": figures,
                "browser": browser, "cpu": crate::bench::cpu_info() })
    );
    Ok(())
}

fn stats(ms: &mut [f64]) -> serde_json::Value {
    ms.sort_by(f64::total_cmp);
    json!({ "median": ms[ms.len() / 2], "max": ms[ms.len() - 1] })
}

/// Loads the page in headless chromium `n` times until its script has filled the label
/// table, against the same browser on a blank page: the page's own share is the difference.
async fn browse(url: &str, n: usize) -> Result<serde_json::Value> {
    let Some(chromium) = ["chromium", "chromium-browser"].into_iter().find(|c| which(c)) else {
        return Ok(json!({ "skipped": "chromium is not installed (Debian: apt install chromium)" }));
    };
    let profile = tempfile::tempdir()?;
    let load = |target: String| {
        let profile = profile.path().to_path_buf();
        async move {
            let t = Instant::now();
            let out = tokio::task::spawn_blocking(move || {
                std::process::Command::new(chromium)
                    .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--dump-dom"])
                    .arg(format!("--user-data-dir={}", profile.display()))
                    .arg("--virtual-time-budget=3000")
                    .arg(&target)
                    .output()
            })
            .await??;
            anyhow::ensure!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
            Ok::<_, anyhow::Error>((t.elapsed().as_secs_f64() * 1e3, String::from_utf8_lossy(&out.stdout).into_owned()))
        }
    };
    let (mut page_ms, mut blank_ms) = (Vec::new(), Vec::new());
    let mut rows_shown = 0;
    for _ in 0..n {
        blank_ms.push(load("about:blank".into()).await?.0);
        let (ms, dom) = load(url.to_string()).await?;
        page_ms.push(ms);
        rows_shown = dom
            .split("id=\"labels\"")
            .nth(1)
            .and_then(|t| t.split("data-rows=\"").nth(1))
            .and_then(|v| v.split('"').next()?.parse::<usize>().ok())
            .unwrap_or(0);
    }
    Ok(json!({ "page_ms": stats(&mut page_ms), "blank_page_ms": stats(&mut blank_ms), "label_rows_shown": rows_shown,
               "note": "wall time of `chromium --headless --dump-dom` until the page's first requests are answered and drawn" }))
}

fn which(cmd: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What `oni bench e2e --page` runs beside the training: the page served as `oni run`
/// serves it, the progress rows it reads, and a client polling it as an open tab does.
pub struct Watched {
    pub progress: crate::progress::Progress,
    pub stop: tokio_util::sync::CancellationToken,
}

/// The page is served as `p.cfg.page` says (`oni bench e2e --page` turns it on, on a free
/// loopback port).
pub async fn watch(p: &crate::roles::Prepared, learner: &mut oni_learner::LearnerHandle) -> Result<Watched> {
    let met = Arc::new(MetCounts::default());
    let recordings = p.cfg.record_plan(Some(&p.run_dir)).map(|plan| plan.dir);
    let sources = Sources::of_run(p, recordings, Err("oni bench e2e runs no annotator".into()), met.clone());
    let token = sources.token.clone();
    let addr = crate::roles::start_page(p, true, sources, learner).await?.context("page.mode is off")?;
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(poll(format!("http://{addr}"), token, stop.clone()));
    let progress = crate::progress::Progress::new(Some(&p.run_dir), &learner.stats).with_met(Some(met));
    Ok(Watched { progress, stop })
}

/// Polls the page's data as page.js does: metrics every 2 s, recordings and labels every
/// 5 s, and the newest episode whenever it changes.
async fn poll(base: String, token: Option<String>, stop: tokio_util::sync::CancellationToken) {
    let client = reqwest::Client::new();
    let get = |path: String| {
        let mut req = client.get(format!("{base}{path}"));
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await?.json::<serde_json::Value>().await }
    };
    let (mut from, mut newest, mut k) = (0u64, String::new(), 0u64);
    loop {
        if k % 2 == 0 {
            if let Ok(v) = get(format!("/api/metrics?from={from}")).await {
                from = v["next"].as_u64().unwrap_or(from);
            }
        }
        if k % 5 == 0 {
            let _ = get("/api/labels?offset=0&limit=50".into()).await;
            if let Ok(v) = get("/api/recordings".into()).await {
                if let Some(name) = v["recordings"][0]["name"].as_str().filter(|n| *n != newest) {
                    newest = name.to_string();
                    let _ = get(format!("/api/recordings/{name}?from=0&count=500")).await;
                }
            }
        }
        k += 1;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}
