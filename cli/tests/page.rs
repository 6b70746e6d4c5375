//! The run page of a short real `oni run` (keyroom-sparse with ONI-classification and the
//! rule judge), loaded headless in Debian's chromium: the curves have points, a recorded
//! episode plays to its end, the label table lists the bank's captions, a wrong token is
//! refused, and damaged recordings are skipped with a note. Screenshots are kept in
//! `<target>/tmp/page-screenshots/` to be looked at.

mod support;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

const TOKEN: &str = "page-test-token";

/// One HTTP/1.0 GET on loopback: (status, body).
fn get(port: u16, path: &str, bearer: Option<&str>) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = bearer.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

fn get_json(port: u16, path: &str) -> serde_json::Value {
    let (status, body) = get(port, path, Some(TOKEN));
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn chromium() -> PathBuf {
    let found = ["chromium", "chromium-browser"].iter().find(|c| {
        Command::new("sh").arg("-c").arg(format!("command -v {c}")).output().is_ok_and(|o| o.status.success())
    });
    PathBuf::from(*found.expect("chromium is not installed: scripts/test.sh installs Debian's chromium for this test"))
}

/// Chromium headless on `url`, run until its scripts settle for `budget_ms` of virtual time;
/// extra arguments say what it produces.
fn headless(url: &str, budget_ms: u32, extra: &[&str], profile: &Path) -> std::process::Output {
    let out = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .args(extra)
        .arg(url)
        .output()
        .expect("start chromium");
    assert!(out.status.success(), "chromium on {url}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The value of attribute `attr` on the element with id `id` in a dumped DOM.
fn attribute(dom: &str, id: &str, attr: &str) -> Option<String> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let tag_start = dom[..at].rfind('<')?;
    let tag = &dom[tag_start..tag_start + dom[tag_start..].find('>')?];
    let v = tag.split(&format!("{attr}=\"")).nth(1)?;
    Some(v[..v.find('"')?].to_string())
}

fn screenshots() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("page-screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn the_run_page_shows_curves_episodes_and_labels_in_a_real_browser() {
    let _ = chromium();
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let judge_port = free_port();
    let _judge = Proc::start("judge", dir.path(), &["judge", "--listen", &format!("127.0.0.1:{judge_port}")]);
    wait_listening_on("127.0.0.1", judge_port, "oni judge");
    let port = free_port();
    let sets = [
        format!("page.listen=\"127.0.0.1:{port}\""),
        "page.mode=\"on\"".into(),
        format!("transport.token=\"{TOKEN}\""),
        format!("llm.base_url=\"http://127.0.0.1:{judge_port}\""),
        "telemetry.metrics_listen=\"\"".into(),
        "run.progress_interval_secs=1".into(),
        "record.every_seconds=0".into(),
        "record.every_episodes=20".into(),
        "annotator.drain_secs=0".into(),
    ];
    let mut args: Vec<String> = ["run", "--config", "configs/keyroom-sparse-classification.toml", "--run-dir"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(run_dir.display().to_string());
    for s in &sets {
        args.extend(["--set".to_string(), s.clone()]);
    }
    let mut run = Proc::start("run", dir.path(), &as_strs(&args));
    wait_listening_on("127.0.0.1", port, "the run page");
    let address = std::fs::read_to_string(run_dir.join("page-address")).unwrap();
    assert_eq!(address.trim(), format!("http://127.0.0.1:{port}/"));
    assert!(run.log_text().contains(&format!("run page: http://127.0.0.1:{port}/")), "{}", run.log_text());

    // the token: nothing is served without it, or with another
    for path in ["/", "/page.js", "/api/metrics", "/api/labels", "/api/recordings"] {
        let (status, body) = get(port, path, None);
        assert_eq!(status, 401, "{path} without the token: {body}");
        assert!(body.contains("token"), "{body}");
        assert_eq!(get(port, path, Some("not-the-token")).0, 401, "{path} with a wrong token");
    }
    assert_eq!(get(port, &format!("/?token={TOKEN}"), None).0, 200);

    // wait until there is something of each kind to show
    let deadline = Instant::now() + Duration::from_secs(240);
    let (metrics, recordings, labels) = loop {
        assert!(run.alive(), "oni run ended early:\n{}", run.log_text());
        let m = get_json(port, "/api/metrics?from=0");
        let r = get_json(port, "/api/recordings");
        let l = get_json(port, "/api/labels?limit=500");
        let ready = m["rows"].as_array().unwrap().len() >= 3
            && !r["recordings"].as_array().unwrap().is_empty()
            && l["total"].as_u64().unwrap() >= 3
            && l["rows"].as_array().unwrap().iter().any(|row| row["met"].as_u64().is_some());
        if ready {
            break (m, r, l);
        }
        assert!(
            Instant::now() < deadline,
            "no rows, recordings and labels after 240 s:\n{m}\n{r}\n{l}\n{}",
            run.log_text()
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    let first = &metrics["rows"][0];
    assert!(first["env_steps"].is_u64() && first["steps_per_second"].is_number(), "{first}");
    // a caption the agents met is in the table with its count and the model's pay
    let met_row = labels["rows"].as_array().unwrap().iter().find(|r| r["met"].as_u64().is_some()).unwrap().clone();
    assert!(met_row["label"] == "helpful" || met_row["label"] == "unhelpful", "{met_row}");

    // damaged recordings beside the real ones: a summary that is not one, and a copy of a
    // real recording with its ttyrec cut mid-frame
    let rec_dir = run_dir.join("recordings");
    let real = recordings["recordings"][0]["name"].as_str().unwrap().to_string();
    std::fs::write(rec_dir.join("000000000000001-broken-000000.json"), b"{ not json").unwrap();
    let cut = "000000000000002-cut-000000";
    for ext in [".json", ".steps.jsonl"] {
        std::fs::copy(rec_dir.join(format!("{real}{ext}")), rec_dir.join(format!("{cut}{ext}"))).unwrap();
    }
    let tty = std::fs::read(rec_dir.join(format!("{real}.ttyrec"))).unwrap();
    std::fs::write(rec_dir.join(format!("{cut}.ttyrec")), &tty[..tty.len() - 7]).unwrap();
    let listed = get_json(port, "/api/recordings");
    let skipped = listed["skipped"].as_array().unwrap();
    assert!(skipped.iter().any(|s| s["name"] == "000000000000001-broken-000000"), "{listed}");
    let damaged = get_json(port, &format!("/api/recordings/{cut}"));
    assert!(damaged["notes"][0].as_str().is_some_and(|n| n.contains("ttyrec")), "{damaged}");
    assert_eq!(get(port, "/api/recordings/..%2Fconfig", Some(TOKEN)).0, 404);
    assert_eq!(get(port, "/api/recordings/nothing-here", Some(TOKEN)).0, 404);
    // the episode the page plays first: the newest real one
    let newest = listed["recordings"][0]["name"].as_str().unwrap().to_string();
    let episode = get_json(port, &format!("/api/recordings/{newest}?count=5"));
    let steps = episode["steps"].as_array().unwrap().len();
    assert!(steps > 0);
    assert_eq!(
        episode["frames_total"].as_u64().unwrap() as usize,
        steps + 1,
        "a screen at the start and after each step"
    );

    // the page itself, in chromium: curves drawn, the newest episode played to its end at
    // full speed, the table filled from the bank
    let profile = dir.path().join("chromium");
    let url = format!("http://127.0.0.1:{port}/?token={TOKEN}&autoplay=1&speed=0&rows=500");
    let dom = String::from_utf8(headless(&url, 30_000, &["--dump-dom"], &profile).stdout).unwrap();
    let shots = screenshots();
    std::fs::write(shots.join("run-page.html"), &dom).unwrap();
    for key in ["steps_per_second", "success_rate", "mean_extrinsic_return", "labels", "mean_policy_lag"] {
        let points: usize = attribute(&dom, &format!("chart-{key}"), "data-points")
            .unwrap_or_else(|| panic!("no curve {key} in the page:\n{dom}"))
            .parse()
            .unwrap();
        assert!(points >= 3, "curve {key} has {points} points:\n{dom}");
    }
    assert_eq!(attribute(&dom, "player", "data-state").as_deref(), Some("ended"), "{dom}");
    let played: usize = attribute(&dom, "player", "data-step").unwrap().parse().unwrap();
    let of: usize = attribute(&dom, "player", "data-steps").unwrap().parse().unwrap();
    assert!(played == of && of > 0, "played {played} of {of} steps");
    assert!(
        dom.contains("broken-000000") && dom.contains("not a recording summary"),
        "the skipped recording's note:\n{dom}"
    );
    let rows: usize = attribute(&dom, "labels", "data-rows").unwrap().parse().unwrap();
    assert!(rows >= 3, "label table rows: {rows}");
    let caption = met_row["caption"].as_str().unwrap();
    let escaped = caption.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    assert!(dom.contains(&escaped), "the label table lacks {caption:?}:\n{dom}");

    let shot = shots.join("run-page.png");
    let _ = std::fs::remove_file(&shot);
    headless(&url, 30_000, &[&format!("--screenshot={}", shot.display()), "--window-size=1400,2200"], &profile);
    assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000), "no screenshot at {}", shot.display());

    // a wrong token in the browser: the refusal, and nothing of the run
    let refused = String::from_utf8(
        headless(&format!("http://127.0.0.1:{port}/?token=wrong"), 5_000, &["--dump-dom"], &profile).stdout,
    )
    .unwrap();
    assert!(refused.contains("wrong token") && !refused.contains("Label bank"), "{refused}");
    let shot = shots.join("run-page-wrong-token.png");
    headless(
        &format!("http://127.0.0.1:{port}/?token=wrong"),
        5_000,
        &[&format!("--screenshot={}", shot.display()), "--window-size=800,300"],
        &profile,
    );
    eprintln!("screenshots in {}", shots.display());

    let ended = run.terminate(Duration::from_secs(60));
    assert!(ended.is_some_and(|(s, _)| s.success()), "oni run did not stop cleanly:\n{}", run.log_text());
}
