//! deploy/swarm/stack.yml (with tls.yml) on a one-node Docker Swarm on 127.0.0.1: the images
//! from deploy/images.sh, the token and TLS keys as Docker secrets; the stack trains keyroom
//! with ONI-classification (learner, actors, annotator, Redis, llama-server on an overlay
//! network, every endpoint over TLS), keeps training while actors are scaled 1 → 3 → 1, while
//! a killed actor task is replaced, and through a rolling update of the actors; a killed
//! learner (its node lost: no signal, no final checkpoint) is restarted by Swarm from the
//! newest periodic checkpoint in its volume, and the actors rejoin it. The swarm (if this test
//! made it), the stack, its volumes and secrets are removed at the end.

mod support;
use oni_proto::transport::{AuthInterceptor, ClientOptions, TlsConfig};
use oni_proto::v1::learner_client::LearnerClient;
use oni_proto::v1::GetInfoRequest;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;
use tonic::service::interceptor::InterceptedService;

const TOKEN: &str = "swarm-s3cret";

fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker").args(args).output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("docker {args:?}: {}{}", text, String::from_utf8_lossy(&out.stderr)))
    }
}

/// The swarm, the stack and its secrets; all removed when dropped (the swarm only if this
/// test initialised it, the node labels only if it added them).
struct Deployment {
    stack: String,
    node: String,
    made_swarm: bool,
    secrets: Vec<String>,
    env: Vec<(String, String)>,
}

impl Deployment {
    fn new(stack: &str) -> Deployment {
        let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]).unwrap();
        let made_swarm = match state.trim() {
            "inactive" => {
                docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]).unwrap();
                true
            }
            "active" => false,
            other => panic!("this Docker engine's swarm state is `{other}`"),
        };
        let node = docker(&["info", "--format", "{{.Swarm.NodeID}}"]).unwrap().trim().to_string();
        let d = Deployment { stack: stack.into(), node, made_swarm, secrets: Vec::new(), env: Vec::new() };
        for l in ["oni.learner=true", "oni.state=true", "oni.llm=true"] {
            docker(&["node", "update", "--label-add", l, &d.node]).unwrap();
        }
        d
    }

    /// A Docker secret from `data`, named after the stack; its name is passed to the stack
    /// file through `var`.
    fn secret(&mut self, var: &str, what: &str, data: &[u8]) {
        use std::io::Write;
        let name = format!("{}_{what}", self.stack);
        let mut child = Command::new("docker")
            .args(["secret", "create", &name, "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(data).unwrap();
        assert!(child.wait().unwrap().success(), "docker secret create {name}");
        self.secrets.push(name.clone());
        self.env.push((var.into(), name));
    }

    fn deploy(&self) {
        let out = Command::new("docker")
            .args(["stack", "deploy", "--resolve-image", "never", "-c", "deploy/swarm/stack.yml"])
            .args(["-c", "deploy/swarm/tls.yml", &self.stack])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(repo_root())
            .output()
            .unwrap();
        assert!(out.status.success(), "docker stack deploy:\n{}", String::from_utf8_lossy(&out.stderr));
    }

    fn service(&self, name: &str) -> String {
        format!("{}_{name}", self.stack)
    }

    /// Running containers of a service's tasks on this node.
    fn containers(&self, service: &str) -> Vec<String> {
        let filter = format!("label=com.docker.swarm.service.name={}", self.service(service));
        let out = docker(&["ps", "-q", "--filter", &filter]).unwrap_or_default();
        out.split_whitespace().map(str::to_string).collect()
    }

    /// Tasks of a service ever started (running or not).
    fn tasks(&self, service: &str) -> usize {
        docker(&["service", "ps", "-q", &self.service(service)]).map_or(0, |s| s.split_whitespace().count())
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for service in ["learner", "actor", "annotator", "redis", "llm"] {
                let name = self.service(service);
                eprintln!("{}", docker(&["service", "ps", "--no-trunc", &name]).unwrap_or_else(|e| e));
                let logs = Command::new("docker").args(["service", "logs", "--tail", "20", &name]).output();
                if let Ok(o) = logs {
                    eprintln!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
                }
            }
        }
        let _ = docker(&["stack", "rm", &self.stack]);
        let label = format!("label=com.docker.stack.namespace={}", self.stack);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60)
            && docker(&["ps", "-aq", "--filter", &label]).is_ok_and(|s| !s.trim().is_empty())
        {
            std::thread::sleep(Duration::from_millis(500));
        }
        for s in &self.secrets {
            let _ = docker(&["secret", "rm", s]);
        }
        for v in ["checkpoints", "redis-data"] {
            let _ = docker(&["volume", "rm", &format!("{}_{v}", self.stack)]);
        }
        if self.made_swarm {
            let _ = docker(&["swarm", "leave", "--force"]);
        } else {
            for l in ["oni.learner", "oni.state", "oni.llm"] {
                let _ = docker(&["node", "update", "--label-rm", l, &self.node]);
            }
        }
    }
}

/// A container's log (stdout and stderr).
fn container_log(id: &str) -> String {
    let out = Command::new("docker")
        .args(["logs", id])
        .output()
        .map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)));
    out.unwrap_or_default()
}

/// The learner's env steps through its published port, over TLS with the token.
async fn steps(port: u16, ca: &Path) -> Option<u64> {
    let opts = ClientOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        tls: TlsConfig {
            enabled: true,
            ca: Some(ca.to_path_buf()),
            domain: Some("localhost".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let ch = opts.connect(&format!("127.0.0.1:{port}")).await.ok()?;
    let mut c = LearnerClient::new(InterceptedService::new(ch, AuthInterceptor::new(Some(TOKEN)).ok()?));
    c.get_info(GetInfoRequest {}).await.ok().map(|r| r.into_inner().env_steps)
}

/// Env steps per second over `window`, once training has moved past where it was.
async fn rate(port: u16, ca: &Path, what: &str, window: Duration) -> f64 {
    let before = steps(port, ca).await.unwrap_or(0);
    let from =
        wait_for(
            what,
            Duration::from_secs(180),
            || async move { steps(port, ca).await.filter(|s| *s > before + 2_000) },
        )
        .await;
    let t = Instant::now();
    tokio::time::sleep(window).await;
    let to = steps(port, ca).await.expect("the learner answers");
    (to - from) as f64 / t.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_swarm_stack_trains_over_tls_and_survives_scaling_kills_and_a_rolling_update() {
    let out = Command::new("bash").arg("deploy/images.sh").current_dir(repo_root()).output().unwrap();
    assert!(out.status.success(), "deploy/images.sh:\n{}", String::from_utf8_lossy(&out.stderr));
    let dir = tempfile::tempdir().unwrap();
    let certs: PathBuf = dir.path().join("certs");
    let made = Command::new(oni())
        .args(["certs", "--out"])
        .arg(&certs)
        .args(["--names", "learner,annotator,localhost,127.0.0.1"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));

    let mut d = Deployment::new(&format!("onitest{}", std::process::id()));
    d.secret("ONI_TOKEN_SECRET", "token", TOKEN.as_bytes());
    for (var, what, file) in [
        ("ONI_TLS_CERT_SECRET", "tls_cert", "cert.pem"),
        ("ONI_TLS_KEY_SECRET", "tls_key", "key.pem"),
        ("ONI_TLS_CA_SECRET", "tls_ca", "ca.pem"),
    ] {
        d.secret(var, what, &std::fs::read(certs.join(file)).unwrap());
    }
    let (port, metrics) = (free_port(), free_port());
    d.env.extend([
        ("LEARNER_PORT".into(), port.to_string()),
        ("LEARNER_METRICS_PORT".into(), metrics.to_string()),
        ("ACTORS".into(), "1".into()),
        ("LLM_MODELS_DIR".into(), oni_cache().join("models").display().to_string()),
    ]);
    let ca = certs.join("ca.pem");
    let deployed = Instant::now();
    d.deploy();
    wait_for("the stack's first update", Duration::from_secs(240), || {
        let ca = ca.clone();
        async move { steps(port, &ca).await.filter(|s| *s > 0) }
    })
    .await;
    eprintln!("deploy → first trained update: {:.1} s", deployed.elapsed().as_secs_f64());
    let one = rate(port, &ca, "training with one actor", Duration::from_secs(20)).await;

    docker(&["service", "scale", &d.service("actor=3")]).unwrap();
    assert_eq!(d.containers("actor").len(), 3);
    let three = rate(port, &ca, "training with three actors", Duration::from_secs(20)).await;
    eprintln!("swarm steps/s: one actor {one:.0}, three actors {three:.0}");

    // a killed actor task is replaced
    let victim = d.containers("actor").pop().unwrap();
    docker(&["kill", &victim]).unwrap();
    wait_for("the killed actor's replacement", Duration::from_secs(120), || async {
        let now = d.containers("actor");
        (now.len() == 3 && !now.contains(&victim)).then_some(())
    })
    .await;
    rate(port, &ca, "training after an actor was killed", Duration::from_secs(5)).await;

    // a rolling update of the actors, one at a time, while the learner trains
    docker(&["service", "update", "--force", "--detach=false", "--quiet", &d.service("actor")]).unwrap();
    rate(port, &ca, "training after the rolling update", Duration::from_secs(5)).await;

    docker(&["service", "scale", &d.service("actor=1")]).unwrap();
    assert_eq!(d.containers("actor").len(), 1);
    rate(port, &ca, "training with one actor again", Duration::from_secs(5)).await;
    assert_eq!(d.tasks("learner"), 1, "the learner's task was restarted");
    assert_eq!(d.containers("annotator").len(), 1, "the annotator is not running");

    // the learner's node lost: SIGKILL, so no final checkpoint; Swarm starts a new task on the
    // labelled node, which resumes from the newest periodic checkpoint in the volume
    let old = d.containers("learner").pop().unwrap();
    let checkpointed = wait_for("a periodic checkpoint", Duration::from_secs(150), || {
        let old = old.clone();
        async move { logged_steps(&container_log(&old), "checkpoint written") }
    })
    .await;
    let killed = Instant::now();
    docker(&["kill", &old]).unwrap();
    let new = wait_for("the learner's replacement", Duration::from_secs(120), || async {
        d.containers("learner").into_iter().find(|c| *c != old)
    })
    .await;
    let last_checkpoint = logged_steps(&container_log(&old), "checkpoint written").unwrap();
    assert!(last_checkpoint >= checkpointed);
    let resumed = wait_for("the new learner to resume", Duration::from_secs(120), || {
        let new = new.clone();
        async move { logged_steps(&container_log(&new), "resumed from checkpoint") }
    })
    .await;
    assert_eq!(resumed, last_checkpoint, "the new learner did not resume from the newest checkpoint");
    let ca2 = ca.clone();
    wait_for("training after the learner's restart", Duration::from_secs(180), || {
        let ca = ca2.clone();
        async move { steps(port, &ca).await.filter(|s| *s > resumed + 2_000) }
    })
    .await;
    eprintln!(
        "learner killed at a checkpoint of {resumed} steps → training again: {:.1} s",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(d.tasks("learner"), 2);
}
