//! The gRPC contract between oni's processes, and the plumbing every endpoint shares:
//! shared-token auth, optional TLS, client channels with deadlines and keepalives, and
//! retry backoff.

pub mod backoff;
pub mod field;
pub mod raw;
pub mod serve;
pub mod throttle;
pub mod transport;

#[allow(clippy::all)]
pub mod v1 {
    tonic::include_proto!("oni.v1");
}

/// Largest message between the learner and its actors (the weights of large networks, a
/// rollout, one step of a large group), both ways.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

pub use backoff::Backoff;
pub use field::FieldError;
pub use transport::{AuthInterceptor, ClientOptions, TlsConfig, TokenCheck};
