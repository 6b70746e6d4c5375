//! The learner's gRPC surface (`oni.v1.Learner`): rollouts in (checked, then queued for the
//! training thread with a backpressure flag in every ack), weights and info out.

use crate::shared::Shared;
use oni_proto::v1::learner_server::{Learner, LearnerServer};
use oni_proto::v1::{GetInfoRequest, GetPolicyRequest, LearnerInfo, PolicyWeights, Rollout, RolloutAck};
use oni_proto::Refusal;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

#[derive(Clone)]
pub(crate) struct LearnerService {
    pub shared: Arc<Shared>,
    /// Rollout streams per peer and in all: an actor holds one for its life.
    streams: Arc<oni_proto::budget::Budget>,
}

impl LearnerService {
    async fn accept(&self, r: Rollout) -> Result<RolloutAck, Refusal> {
        let sequence = r.sequence;
        let depth = self.shared.enqueue(r).await?;
        Ok(RolloutAck {
            sequence,
            accepted: true,
            code: 0,
            message: String::new(),
            policy_version: self.shared.version(),
            backpressure: self.shared.backpressure(depth),
        })
    }
}

#[tonic::async_trait]
impl Learner for LearnerService {
    type StreamRolloutsStream = ReceiverStream<Result<RolloutAck, Status>>;

    async fn stream_rollouts(
        &self,
        request: Request<Streaming<Rollout>>,
    ) -> Result<Response<Self::StreamRolloutsStream>, Status> {
        let share = self.streams.reserve(oni_proto::serve::peer_of(&request), 0).map_err(|(refusal, key)| {
            metrics::counter!(crate::metric_names::ROLLOUTS_REJECTED, "field" => key).increment(1);
            Status::from(refusal)
        })?;
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let svc = self.clone();
        tokio::spawn(async move {
            let _share = share;
            while let Some(item) = inbound.next().await {
                let ack = match item {
                    Ok(r) => {
                        let seq = r.sequence;
                        match svc.accept(r).await {
                            Ok(ack) => ack,
                            // A bad rollout is answered in its ack; the stream goes on.
                            Err(refused) => RolloutAck {
                                sequence: seq,
                                accepted: false,
                                code: refused.code() as i32,
                                message: refused.to_string(),
                                policy_version: svc.shared.version(),
                                backpressure: false,
                            },
                        }
                    }
                    Err(st) => {
                        // A broken stream ends with the status the framing layer gave it
                        // (bad bytes, a cut message, a missed deadline). Nothing of it was
                        // enqueued.
                        let bad = oni_proto::refusal::inbound(&st);
                        metrics::counter!(crate::metric_names::ROLLOUTS_REJECTED, "field" => bad.label()).increment(1);
                        tracing::debug!("rollout stream ended: {st}");
                        let _ = tx.send(Err(bad.into())).await;
                        break;
                    }
                };
                if tx.send(Ok(ack)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn push_rollout(&self, request: Request<Rollout>) -> Result<Response<RolloutAck>, Status> {
        Ok(Response::new(self.accept(request.into_inner()).await?))
    }

    async fn get_policy(&self, request: Request<GetPolicyRequest>) -> Result<Response<PolicyWeights>, Status> {
        let req = request.into_inner();
        let s = &self.shared;
        if !req.obs_spec.is_empty() {
            s.adopt(&req.obs_spec).await?;
        }
        let fingerprint = &s.model()?.fingerprint;
        if !req.model_fingerprint.is_empty() && &req.model_fingerprint != fingerprint {
            return Err(Refusal::Mismatch(format!(
                "actor network {} differs from the learner's {}: run both with the same [env] and [policy] settings",
                req.model_fingerprint, fingerprint
            ))
            .into());
        }
        let p = s.weights();
        let unchanged = req.have_version == Some(p.version);
        Ok(Response::new(PolicyWeights {
            version: p.version,
            unchanged,
            weights: if unchanged { Vec::new() } else { p.bytes.clone() },
            model_fingerprint: fingerprint.clone(),
        }))
    }

    async fn get_info(&self, _: Request<GetInfoRequest>) -> Result<Response<LearnerInfo>, Status> {
        Ok(Response::new(self.shared.info()))
    }
}

impl LearnerService {
    pub(crate) fn server(shared: Arc<Shared>, max_message_bytes: usize) -> LearnerServer<LearnerService> {
        let c = shared.config();
        let streams = oni_proto::budget::Budget::new(oni_proto::budget::Caps {
            streams_per_peer: (c.max_rollout_streams_per_peer.max(1), "learner.max_rollout_streams_per_peer"),
            units_per_peer: (usize::MAX, "-"),
            streams: (c.max_rollout_streams.max(1), "learner.max_rollout_streams"),
            units: (usize::MAX, "-"),
            unit: "streams",
        });
        LearnerServer::new(LearnerService { shared, streams })
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }
}
