//! The annotator's gRPC surface (`oni.v1.Annotator`): captions in, labels and reward-model
//! snapshots out.

use crate::annotator::Core;
use crate::label::Label;
use oni_proto::v1::annotator_server::{Annotator, AnnotatorServer};
use oni_proto::v1::{
    CaptionBatch, CaptionLabel, GetLabelsRequest, LabelList, RewardModelReply, RewardModelRequest, SubmitAck,
};
use oni_proto::Refusal;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The largest request the annotator reads (tonic's default decoding limit, which its
/// server keeps).
pub const MESSAGE_LIMIT: oni_proto::framing::MessageLimit = oni_proto::framing::MessageLimit {
    bytes: 4 << 20,
    key: "the annotator's 4 MiB message limit; send fewer captions per call",
};

pub struct AnnotatorService {
    core: Arc<Core>,
}

impl AnnotatorService {
    pub fn server(core: Arc<Core>) -> AnnotatorServer<AnnotatorService> {
        AnnotatorServer::new(AnnotatorService { core })
    }
}

#[tonic::async_trait]
impl Annotator for AnnotatorService {
    async fn submit_captions(&self, request: Request<CaptionBatch>) -> Result<Response<SubmitAck>, Status> {
        let batch = request.into_inner();
        if batch.captions.len() > self.core.cfg.max_captions_per_call {
            let limit = self.core.cfg.max_captions_per_call;
            return Err(
                Refusal::field("captions", format!("{} in one call, at most {limit}", batch.captions.len())).into()
            );
        }
        if batch.counts.len() > self.core.cfg.max_captions_per_call {
            let limit = self.core.cfg.max_captions_per_call;
            return Err(Refusal::field("counts", format!("{} in one call, at most {limit}", batch.counts.len())).into());
        }
        let core = self.core.clone();
        let ack = tokio::task::spawn_blocking(move || {
            // new captions first, so that their own counts find them waiting
            let ack = core.submit(&batch.captions)?;
            core.met(&batch.counts.into_iter().map(|c| (c.caption, c.count)).collect::<Vec<_>>());
            Ok::<_, Refusal>(ack)
        })
        .await
        .map_err(|e| Refusal::Internal(e.to_string()))??;
        Ok(Response::new(ack))
    }

    async fn get_labels(&self, request: Request<GetLabelsRequest>) -> Result<Response<LabelList>, Status> {
        let req = request.into_inner();
        let mut labels = Vec::with_capacity(req.captions.len());
        for c in req.captions {
            let label = self.core.label_of(&c)?.map_or("", Label::name);
            labels.push(CaptionLabel { caption: c, label: label.into() });
        }
        Ok(Response::new(LabelList { labels }))
    }

    async fn get_reward_model(
        &self,
        request: Request<RewardModelRequest>,
    ) -> Result<Response<RewardModelReply>, Status> {
        let since = request.into_inner().since_version;
        if !self.core.distilling.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Refusal::Mismatch(
                "this annotator distils no reward model (its reward.kind is none); set reward.kind on the annotator"
                    .into(),
            )
            .into());
        }
        Ok(Response::new(match self.core.reward_model_since(since) {
            Some(p) => RewardModelReply {
                unchanged: false,
                version: p.version,
                kind: p.kind.name().into(),
                snapshot: p.bytes.to_vec(),
            },
            None => RewardModelReply { unchanged: true, version: since, ..Default::default() },
        }))
    }
}
