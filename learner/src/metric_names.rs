//! The metric families this crate records: each name once, with the HELP text that
//! `/metrics` shows beside it.

oni_proto::metric_names! {
    /// Checkpoints that could not be written (the previous one is kept).
    counter CHECKPOINT_FAILURES = "oni_checkpoint_failures_total";
    /// Checkpoints written.
    counter CHECKPOINTS = "oni_checkpoints_total";
    /// Episodes that ended in success, as reported by the env.
    counter EPISODE_SUCCESSES = "oni_episode_successes_total";
    /// Episodes finished, counted when their rollout reaches the learner.
    counter EPISODES = "oni_episodes_total";
    /// Rollouts whose intrinsic rewards the learner recomputed with the newest reward model.
    counter RELABELLED_ROLLOUTS = "oni_learner_relabelled_rollouts_total";
    /// Policy updates.
    counter UPDATES = "oni_learner_updates_total";
    /// Rollouts missing from an actor's sequence (lost in flight).
    counter SEQUENCE_GAPS = "oni_rollout_sequence_gaps_total";
    /// Rollouts refused, by the field that was wrong.
    counter ROLLOUTS_REJECTED = "oni_rollouts_rejected_total";
    /// Gradient norm before clipping, last update.
    gauge GRAD_NORM = "oni_learner_grad_norm";
    /// The last update's loss terms and diagnostics (approx_kl, clip_fraction), by term.
    gauge LOSS = "oni_learner_loss";
    /// Samples trained per second in the last update.
    gauge SAMPLES_PER_SECOND = "oni_learner_samples_per_second";
    /// Version of the newest policy.
    gauge POLICY_VERSION = "oni_policy_version";
    /// Items waiting in a queue, by queue.
    gauge QUEUE_DEPTH = "oni_queue_depth";
    /// Steps per finished episode.
    histogram EPISODE_LENGTH = "oni_episode_length";
    /// Return per finished episode, by kind (extrinsic, intrinsic).
    histogram EPISODE_RETURN = "oni_episode_return";
    /// The env's own score at the end of each episode that has one (NetHack's in-game score).
    histogram EPISODE_SCORE = "oni_episode_score";
    /// Policy versions between acting and training, per rollout.
    histogram POLICY_LAG = "oni_policy_lag_versions";
}
