//! Starting a learner: the gRPC server (the `Learner` and `Inference` services behind the
//! token check) and the training thread, and the handle that stops them.

use crate::service::LearnerService;
use crate::setup::{LearnerError, LearnerSetup};
use crate::shared::Shared;
use crate::stats::LearnerStats;
use crate::training::LearnerThread;
use crossbeam_channel::bounded;
use oni_inference::InferenceSlot;
use oni_policy::TrainingBackend;
use oni_proto::tasks::{CancellationToken, Ended, TaskFailed, TaskGroup};
use oni_proto::transport::{serve_until, server_builder};
use oni_proto::v1::Rollout;
use oni_proto::TokenCheck;
use oni_proto::MAX_MESSAGE_BYTES;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A running learner: the training thread and the gRPC server, as one task group. Dropping
/// it stops both; `shutdown` also waits for the final checkpoint.
pub struct LearnerHandle {
    pub addr: SocketAddr,
    pub stats: Arc<LearnerStats>,
    inference: InferenceSlot,
    tasks: TaskGroup,
    finished: Arc<AtomicBool>,
}

/// How long a stopping learner may take to write its last checkpoint.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(120);

impl LearnerHandle {
    /// True once `max_env_steps` have been consumed.
    pub fn finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Resolves when one of the learner's tasks failed (the others are then stopping).
    pub async fn failed(&mut self) -> TaskFailed {
        loop {
            match self.tasks.next().await {
                Some(Ended { outcome: Err(f), .. }) => return f,
                Some(_) => {}
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Runs `f(token)` as one more of the learner's tasks (a failure stops the learner).
    pub fn spawn<F, Fut, E>(&mut self, name: &str, f: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        self.tasks.spawn(name, f);
    }

    /// Stops serving, writes a final checkpoint and waits for both; the first failure of
    /// either, if one failed.
    pub async fn shutdown(self) -> Result<(), TaskFailed> {
        self.inference.stop();
        self.tasks.shutdown(SHUTDOWN_DEADLINE).await
    }
}

/// The central inference service as a task of the learner: once the training thread has
/// built the network, its batcher runs on a thread of its own on the learner's device, until
/// the learner stops; a batcher that panics stops the learner.
fn start_inference<B: TrainingBackend>(
    tasks: &mut TaskGroup,
    shared: &Arc<Shared>,
    setup: &LearnerSetup,
    device: B::Device,
) {
    let (shared, policy, cfg, rollout_len) =
        (shared.clone(), setup.policy.clone(), setup.inference.clone(), setup.cfg.rollout_len);
    tasks.spawn("central inference", move |stop| async move {
        tokio::select! {
            ready = shared.wait_ready() => if !ready { return Ok(()) },
            _ = stop.cancelled() => return Ok(()),
        }
        let Ok(model) = shared.model() else { return Ok(()) };
        let (spec, fingerprint) = (model.spec.clone(), model.fingerprint.clone());
        let sink: oni_inference::RolloutSink = {
            let shared = shared.clone();
            Box::new(move |r| shared.enqueue_blocking(r))
        };
        let (slot, board) = (shared.inference().clone(), shared.weights_board());
        // building the batcher's network is CPU work too: on the batcher's thread
        let batcher = move || {
            let run =
                slot.start::<B::InnerBackend>(&policy, &spec, fingerprint, device, cfg, rollout_len, board, sink, stop);
            run()
        };
        tokio::task::spawn_blocking(batcher).await.map_err(|e| format!("its batcher failed: {e}"))
    });
}

/// Starts the training thread (resuming from the newest checkpoint in the run directory)
/// and the gRPC server. Must be called inside a tokio runtime.
pub async fn spawn_learner<B: TrainingBackend>(
    setup: LearnerSetup,
    device: B::Device,
) -> Result<LearnerHandle, LearnerError> {
    if let Some(spec) = &setup.spec {
        crate::fits::check_device(&setup.cfg, &setup.policy, spec)?;
    }
    let listener = tokio::net::TcpListener::bind(&setup.cfg.listen)
        .await
        .map_err(|source| LearnerError::Bind { addr: setup.cfg.listen.clone(), source })?;
    let addr = listener.local_addr().map_err(|source| LearnerError::Bind { addr: setup.cfg.listen.clone(), source })?;
    let limit = oni_proto::framing::MessageLimit { bytes: MAX_MESSAGE_BYTES, key: "the learner's message limit" };
    let mut builder = server_builder(&setup.transport, limit, "learner")?;
    let transport = setup.transport.clone();
    let check = TokenCheck::new(setup.transport.token())?;

    let (queue_tx, queue_rx) = bounded::<Rollout>(setup.cfg.queue_capacity.max(1));
    let stats = Arc::new(LearnerStats::default());
    let mut tasks = TaskGroup::new();
    let finished = Arc::new(AtomicBool::new(false));

    // The trainer is built on its own thread (burn state stays there) once the observation
    // layout is known: at once from the config, or when the first attached env declares it.
    let inference = InferenceSlot::default();
    let (shared, training) = Shared::new(&setup.cfg, &setup.policy, inference.clone(), stats.clone(), queue_tx);
    let known_spec = setup.spec.clone();
    start_inference::<B>(&mut tasks, &shared, &setup, device.clone());
    {
        let worker =
            LearnerThread::<B> { setup, device, queue: queue_rx, stats: stats.clone(), finished: finished.clone() };
        let shared = shared.clone();
        tasks.spawn_blocking("learner training", move |stop| {
            worker.run(training, shared, stop);
            Ok::<(), std::convert::Infallible>(())
        });
    }
    if let Some(spec) = known_spec {
        shared.declare(spec);
        if !shared.wait_ready().await {
            let why = match tasks.watch().await {
                Err(f) => f.why,
                Ok(()) => "the training thread ended during start-up".into(),
            };
            return Err(LearnerError::Start(why));
        }
    } else {
        tracing::info!("no observation layout configured: the network is built when the first attached environment declares its spaces");
    }
    let version = shared.version();

    let svc = LearnerService::server(shared, MAX_MESSAGE_BYTES);
    let svc = tonic::service::interceptor::InterceptedService::new(svc, check.clone());
    let infer = tonic::service::interceptor::InterceptedService::new(inference.server(MAX_MESSAGE_BYTES), check);
    let serving =
        serve_until(builder.add_service(svc).add_service(infer), listener, tasks.token(), "learner", &transport)?;
    tasks.spawn("learner gRPC server", |_| serving);
    tracing::info!(%addr, version, "learner serving");
    Ok(LearnerHandle { addr, stats, inference, tasks, finished })
}
