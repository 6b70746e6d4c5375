//! Why a server turned a request away: the error the services' own code returns (learner,
//! inference, env hub, annotator). It becomes a gRPC status (a code, and a message that says
//! what to fix) here and nowhere else, names the label its refusal is counted under, and says
//! whose fault it is (`Fault`): the one retry rule, which clients read back from the code of
//! any status (`Refusal::of_status`, used by `retry::Reconnecting`).

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

    /// Whose fault the refusal is, which decides what the client does next.
    pub fn fault(&self) -> Fault {
        match self {
            Refusal::Field(_) | Refusal::Invalid(_) | Refusal::Unreadable(_) => Fault::Request,
            Refusal::Mismatch(_) | Refusal::Unauthenticated(_) => Fault::Setup,
            Refusal::Exhausted(_)
            | Refusal::Unavailable(_)
            | Refusal::TimedOut(_)
            | Refusal::Cancelled(_)
            | Refusal::Internal(_) => Fault::Peer,
        }
    }

    /// What a peer's status stands for, read from its code alone (any server's, not only
    /// ours: codes our servers never send are placed by their gRPC meaning).
    pub fn of_status(st: &Status) -> Refusal {
        let msg = st.message().to_string();
        match st.code() {
            Code::InvalidArgument | Code::OutOfRange => Refusal::Invalid(msg),
            Code::FailedPrecondition | Code::Unimplemented | Code::PermissionDenied => Refusal::Mismatch(msg),
            Code::Unauthenticated => Refusal::Unauthenticated(msg),
            Code::ResourceExhausted => Refusal::Exhausted(msg),
            Code::Unavailable => Refusal::Unavailable(msg),
            Code::DeadlineExceeded => Refusal::TimedOut(msg),
            Code::Cancelled => Refusal::Cancelled(msg),
            // Unknown, Internal, Aborted, DataLoss, NotFound, AlreadyExists (and Ok, never an error)
            _ => Refusal::Internal(msg),
        }
    }
}

/// Whose fault a failed call is: what every client does next, in one place. The table in
/// docs/architecture.md lists it per code, and a test checks the two agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The peer's state stood in the way (busy, starting, stopping, broken): drop the
    /// connection, wait the backoff delay, and try again.
    Peer,
    /// The request itself is wrong, so it would fail the same way again: a client whose next
    /// request would be the same stops, naming the peer; a rejected rollout is dropped.
    Request,
    /// The client's setup does not fit the peer (token, network, run, role): stop, naming
    /// the peer.
    Setup,
}

/// The fault of a failed call, from its status's code.
pub fn fault(st: &Status) -> Fault {
    Refusal::of_status(st).fault()
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
        assert_eq!((f.label().as_str(), f.fault()), ("num_envs", Fault::Request));
        let m = Refusal::Mismatch("another network".into());
        assert_eq!(
            (m.code(), m.label().as_str(), m.fault()),
            (Code::FailedPrecondition, "FailedPrecondition", Fault::Setup)
        );
        let busy = Refusal::Exhausted("queue full".into());
        assert_eq!(busy.fault(), Fault::Peer);
    }

    const CODES: [Code; 16] = [
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    #[test]
    fn a_refusal_read_back_from_its_status_keeps_its_code_and_fault() {
        for r in [
            Refusal::field("x", "bad"),
            Refusal::Invalid("i".into()),
            Refusal::Unreadable("u".into()),
            Refusal::Mismatch("m".into()),
            Refusal::Unauthenticated("t".into()),
            Refusal::Exhausted("e".into()),
            Refusal::Unavailable("a".into()),
            Refusal::TimedOut("d".into()),
            Refusal::Cancelled("c".into()),
            Refusal::Internal("n".into()),
        ] {
            let back = Refusal::of_status(&Status::from(r.clone()));
            assert_eq!((back.code(), back.fault()), (r.code(), r.fault()), "{r:?}");
        }
    }

    /// The retry table of docs/architecture.md, row by row, is what `fault` says of every code.
    #[test]
    fn the_documented_retry_table_is_the_rule_the_clients_follow() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/architecture.md")).unwrap();
        let start = doc.find("<!-- retry-table -->").expect("docs/architecture.md has the retry table");
        let mut listed = Vec::new();
        for line in doc[start..].lines().skip(3).take_while(|l| l.starts_with('|')) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let want = match cells[2] {
                "peer" => Fault::Peer,
                "request" => Fault::Request,
                "setup" => Fault::Setup,
                other => panic!("unknown fault `{other}` in: {line}"),
            };
            for name in cells[1].split(',').map(|c| c.trim().trim_matches('`')) {
                let code =
                    CODES.into_iter().find(|c| screaming(*c) == name).unwrap_or_else(|| panic!("no code {name}"));
                assert_eq!(fault(&Status::new(code, "")), want, "{name}: the table and the code disagree");
                listed.push(code);
            }
        }
        for c in CODES {
            assert!(listed.contains(&c), "the table lacks {}", screaming(c));
        }
    }

    /// `InvalidArgument` as gRPC's specification writes it: `INVALID_ARGUMENT`.
    fn screaming(c: Code) -> String {
        let mut out = String::new();
        for (i, ch) in format!("{c:?}").chars().enumerate() {
            if ch.is_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_uppercase());
        }
        out
    }
}
