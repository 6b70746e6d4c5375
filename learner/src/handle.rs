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
use oni_proto::transport::{server_builder, spawn_server};
use oni_proto::v1::Rollout;
use oni_proto::TokenCheck;
use oni_proto::MAX_MESSAGE_BYTES;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// A running learner. Dropping it does not stop it; call `shutdown`.
pub struct LearnerHandle {
    pub addr: SocketAddr,
    pub stats: Arc<LearnerStats>,
    inference: InferenceSlot,
    stop: watch::Sender<bool>,
    finished: Arc<AtomicBool>,
    trainer_thread: Option<std::thread::JoinHandle<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl LearnerHandle {
    /// True once `max_env_steps` have been consumed.
    pub fn finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Stops serving, writes a final checkpoint and waits for both.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.inference.stop();
        if let Some(s) = self.server.take() {
            let _ = s.await;
        }
        if let Some(t) = self.trainer_thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
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
    let (stop_tx, stop_rx) = watch::channel(false);
    let finished = Arc::new(AtomicBool::new(false));

    // The trainer is built on its own thread (burn state stays there) once the observation
    // layout is known: at once from the config, or when the first attached env declares it.
    let inference = InferenceSlot::default();
    let (shared, training) = Shared::new(&setup.cfg, &setup.policy, inference.clone(), stats.clone(), queue_tx);
    let known_spec = setup.spec.clone();
    let thread = {
        let stats = stats.clone();
        let finished = finished.clone();
        let stop_rx = stop_rx.clone();
        let shared = shared.clone();
        let worker = LearnerThread::<B> { setup, device, queue: queue_rx, stats, finished, stop: stop_rx };
        std::thread::Builder::new()
            .name("learner-train".into())
            .spawn(move || worker.run(training, shared))
            .map_err(|e| LearnerError::Start(e.to_string()))?
    };
    if let Some(spec) = known_spec {
        shared.declare(spec);
        if !shared.wait_ready().await {
            return Err(LearnerError::Start("training thread exited during start-up".into()));
        }
    } else {
        tracing::info!("no observation layout configured: the network is built when the first attached environment declares its spaces");
    }
    let version = shared.version();

    let svc = LearnerService::server(shared, MAX_MESSAGE_BYTES);
    let svc = tonic::service::interceptor::InterceptedService::new(svc, check.clone());
    let infer = tonic::service::interceptor::InterceptedService::new(inference.server(MAX_MESSAGE_BYTES), check);
    let server =
        spawn_server(builder.add_service(svc).add_service(infer), listener, stop_rx.clone(), "learner", &transport)?;
    tracing::info!(%addr, version, "learner serving");
    Ok(LearnerHandle {
        addr,
        stats,
        inference,
        stop: stop_tx,
        finished,
        trainer_thread: Some(thread),
        server: Some(server),
    })
}
