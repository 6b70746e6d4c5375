//! Why a server turned a request away: the error the services' own code returns (learner,
//! inference, env hub, annotator). It becomes a gRPC status (a code, and a message that says
//! what to fix) here and nowhere else, names the label its refusal is counted under, and says
//! whether the same request may succeed later. Clients read the codes back the same way
//! (`retry::is_fatal`).

use crate::FieldError;
use tonic::{Code, Status};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// A field of the request is not what it must be (`INVALID_ARGUMENT`).
    #[error(transparent)]
    Field(#[from] FieldError),
    /// A request that breaks the protocol's rules, the message naming the field at fault
    /// where a field name cannot be static (`INVALID_ARGUMENT`).
    #[error("{0}")]
    Invalid(String),
    /// Bytes that are not the message the method takes (`INVALID_ARGUMENT`).
    #[error("{0}")]
    Unreadable(String),
    /// The request does not fit this server's setup: another network, a superseded run, a
    /// role the server does not play (`FAILED_PRECONDITION`). Retrying cannot help.
    #[error("{0}")]
    Mismatch(String),
    /// No token, or the wrong one (`UNAUTHENTICATED`).
    #[error("{0}")]
    Unauthenticated(String),
    /// More than the server takes: a full queue, too many clients or envs, too large a
    /// message (`RESOURCE_EXHAUSTED`).
    #[error("{0}")]
    Exhausted(String),
    /// Not now: the server is starting or stopping, or a store it needs is unreachable
    /// (`UNAVAILABLE`).
    #[error("{0}")]
    Unavailable(String),
    /// The client kept the server waiting too long (`DEADLINE_EXCEEDED`).
    #[error("{0}")]
    TimedOut(String),
    /// The client closed its side first (`CANCELLED`).
    #[error("{0}")]
    Cancelled(String),
    /// Something failed inside the server (`INTERNAL`).
    #[error("{0}")]
    Internal(String),
}

impl Refusal {
    /// A bad field (`INVALID_ARGUMENT` naming it).
    pub fn field(field: &'static str, reason: impl Into<String>) -> Self {
        Refusal::Field(FieldError::new(field, reason))
    }

    pub fn code(&self) -> Code {
        match self {
            Refusal::Field(_) | Refusal::Invalid(_) | Refusal::Unreadable(_) => Code::InvalidArgument,
            Refusal::Mismatch(_) => Code::FailedPrecondition,
            Refusal::Unauthenticated(_) => Code::Unauthenticated,
            Refusal::Exhausted(_) => Code::ResourceExhausted,
            Refusal::Unavailable(_) => Code::Unavailable,
            Refusal::TimedOut(_) => Code::DeadlineExceeded,
            Refusal::Cancelled(_) => Code::Cancelled,
            Refusal::Internal(_) => Code::Internal,
        }
    }

    /// What a refusal is counted under: the field for a bad field, else the code's name.
    pub fn label(&self) -> String {
        match self {
            Refusal::Field(f) => f.field.to_string(),
            Refusal::Unreadable(_) => "(undecodable)".into(),
            other => format!("{:?}", other.code()),
        }
    }

    /// Whether the same request may succeed later (it is the server's state, not the
    /// request or the client's setup, that stands in the way).
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Refusal::Exhausted(_)
                | Refusal::Unavailable(_)
                | Refusal::TimedOut(_)
                | Refusal::Cancelled(_)
                | Refusal::Internal(_)
        )
    }
}

/// A failed read of a request stream as the refusal that ends it. The framing layer and the
/// codec gave the status its code from what broke (`framing`), so the code is all that is
/// read here, never the message's wording.
pub fn inbound(st: &Status) -> Refusal {
    let msg = st.message().to_string();
    match st.code() {
        Code::InvalidArgument => Refusal::Unreadable(msg),
        Code::ResourceExhausted => Refusal::Exhausted(msg),
        Code::DeadlineExceeded => Refusal::TimedOut(msg),
        Code::Cancelled => Refusal::Cancelled(msg),
        Code::Unimplemented | Code::Unauthenticated | Code::FailedPrecondition => Refusal::Mismatch(msg),
        _ => Refusal::Internal(msg),
    }
}

impl From<Refusal> for Status {
    fn from(r: Refusal) -> Self {
        Status::new(r.code(), r.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_one_code_a_label_and_a_retry_rule() {
        let f = Refusal::field("num_envs", "must be at least 1");
        let st = Status::from(f.clone());
        assert_eq!((st.code(), st.message()), (Code::InvalidArgument, "field `num_envs`: must be at least 1"));
        assert_eq!(f.label(), "num_envs");
        assert!(!f.retryable());
        let m = Refusal::Mismatch("another network".into());
        assert_eq!(
            (m.code(), m.label().as_str(), m.retryable()),
            (Code::FailedPrecondition, "FailedPrecondition", false)
        );
        assert!(crate::retry::is_fatal(&Status::from(m)));
        let busy = Refusal::Exhausted("queue full".into());
        assert!(busy.retryable() && !crate::retry::is_fatal(&Status::from(busy)));
        assert!(crate::retry::is_fatal(&Status::from(Refusal::Unauthenticated("wrong token".into()))));
    }
}
