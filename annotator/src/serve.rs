//! Starting an annotator around its core: the LLM workers, the distiller when a reward model
//! is wanted, and the gRPC server behind the token check; and, at shutdown, labelling what
//! already arrived for a bounded time.

use crate::annotator::Core;
use crate::service::AnnotatorService;
use crate::BankError;
use oni_proto::tasks::TaskGroup;
use oni_proto::transport::{serve_until, server_builder, TransportError};
use oni_proto::{TokenCheck, TransportConfig};
use oni_reward_model::{DistillConfig, Kind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("annotator.listen {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Bank(#[from] BankError),
    #[error("annotator.gold: {0}")]
    Gold(#[from] crate::judging::SetError),
}

/// Where and how the annotator serves.
pub struct Serving<'a> {
    pub listen: &'a str,
    /// The server's token and TLS.
    pub transport: &'a TransportConfig,
    /// The reward model to distil from the answers, if any.
    pub distill: Option<(Kind, DistillConfig)>,
}

/// Starts the workers (and the distiller), binds and serves, all in `group` (until it stops);
/// returns the bound address.
pub async fn start(core: Arc<Core>, s: Serving<'_>, group: &mut TaskGroup) -> Result<SocketAddr, StartError> {
    core.spawn_workers(group);
    if let Some((kind, cfg)) = s.distill {
        let gold = match &core.cfg.gold {
            Some(path) => crate::judging::read_labelled(path)?.into_iter().map(|g| (g.caption, g.helpful)).collect(),
            None => Vec::new(),
        };
        core.start_scored_distiller(kind, cfg, gold, group)?;
    }
    let bind = |source| StartError::Bind { addr: s.listen.to_string(), source };
    let listener = tokio::net::TcpListener::bind(s.listen).await.map_err(bind)?;
    let addr = listener.local_addr().map_err(bind)?;
    let check = TokenCheck::new(s.transport.token())?;
    let llm = core.llm().config().clone();
    let svc = tonic::service::interceptor::InterceptedService::new(AnnotatorService::server(core), check);
    let router = server_builder(s.transport, crate::service::MESSAGE_LIMIT, "annotator")?.add_service(svc);
    let serving = serve_until(router, listener, group.token(), "annotator", s.transport)?;
    group.spawn("annotator gRPC server", |_| serving);
    tracing::info!(%addr, llm = %llm.base_url, model = %llm.model, "annotator serving");
    Ok(addr)
}

/// Waits until every caption received is labelled, or `deadline` passed (what is left is
/// counted as dropped).
pub async fn drain(core: &Core, deadline: Duration) {
    let start = Instant::now();
    let mut told = false;
    loop {
        let left = core.backlog() + core.in_flight();
        if left == 0 {
            return;
        }
        if start.elapsed() >= deadline {
            eprintln!("stopping with {left} captions unlabelled");
            metrics::counter!(crate::metric_names::DROPPED, "reason" => "shutdown").increment(left as u64);
            return;
        }
        if !told {
            eprintln!("waiting up to {}s for {left} captions to be labelled", deadline.as_secs());
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
