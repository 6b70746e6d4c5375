use serde::{Deserialize, Serialize};

/// `[actor]`: an actor steps its envs, chooses actions and streams rollouts to the learner.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ActorConfig {
    /// Learner address, `host:port`.
    pub learner: String,
    /// Stable name of this actor (defaults to host name + pid). A restarted actor keeps its
    /// name but gets a new run id.
    pub actor_id: Option<String>,
    /// Number of actors `oni run` starts in-process.
    pub count: usize,
    /// Envs per actor, split in two halves that alternate between stepping and inference.
    pub num_envs: usize,
    /// Where the actor's own policy runs (`actor.inference = "local"`).
    pub device: oni_policy::Device,
    /// How often to ask the learner for newer weights.
    pub weights_poll_ms: u64,
    /// Rollouts sent but not yet acknowledged, per stream.
    pub max_in_flight: usize,
    /// Finished rollouts waiting to be sent; stepping pauses when it is full.
    pub send_queue: usize,
    /// A stream with rollouts in flight and no ack for this long is considered dead.
    pub ack_timeout_ms: u64,
    /// First pause before reconnecting to the learner; it doubles (with jitter) per failure...
    pub backoff_base_ms: u64,
    /// ...up to this.
    pub backoff_max_ms: u64,
    /// Annotator address (`host:port`) to send captions to and pull reward models from;
    /// `""`: none.
    #[serde(with = "oni_proto::off")]
    #[schemars(with = "String")]
    pub annotator: Option<String>,
    /// Where environments attach over gRPC (`env.name = "attached"`).
    pub hub: HubConfig,
    /// Where the actions are chosen: `local` (the policy in the actor, weights pulled from
    /// the learner) or `remote` (the learner's central inference service).
    pub inference: Placement,
}

/// Where an actor's inference runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    #[default]
    Local,
    Remote,
}

/// `[actor.hub]`: the gRPC service where environments attach (`env.name = "attached"`).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    /// Address the environment hub listens on.
    pub listen: String,
    /// Client streams attached at once.
    pub max_clients: usize,
    /// Envs attached at once, over all clients.
    pub max_envs: usize,
    /// Largest message a client may send (one step of all its envs).
    pub max_message_bytes: usize,
    /// A client that sends nothing for this long (mid-episode) is dropped.
    pub idle_timeout_ms: u64,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            listen: "127.0.0.1:50061".into(),
            max_clients: 16,
            max_envs: 1024,
            max_message_bytes: 16 << 20,
            idle_timeout_ms: 60_000,
        }
    }
}

impl Default for ActorConfig {
    fn default() -> Self {
        ActorConfig {
            learner: "127.0.0.1:50051".into(),
            actor_id: None,
            count: 1,
            num_envs: 32,
            device: oni_policy::Device::Cpu,
            weights_poll_ms: 100,
            max_in_flight: 8,
            send_queue: 16,
            ack_timeout_ms: 30_000,
            backoff_base_ms: 100,
            backoff_max_ms: 5000,
            annotator: None,
            hub: HubConfig::default(),
            inference: Placement::Local,
        }
    }
}
