//! `oni bench judge` scores judges against the repo's labelled captions: the rule judge on
//! the real sets, a judge that answers garbage or hangs (unknown, never a crash), and bad
//! sets refused with the file and line named.

mod support;
use serde_json::Value;
use std::io::{Read, Write};
use std::process::{Command, Output};
use support::*;

fn bench(args: &[&str]) -> Output {
    Command::new(oni()).current_dir(repo_root()).args(["bench", "judge"]).args(args).output().unwrap()
}

fn rows(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect()
}

#[test]
fn the_rule_judge_is_scored_on_every_shipped_set() {
    let out = bench(&["--llm", "rule"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows = rows(&out);
    let sets: Vec<&str> = rows.iter().map(|r| r["set"].as_str().unwrap()).collect();
    for want in
        ["keyroom", "keyroom-pairs", "nethack-score", "nethack-score-pairs", "nethack-staircase", "nethack-oracle"]
    {
        assert!(sets.contains(&want), "no row for set {want}: {sets:?}");
    }
    // each set is scored on its dev and its test part, one row each
    let row = |set: &str, part: &str| {
        rows.iter().find(|r| r["set"] == set && r["part"] == part).unwrap_or_else(|| panic!("no {set} {part} row"))
    };
    let (dev, test) = (row("keyroom", "dev"), row("keyroom", "test"));
    let n = |r: &Value| r["n"].as_u64().unwrap();
    assert_eq!(n(dev) + n(test), 243, "every keyroom caption is in one part");
    assert!(n(dev) >= 50 && n(test) >= 50, "{dev} {test}");
    assert_eq!((dev["unknown_rate"].as_f64(), test["unknown_rate"].as_f64()), (Some(0.0), Some(0.0)));
    // the keyword rule calls "This door is locked." (a dev caption) helpful, which the rubric
    // does not: good, but not perfect
    let kappa = dev["kappa"].as_f64().unwrap();
    assert!(kappa > 0.5 && kappa < 1.0, "dev κ {kappa}");
    assert!(test["kappa"].as_f64().unwrap() > 0.5, "{test}");
    let (pdev, ptest) = (row("keyroom-pairs", "dev"), row("keyroom-pairs", "test"));
    assert!(pdev["pairs"].as_u64().unwrap() + ptest["pairs"].as_u64().unwrap() >= 100, "{pdev} {ptest}");
    for p in [pdev, ptest] {
        assert!(p["pair_agreement"].as_f64().unwrap() > 0.5, "{p}");
    }
    assert!(dev["prompt_tokens_per_label"].as_f64().unwrap() > 10.0, "usage not counted: {dev}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("| judge | set | part | n | accuracy |")
            && table.contains("| rule-judge (rule, whole) | keyroom | dev |")
            && table.contains("| rule-judge (rule, whole) | keyroom | test |")
    );

    // asking about each message of a caption gives the rule the same answers here (no
    // caption mixes a keyword message with another), but through more distinct questions
    let each = rows_of(&bench(&["--llm", "rule", "--sets", "keyroom", "--split", "each"]));
    for part in [dev, test] {
        let same = each.iter().find(|r| r["part"] == part["part"]).unwrap();
        assert_eq!(same["accuracy"], part["accuracy"], "{}", part["part"]);
    }
}

fn rows_of(out: &Output) -> Vec<Value> {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    rows(out)
}

/// An HTTP server that answers every request with `reply` (or, with `None`, never answers).
fn fake_llm(reply: Option<&'static str>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(mut sock) = sock else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                loop {
                    match sock.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let Some(body) = reply else {
                        std::thread::sleep(std::time::Duration::from_secs(30));
                        return;
                    };
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if sock.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

#[test]
fn garbage_and_silent_judges_count_as_unknown() {
    let garbage = fake_llm(Some(r#"{"choices": [{"index": 0, "message": {"content": "I like turtles."}}]}"#));
    let out = bench(&["--llm", &garbage, "--sets", "keyroom", "--limit", "12"]);
    let rows = rows_of(&out);
    assert_eq!(rows.iter().map(|r| r["n"].as_u64().unwrap()).sum::<u64>(), 12, "12 captions over dev and test");
    for r in &rows {
        assert_eq!((r["unknown_rate"].as_f64(), r["accuracy"].as_f64()), (Some(1.0), Some(0.0)), "{r}");
    }

    let silent = fake_llm(None);
    let quick = ["--set", "llm.timeout_ms=300", "--set", "llm.retries=0", "--set", "llm.adaptive=false"];
    let mut args = vec!["--llm", silent.as_str(), "--sets", "keyroom", "--limit", "4"];
    args.extend(quick);
    let rows = rows_of(&bench(&args));
    assert!(!rows.is_empty());
    for r in &rows {
        assert_eq!((r["unknown_rate"].as_f64(), r["kappa"].as_f64()), (Some(1.0), Some(0.0)), "{r}");
    }
}

#[test]
fn bad_sets_are_refused_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let rubrics = repo_root().join("docs/judging.md");
    let cases = [
        ("goal keyroom\nhelpful\tYou unlock the door.\nmaybe\tIt's a wall.\n", "bad.tsv:3:", "unknown label"),
        ("goal keyroom\nYou unlock the door.\n", "bad.tsv:2:", "missing label"),
        ("goal keyroom\nhelpful\ta\nunhelpful\ta\n", "bad.tsv:3:", "duplicate caption"),
        ("goal chess\nhelpful\ta\n", "bad.tsv:1:", "has no rubric"),
    ];
    for (text, at, what) in cases {
        std::fs::write(dir.path().join("bad.tsv"), text).unwrap();
        let out =
            bench(&["--llm", "rule", "--data", dir.path().to_str().unwrap(), "--rubrics", rubrics.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(at) && err.contains(what), "{text:?}: {err}");
        assert!(rows(&out).is_empty(), "rows printed for a bad set");
    }
}
