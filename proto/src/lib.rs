//! The gRPC contract between oni's processes, and the plumbing every endpoint shares:
//! shared-token auth, optional TLS, client channels with deadlines and keepalives, and
//! retry backoff.

pub mod backoff;
pub mod budget;
pub mod codec;
pub mod field;
pub mod framing;
pub mod metric_names;
pub mod off;
pub mod raw;
pub mod refusal;
pub mod retry;
pub mod serve;
pub mod switch;
pub mod tasks;
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
pub use refusal::{Fault, Refusal};
pub use switch::Switch;
pub use transport::{AuthInterceptor, ClientOptions, TlsConfig, TokenCheck, TransportConfig};

#[doc(hidden)]
pub use metrics as __metrics;

/// Declares a crate's metric families: a constant per family, documented with its HELP
/// text, and `describe()`, which hands every HELP text to the installed recorder (call it
/// once the recorder is installed; `/metrics` then shows each family's `# HELP` line).
#[macro_export]
macro_rules! metric_names {
    (@describe counter, $name:expr, $help:expr) => {
        $crate::__metrics::describe_counter!($name, $help.trim())
    };
    (@describe gauge, $name:expr, $help:expr) => {
        $crate::__metrics::describe_gauge!($name, $help.trim())
    };
    (@describe histogram, $name:expr, $help:expr) => {
        $crate::__metrics::describe_histogram!($name, $help.trim())
    };
    ($( #[doc = $help:literal] $kind:ident $name:ident = $value:literal; )*) => {
        $( #[doc = $help] pub const $name: &str = $value; )*

        /// Gives the installed metrics recorder every family's HELP text.
        pub fn describe() {
            $( $crate::metric_names!(@describe $kind, $name, $help); )*
        }
    };
}
