//! The annotator's core: captions in (never blocking an actor), each unique caption queued
//! for the LLM once, answers into the label bank and on to the distiller. The LLM workers
//! (`workers.rs`) and the ranking pairs (`pairs.rs`) extend it; the gRPC surface is
//! `service.rs`.

use crate::bank::{LabelBank, LabelKey, PairKey};
use crate::config::AnnotatorConfig;
use crate::distill::{AnswerFilter, Answered, DistillLoop, Published};
use crate::intake::{normalise, Backlog};
use crate::label::Label;
use crate::llm::LlmClient;
use crate::prompts::PromptConfig;
use oni_proto::v1::SubmitAck;
use oni_proto::Refusal;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Notify};

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub(crate) struct State {
    pub(crate) backlog: Backlog,
    pub(crate) in_flight: HashSet<String>,
    pub(crate) pair_backlog: VecDeque<(String, String)>,
    /// Pairs waiting or in flight.
    pub(crate) pairs_pending: HashSet<PairKey>,
    /// Earlier captions, partners for new pairs.
    pub(crate) pool: Vec<String>,
}

/// Seconds between two checks that the LLM keeps up with the captions.
pub(crate) const STARVATION_CHECK_SECS: u64 = 30;

pub struct Core {
    pub(crate) cfg: AnnotatorConfig,
    pub(crate) prompts: PromptConfig,
    pub(crate) prompt_hash: String,
    pub(crate) ranking_hash: String,
    pub(crate) llm: LlmClient,
    pub(crate) bank: Arc<dyn LabelBank>,
    pub(crate) state: Mutex<State>,
    pub(crate) work: Notify,
    /// Where newly stored answers go (the distillation loop).
    pub(crate) listeners: Mutex<Vec<std::sync::mpsc::Sender<Answered>>>,
    /// The reward-model snapshot served by GetRewardModel; `None` before the first.
    pub(crate) served: Arc<Mutex<Option<Published>>>,
    /// Whether this annotator distils a reward model at all.
    pub(crate) distilling: std::sync::atomic::AtomicBool,
    /// Answers (labels and pairs) stored by this process.
    pub(crate) answered: std::sync::atomic::AtomicU64,
    /// New captions queued for the LLM by this process.
    pub(crate) queued: std::sync::atomic::AtomicU64,
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

    pub(crate) fn key(&self, caption: &str) -> LabelKey {
        LabelKey {
            caption: caption.into(),
            prompt_hash: self.prompt_hash.clone(),
            model: self.llm.config().model.clone(),
        }
    }

    pub(crate) fn pair_key(&self, a: &str, b: &str) -> PairKey {
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

    pub(crate) fn notify(&self, answers: impl ExactSizeIterator<Item = Answered>) {
        self.answered.fetch_add(answers.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let mut l = self.listeners.lock().unwrap();
        if l.is_empty() {
            return;
        }
        for a in answers {
            l.retain(|tx| tx.send(a.clone()).is_ok());
        }
    }

    /// Queues the captions not yet labelled, waiting or in flight.
    pub fn submit(&self, captions: &[String]) -> Result<SubmitAck, Refusal> {
        let mut ack = SubmitAck::default();
        let mut fresh = Vec::new();
        for c in captions {
            let Some(c) = normalise(c) else {
                ack.rejected += 1;
                metrics::counter!(crate::metric_names::CAPTIONS, "outcome" => "rejected").increment(1);
                continue;
            };
            let known = self.bank.get(&self.key(&c)).map_err(unreachable_bank)?;
            if known.is_some() {
                ack.known += 1;
                metrics::counter!(crate::metric_names::BANK_HITS).increment(1);
                continue;
            }
            fresh.push(c);
        }
        let mut st = self.state.lock().unwrap();
        for c in fresh {
            if st.backlog.contains(&c) || st.in_flight.contains(&c) {
                ack.known += 1;
                metrics::counter!(crate::metric_names::CAPTIONS, "outcome" => "duplicate").increment(1);
                continue;
            }
            self.add_pairs(&mut st, &c);
            if st.backlog.push(c).is_some() {
                metrics::counter!(crate::metric_names::DROPPED, "reason" => "backlog_full").increment(1);
            }
            ack.queued += 1;
            self.queued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            metrics::counter!(crate::metric_names::CAPTIONS, "outcome" => "queued").increment(1);
        }
        ack.backlog = st.backlog.len() as u64;
        ack.backpressure = st.backlog.is_nearly_full();
        metrics::gauge!(crate::metric_names::LLM_BACKLOG).set(ack.backlog as f64);
        metrics::gauge!(crate::metric_names::LLM_PAIR_BACKLOG).set(st.pair_backlog.len() as f64);
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

    pub fn label_of(&self, caption: &str) -> Result<Option<Label>, Refusal> {
        let Some(c) = normalise(caption) else { return Ok(None) };
        Ok(self.bank.get(&self.key(&c)).map_err(unreachable_bank)?.map(|r| r.label))
    }
}

/// The bank could not be read: the caller may try again once it is back.
fn unreachable_bank(e: crate::bank::BankError) -> Refusal {
    Refusal::Unavailable(format!("label bank: {e}"))
}
