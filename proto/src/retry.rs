//! How every long-lived client treats its peer, in one place: connect when needed, and after
//! a failed call follow the one retry rule (`refusal::Fault`): the peer's fault drops the
//! connection and waits a backoff delay before the next try; the request's or the setup's
//! fault (a wrong token, a network the peer does not serve, a request it cannot take) stops
//! the client for good, naming the peer.

use crate::metric_names::{RECONNECTS, RPC_ERRORS};
use crate::refusal::{fault, Fault};
use crate::tasks::CancellationToken;
use crate::transport::TransportError;
use crate::{AuthInterceptor, Backoff, ClientOptions};
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// A channel that adds the token to every call: what every client is built on.
pub type Authed = InterceptedService<Channel, AuthInterceptor>;

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

/// Waits `delay`, or less if `stop` is cancelled; true when stopped.
pub async fn pause(delay: Duration, stop: &CancellationToken) -> bool {
    if stop.is_cancelled() {
        return true;
    }
    let _ = tokio::time::timeout(delay, stop.cancelled()).await;
    stop.is_cancelled()
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

    /// A call failed: `Err` when retrying cannot help (`Fault::Request`, `Fault::Setup`),
    /// else the connection is dropped and the delay before the next try returned.
    pub fn failed(&mut self, method: &'static str, st: &Status) -> Result<Duration, Refused> {
        count_rpc_error(method, st);
        if fault(st) != Fault::Peer {
            return Err(self.refused(method, st));
        }
        self.client = None;
        Ok(self.trouble(&format!("{method} failed ({:?}): {}", st.code(), st.message())))
    }

    /// The refusal that stops this client, naming the peer.
    pub fn refused(&self, method: &'static str, st: &Status) -> Refused {
        Refused { peer: self.peer, addr: self.addr.clone(), method, code: st.code(), message: st.message().to_string() }
    }

    /// One call (unary, or the opening of a stream), made again after each failure that the
    /// retry rule retries: connects when needed and waits the backoff delay between tries
    /// (cut short by `stop`). `call` gets its own handle on the connection (a tonic client is
    /// a cheap clone of its channel). `Ok(None)` when stopped; `Err` when the peer refused
    /// this client for good.
    pub async fn call<T, F>(
        &mut self,
        method: &'static str,
        stop: &CancellationToken,
        mut call: impl FnMut(C) -> F,
    ) -> Result<Option<T>, Refused>
    where
        C: Clone,
        F: std::future::Future<Output = Result<T, Status>>,
    {
        loop {
            if stop.is_cancelled() {
                return Ok(None);
            }
            let wait = match self.client().await {
                Err(wait) => wait,
                Ok(client) => match call(client.clone()).await {
                    Ok(v) => {
                        self.ok();
                        return Ok(Some(v));
                    }
                    Err(st) => self.failed(method, &st)?,
                },
            };
            if pause(wait, stop).await {
                return Ok(None);
            }
        }
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
        // the same request would be refused again: a bad obs_spec is not retried forever
        assert!(c.failed("GetPolicy", &Status::invalid_argument("field `obs_spec`: not JSON")).is_err());
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
    async fn a_call_stops_with_the_caller_and_ends_on_an_answer_or_a_refusal() {
        let mut c = conn();
        let stop = CancellationToken::new();
        // nothing listens: tries until stopped
        let stopped = CancellationToken::new();
        let tx = stopped.clone();
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            tx.cancel();
        });
        let r = c.call("GetPolicy", &stopped, |_c| async { Ok::<_, Status>(1) }).await;
        assert!(matches!(r, Ok(None)), "{r:?}");
        stopper.await.unwrap();
        // a connected client: an answer ends the streak of failures, the request's fault
        // stops the client (the peer's faults go through `failed`, tested above)
        let mut served = Reconnecting::new(
            "annotator",
            "127.0.0.1:9",
            ClientOptions::default(),
            None,
            Backoff::new(Duration::from_millis(1), Duration::from_millis(2)),
            |c| c,
        )
        .unwrap();
        served.client = Some(lazy_channel());
        served.failures = 3;
        let r = served.call("GetRewardModel", &stop, |_c| async { Ok::<_, Status>(7) }).await;
        assert!(matches!(r, Ok(Some(7))) && served.failures == 0, "{r:?}");
        served.client = Some(lazy_channel());
        let no = |_c| async { Err::<u8, _>(Status::invalid_argument("no")) };
        let r = served.call("GetRewardModel", &stop, no).await;
        let e = r.unwrap_err();
        assert_eq!((e.peer, e.method, e.code), ("annotator", "GetRewardModel", Code::InvalidArgument));
    }

    /// A client whose channel connects on first use (no call here reaches the wire).
    fn lazy_channel() -> Authed {
        let ch = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        InterceptedService::new(ch, AuthInterceptor::new(None).unwrap())
    }

    #[tokio::test]
    async fn an_unreachable_peer_asks_the_caller_to_wait() {
        let mut c = conn();
        let d = c.client().await.map(|_| ()).expect_err("nothing listens on port 9");
        assert!(d <= Duration::from_millis(40));
        c.ok();
    }
}
