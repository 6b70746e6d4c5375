//! The annotator service: captions in over gRPC (never blocking an actor), each unique
//! caption asked of the LLM once (and, for the ranking reward model, paired with a few
//! earlier captions, each pair asked once), answers into the label bank. Requests that fail
//! (server down, circuit open) put their questions back, so everything that arrived is
//! answered once the server returns.

use crate::bank::{LabelBank, LabelKey, PairKey};
use crate::distill::{AnswerFilter, Answered, DistillLoop, Published};
use crate::intake::{normalise, Backlog};
use crate::label::{truncate, Label, LabelRecord, PairRecord, Preference, RAW_ANSWER_MAX};
use crate::llm::LlmClient;
use crate::prompts::PromptConfig;
use oni_proto::v1::annotator_server::{Annotator, AnnotatorServer};
use oni_proto::v1::{
    CaptionBatch, CaptionLabel, GetLabelsRequest, LabelList, RewardModelReply, RewardModelRequest, SubmitAck,
};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{HashSet, VecDeque};
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
    /// Captions a worker takes from the backlog at once (ONI: the 100 newest); their
    /// prompts go to the server as fast as the LLM client's concurrency limit lets them.
    pub batch: usize,
    /// Pause after a failed batch before trying again.
    pub retry_pause_ms: u64,
    /// Most captions in one SubmitCaptions call.
    pub max_captions_per_call: usize,
    /// At shutdown, how long to keep labelling the captions already received.
    pub drain_secs: u64,
    /// Ranking questions per new caption, each pairing it with a random earlier caption
    /// (0: no ranking questions; the ranking reward model needs them).
    pub pairs_per_caption: usize,
    /// Pairs waiting for the LLM; when full the oldest are dropped (counted).
    pub pair_backlog_capacity: usize,
    /// Distinct captions remembered as partners for new pairs.
    pub pair_pool: usize,
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
            pairs_per_caption: 0,
            pair_backlog_capacity: 100_000,
            pair_pool: 50_000,
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

struct State {
    backlog: Backlog,
    in_flight: HashSet<String>,
    pair_backlog: VecDeque<(String, String)>,
    /// Pairs waiting or in flight.
    pairs_pending: HashSet<PairKey>,
    /// Earlier captions, partners for new pairs.
    pool: Vec<String>,
}

/// Seconds between two checks that the LLM keeps up with the captions.
const STARVATION_CHECK_SECS: u64 = 30;

pub struct Core {
    cfg: AnnotatorConfig,
    prompts: PromptConfig,
    prompt_hash: String,
    ranking_hash: String,
    llm: LlmClient,
    bank: Arc<dyn LabelBank>,
    state: Mutex<State>,
    work: Notify,
    /// Where newly stored answers go (the distillation loop).
    listeners: Mutex<Vec<std::sync::mpsc::Sender<Answered>>>,
    /// The reward-model snapshot served by GetRewardModel; `None` before the first.
    served: Arc<Mutex<Option<Published>>>,
    /// Whether this annotator distils a reward model at all.
    distilling: std::sync::atomic::AtomicBool,
    /// Answers (labels and pairs) stored by this process.
    answered: std::sync::atomic::AtomicU64,
    /// New captions queued for the LLM by this process.
    queued: std::sync::atomic::AtomicU64,
}

impl Core {
    pub fn new(
        cfg: AnnotatorConfig,
        prompts: PromptConfig,
        llm: LlmClient,
        bank: Arc<dyn LabelBank>,
    ) -> Result<Arc<Self>, crate::BankError> {
        let prompt_hash = prompts.classification_hash();
        let ranking_hash = prompts.ranking_hash();
        let mut pool = Vec::new();
        if cfg.pairs_per_caption > 0 {
            let model = &llm.config().model;
            pool = bank
                .all()?
                .into_iter()
                .filter(|r| r.prompt_hash == prompt_hash && &r.model == model)
                .map(|r| r.caption)
                .collect();
            pool.truncate(cfg.pair_pool);
        }
        Ok(Arc::new(Core {
            state: Mutex::new(State {
                backlog: Backlog::new(cfg.backlog_capacity),
                in_flight: HashSet::new(),
                pair_backlog: VecDeque::new(),
                pairs_pending: HashSet::new(),
                pool,
            }),
            cfg,
            prompts,
            prompt_hash,
            ranking_hash,
            llm,
            bank,
            work: Notify::new(),
            listeners: Mutex::new(Vec::new()),
            served: Arc::new(Mutex::new(None)),
            distilling: Default::default(),
            answered: Default::default(),
            queued: Default::default(),
        }))
    }

    fn key(&self, caption: &str) -> LabelKey {
        LabelKey {
            caption: caption.into(),
            prompt_hash: self.prompt_hash.clone(),
            model: self.llm.config().model.clone(),
        }
    }

    fn pair_key(&self, a: &str, b: &str) -> PairKey {
        PairKey::new(a, b, &self.ranking_hash, &self.llm.config().model)
    }

    pub fn bank(&self) -> &Arc<dyn LabelBank> {
        &self.bank
    }

    pub fn prompts(&self) -> &PromptConfig {
        &self.prompts
    }

    /// Starts distilling the answers into a reward model of `kind` on its own thread; the
    /// snapshots it publishes are served by GetRewardModel.
    pub fn start_distiller(
        &self,
        kind: oni_reward_model::Kind,
        cfg: oni_reward_model::DistillConfig,
        mut stop: watch::Receiver<bool>,
    ) -> Result<std::thread::JoinHandle<()>, crate::BankError> {
        let filter = AnswerFilter {
            classification_hash: self.prompt_hash.clone(),
            ranking_hash: self.ranking_hash.clone(),
            model: self.llm.config().model.clone(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        // subscribe before loading, so nothing stored in between is missed
        self.listeners.lock().unwrap().push(tx);
        let lp = DistillLoop::new(kind, cfg, filter, self.bank.clone(), self.served.clone())?;
        self.distilling.store(true, std::sync::atomic::Ordering::Release);
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = flag.clone();
        tokio::spawn(async move {
            while !*stop.borrow() && stop.changed().await.is_ok() {}
            f.store(true, std::sync::atomic::Ordering::Release);
        });
        Ok(std::thread::Builder::new()
            .name("distill".into())
            .spawn(move || lp.run(rx, flag))
            .expect("spawn distill thread"))
    }

    /// The served snapshot, if newer than `since`.
    pub fn reward_model_since(&self, since: u64) -> Option<Published> {
        self.served.lock().unwrap().as_ref().filter(|p| p.version > since).cloned()
    }

    /// Answers stored by this process so far.
    pub fn answered(&self) -> u64 {
        self.answered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The version of the reward model being served (0: none yet).
    pub fn reward_model_version(&self) -> u64 {
        self.served.lock().unwrap().as_ref().map_or(0, |p| p.version)
    }

    fn notify(&self, answers: impl ExactSizeIterator<Item = Answered>) {
        self.answered.fetch_add(answers.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let mut l = self.listeners.lock().unwrap();
        if l.is_empty() {
            return;
        }
        for a in answers {
            l.retain(|tx| tx.send(a.clone()).is_ok());
        }
    }

    /// Queues ranking questions pairing `c` with random earlier captions, then remembers it.
    fn add_pairs(&self, st: &mut State, c: &str) {
        let k = self.cfg.pairs_per_caption;
        if k == 0 {
            return;
        }
        let mut rng = rand::rng();
        let mut tries = 0;
        let mut added = 0;
        while added < k.min(st.pool.len()) && tries < 4 * k {
            tries += 1;
            let other = st.pool[rng.random_range(0..st.pool.len())].clone();
            if other == c {
                continue;
            }
            let key = self.pair_key(c, &other);
            if st.pairs_pending.contains(&key) || self.bank.get_pair(&key).ok().flatten().is_some() {
                continue;
            }
            // which comes first is random, so the model's position bias averages out
            let pair = if rng.random_bool(0.5) { (c.to_string(), other) } else { (other, c.to_string()) };
            if st.pair_backlog.len() >= self.cfg.pair_backlog_capacity.max(1) {
                if let Some((a, b)) = st.pair_backlog.pop_front() {
                    st.pairs_pending.remove(&self.pair_key(&a, &b));
                }
                metrics::counter!("oni_annotator_dropped_total", "reason" => "pair_backlog_full").increment(1);
            }
            st.pair_backlog.push_back(pair);
            st.pairs_pending.insert(key);
            added += 1;
        }
        if st.pool.len() < self.cfg.pair_pool {
            st.pool.push(c.to_string());
        } else {
            let i = rng.random_range(0..st.pool.len());
            st.pool[i] = c.to_string();
        }
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
            self.add_pairs(&mut st, &c);
            if st.backlog.push(c).is_some() {
                metrics::counter!("oni_annotator_dropped_total", "reason" => "backlog_full").increment(1);
            }
            ack.queued += 1;
            self.queued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            metrics::counter!("oni_annotator_captions_total", "outcome" => "queued").increment(1);
        }
        ack.backlog = st.backlog.len() as u64;
        ack.backpressure = st.backlog.is_nearly_full();
        metrics::gauge!("oni_llm_backlog").set(ack.backlog as f64);
        metrics::gauge!("oni_llm_pair_backlog").set(st.pair_backlog.len() as f64);
        drop(st);
        if ack.queued > 0 {
            self.work.notify_waiters();
        }
        Ok(ack)
    }

    pub fn llm(&self) -> &LlmClient {
        &self.llm
    }

    /// Questions waiting: captions and pairs.
    pub fn backlog(&self) -> usize {
        let st = self.state.lock().unwrap();
        st.backlog.len() + st.pair_backlog.len()
    }

    pub fn in_flight(&self) -> usize {
        let st = self.state.lock().unwrap();
        st.in_flight.len() + st.pairs_pending.len() - st.pair_backlog.len()
    }

    pub fn label_of(&self, caption: &str) -> Result<Option<Label>, Status> {
        let Some(c) = normalise(caption) else { return Ok(None) };
        Ok(self.bank.get(&self.key(&c)).map_err(|e| Status::unavailable(format!("label bank: {e}")))?.map(|r| r.label))
    }

    /// One worker: takes the newest captions (or, when none wait, the newest pairs), asks
    /// the LLM, stores the answers.
    async fn work_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            let n = self.cfg.batch.max(1);
            let (captions, pairs) = {
                let mut st = self.state.lock().unwrap();
                let b = st.backlog.take_newest(n);
                st.in_flight.extend(b.iter().cloned());
                let mut p = Vec::new();
                while b.is_empty() && p.len() < n {
                    let Some(pair) = st.pair_backlog.pop_back() else { break };
                    p.push(pair);
                }
                metrics::gauge!("oni_llm_backlog").set(st.backlog.len() as f64);
                metrics::gauge!("oni_llm_pair_backlog").set(st.pair_backlog.len() as f64);
                (b, p)
            };
            if captions.is_empty() && pairs.is_empty() {
                tokio::select! {
                    _ = self.work.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            let failed =
                if captions.is_empty() { self.rank_pairs(pairs).await } else { self.label_captions(captions).await };
            if failed > 0 {
                metrics::counter!("oni_annotator_requeued_total").increment(failed as u64);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(self.cfg.retry_pause_ms)) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }

    /// Asks about a batch of captions; returns how many must be asked again.
    async fn label_captions(&self, batch: Vec<String>) -> usize {
        let results = self.llm.classify(&self.prompts, &batch).await;
        let model = &self.llm.config().model;
        let record = |caption: &String, label, raw_answer, latency_ms| LabelRecord {
            caption: caption.clone(),
            label,
            prompt_hash: self.prompt_hash.clone(),
            model: model.clone(),
            raw_answer,
            latency_ms,
            time_ms: now_ms(),
        };
        let (records, mut retry) = sort_answers(&batch, results, Label::Unknown, record);
        let stored = if records.is_empty() { Ok(()) } else { self.bank.put(&records) };
        if let Err(e) = &stored {
            tracing::error!("label bank write failed, will ask again: {e}");
            retry.extend(records.iter().map(|r| r.caption.clone()));
        } else {
            for r in &records {
                metrics::counter!("oni_labels_total", "label" => r.label.name()).increment(1);
            }
            self.notify(records.iter().cloned().map(Answered::Label));
        }
        let mut st = self.state.lock().unwrap();
        for c in &batch {
            st.in_flight.remove(c);
        }
        let failed = retry.len();
        if !retry.is_empty() {
            st.backlog.requeue(retry);
        }
        metrics::gauge!("oni_llm_backlog").set(st.backlog.len() as f64);
        failed
    }

    /// Asks about a batch of pairs; returns how many must be asked again.
    async fn rank_pairs(&self, batch: Vec<(String, String)>) -> usize {
        let results = self.llm.rank(&self.prompts, &batch).await;
        let model = &self.llm.config().model;
        let record = |(first, second): &(String, String), preference, raw_answer, latency_ms| PairRecord {
            first: first.clone(),
            second: second.clone(),
            preference,
            prompt_hash: self.ranking_hash.clone(),
            model: model.clone(),
            raw_answer,
            latency_ms,
            time_ms: now_ms(),
        };
        let (records, mut retry) = sort_answers(&batch, results, Preference::Unknown, record);
        let stored = if records.is_empty() { Ok(()) } else { self.bank.put_pairs(&records) };
        if let Err(e) = &stored {
            tracing::error!("label bank write failed, will ask again: {e}");
            retry.extend(records.iter().map(|r| (r.first.clone(), r.second.clone())));
        } else {
            for r in &records {
                metrics::counter!("oni_pairs_total", "preference" => r.preference.name()).increment(1);
            }
            self.notify(records.iter().cloned().map(Answered::Pair));
        }
        let mut st = self.state.lock().unwrap();
        if stored.is_ok() {
            for r in &records {
                st.pairs_pending.remove(&self.pair_key(&r.first, &r.second));
            }
        }
        let failed = retry.len();
        st.pair_backlog.extend(retry);
        metrics::gauge!("oni_llm_pair_backlog").set(st.pair_backlog.len() as f64);
        failed
    }

    /// Starts one worker per concurrent LLM request.
    pub fn spawn_workers(self: &Arc<Self>, stop: watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks: Vec<_> = (0..self.llm.config().concurrency.max(1))
            .map(|_| tokio::spawn(self.clone().work_loop(stop.clone())))
            .collect();
        tasks.push(tokio::spawn(self.clone().watch_starvation(stop)));
        tasks
    }

    /// Says so (a warning per check, the `oni_annotator_starving` gauge) while new captions
    /// arrive faster than the LLM labels them and the backlog grows: the reward model then
    /// learns from a shrinking share of what the agent sees.
    async fn watch_starvation(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        use std::sync::atomic::Ordering::Relaxed;
        let every = Duration::from_secs(STARVATION_CHECK_SECS);
        let (mut queued, mut answered, mut backlog) = (0u64, 0u64, 0usize);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            let (q, a, b) = (self.queued.load(Relaxed), self.answered.load(Relaxed), self.backlog());
            let secs = every.as_secs_f64();
            let (arriving, labelled) = ((q - queued) as f64 / secs, (a - answered) as f64 / secs);
            let starving = arriving > labelled && b > backlog;
            metrics::gauge!("oni_annotator_new_captions_per_second").set(arriving);
            metrics::gauge!("oni_annotator_labels_per_second").set(labelled);
            metrics::gauge!("oni_annotator_starving").set(if starving { 1.0 } else { 0.0 });
            if starving {
                tracing::warn!(
                    "the LLM is not keeping up: {arriving:.2} new captions/s against {labelled:.2} labels/s, {b} waiting, \
                     {} requests at once; give the LLM server more capacity (or its own cores) or send fewer captions",
                    self.llm.concurrency_limit()
                );
            }
            (queued, answered, backlog) = (q, a, b);
        }
    }
}

/// Splits a batch's answers into records to store (an answer, or `unknown` for a request
/// that will not succeed by repetition) and the items to ask again.
fn sort_answers<I: Clone, T, R>(
    batch: &[I],
    results: Vec<Result<crate::llm::Answer<T>, crate::llm::LlmError>>,
    unknown: T,
    record: impl Fn(&I, T, String, u64) -> R,
) -> (Vec<R>, Vec<I>)
where
    T: Copy,
{
    let mut records = Vec::new();
    let mut retry = Vec::new();
    for (item, r) in batch.iter().zip(results) {
        match r {
            Ok(a) => records.push(record(item, a.label, a.raw, a.latency.as_millis() as u64)),
            Err(e) if e.is_final() => records.push(record(item, unknown, truncate(&e.to_string(), RAW_ANSWER_MAX), 0)),
            Err(_) => retry.push(item.clone()),
        }
    }
    (records, retry)
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
            return Err(Status::failed_precondition(
                "this annotator distils no reward model (its reward.kind is none); set reward.kind on the annotator",
            ));
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
