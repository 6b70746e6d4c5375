//! The annotator service: captions in over gRPC (never blocking an actor), each unique
//! caption asked of the LLM once, answers into the label bank. Requests that fail (server
//! down, circuit open) put their captions back, so everything that arrived is labelled once
//! the server returns.

use crate::bank::{LabelBank, LabelKey};
use crate::intake::{normalise, Backlog};
use crate::label::{Label, LabelRecord};
use crate::llm::{LlmClient, LlmError};
use crate::prompts::PromptConfig;
use oni_proto::v1::annotator_server::{Annotator, AnnotatorServer};
use oni_proto::v1::{CaptionBatch, CaptionLabel, GetLabelsRequest, LabelList, SubmitAck};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Notify};
use tonic::{Request, Response, Status};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnnotatorConfig {
    /// Whether `oni run` starts an annotator in-process and sends it the actors' captions.
    pub enabled: bool,
    /// gRPC listen address.
    pub listen: String,
    /// Captions waiting for the LLM; when full the oldest are dropped (counted).
    pub backlog_capacity: usize,
    /// Captions a worker takes from the backlog at once (ONI: the 100 newest). Equal to
    /// `llm.batch` keeps every worker's requests full and the server evenly busy.
    pub batch: usize,
    /// Pause after a failed batch before trying again.
    pub retry_pause_ms: u64,
    /// Most captions in one SubmitCaptions call.
    pub max_captions_per_call: usize,
    /// At shutdown, how long to keep labelling the captions already received.
    pub drain_secs: u64,
}

impl Default for AnnotatorConfig {
    fn default() -> Self {
        AnnotatorConfig {
            enabled: false,
            listen: "127.0.0.1:50052".into(),
            backlog_capacity: 100_000,
            batch: 8,
            retry_pause_ms: 1000,
            max_captions_per_call: 4096,
            drain_secs: 60,
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

struct State {
    backlog: Backlog,
    in_flight: HashSet<String>,
}

pub struct Core {
    cfg: AnnotatorConfig,
    prompts: PromptConfig,
    prompt_hash: String,
    llm: LlmClient,
    bank: Arc<dyn LabelBank>,
    state: Mutex<State>,
    work: Notify,
}

impl Core {
    pub fn new(cfg: AnnotatorConfig, prompts: PromptConfig, llm: LlmClient, bank: Arc<dyn LabelBank>) -> Arc<Self> {
        let prompt_hash = prompts.classification_hash();
        Arc::new(Core {
            state: Mutex::new(State { backlog: Backlog::new(cfg.backlog_capacity), in_flight: HashSet::new() }),
            cfg,
            prompts,
            prompt_hash,
            llm,
            bank,
            work: Notify::new(),
        })
    }

    fn key(&self, caption: &str) -> LabelKey {
        LabelKey { caption: caption.into(), prompt_hash: self.prompt_hash.clone(), model: self.llm.config().model.clone() }
    }

    /// Queues the captions not yet labelled, waiting or in flight.
    pub fn submit(&self, captions: &[String]) -> Result<SubmitAck, Status> {
        let mut ack = SubmitAck::default();
        let mut fresh = Vec::new();
        for c in captions {
            let Some(c) = normalise(c) else {
                ack.rejected += 1;
                metrics::counter!("oni_annotator_captions_total", "outcome" => "rejected").increment(1);
                continue;
            };
            let known = self.bank.get(&self.key(&c)).map_err(|e| Status::unavailable(format!("label bank: {e}")))?;
            if known.is_some() {
                ack.known += 1;
                metrics::counter!("oni_label_bank_hits_total").increment(1);
                continue;
            }
            fresh.push(c);
        }
        let mut st = self.state.lock().unwrap();
        for c in fresh {
            if st.backlog.contains(&c) || st.in_flight.contains(&c) {
                ack.known += 1;
                metrics::counter!("oni_annotator_captions_total", "outcome" => "duplicate").increment(1);
                continue;
            }
            if st.backlog.push(c).is_some() {
                metrics::counter!("oni_annotator_dropped_total", "reason" => "backlog_full").increment(1);
            }
            ack.queued += 1;
            metrics::counter!("oni_annotator_captions_total", "outcome" => "queued").increment(1);
        }
        ack.backlog = st.backlog.len() as u64;
        ack.backpressure = st.backlog.is_nearly_full();
        metrics::gauge!("oni_llm_backlog").set(ack.backlog as f64);
        drop(st);
        if ack.queued > 0 {
            self.work.notify_waiters();
        }
        Ok(ack)
    }

    pub fn llm(&self) -> &LlmClient {
        &self.llm
    }

    pub fn backlog(&self) -> usize {
        self.state.lock().unwrap().backlog.len()
    }

    pub fn in_flight(&self) -> usize {
        self.state.lock().unwrap().in_flight.len()
    }

    pub fn label_of(&self, caption: &str) -> Result<Option<Label>, Status> {
        let Some(c) = normalise(caption) else { return Ok(None) };
        Ok(self.bank.get(&self.key(&c)).map_err(|e| Status::unavailable(format!("label bank: {e}")))?.map(|r| r.label))
    }

    /// One worker: takes the newest batch, asks the LLM, stores the answers.
    async fn work_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            let batch = {
                let mut st = self.state.lock().unwrap();
                let b = st.backlog.take_newest(self.cfg.batch.max(1));
                st.in_flight.extend(b.iter().cloned());
                metrics::gauge!("oni_llm_backlog").set(st.backlog.len() as f64);
                b
            };
            if batch.is_empty() {
                tokio::select! {
                    _ = self.work.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            let results = self.llm.classify(&self.prompts, &batch).await;
            let mut records = Vec::new();
            let mut retry = Vec::new();
            for (caption, r) in batch.iter().zip(results) {
                match r {
                    Ok(a) => records.push(LabelRecord {
                        caption: caption.clone(),
                        label: a.label,
                        prompt_hash: self.prompt_hash.clone(),
                        model: self.llm.config().model.clone(),
                        raw_answer: a.raw,
                        latency_ms: a.latency.as_millis() as u64,
                        time_ms: now_ms(),
                    }),
                    // a refused request will not succeed by repetition: record it as unknown
                    Err(e @ LlmError::Rejected { .. }) | Err(e @ LlmError::Config(..)) => records.push(LabelRecord {
                        caption: caption.clone(),
                        label: Label::Unknown,
                        prompt_hash: self.prompt_hash.clone(),
                        model: self.llm.config().model.clone(),
                        raw_answer: crate::label::truncate(&e.to_string(), crate::label::RAW_ANSWER_MAX),
                        latency_ms: 0,
                        time_ms: now_ms(),
                    }),
                    Err(_) => retry.push(caption.clone()),
                }
            }
            let stored = if records.is_empty() { Ok(()) } else { self.bank.put(&records) };
            if let Err(e) = &stored {
                tracing::error!("label bank write failed, will ask again: {e}");
                retry.extend(records.iter().map(|r| r.caption.clone()));
            } else {
                for r in &records {
                    let l = match r.label {
                        Label::Helpful => "helpful",
                        Label::Unhelpful => "unhelpful",
                        Label::Unknown => "unknown",
                    };
                    metrics::counter!("oni_labels_total", "label" => l).increment(1);
                }
            }
            {
                let mut st = self.state.lock().unwrap();
                for c in &batch {
                    st.in_flight.remove(c);
                }
                if !retry.is_empty() {
                    st.backlog.requeue(retry.clone());
                }
                metrics::gauge!("oni_llm_backlog").set(st.backlog.len() as f64);
            }
            if !retry.is_empty() {
                metrics::counter!("oni_annotator_requeued_total").increment(retry.len() as u64);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(self.cfg.retry_pause_ms)) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }

    /// Starts one worker per concurrent LLM request.
    pub fn spawn_workers(self: &Arc<Self>, stop: watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
        (0..self.llm.config().concurrency.max(1)).map(|_| tokio::spawn(self.clone().work_loop(stop.clone()))).collect()
    }
}

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
            return Err(Status::invalid_argument(format!(
                "field `captions`: {} captions in one call, at most {}",
                batch.captions.len(),
                self.core.cfg.max_captions_per_call
            )));
        }
        let core = self.core.clone();
        tokio::task::spawn_blocking(move || core.submit(&batch.captions))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map(Response::new)
    }

    async fn get_labels(&self, request: Request<GetLabelsRequest>) -> Result<Response<LabelList>, Status> {
        let req = request.into_inner();
        let mut labels = Vec::with_capacity(req.captions.len());
        for c in req.captions {
            let label = match self.core.label_of(&c)? {
                Some(Label::Helpful) => "helpful",
                Some(Label::Unhelpful) => "unhelpful",
                Some(Label::Unknown) => "unknown",
                None => "",
            };
            labels.push(CaptionLabel { caption: c, label: label.into() });
        }
        Ok(Response::new(LabelList { labels }))
    }
}
