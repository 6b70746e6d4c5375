//! The metric families this crate records: each name once, with the HELP text that
//! `/metrics` shows beside it.

crate::metric_names! {
    /// Failed accepts on a gRPC listener (out of file descriptors, say), by server.
    counter GRPC_ACCEPT_ERRORS = "oni_grpc_accept_errors_total";
    /// Connections closed at once because the server held its cap (a quarter of the fd limit), by server.
    counter GRPC_CONNECTIONS_REFUSED = "oni_grpc_connections_refused_total";
    /// Connections closed for sending no HTTP/2 preface within the handshake deadline.
    counter GRPC_CONNECTIONS_TIMED_OUT = "oni_grpc_connections_timed_out_total";
    /// Failed gRPC calls this process made, by method and status code.
    counter RPC_ERRORS = "oni_rpc_errors_total";
    /// Connections to a peer re-established after a failure, by peer.
    counter RECONNECTS = "oni_reconnects_total";
    /// Environment steps, stepped (role=actor) or trained on (role=learner).
    counter ENV_STEPS = "oni_env_steps_total";
    /// Rollouts discarded, by reason: policy_lag, superseded_run, queue_full (learner), disconnect (lost in flight, actor).
    counter ROLLOUTS_DROPPED = "oni_rollouts_dropped_total";
}
