//! The annotator's core: captions in (never blocking an actor), each unique caption queued
//! for the LLM once, answers into the label bank and on to the distiller. The LLM workers
//! (`workers.rs`) and the ranking pairs (`pairs.rs`) extend it; the gRPC surface is
//! `service.rs`.

use crate::bank::{LabelBank, LabelKey, PairKey, DEFAULT_MEMORY_RECORDS};
use crate::config::AnnotatorConfig;
use crate::distill::{AnswerFilter, Answered, DistillLoop, Published};
use crate::intake::{normalise, question_key, Backlog};
use crate::label::{Label, LabelRecord};
use crate::llm::LlmClient;
use crate::prompts::PromptConfig;
use crate::waiting::Waiting;
use oni_proto::v1::SubmitAck;
use oni_proto::Refusal;
use oni_reward_model::fifo::FifoMap;
use std::collections::{HashMap, HashSet, VecDeque};
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
    /// Question keys waiting or in flight (their caption in the backlog or at the LLM), with
    /// the captions that wait for that answer: at most `annotator.backlog_capacity`.
    pub(crate) waiting: Waiting,
    /// Captions of several messages waiting for the answers about their messages, with
    /// those in so far. Each waits in `waiting`, and goes when it goes from there.
    pub(crate) composites: HashMap<String, Vec<Part>>,
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
    /// The answer of each question key (`annotator.caption_key`), for captions that ask the
    /// same question as one already answered: as many keys as the bank keeps records in memory
    /// (`DEFAULT_MEMORY_RECORDS` for Redis), the oldest forgotten first (and asked again).
    pub(crate) by_key: Mutex<FifoMap<String, LabelRecord>>,
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
        let mut by_key = FifoMap::new(bank.memory_records().unwrap_or(DEFAULT_MEMORY_RECORDS));
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
        for r in usable {
            if cfg.pairs_per_caption > 0 && pool.len() < cfg.pair_pool {
                pool.push(r.caption.clone());
            }
            remember(&mut by_key, question_key(&r.caption, &cfg.caption_key), r);
        }
        Ok(Arc::new(Core {
            state: Mutex::new(State {
                backlog: Backlog::new(cfg.backlog_capacity, cfg.ask_order, cfg.caption_key.clone()),
                in_flight: HashSet::new(),
                pair_backlog: VecDeque::new(),
                pairs_pending: HashSet::new(),
                pool,
                waiting: Waiting::new(cfg.backlog_capacity),
                composites: HashMap::new(),
            }),
            by_key: Mutex::new(by_key),
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

    /// Whether a stored answer is this run's (`usable_answer`).
    pub(crate) fn usable(&self, r: &LabelRecord) -> bool {
        usable_answer(r, &self.prompt_hash, &self.llm.config().model, &self.rule)
    }

    /// The question a caption asks: captions with equal questions get one answer
    /// (`annotator.caption_key`; with no rule, the caption itself).
    pub(crate) fn question(&self, caption: &str) -> String {
        question_key(caption, &self.cfg.caption_key)
    }

    /// Answers the captions waiting on these just-stored answers (the same question, or a
    /// message of theirs) and remembers the answers for later captions; returns the waiting
    /// captions' records.
    pub(crate) fn answer_alike(&self, records: &[LabelRecord]) -> Vec<LabelRecord> {
        let mut out = Vec::new();
        let mut st = self.state.lock().unwrap();
        let mut by_key = self.by_key.lock().unwrap();
        for r in records {
            let key = self.question(&r.caption);
            remember(&mut by_key, key.clone(), r.clone());
            for w in st.waiting.close(&key) {
                if self.question(&w) == key {
                    out.push(r.for_alike(&w, now_ms(), &self.rule));
                    continue;
                }
                // a caption of several messages: done once every message has its answer
                let Some(parts) = st.composites.get_mut(&w) else { continue };
                for (m, answer) in parts.iter_mut() {
                    if answer.is_none() && self.question(m) == key {
                        *answer = Some(r.clone());
                    }
                }
                let answers: Option<Vec<LabelRecord>> = parts.iter().map(|(_, a)| a.clone()).collect();
                if let Some(answers) = answers {
                    st.composites.remove(&w);
                    out.push(combine(&w, &answers, now_ms(), &self.rule));
                }
            }
        }
        out
    }

    /// Forgets questions dropped from the backlog, and the captions waiting for them.
    pub(crate) fn dropped(&self, st: &mut State, questions: Vec<String>) {
        for q in questions {
            let lost = st.waiting.close(&self.question(&q));
            for w in &lost {
                st.composites.remove(w);
            }
            metrics::counter!(crate::metric_names::DROPPED, "reason" => "backlog_full")
                .increment(1 + lost.len() as u64);
        }
    }

    /// `waiter` waits for the answer to `key`; the oldest waiting caption goes at the cap.
    fn wait(&self, st: &mut State, key: &str, waiter: &str) {
        if let Some((_, old)) = st.waiting.add(key, waiter) {
            st.composites.remove(&old);
            metrics::counter!(crate::metric_names::DROPPED, "reason" => "waiting_full").increment(1);
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
        stop: watch::Receiver<bool>,
    ) -> Result<std::thread::JoinHandle<()>, crate::BankError> {
        self.start_scored_distiller(kind, cfg, Vec::new(), stop)
    }

    /// `start_distiller`, scoring every snapshot against `gold` (caption, helpful) too.
    pub fn start_scored_distiller(
        &self,
        kind: oni_reward_model::Kind,
        cfg: oni_reward_model::DistillConfig,
        gold: Vec<(String, bool)>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<std::thread::JoinHandle<()>, crate::BankError> {
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
        let questions: Vec<(Vec<String>, u64)> = counts
            .iter()
            .filter_map(|(c, n)| {
                let c = normalise(c)?;
                let parts = self.messages_of(&c);
                Some((if parts.is_empty() { vec![c] } else { parts }, *n))
            })
            .collect();
        let mut st = self.state.lock().unwrap();
        let mut found = 0;
        for (qs, n) in questions {
            for q in qs {
                found += usize::from(st.backlog.met(&q, n));
            }
        }
        found
    }

    /// Queues the captions not yet labelled, waiting or in flight. A caption asking the same
    /// question as one answered or waiting (`annotator.caption_key`) gets that answer; with
    /// `annotator.split_messages`, a caption of several messages waits for the answer about
    /// each message.
    pub fn submit(&self, captions: &[String]) -> Result<SubmitAck, Refusal> {
        let mut ack = SubmitAck::default();
        // bank lookups first, outside the lock: the caption, and each of its messages
        let mut fresh: Vec<(String, Vec<Part>)> = Vec::new();
        for c in captions {
            let Some(c) = normalise(c) else {
                ack.rejected += 1;
                metrics::counter!(crate::metric_names::CAPTIONS, "outcome" => "rejected").increment(1);
                continue;
            };
            // an answer derived under another caption rule is not this run's: asked again
            let known = self.bank.get(&self.key(&c)).map_err(unreachable_bank)?.filter(|r| self.usable(r));
            if known.is_some() {
                ack.known += 1;
                metrics::counter!(crate::metric_names::BANK_HITS).increment(1);
                continue;
            }
            let mut parts = Vec::new();
            for m in self.messages_of(&c) {
                let r = self.bank.get(&self.key(&m)).map_err(unreachable_bank)?.filter(|r| self.usable(r));
                parts.push((m, r));
            }
            fresh.push((c, parts));
        }
        let mut alike = Vec::new();
        let mut st = self.state.lock().unwrap();
        for (c, parts) in fresh {
            if st.backlog.contains(&c) || st.in_flight.contains(&c) || st.composites.contains_key(&c) {
                ack.known += 1;
                metrics::counter!(crate::metric_names::CAPTIONS, "outcome" => "duplicate").increment(1);
                continue;
            }
            if parts.is_empty() {
                self.ask_or_wait(&mut st, &c, &c, &mut ack, &mut alike);
                continue;
            }
            // several messages: the caption waits for an answer about each
            let by_key = self.by_key.lock().unwrap();
            let parts: Vec<Part> = parts
                .into_iter()
                .map(|(m, banked)| {
                    let a = banked.or_else(|| by_key.get(&self.question(&m)).cloned());
                    (m, a)
                })
                .collect();
            drop(by_key);
            if parts.iter().all(|(_, a)| a.is_some()) {
                let answers: Vec<LabelRecord> = parts.into_iter().filter_map(|(_, a)| a).collect();
                alike.push(combine(&c, &answers, now_ms(), &self.rule));
                ack.known += 1;
                metrics::counter!(crate::metric_names::CAPTIONS, "outcome" => "same_question").increment(1);
                continue;
            }
            self.add_pairs(&mut st, &c);
            // in before it waits, so that a wait that goes at the cap takes it along
            st.composites.insert(c.clone(), parts.clone());
            let mut asked = SubmitAck::default();
            for (m, a) in &parts {
                if a.is_none() {
                    self.ask_or_wait(&mut st, m, &c, &mut asked, &mut alike);
                }
            }
            // the caption counts once: queued when it brought a new question
            if asked.queued > 0 {
                ack.queued += 1;
            } else {
                ack.known += 1;
            }
        }
        ack.backlog = st.backlog.len() as u64;
        ack.backpressure = st.backlog.is_nearly_full();
        metrics::gauge!(crate::metric_names::LLM_BACKLOG).set(ack.backlog as f64);
        metrics::gauge!(crate::metric_names::LLM_PAIR_BACKLOG).set(st.pair_backlog.len() as f64);
        drop(st);
        if !alike.is_empty() {
            self.bank.put(&alike).map_err(unreachable_bank)?;
            self.notify(alike.into_iter().map(Answered::Label));
        }
        if ack.queued > 0 {
            self.work.notify_waiters();
        }
        Ok(ack)
    }

    /// The messages a caption is judged by, when it is judged message by message (empty: the
    /// caption is one question).
    fn messages_of(&self, caption: &str) -> Vec<String> {
        if !self.cfg.split_messages {
            return Vec::new();
        }
        let m = crate::intake::messages(caption);
        if m.len() > 1 {
            m
        } else {
            Vec::new()
        }
    }

    /// Gets `waiter` the answer to `question` (a caption or one of its messages): the answer
    /// of the same question if there is one, else a wait for the question already queued,
    /// else the question queued.
    fn ask_or_wait(
        &self,
        st: &mut State,
        question: &str,
        waiter: &str,
        ack: &mut SubmitAck,
        alike: &mut Vec<LabelRecord>,
    ) {
        let key = self.question(question);
        if question == waiter {
            if let Some(r) = self.by_key.lock().unwrap().get(&key) {
                alike.push(r.for_alike(waiter, now_ms(), &self.rule));
                ack.known += 1;
                metrics::counter!(crate::metric_names::CAPTIONS, "outcome" => "same_question").increment(1);
                return;
            }
        }
        if st.waiting.is_pending(&key) {
            self.wait(st, &key, waiter);
            if question == waiter {
                ack.known += 1;
                metrics::counter!(crate::metric_names::CAPTIONS, "outcome" => "same_question").increment(1);
            }
            return;
        }
        st.waiting.open(key.clone());
        if question == waiter {
            self.add_pairs(st, question);
        } else {
            self.wait(st, &key, waiter);
        }
        if let Some(dropped) = st.backlog.push(question.to_string()) {
            self.dropped(st, vec![dropped]);
        }
        ack.queued += 1;
        self.queued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!(crate::metric_names::CAPTIONS, "outcome" => "queued").increment(1);
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

    /// How many entries each map of captions holds now.
    pub fn map_sizes(&self) -> MapSizes {
        let st = self.state.lock().unwrap();
        MapSizes {
            answers_by_question: self.by_key.lock().unwrap().len(),
            backlog: st.backlog.len(),
            in_flight: st.in_flight.len(),
            waiting_questions: st.waiting.questions(),
            waiting_captions: st.waiting.captions(),
            composites: st.composites.len(),
            pair_backlog: st.pair_backlog.len(),
            pairs_pending: st.pairs_pending.len(),
            pair_pool: st.pool.len(),
        }
    }

    pub fn label_of(&self, caption: &str) -> Result<Option<Label>, Refusal> {
        let Some(c) = normalise(caption) else { return Ok(None) };
        Ok(self.bank.get(&self.key(&c)).map_err(unreachable_bank)?.filter(|r| self.usable(r)).map(|r| r.label))
    }
}

/// Entries in the core's maps of captions (`Core::map_sizes`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapSizes {
    /// Answers remembered by question key (`by_key`).
    pub answers_by_question: usize,
    pub backlog: usize,
    pub in_flight: usize,
    /// Question keys waiting or in flight.
    pub waiting_questions: usize,
    /// Captions waiting for the answer to another caption's question.
    pub waiting_captions: usize,
    pub composites: usize,
    pub pair_backlog: usize,
    pub pairs_pending: usize,
    pub pair_pool: usize,
}

/// One message of a caption judged message by message, with its answer once known.
pub(crate) type Part = (String, Option<LabelRecord>);

/// Keeps the first answer to a question; the oldest key goes at the cap (counted).
fn remember(by_key: &mut FifoMap<String, LabelRecord>, key: String, r: LabelRecord) {
    if by_key.get(&key).is_some() {
        return;
    }
    let evicted = by_key.evicted();
    by_key.put(key, r);
    if by_key.evicted() > evicted {
        metrics::counter!(crate::metric_names::EVICTIONS, "map" => "answers_by_question").increment(1);
    }
}

/// A caption's record from the answers about each of its messages (`Label::of_messages`).
fn combine(caption: &str, answers: &[LabelRecord], time_ms: u64, rule: &str) -> LabelRecord {
    let label = Label::of_messages(answers.iter().map(|a| a.label));
    let join = |f: &dyn Fn(&LabelRecord) -> String| answers.iter().map(f).collect::<Vec<_>>().join(" | ");
    LabelRecord {
        caption: caption.into(),
        label,
        prompt_hash: answers[0].prompt_hash.clone(),
        model: answers[0].model.clone(),
        raw_answer: crate::label::truncate(&join(&|a| a.raw_answer.clone()), crate::label::RAW_ANSWER_MAX),
        latency_ms: 0,
        time_ms,
        tokens: None,
        asked_as: Some(join(&|a| a.asked_as.clone().unwrap_or_else(|| a.caption.clone()))),
        rule: Some(rule.into()),
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
