//! The actor's end of central inference: one `Inference.Act` stream per group of envs,
//! driven by a tokio task. The stepping thread hands it one request at a time and waits for
//! the reply; when the stream breaks the task reports the loss, and the group's next request
//! opens a new stream (with backoff) and starts its envs' episodes afresh, since the
//! service's recurrent state for them is gone.

use crate::config::ActorConfig;
use crate::link::to_learner;
use oni_inference::wire::wire_bytes;
use oni_proto::refusal::fault;
use oni_proto::retry::{count_rpc_error, Authed};
use oni_proto::tasks::CancellationToken;
use oni_proto::v1::inference_client::InferenceClient;
use oni_proto::v1::{ActReply, ActRequest};
use oni_proto::Fault;
use oni_proto::TransportConfig;
use oni_proto::MAX_MESSAGE_BYTES;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::Streaming;

/// What the link answers a request with.
pub(crate) enum LinkReply {
    Actions(ActReply),
    /// The stream broke; the group must start over with a hello.
    Lost(String),
    /// Retrying cannot help (wrong token, another network, a request the service refuses).
    Fatal(String),
}

/// The stepping thread's handle on one group's link.
pub(crate) struct Link {
    tx: mpsc::Sender<ActRequest>,
    rx: crossbeam_channel::Receiver<LinkReply>,
}

/// How long a reply may take before the stream counts as dead (the service may be waiting
/// for room in the learner's queue).
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

impl Link {
    pub fn spawn(
        rt: &tokio::runtime::Handle,
        cfg: ActorConfig,
        transport: TransportConfig,
        stop: CancellationToken,
    ) -> Self {
        let (tx, req_rx) = mpsc::channel(1);
        let (reply_tx, rx) = crossbeam_channel::bounded(1);
        rt.spawn(run_link(cfg, transport, req_rx, reply_tx, stop));
        Link { tx, rx }
    }

    /// Sends `req` and waits for its reply; `None` when `halted` turns true first.
    pub fn call(&self, req: ActRequest, halted: &dyn Fn() -> bool) -> Option<LinkReply> {
        if self.tx.blocking_send(req).is_err() {
            return Some(LinkReply::Lost("the link task ended".into()));
        }
        loop {
            match self.rx.recv_timeout(Duration::from_millis(50)) {
                Ok(r) => return Some(r),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) if halted() => return None,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Some(LinkReply::Lost("the link task ended".into()))
                }
            }
        }
    }
}

type Client = InferenceClient<Authed>;

fn inference_client(ch: Authed) -> Client {
    InferenceClient::new(ch).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES)
}

struct Stream {
    out: mpsc::Sender<ActRequest>,
    replies: Streaming<ActReply>,
}

async fn run_link(
    cfg: ActorConfig,
    transport: TransportConfig,
    mut requests: mpsc::Receiver<ActRequest>,
    replies: crossbeam_channel::Sender<LinkReply>,
    stop: CancellationToken,
) {
    let mut learner = to_learner(&cfg, &transport, inference_client).expect("address and token checked at start");
    let mut stream: Option<Stream> = None;
    while let Some(req) = requests.recv().await {
        if req.hello.is_some() {
            let opened = learner
                .call("Act", &stop, |mut client| {
                    let (out, out_rx) = mpsc::channel(2);
                    async move {
                        client.act(ReceiverStream::new(out_rx)).await.map(|r| Stream { out, replies: r.into_inner() })
                    }
                })
                .await;
            stream = match opened {
                Ok(Some(s)) => Some(s),
                Ok(None) => return,
                Err(refused) => {
                    let _ = replies.send(LinkReply::Fatal(refused.to_string()));
                    return;
                }
            };
        }
        let answer = match stream.as_mut() {
            None => LinkReply::Lost("no stream".into()),
            Some(s) => round_trip(s, req).await,
        };
        if let LinkReply::Lost(why) = &answer {
            stream = None;
            learner.broken(why);
        }
        if replies.send(answer).is_err() {
            return;
        }
    }
}

async fn round_trip(s: &mut Stream, req: ActRequest) -> LinkReply {
    metrics::counter!(crate::metric_names::INFERENCE_BYTES, "direction" => "sent").increment(wire_bytes(&req) as u64);
    if s.out.send(req).await.is_err() {
        return LinkReply::Lost("stream closed".into());
    }
    match tokio::time::timeout(REPLY_TIMEOUT, s.replies.next()).await {
        Ok(Some(Ok(r))) => {
            metrics::counter!(crate::metric_names::INFERENCE_BYTES, "direction" => "received")
                .increment(wire_bytes(&r) as u64);
            LinkReply::Actions(r)
        }
        Ok(Some(Err(st))) => {
            count_rpc_error("Act", &st);
            // the retry rule: only the service's own trouble is worth a new stream
            if fault(&st) != Fault::Peer {
                LinkReply::Fatal(format!("learner refused this actor's inference request: {}", st.message()))
            } else {
                LinkReply::Lost(st.message().to_string())
            }
        }
        Ok(None) => LinkReply::Lost("stream closed".into()),
        Err(_) => LinkReply::Lost(format!("no reply within {} s", REPLY_TIMEOUT.as_secs())),
    }
}
