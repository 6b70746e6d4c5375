//! How every long-lived client treats its peer, in one place: connect when needed, and after
//! a failed call drop the connection and wait a backoff delay before the next try; but stop
//! for good, naming the peer, on the refusals retrying cannot fix (a wrong or missing token,
//! a network or configuration the peer does not serve).

use crate::metric_names::{RECONNECTS, RPC_ERRORS};
use crate::transport::TransportError;
use crate::{AuthInterceptor, Backoff, ClientOptions};
use std::time::Duration;
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// A channel that adds the token to every call: what every client is built on.
pub type Authed = InterceptedService<Channel, AuthInterceptor>;

/// Refusals that retrying cannot fix: the operator must change the setup.
pub fn is_fatal(st: &Status) -> bool {
    matches!(st.code(), Code::Unauthenticated | Code::PermissionDenied | Code::FailedPrecondition)
}

/// A peer refused this process in a way retrying cannot fix.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the {peer} at {addr} refused {method} ({code:?}): {message}")]
pub struct Refused {
    pub peer: &'static str,
    pub addr: String,
    pub method: &'static str,
    pub code: Code,
    pub message: String,
}

/// Counts a failed call under its method and status code.
pub fn count_rpc_error(method: &'static str, st: &Status) {
    metrics::counter!(RPC_ERRORS, "method" => method, "code" => format!("{:?}", st.code())).increment(1);
}

/// Waits `delay`, or less if `stop` turns true; true when stopped.
pub async fn pause(delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    let _ = tokio::time::timeout(delay, stop.changed()).await;
    *stop.borrow()
}

/// One peer's connection, made when needed and dropped after a failure, with a backoff
/// delay between tries. The first failure of a streak is a warning, the rest are debug
/// lines, and the return is logged once.
pub struct Reconnecting<C> {
    peer: &'static str,
    addr: String,
    opts: ClientOptions,
    auth: AuthInterceptor,
    build: fn(Authed) -> C,
    client: Option<C>,
    backoff: Backoff,
    failures: u32,
}

impl<C> Reconnecting<C> {
    /// `peer` names the other side in logs, metrics and refusals ("learner", "annotator").
    pub fn new(
        peer: &'static str,
        addr: &str,
        opts: ClientOptions,
        token: Option<&str>,
        backoff: Backoff,
        build: fn(Authed) -> C,
    ) -> Result<Self, TransportError> {
        let auth = AuthInterceptor::new(token)?;
        opts.endpoint(addr)?;
        Ok(Reconnecting { peer, addr: addr.to_string(), opts, auth, build, client: None, backoff, failures: 0 })
    }

    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    /// The connected client, connecting first if there is none; `Err(delay)` when the peer
    /// cannot be reached (the caller waits that long before asking again).
    pub async fn client(&mut self) -> Result<&mut C, Duration> {
        if self.client.is_none() {
            match self.opts.connect(&self.addr).await {
                Ok(ch) => self.client = Some((self.build)(InterceptedService::new(ch, self.auth.clone()))),
                Err(e) => return Err(self.trouble(&format!("cannot reach it: {e}"))),
            }
        }
        Ok(self.client.as_mut().expect("connected"))
    }

    /// A call went through.
    pub fn ok(&mut self) {
        if self.failures > 0 {
            tracing::info!(peer = self.peer, addr = %self.addr, "{} reachable again after {} failed tries", self.peer, self.failures);
        }
        self.failures = 0;
        self.backoff.reset();
    }

    /// A call failed: `Err` when retrying cannot help, else the connection is dropped and
    /// the delay before the next try returned.
    pub fn failed(&mut self, method: &'static str, st: &Status) -> Result<Duration, Refused> {
        count_rpc_error(method, st);
        if is_fatal(st) {
            return Err(Refused {
                peer: self.peer,
                addr: self.addr.clone(),
                method,
                code: st.code(),
                message: st.message().to_string(),
            });
        }
        self.client = None;
        Ok(self.trouble(&format!("{method} failed ({:?}): {}", st.code(), st.message())))
    }

    /// Drops the connection (a stream broke) and returns the delay before the next try.
    pub fn broken(&mut self, why: &str) -> Duration {
        self.client = None;
        self.trouble(why)
    }

    fn trouble(&mut self, why: &str) -> Duration {
        if self.failures == 0 {
            tracing::warn!(peer = self.peer, addr = %self.addr, "{}: {why}; retrying", self.peer);
        } else {
            tracing::debug!(peer = self.peer, addr = %self.addr, "{}: {why}", self.peer);
        }
        self.failures += 1;
        metrics::counter!(RECONNECTS, "peer" => self.peer).increment(1);
        self.backoff.next_delay()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Reconnecting<Authed> {
        let opts = ClientOptions { connect_timeout: Duration::from_millis(200), ..Default::default() };
        let bo = Backoff::new(Duration::from_millis(10), Duration::from_millis(40));
        Reconnecting::new("learner", "127.0.0.1:9", opts, Some("t"), bo, |c| c).unwrap()
    }

    #[test]
    fn refusals_that_retrying_cannot_fix_are_fatal_and_name_the_peer() {
        let mut c = conn();
        let e = c.failed("GetPolicy", &Status::unauthenticated("wrong token")).unwrap_err();
        assert_eq!(e.to_string(), "the learner at 127.0.0.1:9 refused GetPolicy (Unauthenticated): wrong token");
        assert!(c.failed("GetPolicy", &Status::failed_precondition("another network")).is_err());
        assert!(c.failed("GetPolicy", &Status::permission_denied("no")).is_err());
        for st in [Status::unavailable("x"), Status::deadline_exceeded("x"), Status::resource_exhausted("x")] {
            let d = c.failed("GetPolicy", &st).expect("retried");
            assert!(d <= Duration::from_millis(40));
        }
    }

    #[test]
    fn bad_tokens_and_addresses_fail_at_construction() {
        let bo = Backoff::new(Duration::from_millis(10), Duration::from_millis(40));
        let r = Reconnecting::new("x", "127.0.0.1:9", ClientOptions::default(), Some("bad\ntoken"), bo.clone(), |c| c);
        assert!(r.is_err());
        let r = Reconnecting::new("x", "not a url with spaces", ClientOptions::default(), None, bo, |c| c);
        assert!(r.is_err());
    }

    #[tokio::test]
    async fn an_unreachable_peer_asks_the_caller_to_wait() {
        let mut c = conn();
        let d = c.client().await.map(|_| ()).expect_err("nothing listens on port 9");
        assert!(d <= Duration::from_millis(40));
        c.ok();
    }
}
