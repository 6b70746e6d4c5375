//! The metric families this crate records: each name once, with the HELP text that
//! `/metrics` shows beside it.

oni_proto::metric_names! {
    /// Act requests that waited because the inference queue was full.
    counter BACKPRESSURE = "oni_inference_backpressure_total";
    /// Bytes of Act requests and replies through the inference service, by direction.
    counter BYTES = "oni_inference_bytes_total";
    /// Unfinished rollouts (one per env, each holding a step) dropped when a group left.
    counter DROPPED_PARTIAL_ROLLOUTS = "oni_inference_dropped_partial_rollouts_total";
    /// Env steps the inference service chose actions for.
    counter ENV_STEPS = "oni_inference_env_steps_total";
    /// Act requests refused, by the field that was wrong.
    counter REFUSED = "oni_inference_refused_total";
    /// Act requests answered.
    counter REQUESTS = "oni_inference_requests_total";
    /// Rollouts the inference service assembled that the learner refused.
    counter ROLLOUTS_REFUSED = "oni_inference_rollouts_refused_total";
    /// Env groups that left the inference service, by why their stream ended.
    counter GROUPS_LEFT = "oni_inference_groups_left_total";
    /// Env groups (actors' half batches) attached to the inference service.
    gauge GROUPS = "oni_inference_groups";
    /// Envs per inference forward pass.
    histogram BATCH_ENVS = "oni_inference_batch_envs";
    /// Seconds per inference forward pass.
    histogram FORWARD_SECONDS = "oni_inference_forward_seconds";
    /// Seconds an Act request waited before its forward pass.
    histogram QUEUE_WAIT_SECONDS = "oni_inference_queue_wait_seconds";
}
