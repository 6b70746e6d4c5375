//! Environments attached over gRPC from any language (`oni.v1.EnvHub`): the declared spaces
//! become the policy's observation layout, and each client's batch of envs becomes env
//! slots that produce rollouts, captions and intrinsic rewards like the built-in ones.

pub mod service;
pub mod spaces;
pub(crate) mod step_loop;

pub use service::{HubEvent, HubState, PROTOCOL_VERSION};
pub use spaces::Layout;

use crate::config::HubConfig;
use crate::setup::{ActorError, ActorSetup};
use oni_proto::tasks::{CancellationToken, TaskGroup};
use oni_proto::transport::TransportError;
use oni_proto::TransportConfig;
use std::net::SocketAddr;
use std::sync::Arc;

struct Started {
    addr: SocketAddr,
    state: Arc<HubState>,
    events: crossbeam_channel::Receiver<HubEvent>,
}

/// Binds `cfg.listen`; the returned server serves the hub until `stop`.
async fn start(
    cfg: &HubConfig,
    transport: &TransportConfig,
    actor_id: &str,
    stop: CancellationToken,
) -> Result<(Started, impl std::future::Future<Output = Result<(), TransportError>> + Send + 'static), ActorError> {
    let hub_err = |reason: String| ActorError::Hub { addr: cfg.listen.clone(), reason };
    let listener = tokio::net::TcpListener::bind(&cfg.listen).await.map_err(|e| hub_err(e.to_string()))?;
    let addr = listener.local_addr().map_err(|e| hub_err(e.to_string()))?;
    let (events_tx, events) = crossbeam_channel::unbounded();
    let state = HubState::new(cfg.clone(), transport.token.clone(), actor_id.to_string(), events_tx);
    let limit = oni_proto::framing::MessageLimit {
        bytes: cfg.max_message_bytes.max(1024),
        key: "actor.hub.max_message_bytes; attach fewer envs per stream",
    };
    let mut builder =
        oni_proto::transport::server_builder(transport, limit, "env hub").map_err(|e| hub_err(e.to_string()))?;
    let server =
        oni_proto::transport::serve_until(builder.add_service(state.server()), listener, stop, "env hub", transport)
            .map_err(|e| hub_err(e.to_string()))?;
    Ok((Started { addr, state, events }, server))
}

/// Waits for the first client to declare its spaces; `None` when stopped first.
async fn first_layout(state: &HubState, stop: CancellationToken) -> Option<Layout> {
    let mut layout = state.layout();
    loop {
        if let Some(l) = layout.borrow().clone() {
            return Some(l);
        }
        tokio::select! {
            r = layout.changed() => if r.is_err() { return None },
            _ = stop.cancelled() => return None,
        }
    }
}

/// Starts the hub on `actor.hub.listen`, its server a task of `tasks`, and waits for the
/// first client to declare its spaces. Returns their layout and the events for the stepping
/// thread, or `None` when stopped first.
pub(crate) async fn serve(
    setup: &ActorSetup,
    actor_id: &str,
    tasks: &mut TaskGroup,
) -> Result<Option<(Layout, crossbeam_channel::Receiver<HubEvent>)>, ActorError> {
    let stop = tasks.token();
    let (hub, server) = start(&setup.cfg.hub, &setup.transport, actor_id, stop.clone()).await?;
    tasks.spawn("env hub gRPC server", |_| server);
    tracing::info!(addr = %hub.addr, "waiting for environments to attach");
    eprintln!(
        "environment hub listening on {}: attach environments with oni_env.attach(make_env, \"{}\")",
        hub.addr, hub.addr
    );
    // the server failing while it waits is the actor's failure
    let layout = tokio::select! {
        layout = first_layout(&hub.state, stop) => layout,
        failed = tasks.watch() => {
            failed?;
            None
        }
    };
    let Some(layout) = layout else { return Ok(None) };
    tracing::info!(spec = ?layout.spec, "observation layout declared by the first client");
    Ok(Some((layout, hub.events)))
}

/// A hub that answers every step with uniformly random actions and records nothing: the
/// protocol's own cost, for `oni bench attach`. Serves until `stop`.
pub async fn serve_random(cfg: HubConfig, stop: CancellationToken) -> Result<SocketAddr, ActorError> {
    let (hub, server) = start(&cfg, &TransportConfig::default(), "bench", stop.clone()).await?;
    let addr = hub.addr;
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!("{e}");
        }
    });
    tokio::spawn(async move {
        let Some(layout) = first_layout(&hub.state, stop.clone()).await else { return };
        let events = hub.events;
        let random = crate::source::RandomSource { num_actions: layout.spec.num_actions, halt: stop };
        let _ = tokio::task::spawn_blocking(move || step_loop::hub_loop(layout, events, random, None)).await;
    });
    Ok(addr)
}
