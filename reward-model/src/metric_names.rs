//! The metric families this crate records: each name once, with the HELP text that
//! `/metrics` shows beside it.

oni_proto::metric_names! {
    /// Reward-model version served (role=annotator) or in use (role=actor).
    gauge REWARD_MODEL_VERSION = "oni_reward_model_version";
    /// Reward-model snapshots refused on pull, by role and reason.
    counter REWARD_MODEL_REFUSED = "oni_reward_model_refused_total";
    /// Unix time of the last successful reward-model pull, by role.
    gauge REWARD_MODEL_PULL_TIMESTAMP = "oni_reward_model_pull_timestamp_seconds";
}
