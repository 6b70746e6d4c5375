//! Environments attached over gRPC from any language (`oni.v1.EnvHub`): the declared spaces
//! become the policy's observation layout, and each client's batch of envs becomes env
//! slots that produce rollouts, captions and intrinsic rewards like the built-in ones.

pub mod service;
pub mod spaces;
pub(crate) mod stepping;

pub use service::{HubEvent, HubState, PROTOCOL_VERSION};
pub use spaces::Layout;

use crate::stepping::{ActorError, ActorSetup};
use tokio::sync::watch;

/// Starts the hub on `actor.hub.listen` and waits for the first client to declare its
/// spaces. Returns their layout and the events for the stepping thread, or `None` when
/// stopped first. The server runs until `stop`.
pub(crate) async fn serve(
    setup: &ActorSetup,
    actor_id: &str,
    mut stop: watch::Receiver<bool>,
) -> Result<Option<(Layout, crossbeam_channel::Receiver<HubEvent>)>, ActorError> {
    let addr = setup.cfg.hub.listen.clone();
    let hub_err = |reason: String| ActorError::Hub { addr: addr.clone(), reason };
    let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|e| hub_err(e.to_string()))?;
    let bound = listener.local_addr().map_err(|e| hub_err(e.to_string()))?;
    let (events_tx, events_rx) = crossbeam_channel::unbounded();
    let state = HubState::new(setup.cfg.hub.clone(), setup.token.clone(), actor_id.to_string(), events_tx);
    let builder = oni_proto::transport::server_builder(&oni_proto::TlsConfig::default()).map_err(|e| hub_err(e.to_string()))?;
    let mut builder = builder;
    oni_proto::transport::spawn_server(builder.add_service(state.server()), listener, stop.clone(), "env hub");
    tracing::info!(addr = %bound, "waiting for environments to attach");
    eprintln!("environment hub listening on {bound}: attach environments with oni_env.attach(make_env, \"{bound}\")");
    let mut layout = state.layout();
    loop {
        if let Some(l) = layout.borrow().clone() {
            tracing::info!(spec = ?l.spec, "observation layout declared by the first client");
            return Ok(Some((l, events_rx)));
        }
        tokio::select! {
            r = layout.changed() => if r.is_err() { return Ok(None) },
            _ = stop.wait_for(|s| *s) => return Ok(None),
        }
    }
}
