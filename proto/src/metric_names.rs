//! The metric families this crate records: each name once, with the HELP text that
//! `/metrics` shows beside it.

crate::metric_names! {
    /// Failed accepts on a gRPC listener (out of file descriptors, say), by server.
    counter GRPC_ACCEPT_ERRORS = "oni_grpc_accept_errors_total";
    /// Connections closed at once for want of room, by server and reason (per_peer: the peer's cap; total: the server's).
    counter GRPC_CONNECTIONS_REFUSED = "oni_grpc_connections_refused_total";
    /// Connections closed at a deadline, by server and phase (handshake, preface, idle).
    counter GRPC_CONNECTIONS_TIMED_OUT = "oni_grpc_connections_timed_out_total";
    /// Requests that broke gRPC's framing or deadlines, by server and reason (flag_byte, compressed_flag, too_large, cut, first_message, reset).
    counter GRPC_BROKEN_REQUESTS = "oni_grpc_broken_requests_total";
    /// Failed gRPC calls this process made, by method and status code.
    counter RPC_ERRORS = "oni_rpc_errors_total";
    /// Connections to a peer re-established after a failure, by peer.
    counter RECONNECTS = "oni_reconnects_total";
    /// Environment steps, stepped (role=actor) or trained on (role=learner).
    counter ENV_STEPS = "oni_env_steps_total";
    /// Rollouts discarded, by reason: policy_lag, superseded_run, queue_full (learner), disconnect (lost in flight, actor).
    counter ROLLOUTS_DROPPED = "oni_rollouts_dropped_total";
}
