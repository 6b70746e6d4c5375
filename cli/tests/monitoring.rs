//! The deployment's monitoring, checked against real programs: the Prometheus config and
//! alert rules pass `promtool`, the compose file passes `docker-compose config`, and a
//! loopback cluster (learner, two actors, annotator on Redis, llama-server) scraped by a real
//! Prometheus (Debian's) answers every dashboard panel's query with data.

mod support;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

fn ok(cmd: &mut Command) -> String {
    let out = cmd.current_dir(repo_root()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn promtool_accepts_the_scrape_config_and_the_alert_rules_pass_their_tests() {
    ok(Command::new("promtool").args(["check", "config", "deploy/prometheus/prometheus.yml"]));
    let out = ok(Command::new("promtool").args(["test", "rules", "deploy/prometheus/alerts_test.yml"]));
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn the_compose_file_is_valid() {
    let out = ok(Command::new("docker-compose").args([
        "--env-file",
        "deploy/.env.example",
        "-f",
        "docker-compose.yml",
        "config",
    ]));
    for service in ["redis:", "learner:", "actor:", "annotator:", "llm:", "prometheus:", "grafana:"] {
        assert!(out.contains(service), "service {service} missing from the resolved compose file");
    }
    ok(Command::new("docker-compose").args([
        "--env-file",
        "deploy/.env.example",
        "-f",
        "docker-compose.yml",
        "--profile",
        "gpu",
        "config",
    ]));
}

/// Every PromQL expression of every panel of the provisioned dashboards.
fn dashboard_queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("deploy/grafana/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        let board: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for p in board["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                let name = format!("{} / {}", board["title"].as_str().unwrap(), p["title"].as_str().unwrap());
                out.push((name, t["expr"].as_str().unwrap().to_string()));
            }
        }
    }
    out
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// How many series an instant query returns (`None` while Prometheus does not answer).
fn series_count(prom: &str, expr: &str) -> Option<usize> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(prom).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /api/v1/query?query={} HTTP/1.1\r\nHost: {prom}\r\nConnection: close\r\n\r\n", percent_encode(expr))
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let body = text.split("\r\n\r\n").nth(1)?;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    assert_eq!(v["status"], "success", "query `{expr}` failed: {body}");
    Some(v["data"]["result"].as_array().map_or(0, |r| r.len()))
}

fn prometheus_config(dir: &Path, learner: u16, annotator: u16, actors: &[u16]) -> std::path::PathBuf {
    let rules = repo_root().join("deploy/prometheus/alerts.yml");
    let targets = |ports: &[u16]| ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect::<Vec<_>>().join(", ");
    let cfg = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n\
         \x20 - job_name: learner\n    static_configs:\n      - targets: [{}]\n\
         \x20 - job_name: annotator\n    static_configs:\n      - targets: [{}]\n\
         \x20 - job_name: actor\n    static_configs:\n      - targets: [{}]\n",
        rules.display(),
        targets(&[learner]),
        targets(&[annotator]),
        targets(actors)
    );
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, cfg).unwrap();
    path
}

#[test]
fn every_dashboard_panel_has_data_from_a_loopback_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (lport, aport, llm, redis, prom) = (free_port(), free_port(), free_port(), free_port(), free_port());
    let (m_learner, m_annotator, m_a1, m_a2) = (free_port(), free_port(), free_port(), free_port());
    let _redis = redis_server("127.0.0.1", redis, d, Persistence::None);
    // The rule judge, not a small LLM: a sampled model may answer every one of keyroom's
    // dozen questions alike, and then no classifier is ever published and the reward-model
    // panels stay empty. The rule calls "This door is locked." progress and "You see no
    // objects here." not, so both classes arrive within seconds. The LLM client itself is
    // tested against a real llama-server in the annotator tests.
    let _llm = Proc::start("judge", d, &["judge", "--listen", &format!("127.0.0.1:{llm}")]);
    let metrics = |p: u16| format!("telemetry.metrics_listen=\"127.0.0.1:{p}\"");
    let reward = [
        "--set",
        "reward.kind=\"classification\"",
        "--set",
        "reward.intrinsic_coef=0.1",
        "--set",
        "reward.pull_ms=300",
    ];
    let mut largs = learner_args(
        lport,
        &d.join("learner"),
        &["--set", &metrics(m_learner), "--set", "learner.checkpoint_interval_secs=2"],
    );
    largs.extend(reward.iter().map(|s| s.to_string()));
    let _learner = Proc::start("learner", d, &as_strs(&largs));

    let redis_url = format!("label_bank.redis_url=\"redis://127.0.0.1:{redis}\"");
    let metrics_at = metrics(m_annotator);
    let settings = [
        "label_bank.kind=\"redis\"",
        &redis_url,
        "distill.publish_interval_ms=500",
        "distill.heldout_fraction=0.5",
        "distill.min_per_class=1",
        "annotator.drain_secs=0",
        &metrics_at,
    ];
    let mut ann = annotator_args(
        &format!("127.0.0.1:{aport}"),
        &format!("http://127.0.0.1:{llm}"),
        &d.join("annotator"),
        &settings,
    );
    ann.extend(reward.iter().map(|s| s.to_string()));
    let _annotator = Proc::start("annotator", d, &as_strs(&ann));
    let mut actors = Vec::new();
    for (i, m) in [m_a1, m_a2].into_iter().enumerate() {
        let id = format!("a{i}");
        let mut a =
            actor_args(lport, &id, &["--set", &format!("actor.annotator=\"127.0.0.1:{aport}\""), "--set", &metrics(m)]);
        a.extend(reward.iter().map(|s| s.to_string()));
        // one actor asks the learner's central inference (its panels need data too)
        if i == 0 {
            a.extend(["--set".to_string(), "actor.inference=\"remote\"".to_string()]);
        }
        actors.push(Proc::start(&id, d, &as_strs(&a)));
    }
    let config = prometheus_config(d, m_learner, m_annotator, &[m_a1, m_a2]);
    let prom_log = std::fs::File::create(d.join("prometheus.log")).unwrap();
    let _prometheus = Server(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", d.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(prom_log))
            .spawn()
            .expect("prometheus (apt-get install prometheus)"),
    );
    let prom = format!("127.0.0.1:{prom}");

    let queries = dashboard_queries();
    assert!(queries.len() >= 37, "only {} panel queries found", queries.len());
    let t = Instant::now();
    let mut empty: Vec<&(String, String)>;
    loop {
        empty = queries.iter().filter(|(_, q)| series_count(&prom, q).unwrap_or(0) == 0).collect();
        if empty.is_empty() || t.elapsed() > Duration::from_secs(240) {
            break;
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    for a in actors.iter_mut() {
        assert!(a.alive(), "an actor died: {}", a.log_text());
    }
    assert!(
        empty.is_empty(),
        "panels without data after {:?}:\n{}",
        t.elapsed(),
        empty.iter().map(|(n, q)| format!("  {n}: {q}")).collect::<Vec<_>>().join("\n")
    );
    // every family each role exports says what it is
    for port in [m_learner, m_annotator, m_a1, m_a2] {
        let text = scrape(&format!("127.0.0.1:{port}")).expect("metrics");
        let undescribed: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|t| t.split(' ').next())
            .filter(|f| !text.contains(&format!("# HELP {f} ")))
            .collect();
        assert!(undescribed.is_empty(), "families without HELP text on :{port}: {undescribed:?}");
    }
    // every target is scraped, and no alert fires on a healthy cluster
    assert_eq!(series_count(&prom, "up == 1"), Some(4));
    assert_eq!(series_count(&prom, "ALERTS{alertstate=\"firing\"}"), Some(0));
}
