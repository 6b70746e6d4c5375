//! The `EnvHub` gRPC service: admits clients (version, token, spaces, limits), then forwards
//! each client's steps to the stepping thread and its answers back, one step at a time.

use super::spaces::Layout;
use crate::config::HubConfig;
use oni_proto::v1::client_message::Kind;
use oni_proto::v1::env_hub_server::{EnvHub, EnvHubServer};
use oni_proto::v1::{hub_message, ClientMessage, EnvStep, HubMessage, ProtocolVersion, Welcome};
use oni_proto::Refusal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub const PROTOCOL_VERSION: u32 = ProtocolVersion::Current as u32;

pub type Reply = mpsc::Sender<Result<HubMessage, Status>>;

/// What the streams tell the stepping thread.
pub enum HubEvent {
    Joined { client: u64, envs: usize, first_slot: usize, reply: Reply, permits: Arc<Semaphore> },
    Step { client: u64, step: EnvStep },
    Left { client: u64, why: String },
}

#[derive(Default)]
struct Admitted {
    clients: usize,
    envs: usize,
}

impl Admitted {
    fn publish(&self) {
        metrics::gauge!(crate::metric_names::HUB_CLIENTS).set(self.clients as f64);
        metrics::gauge!(crate::metric_names::HUB_ENVS).set(self.envs as f64);
    }
}

pub struct HubState {
    cfg: HubConfig,
    token: Option<String>,
    actor_id: String,
    layout: watch::Sender<Option<Layout>>,
    admitted: Mutex<Admitted>,
    next_slot: AtomicU64,
    next_client: AtomicU64,
    events: crossbeam_channel::Sender<HubEvent>,
}

/// Gives a client's clients/envs back when its stream ends, however it ends.
struct Reservation {
    state: Arc<HubState>,
    envs: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut a = self.state.admitted.lock().unwrap();
        a.clients -= 1;
        a.envs -= self.envs;
        a.publish();
    }
}

/// Logs and counts a refusal, as the status that ends the client's stream.
pub(crate) fn refuse(r: Refusal) -> Status {
    oni_proto::throttle::warn_limited("env hub refused a client", &format_args!("{:?}: {r}", r.code()));
    metrics::counter!(crate::metric_names::HUB_REFUSED, "code" => format!("{:?}", r.code())).increment(1);
    r.into()
}

impl HubState {
    pub fn new(
        cfg: HubConfig,
        token: Option<String>,
        actor_id: String,
        events: crossbeam_channel::Sender<HubEvent>,
    ) -> Arc<Self> {
        Arc::new(HubState {
            cfg,
            token: token.filter(|t| !t.is_empty()),
            actor_id,
            layout: watch::channel(None).0,
            admitted: Mutex::new(Admitted::default()),
            next_slot: AtomicU64::new(0),
            next_client: AtomicU64::new(0),
            events,
        })
    }

    /// Resolves to the layout the first admitted client declared.
    pub fn layout(&self) -> watch::Receiver<Option<Layout>> {
        self.layout.subscribe()
    }

    pub fn server(self: &Arc<Self>) -> EnvHubServer<Hub> {
        let limit = self.cfg.max_message_bytes.max(1024);
        EnvHubServer::new(Hub { state: self.clone() }).max_decoding_message_size(limit).max_encoding_message_size(limit)
    }

    fn admit(self: &Arc<Self>, hello: &oni_proto::v1::Hello) -> Result<Reservation, Refusal> {
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(Refusal::Mismatch(format!(
                "client speaks env-hub protocol v{} but this actor speaks v{PROTOCOL_VERSION}: install the client that matches this oni release (pip install ./clients/python)",
                hello.protocol_version
            )));
        }
        if let Some(expected) = &self.token {
            if hello.token.is_empty() {
                return Err(Refusal::Unauthenticated(
                    "field `token`: this cluster requires a token (set ONI_TOKEN or pass token=…)".into(),
                ));
            }
            if !oni_proto::transport::secret_eq(hello.token.as_bytes(), expected.as_bytes()) {
                return Err(Refusal::Unauthenticated("field `token`: wrong token".into()));
            }
        }
        let n = hello.num_envs as usize;
        if n == 0 {
            return Err(Refusal::field("num_envs", "a client drives at least one env"));
        }
        let layout = Layout::from_hello(hello)?;
        let step_bytes = n.saturating_mul(layout.bytes_per_env());
        if step_bytes > self.cfg.max_message_bytes {
            return Err(Refusal::Exhausted(format!(
                "one step of {n} envs takes {step_bytes} bytes, above this actor's limit of {} (actor.hub.max_message_bytes): attach fewer envs per stream",
                self.cfg.max_message_bytes
            )));
        }
        let mut refused = None;
        self.layout.send_if_modified(|cur| match cur {
            None => {
                *cur = Some(layout.clone());
                true
            }
            Some(known) => {
                refused = known.difference(&layout);
                false
            }
        });
        if let Some(why) = refused {
            return Err(Refusal::Invalid(why));
        }
        let mut a = self.admitted.lock().unwrap();
        if a.clients >= self.cfg.max_clients {
            return Err(Refusal::Exhausted(format!(
                "this actor already serves {} clients (actor.hub.max_clients); attach to another actor or raise the limit",
                a.clients
            )));
        }
        if a.envs + n > self.cfg.max_envs {
            return Err(Refusal::Exhausted(format!(
                "field `num_envs`: {n} more envs would exceed this actor's {} (actor.hub.max_envs; {} attached)",
                self.cfg.max_envs, a.envs
            )));
        }
        a.clients += 1;
        a.envs += n;
        a.publish();
        Ok(Reservation { state: self.clone(), envs: n })
    }
}

pub struct Hub {
    state: Arc<HubState>,
}

/// Queues a message for a client, waiting at most `within`: one that stopped reading its
/// answers must not hold its place (and this task) for ever.
async fn tell(tx: &Reply, msg: Result<HubMessage, Status>, within: Duration) {
    let _ = tokio::time::timeout(within, tx.send(msg)).await;
}

#[tonic::async_trait]
impl EnvHub for Hub {
    type AttachStream = ReceiverStream<Result<HubMessage, Status>>;

    async fn attach(&self, request: Request<Streaming<ClientMessage>>) -> Result<Response<Self::AttachStream>, Status> {
        let state = self.state.clone();
        let idle = Duration::from_millis(state.cfg.idle_timeout_ms.max(100));
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(idle, inbound.message()).await {
            Ok(Ok(Some(ClientMessage { kind: Some(Kind::Hello(h)) }))) => h,
            Ok(Ok(Some(_))) => {
                return Err(refuse(Refusal::field("kind", "the first message must be a Hello declaring the spaces")))
            }
            Ok(Ok(None)) => {
                return Err(Refusal::Cancelled("the client closed the stream before its Hello".into()).into())
            }
            Ok(Err(st)) => return Err(refuse(oni_proto::refusal::inbound(&st))),
            Err(_) => return Err(refuse(Refusal::TimedOut("no Hello within the idle timeout".into()))),
        };
        let reservation = state.admit(&hello).map_err(refuse)?;
        let n = hello.num_envs as usize;
        let client = state.next_client.fetch_add(1, Ordering::Relaxed);
        let first_slot = state.next_slot.fetch_add(n as u64, Ordering::Relaxed) as usize;
        let (tx, rx) = mpsc::channel(4);
        let welcome = Welcome {
            protocol_version: PROTOCOL_VERSION,
            actor_id: state.actor_id.clone(),
            first_slot: first_slot as u32,
        };
        tell(&tx, Ok(HubMessage { kind: Some(hub_message::Kind::Welcome(welcome)) }), idle).await;
        // The stepping thread hands a permit back with each answer: a client is one step
        // ahead at most, however fast it sends.
        let permits = Arc::new(Semaphore::new(1));
        let joined = HubEvent::Joined { client, envs: n, first_slot, reply: tx.clone(), permits: permits.clone() };
        if state.events.send(joined).is_err() {
            return Err(Refusal::Unavailable("this actor is shutting down".into()).into());
        }
        tracing::info!(client, env = %hello.env_name, envs = n, first_slot, "environment client attached");
        tokio::spawn(async move {
            let _reservation = reservation;
            let why = loop {
                // the permit comes with the answer to the last step; a closed semaphore means
                // the stepping thread dropped this client, a closed reply that it went away
                tokio::select! {
                    p = permits.acquire() => match p {
                        Ok(p) => p.forget(),
                        Err(_) => break "dropped by the actor".to_string(),
                    },
                    _ = tx.closed() => break "client went away".to_string(),
                }
                match tokio::time::timeout(idle, inbound.message()).await {
                    Ok(Ok(Some(ClientMessage { kind: Some(Kind::Step(step)) }))) => {
                        if state.events.send(HubEvent::Step { client, step }).is_err() {
                            break "actor stopping".into();
                        }
                    }
                    Ok(Ok(Some(_))) => {
                        let st = refuse(Refusal::field("kind", "only EnvStep messages may follow the Hello"));
                        tell(&tx, Err(st), idle).await;
                        break "protocol error".into();
                    }
                    Ok(Ok(None)) => break "client closed the stream".into(),
                    Ok(Err(st)) => {
                        let bad = oni_proto::refusal::inbound(&st);
                        let why = format!("stream broke: {bad}");
                        tell(&tx, Err(refuse(bad)), idle).await;
                        break why;
                    }
                    Err(_) => {
                        let late = Refusal::TimedOut(format!("no step for {} ms", idle.as_millis()));
                        tell(&tx, Err(refuse(late)), idle).await;
                        break "idle".into();
                    }
                }
            };
            tracing::info!(client, "environment client detached: {why}");
            let _ = state.events.send(HubEvent::Left { client, why });
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
