//! The metric families this crate records: each name once, with the HELP text that
//! `/metrics` shows beside it.

oni_proto::metric_names! {
    /// Times the learner asked this actor to pause sending.
    counter BACKPRESSURE_PAUSES = "oni_actor_backpressure_pauses_total";
    /// Caption batches dropped because the upload queue to the annotator was full.
    counter CAPTIONS_DROPPED = "oni_actor_captions_dropped_total";
    /// Captions sent to the annotator.
    counter CAPTIONS_SENT = "oni_actor_captions_sent_total";
    /// Episodes restarted because the central inference stream was lost.
    counter EPISODE_RESTARTS = "oni_actor_episode_restarts_total";
    /// Episodes finished in this actor.
    counter EPISODES = "oni_actor_episodes_total";
    /// Bytes to and from the central inference service, by direction.
    counter INFERENCE_BYTES = "oni_actor_inference_bytes_total";
    /// Rollouts of this actor the learner refused.
    counter ROLLOUTS_REJECTED = "oni_actor_rollouts_rejected_total";
    /// Environments that failed and were restarted.
    counter ENV_RESTARTS = "oni_env_restarts_total";
    /// Unfinished rollouts dropped when an attached client left.
    counter HUB_DISCARDED_PARTIAL_ROLLOUTS = "oni_hub_discarded_partial_rollouts_total";
    /// Environment clients refused or dropped by the env hub, by status code.
    counter HUB_REFUSED = "oni_hub_refused_total";
    /// Policy version this actor acts with.
    gauge POLICY_VERSION = "oni_actor_policy_version";
    /// Environment clients attached to the env hub.
    gauge HUB_CLIENTS = "oni_hub_clients";
    /// Envs attached to the env hub, over all clients.
    gauge HUB_ENVS = "oni_hub_envs";
    /// Mean intrinsic reward per step over the last window.
    gauge INTRINSIC_REWARD_MEAN = "oni_intrinsic_reward_mean";
    /// Fraction of steps with a positive intrinsic reward over the last window.
    gauge INTRINSIC_REWARDED_FRACTION = "oni_intrinsic_rewarded_fraction";
    /// Fraction of steps with a message whose caption the reward model's labels cover, last window.
    gauge INTRINSIC_LABELLED_FRACTION = "oni_intrinsic_labelled_step_fraction";
}
