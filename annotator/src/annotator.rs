//! The annotator's core: captions in (never blocking an actor), each unique caption queued
//! for the LLM once, answers into the label bank and on to the distiller. The LLM workers
//! (`workers.rs`) and the ranking pairs (`pairs.rs`) extend it; the gRPC surface is
//! `service.rs`.

use crate::bank::{LabelBank, LabelKey, DEFAULT_MEMORY_RECORDS};
use crate::config::AnnotatorConfig;
use crate::distill::{AnswerFilter, Answered, DistillLoop, Published};
use crate::intake::normalise;
use crate::label::{Label, LabelRecord};
use crate::ledger::{parts_of, Fresh, Ledger, MapSizes, Tally};
use crate::llm::LlmClient;
use crate::prompts::PromptConfig;
use oni_proto::tasks::TaskGroup;
use oni_proto::v1::SubmitAck;
use oni_proto::Refusal;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Seconds between two checks that the LLM keeps up with the captions.
pub(crate) const STARVATION_CHECK_SECS: u64 = 30;

pub struct Core {
    pub(crate) cfg: AnnotatorConfig,
    pub(crate) prompts: PromptConfig,
    pub(crate) prompt_hash: String,
    pub(crate) ranking_hash: String,
    /// `derivation_rule(&cfg)`, stamped on every answer derived from another's.
    pub(crate) rule: String,
    pub(crate) llm: LlmClient,
    pub(crate) bank: Arc<dyn LabelBank>,
    /// What waits, what is asked, what is answered: the only lock on the annotator's
    /// bookkeeping, never held across a bank read or write (`with_ledger`).
    ledger: Mutex<Ledger>,
    pub(crate) work: Notify,
    /// Where newly stored answers go (the distillation loop).
    pub(crate) listeners: Mutex<Vec<std::sync::mpsc::Sender<Answered>>>,
    /// The reward-model snapshot served by GetRewardModel; `None` before the first.
    pub(crate) served: Arc<Mutex<Option<Published>>>,
    /// Whether this annotator distils a reward model at all.
    pub(crate) distilling: std::sync::atomic::AtomicBool,
    /// Answers (labels and pairs) stored by this process.
    pub(crate) answered: std::sync::atomic::AtomicU64,
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
        let model = &llm.config().model;
        let rule = derivation_rule(&cfg);
        let (usable, apart): (Vec<LabelRecord>, Vec<LabelRecord>) =
            bank.all()?.into_iter().partition(|r| usable_answer(r, &prompt_hash, model, &rule));
        if !apart.is_empty() {
            let mut why: std::collections::BTreeMap<String, usize> = Default::default();
            for r in &apart {
                let what = if r.prompt_hash != prompt_hash || &r.model != model {
                    format!("prompt {} / model {:?}", r.prompt_hash, r.model)
                } else {
                    format!("derived under caption rule {:?}", r.rule.as_deref().unwrap_or(""))
                };
                *why.entry(what).or_default() += 1;
            }
            let why: Vec<String> = why.into_iter().map(|(w, n)| format!("{n} of {w}")).collect();
            tracing::warn!(
                "{}: {} answers kept apart, not used by this run (which asks prompt {prompt_hash} of model {model:?} under caption rule {rule:?}): {}",
                bank.location(),
                apart.len(),
                why.join("; ")
            );
        }
        let memory = bank.memory_records().unwrap_or(DEFAULT_MEMORY_RECORDS);
        let mut ledger = Ledger::new(&cfg, rule.clone(), memory, &ranking_hash, model);
        ledger.load(usable);
        let core = Core {
            ledger: Mutex::new(ledger),
            cfg,
            prompts,
            prompt_hash,
            ranking_hash,
            rule,
            llm,
            bank,
            work: Notify::new(),
            listeners: Mutex::new(Vec::new()),
            served: Arc::new(Mutex::new(None)),
            distilling: Default::default(),
            answered: Default::default(),
        };
        // the metrics of what loading the bank counted (answers forgotten at the cap)
        core.with_ledger(|_| ());
        Ok(Arc::new(core))
    }

    /// Runs `f` on the ledger under its lock, then, with the lock released, turns what it
    /// counted into metrics.
    pub(crate) fn with_ledger<R>(&self, f: impl FnOnce(&mut Ledger) -> R) -> R {
        let (out, tally, backlog, pairs) = {
            let mut l = self.ledger.lock().unwrap();
            let out = f(&mut l);
            (out, l.take_tally(), l.backlog(), l.pair_backlog())
        };
        record(tally);
        metrics::gauge!(crate::metric_names::LLM_BACKLOG).set(backlog as f64);
        metrics::gauge!(crate::metric_names::LLM_PAIR_BACKLOG).set(pairs as f64);
        out
    }

    pub(crate) fn key(&self, caption: &str) -> LabelKey {
        LabelKey {
            caption: caption.into(),
            prompt_hash: self.prompt_hash.clone(),
            model: self.llm.config().model.clone(),
        }
    }

    /// Whether a stored answer is this run's (`usable_answer`).
    pub(crate) fn usable(&self, r: &LabelRecord) -> bool {
        usable_answer(r, &self.prompt_hash, &self.llm.config().model, &self.rule)
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
        group: &mut TaskGroup,
    ) -> Result<(), crate::BankError> {
        self.start_scored_distiller(kind, cfg, Vec::new(), group)
    }

    /// `start_distiller`, scoring every snapshot against `gold` (caption, helpful) too.
    pub fn start_scored_distiller(
        &self,
        kind: oni_reward_model::Kind,
        cfg: oni_reward_model::DistillConfig,
        gold: Vec<(String, bool)>,
        group: &mut TaskGroup,
    ) -> Result<(), crate::BankError> {
        let filter = AnswerFilter {
            classification_hash: self.prompt_hash.clone(),
            ranking_hash: self.ranking_hash.clone(),
            model: self.llm.config().model.clone(),
            rule: self.rule.clone(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        // subscribe before loading, so nothing stored in between is missed
        self.listeners.lock().unwrap().push(tx);
        let lp = DistillLoop::new(kind, cfg, filter, self.bank.clone(), self.served.clone())?.scored_against(gold);
        self.distilling.store(true, std::sync::atomic::Ordering::Release);
        // training is CPU work: a thread of its own, not the runtime's
        group.spawn_blocking("reward-model distiller", move |stop| {
            lp.run(rx, &stop);
            Ok::<(), std::convert::Infallible>(())
        });
        Ok(())
    }

    /// The served snapshot, if newer than `since`.
    pub fn reward_model_since(&self, since: u64) -> Option<Published> {
        self.served.lock().unwrap().as_ref().filter(|p| p.version > since).cloned()
    }

    /// Answers stored by this process so far.
    pub fn answered(&self) -> u64 {
        self.answered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How right the served reward model is (all `None` before the first).
    pub fn reward_model_accuracy(&self) -> crate::distill::Accuracy {
        self.served.lock().unwrap().as_ref().map(|p| p.accuracy).unwrap_or_default()
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

    /// The actors met these captions this many more times: the questions they wait on move
    /// up the backlog (`annotator.ask_order = "frequent"`). Captions already answered, or
    /// never submitted, are ignored; nothing here reads the bank. Returns how many counts
    /// found a waiting question.
    pub fn met(&self, counts: &[(String, u64)]) -> usize {
        self.with_ledger(|l| l.met(counts))
    }

    /// A stored answer of this run for `caption` (`usable_answer`).
    fn banked(&self, caption: &str) -> Result<Option<LabelRecord>, Refusal> {
        Ok(self.bank.get(&self.key(caption)).map_err(unreachable_bank)?.filter(|r| self.usable(r)))
    }

    /// Queues the captions not yet labelled, waiting or in flight. A caption asking the same
    /// question as one answered or waiting (`annotator.caption_key`) gets that answer; with
    /// `annotator.split_messages`, a caption of several messages waits for the answer about
    /// each message.
    pub fn submit(&self, captions: &[String]) -> Result<SubmitAck, Refusal> {
        let mut ack = SubmitAck::default();
        // the bank first, outside the lock: the caption, and each of its messages
        let mut fresh = Vec::new();
        for c in captions {
            let Some(c) = normalise(c) else {
                ack.rejected += 1;
                metrics::counter!(crate::metric_names::CAPTIONS, "outcome" => "rejected").increment(1);
                continue;
            };
            // an answer derived under another caption rule is not this run's: asked again
            if self.banked(&c)?.is_some() {
                ack.known += 1;
                metrics::counter!(crate::metric_names::BANK_HITS).increment(1);
                continue;
            }
            let mut parts = Vec::new();
            for m in parts_of(&c, self.cfg.split_messages) {
                let banked = self.banked(&m)?;
                parts.push((m, banked));
            }
            fresh.push(Fresh { caption: c, parts });
        }
        let (done, backlog, nearly_full) = self.with_ledger(|l| {
            let done = l.submit(fresh, now_ms(), &mut rand::rng());
            (done, l.backlog(), l.is_nearly_full())
        });
        ack.queued += done.queued;
        ack.known += done.known;
        ack.backlog = backlog as u64;
        ack.backpressure = nearly_full;
        if !done.pairs.is_empty() {
            let pairs = self.unanswered_pairs(done.pairs);
            self.with_ledger(|l| l.queue_pairs(pairs));
        }
        if !done.alike.is_empty() {
            self.bank.put(&done.alike).map_err(unreachable_bank)?;
            self.notify(done.alike.into_iter().map(Answered::Label));
        }
        if ack.queued > 0 {
            self.work.notify_waiters();
        }
        Ok(ack)
    }

    /// The pairs the bank has no answer for. A pair the bank cannot say about is kept: asking
    /// a pair twice costs one question, never asking it loses an answer.
    fn unanswered_pairs(&self, pairs: Vec<crate::pairs::Pair>) -> Vec<crate::pairs::Pair> {
        pairs
            .into_iter()
            .filter(|(a, b)| {
                let key = crate::bank::PairKey::new(a, b, &self.ranking_hash, &self.llm.config().model);
                match self.bank.get_pair(&key) {
                    Ok(known) => known.is_none(),
                    Err(e) => {
                        tracing::warn!("label bank: could not look up a ranking pair, asking it: {e}");
                        true
                    }
                }
            })
            .collect()
    }

    pub fn llm(&self) -> &LlmClient {
        &self.llm
    }

    /// Questions waiting: captions and pairs.
    pub fn backlog(&self) -> usize {
        self.with_ledger(|l| l.backlog() + l.pair_backlog())
    }

    /// Questions at the LLM: captions and pairs.
    pub fn in_flight(&self) -> usize {
        self.with_ledger(|l| l.in_flight())
    }

    /// Questions queued for the LLM by this process.
    pub fn queued(&self) -> u64 {
        self.with_ledger(|l| l.queued_total())
    }

    /// How many entries each map of captions holds now.
    pub fn map_sizes(&self) -> MapSizes {
        self.with_ledger(|l| l.sizes())
    }

    pub fn label_of(&self, caption: &str) -> Result<Option<Label>, Refusal> {
        let Some(c) = normalise(caption) else { return Ok(None) };
        Ok(self.banked(&c)?.map(|r| r.label))
    }
}

/// The ledger's counts as metrics.
fn record(t: Tally) {
    use crate::metric_names::{CAPTIONS, DROPPED, EVICTIONS};
    for (outcome, n) in [("queued", t.queued), ("duplicate", t.duplicate), ("same_question", t.same_question)] {
        if n > 0 {
            metrics::counter!(CAPTIONS, "outcome" => outcome).increment(n);
        }
    }
    for (reason, n) in
        [("backlog_full", t.backlog_full), ("waiting_full", t.waiting_full), ("pair_backlog_full", t.pair_backlog_full)]
    {
        if n > 0 {
            metrics::counter!(DROPPED, "reason" => reason).increment(n);
        }
    }
    if t.answers_evicted > 0 {
        metrics::counter!(EVICTIONS, "map" => "answers_by_question").increment(t.answers_evicted);
    }
}

/// What decides which captions share an answer: the caption-key rules and whether captions
/// are judged message by message. Stamped on derived answers so a run with another rule
/// does not take them for its own.
pub fn derivation_rule(cfg: &AnnotatorConfig) -> String {
    let keys: Vec<String> = cfg
        .caption_key
        .iter()
        .map(|k| serde_json::to_value(k).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default())
        .collect();
    format!("key={}{}", keys.join(","), if cfg.split_messages { ";messages" } else { "" })
}

/// Whether a stored answer belongs to this run: asked with its prompt and model, and, if
/// derived from another caption's answer, derived under its rule.
pub fn usable_answer(r: &LabelRecord, prompt_hash: &str, model: &str, rule: &str) -> bool {
    r.prompt_hash == prompt_hash && r.model == model && r.rule.as_deref().is_none_or(|x| x == rule)
}

/// The bank could not be read: the caller may try again once it is back.
fn unreachable_bank(e: crate::bank::BankError) -> Refusal {
    Refusal::Unavailable(format!("label bank: {e}"))
}
