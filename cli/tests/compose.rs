//! The compose stack on a Docker engine without a registry: deploy/images.sh makes the
//! images from a debootstrap base, the core services (Redis, learner, actor, annotator,
//! llama-server) come up and train, and killing or scaling actors never stops the learner.

mod support;
use std::process::Command;
use std::time::Duration;
use support::*;

struct Stack {
    project: String,
    env: Vec<(String, String)>,
}

impl Stack {
    fn compose(&self, args: &[&str]) -> String {
        let out = Command::new("docker-compose")
            .args(["-p", &self.project, "--env-file", "deploy/.env.example", "-f", "docker-compose.yml"])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(repo_root())
            .output()
            .expect("docker-compose");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "docker-compose {args:?}:\n{text}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn containers(&self, service: &str) -> Vec<String> {
        self.compose(&["ps", "-q", service]).lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::env::var_os("ONI_KEEP_STACK").is_none() {
            let _ = Command::new("docker-compose")
                .args([
                    "-p",
                    &self.project,
                    "--env-file",
                    "deploy/.env.example",
                    "-f",
                    "docker-compose.yml",
                    "down",
                    "-v",
                    "-t",
                    "2",
                ])
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .current_dir(repo_root())
                .output();
        }
    }
}

fn inspect(container: &str, format: &str) -> String {
    let out = Command::new("docker").args(["inspect", "-f", format, container]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn steps(addr: &str) -> Option<u64> {
    info(addr, None).await.map(|i| i.env_steps)
}

/// Env steps per second over `window`, from the learner's count.
async fn rate(addr: &str, window: Duration) -> f64 {
    let from = steps(addr).await.expect("the learner answers");
    let t = std::time::Instant::now();
    tokio::time::sleep(window).await;
    let to = steps(addr).await.expect("the learner answers");
    (to - from) as f64 / t.elapsed().as_secs_f64()
}

async fn training_goes_on(addr: &str, what: &str) -> u64 {
    let before = steps(addr).await.unwrap_or(0);
    wait_for(what, Duration::from_secs(180), || async { steps(addr).await.filter(|s| *s > before + 2_000) }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_stack_trains_and_survives_actor_kills_and_scaling() {
    let out = Command::new("bash").arg("deploy/images.sh").current_dir(repo_root()).output().unwrap();
    assert!(
        out.status.success(),
        "deploy/images.sh:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let port = free_port();
    let stack = Stack {
        project: format!("onitest{}", std::process::id()),
        env: vec![
            ("COMPOSE_PROFILES".into(), "cpu,llamacpp".into()),
            ("LEARNER_PORT".into(), port.to_string()),
            ("LLM_MODELS_DIR".into(), oni_cache().join("models").display().to_string()),
        ],
    };
    stack.compose(&["up", "-d", "redis", "learner", "actor", "annotator", "llm"]);
    let addr = format!("127.0.0.1:{port}");
    training_goes_on(&addr, "the stack to train").await;
    let learner = stack.containers("learner").pop().expect("a learner container");
    wait_for("the learner's healthcheck", Duration::from_secs(120), || async {
        (inspect(&learner, "{{.State.Health.Status}}") == "healthy").then_some(())
    })
    .await;

    let one = rate(&addr, Duration::from_secs(20)).await;

    // kill the actor container outright
    let actor = stack.containers("actor").pop().expect("an actor container");
    let killed = Command::new("docker").args(["kill", &actor]).status().unwrap();
    assert!(killed.success());
    stack.compose(&["up", "-d", "--no-recreate", "--scale", "actor=3", "actor"]);
    assert_eq!(stack.containers("actor").len(), 3);
    training_goes_on(&addr, "training with three actors").await;
    let three = rate(&addr, Duration::from_secs(20)).await;
    eprintln!("compose steps/s: one actor {one:.0}, three actors {three:.0}");
    stack.compose(&["up", "-d", "--no-recreate", "--scale", "actor=1", "actor"]);
    assert_eq!(stack.containers("actor").len(), 1);
    training_goes_on(&addr, "training after scaling down to one actor").await;

    assert_eq!(inspect(&learner, "{{.State.Running}}"), "true");
    assert_eq!(inspect(&learner, "{{.RestartCount}}"), "0", "the learner restarted");
    // the annotator labels the actors' captions through the llama-server container into Redis
    let annotator = stack.containers("annotator").pop().unwrap();
    assert_eq!(inspect(&annotator, "{{.State.Running}}"), "true");
    let redis = stack.containers("redis").pop().unwrap();
    let keys = wait_for("labels in Redis", Duration::from_secs(180), || async {
        let out = Command::new("docker")
            .args(["exec", &redis, "redis-cli", "--scan", "--pattern", "*labels*"])
            .output()
            .ok()?;
        let keys = String::from_utf8_lossy(&out.stdout).into_owned();
        (!keys.trim().is_empty()).then_some(keys)
    })
    .await;
    eprintln!("label keys in Redis: {}", keys.trim());
}
