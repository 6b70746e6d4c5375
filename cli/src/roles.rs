//! `oni run`, `oni learner` and `oni actor`.

use crate::config::BankKind;
use crate::config::{self, Config};
use crate::device;
use crate::page::{self, data::MetCounts};
use crate::progress::{write_summary, Progress};
use crate::{with_backend, Common};
use anyhow::{Context, Result};
use oni_actor::ActorCounters;
use oni_actor::ActorSetup;
use oni_learner::{spawn_learner, LearnerHandle, LearnerSetup};
use oni_proto::tasks::{TaskGroup, STOP_DEADLINE};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Prepared {
    pub cfg: Config,
    pub run_dir: PathBuf,
}

/// Loads the config, applies the command-line overrides and prepares the run directory.
pub fn prepare(c: &Common) -> Result<Prepared> {
    let mut cfg = config::load(c.config.as_deref(), &c.set)?;
    if let Some(n) = c.max_env_steps {
        cfg.run.max_env_steps = n;
    }
    let run_dir = cfg.run_dir(c.run_dir.as_deref());
    std::fs::create_dir_all(&run_dir).with_context(|| format!("cannot create run directory {}", run_dir.display()))?;
    std::fs::write(run_dir.join("config.toml"), cfg.to_toml())
        .with_context(|| format!("cannot write {}", run_dir.join("config.toml").display()))?;
    oni_telemetry::init_logging(&cfg.telemetry.log_level);
    Ok(Prepared { cfg, run_dir })
}

/// Histogram buckets per family, spaced for the values each one sees.
const BUCKETS: &[oni_telemetry::Buckets<'static>] = &[
    (oni_learner::metric_names::POLICY_LAG, &[0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 50.0, 100.0]),
    (
        oni_learner::metric_names::EPISODE_RETURN,
        &[-10.0, -1.0, 0.0, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 1000.0],
    ),
    (oni_learner::metric_names::EPISODE_LENGTH, &[10.0, 25.0, 50.0, 100.0, 200.0, 400.0, 1000.0, 5000.0, 20000.0]),
    (oni_annotator::metric_names::LLM_REQUEST_SECONDS, &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0]),
    (
        oni_inference::metric_names::BATCH_ENVS,
        &[1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0],
    ),
    (oni_inference::metric_names::FORWARD_SECONDS, &[1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0]),
    (oni_inference::metric_names::QUEUE_WAIT_SECONDS, &[1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 1.0]),
];

/// Installs the metrics recorder with every family's HELP text; the handle renders what it
/// holds (benchmarks read it).
pub fn init_metrics(cfg: &Config) -> Result<oni_telemetry::Metrics> {
    let listen = cfg.telemetry.metrics_listen.as_deref();
    let handle = oni_telemetry::init_metrics(listen, BUCKETS)?;
    oni_telemetry::metric_names::describe();
    oni_proto::metric_names::describe();
    oni_reward_model::metric_names::describe();
    oni_inference::metric_names::describe();
    oni_actor::metric_names::describe();
    oni_learner::metric_names::describe();
    oni_annotator::metric_names::describe();
    crate::heap::spawn_upkeep();
    if let Some(l) = listen {
        tracing::info!("metrics on http://{l}/metrics");
    }
    Ok(handle)
}

pub async fn start_learner(p: &Prepared) -> Result<LearnerHandle> {
    let cfg = &p.cfg;
    let relabel = relabel_client(cfg)?;
    // where the puller puts the newest reward model for the learner
    let slot = Arc::new(oni_reward_model::pull::RewardSlot::default());
    let spec = oni_env::registry::known_spec(&cfg.env)?;
    let kind = device::check("learner.device", cfg.learner.device)?;
    let setup = LearnerSetup {
        cfg: cfg.learner.clone(),
        policy: cfg.policy.clone(),
        spec,
        mix: cfg.reward.mix(),
        run_dir: p.run_dir.clone(),
        resolved_config: cfg.to_toml(),
        transport: cfg.transport.clone(),
        max_env_steps: (cfg.run.max_env_steps > 0).then_some(cfg.run.max_env_steps),
        relabel: relabel.as_ref().map(|_| slot.clone()),
        inference: cfg.inference.clone(),
    };
    let mut handle = with_backend!(kind, autodiff, |B, dev| spawn_learner::<B>(setup, dev).await)?;
    if let Some(conn) = relabel {
        // a refusal retrying cannot fix stops the learner, naming the annotator
        let every = cfg.reward.pull_ms;
        handle.spawn("relabel reward-model puller", move |stop| {
            oni_reward_model::pull::pull_reward_models("learner", conn, every, slot, stop)
        });
    }
    Ok(handle)
}

/// Serves the run page beside the learner where `page` says so (`in_run`: `oni run`), and
/// prints its address; the address is also written to `page-address` in the run directory.
/// Returns the address, if it serves.
pub async fn start_page(
    p: &Prepared,
    in_run: bool,
    sources: page::Sources,
    learner: &mut LearnerHandle,
) -> Result<Option<std::net::SocketAddr>> {
    let cfg = &p.cfg.page;
    if !cfg.mode.on(in_run) {
        return Ok(None);
    }
    let listener = page::bind(cfg, cfg.mode == oni_proto::Switch::Auto).await?;
    let addr = listener.local_addr().context("page.listen")?;
    let url = format!("http://{addr}/");
    let how = if sources.token.is_some() { " (add ?token=<transport.token>)" } else { "" };
    eprintln!("run page: {url}{how}");
    tracing::info!(%url, "run page");
    let file = p.run_dir.join("page-address");
    std::fs::write(&file, format!("{url}\n")).with_context(|| format!("cannot write {}", file.display()))?;
    learner.spawn("run page", move |stop| page::serve(listener, sources, stop));
    Ok(Some(addr))
}

/// Relabel mode: the client that pulls the annotator's reward models for the learner to
/// relabel with.
fn relabel_client(cfg: &Config) -> Result<Option<oni_proto::retry::Reconnecting<oni_reward_model::pull::Client>>> {
    if !cfg.learner.relabel {
        return Ok(None);
    }
    let Some(address) = &cfg.actor.annotator else {
        anyhow::bail!("learner.relabel = true needs the annotator's address in actor.annotator (oni run sets it when it starts the annotator)");
    };
    let backoff = oni_proto::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let conn = oni_proto::retry::Reconnecting::new(
        "annotator",
        address,
        cfg.transport.client_options(),
        cfg.transport.token(),
        backoff,
        oni_reward_model::pull::annotator_client,
    )
    .with_context(|| format!("actor.annotator {address}"))?;
    tracing::info!(annotator = %address, "relabel mode: intrinsic rewards recomputed with the newest reward model");
    Ok(Some(conn))
}

/// Starts actor `index` as the task "actor {index}" of `group`.
pub fn spawn_actor(
    cfg: &Config,
    learner: String,
    index: usize,
    counters: Arc<ActorCounters>,
    group: &mut TaskGroup,
    record: Option<oni_actor::record::RecordPlan>,
) -> Result<()> {
    let spec = oni_env::registry::known_spec(&cfg.env)?;
    if spec.is_none() && cfg.actor.count > 1 {
        anyhow::bail!("actor.count = {}: with attached environments each actor is one hub on actor.hub.listen; start more actor processes instead", cfg.actor.count);
    }
    let kind = device::check("actor.device", cfg.actor.device)?;
    let mut actor_cfg = cfg.actor.clone();
    actor_cfg.learner = learner;
    if cfg.actor.count > 1 {
        actor_cfg.actor_id = cfg.actor.actor_id.as_ref().map(|id| format!("{id}-{index}"));
    }
    let setup = ActorSetup {
        cfg: actor_cfg,
        env: cfg.env.clone(),
        policy: cfg.policy.clone(),
        spec,
        rollout_len: cfg.learner.rollout_len,
        transport: cfg.transport.clone(),
        index,
        intrinsic: cfg
            .reward
            .kind
            .map(|_| oni_actor::intrinsic::IntrinsicConfig { decay: cfg.reward.decay(), pull_ms: cfg.reward.pull_ms }),
        record,
    };
    group.spawn(format!("actor {index}"), move |stop| async move {
        with_backend!(kind, inference, |B, dev| oni_actor::run_actor::<B>(setup, dev, counters, stop).await)
    });
    Ok(())
}

/// Whether anything answers HTTP at the LLM server's address.
async fn llm_reachable(base_url: &str) -> bool {
    let hostport =
        base_url.trim_start_matches("http://").trim_start_matches("https://").split('/').next().unwrap_or("");
    matches!(tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(hostport)).await, Ok(Ok(_)))
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Prints progress until the learner finishes or fails, the time limit, a signal, or `done`.
async fn supervise(
    p: &Prepared,
    learner: &mut LearnerHandle,
    annotator: Option<Arc<oni_annotator::Core>>,
    met: Option<Arc<MetCounts>>,
    done: impl std::future::Future<Output = ()>,
) -> Progress {
    let mut progress = Progress::new(Some(&p.run_dir), &learner.stats).with_annotator(annotator).with_met(met);
    if p.cfg.learner.tensorboard {
        if let Err(e) = progress.add_tensorboard(&p.run_dir) {
            tracing::warn!("learner.tensorboard: {e}; the run goes on without it");
        }
    }
    let interval = Duration::from_secs_f64(p.cfg.run.progress_interval_secs.max(0.1));
    let deadline = (p.cfg.run.max_seconds > 0).then(|| Instant::now() + Duration::from_secs(p.cfg.run.max_seconds));
    let signal = shutdown_signal();
    tokio::pin!(signal);
    tokio::pin!(done);
    let mut next = Instant::now() + interval;
    loop {
        tokio::select! {
            _ = &mut signal => { tracing::info!("signal received, shutting down"); break; }
            _ = &mut done => break,
            _ = learner.failed() => break,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        if Instant::now() >= next {
            progress.tick(&learner.stats);
            next += interval;
        }
        if learner.finished() || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    progress.tick(&learner.stats);
    progress
}

pub async fn run(c: Common) -> Result<()> {
    let mut p = prepare(&c)?;
    init_metrics(&p.cfg)?;
    // In one process the learner listens on an ephemeral loopback port unless told otherwise.
    if p.cfg.learner.listen == oni_learner::LearnerConfig::default().listen {
        p.cfg.learner.listen = "127.0.0.1:0".into();
    }
    let mut annotator_tasks = TaskGroup::new();
    let annotator = annotator_in_process(&mut p, &mut annotator_tasks).await?;
    let mut learner = start_learner(&p).await?;
    let mut actors = TaskGroup::new();
    for i in 0..p.cfg.actor.count.max(1) {
        let counters = Arc::new(ActorCounters::default());
        // one actor records: a recording per `record.every_*` whatever the actor count
        let record = p.cfg.record_plan(Some(&p.run_dir)).filter(|_| i == 0);
        spawn_actor(&p.cfg, learner.addr.to_string(), i, counters, &mut actors, record)?;
    }
    tracing::info!(env = %p.cfg.env.name, actors = actors.len(), run_dir = %p.run_dir.display(), "run started");
    if let Some(plan) = p.cfg.record_plan(Some(&p.run_dir)) {
        tracing::info!(dir = %plan.dir.display(), every_seconds = plan.cfg.every_seconds, "recording episodes (ttyplay replays them)");
    }
    // the run ends when every actor is done, or one of them or of the annotator's tasks failed
    let ended = async {
        let annotator_failed = async {
            if annotator_tasks.watch().await.is_ok() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = actors.watch() => {}
            _ = annotator_failed => {}
        }
    };
    let met = Arc::new(MetCounts::default());
    let labels = annotator
        .clone()
        .map(page::LabelSource::of)
        .ok_or_else(|| "this run has no annotator (reward.kind is not set): nothing is labelled".to_string());
    let recordings = p.cfg.record_plan(Some(&p.run_dir)).map(|plan| plan.dir);
    let sources = page::Sources::of_run(&p, recordings, labels, met.clone());
    start_page(&p, true, sources, &mut learner).await?;
    let progress = supervise(&p, &mut learner, annotator.clone(), Some(met), ended).await;
    // actors stop first; the annotator (own group) then finishes its backlog
    let actors_stopped = actors.shutdown(STOP_DEADLINE).await;
    let summary = progress.summary(&p.cfg.name, &p.cfg.env.name, &learner.stats);
    let learner_stopped = learner.shutdown().await;
    if let (Some(core), false) = (&annotator, annotator_tasks.is_cancelled()) {
        oni_annotator::serve::drain(core, Duration::from_secs(p.cfg.annotator.drain_secs)).await;
    }
    let annotator_stopped = annotator_tasks.shutdown(STOP_DEADLINE).await;
    let path = write_summary(&p.run_dir, &summary)?;
    eprintln!(
        "done: {} env steps in {:.1}s ({:.0} steps/s), success rate {:.2}; summary in {}",
        summary.env_steps,
        summary.wall_seconds,
        summary.steps_per_second,
        summary.success_rate,
        path.display()
    );
    learner_stopped.context("the learner failed")?;
    actors_stopped.context("an actor failed")?;
    annotator_stopped.context("the annotator failed")?;
    Ok(())
}

/// `oni run`'s annotator, when the config asks for one (or its reward needs one), on a
/// loopback port unless told otherwise; the actors are pointed at it.
async fn annotator_in_process(p: &mut Prepared, tasks: &mut TaskGroup) -> Result<Option<Arc<oni_annotator::Core>>> {
    if let (Some(kind), false) = (p.cfg.reward.kind, p.cfg.annotator.enabled) {
        tracing::info!("reward.kind = {} needs the annotator: starting it", kind.name());
        p.cfg.annotator.enabled = true;
    }
    if !p.cfg.annotator.enabled {
        return Ok(None);
    }
    if p.cfg.annotator.listen == oni_annotator::AnnotatorConfig::default().listen {
        p.cfg.annotator.listen = "127.0.0.1:0".into();
    }
    if !llm_reachable(&p.cfg.llm.base_url).await {
        eprintln!(
            "note: no LLM server answers at {} — captions wait in the annotator's backlog until one does; \
             training goes on with the extrinsic reward (start one with `scripts/llm-server.sh start`)",
            p.cfg.llm.base_url
        );
    }
    let (addr, core) = start_annotator(p, tasks).await?;
    p.cfg.actor.annotator = Some(addr.to_string());
    Ok(Some(core))
}

pub async fn learner(c: Common) -> Result<()> {
    let p = prepare(&c)?;
    init_metrics(&p.cfg)?;
    let mut learner = start_learner(&p).await?;
    eprintln!("learner listening on {}", learner.addr);
    let labels = Err("the label bank is with the annotator (`oni annotator`), not in the learner's process".into());
    let sources = page::Sources::of_run(&p, None, labels, Arc::new(MetCounts::default()));
    start_page(&p, false, sources, &mut learner).await?;
    let progress = supervise(&p, &mut learner, None, None, std::future::pending()).await;
    let summary = progress.summary(&p.cfg.name, &p.cfg.env.name, &learner.stats);
    let stopped = learner.shutdown().await;
    write_summary(&p.run_dir, &summary)?;
    stopped.context("the learner failed")
}

pub async fn actor(c: Common) -> Result<()> {
    let p = prepare(&c)?;
    init_metrics(&p.cfg)?;
    let mut actors = TaskGroup::new();
    let counters = Arc::new(ActorCounters::default());
    let record = p.cfg.record_plan(None);
    spawn_actor(&p.cfg, p.cfg.actor.learner.clone(), 0, counters, &mut actors, record)?;
    if p.cfg.reward.kind.is_some() {
        tokio::spawn(log_paid_captions());
    }
    tokio::select! {
        r = actors.watch() => r?,
        _ = shutdown_signal() => {}
    }
    actors.shutdown(STOP_DEADLINE).await?;
    Ok(())
}

/// Every minute, what this actor's intrinsic reward paid for most (the diagnosis that `oni
/// run` writes into metrics.jsonl; a lone actor has only its log).
async fn log_paid_captions() {
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let ledger = oni_actor::intrinsic::take_ledger();
        let top: Vec<String> = ledger.top(5).into_iter().map(|(c, n, r)| format!("{c:?} ×{n} ({r:.1})")).collect();
        tracing::info!(
            labelled_share = ?ledger.labelled_share(),
            "intrinsic reward paid most for: {}",
            if top.is_empty() { "nothing".into() } else { top.join(", ") }
        );
    }
}

/// The label bank `cfg` names: Redis, or the file bank (under the run directory unless
/// `label_bank.path` says where).
pub fn open_bank(cfg: &Config, run_dir: &std::path::Path) -> Result<Arc<dyn oni_annotator::LabelBank>> {
    use anyhow::Context;
    Ok(match cfg.label_bank.kind {
        BankKind::Redis => Arc::new(
            oni_annotator::RedisBank::open(&cfg.label_bank.redis_url, &cfg.label_bank.prefix)
                .with_context(|| format!("label_bank.redis_url {}", cfg.label_bank.redis_url))?,
        ),
        BankKind::File => {
            Arc::new(oni_annotator::FileBank::open_with(&file_bank_dir(cfg, run_dir), cfg.label_bank.memory_records)?)
        }
    })
}

/// Where the file bank lives: `label_bank.path`, else `labels/` in the run directory.
pub fn file_bank_dir(cfg: &Config, run_dir: &std::path::Path) -> PathBuf {
    cfg.label_bank.path.clone().unwrap_or_else(|| run_dir.join("labels"))
}

/// Starts an annotator for `p`'s config, its tasks in `group`; returns the bound address
/// and its core.
pub async fn start_annotator(
    p: &Prepared,
    group: &mut TaskGroup,
) -> Result<(std::net::SocketAddr, Arc<oni_annotator::Core>)> {
    let cfg = &p.cfg;
    let llm = oni_annotator::LlmClient::new(cfg.llm.clone())?;
    let core = oni_annotator::Core::new(cfg.annotator.clone(), cfg.prompts.clone(), llm, open_bank(cfg, &p.run_dir)?)?;
    let serving = oni_annotator::serve::Serving {
        listen: &cfg.annotator.listen,
        transport: &cfg.transport,
        distill: cfg.reward.kind.map(|k| (k, cfg.distill.clone())),
    };
    let addr = oni_annotator::serve::start(core.clone(), serving, group).await?;
    Ok((addr, core))
}
