//! The annotator's bookkeeping as one value, with no locks and no I/O: the questions waiting
//! for the LLM and those at it, the captions waiting for an answer (of the same question, or of
//! each of their messages), the answers remembered by question key, and the ranking pairs.
//! `Core` keeps it behind one lock and reads and writes the label bank outside that lock. Each
//! method is one change of state; what it dropped or counted goes into a `Tally` that the
//! caller turns into metrics.

use crate::config::AnnotatorConfig;
use crate::intake::{messages, normalise, question_key, Backlog, KeyRule};
use crate::label::{Label, LabelRecord};
use crate::pairs::{Pair, Pairs};
use crate::waiting::Waiting;
use oni_reward_model::fifo::FifoMap;
use rand::Rng;
use std::collections::{HashMap, HashSet};

/// One message of a caption judged message by message, with its answer once known.
pub(crate) type Part = (String, Option<LabelRecord>);

/// A caption with no usable answer in the bank, with its messages when it is judged message
/// by message (each with the bank's answer, if any); no parts: the caption is one question.
pub(crate) struct Fresh {
    pub(crate) caption: String,
    pub(crate) parts: Vec<Part>,
}

/// The messages a caption is judged by when `split` (`annotator.split_messages`) and it has
/// more than one; else none: the caption is one question.
pub(crate) fn parts_of(caption: &str, split: bool) -> Vec<String> {
    if !split {
        return Vec::new();
    }
    let m = messages(caption);
    if m.len() > 1 {
        m
    } else {
        Vec::new()
    }
}

/// What the ledger's changes did, since it was last taken.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Questions queued for the LLM (a caption, or one of its messages).
    pub(crate) queued: u64,
    /// Captions submitted while they already wait or are at the LLM.
    pub(crate) duplicate: u64,
    /// Captions that take the answer of another caption's question, now or when it comes.
    pub(crate) same_question: u64,
    /// Questions dropped from the full backlog, and the captions that waited for them.
    pub(crate) backlog_full: u64,
    /// Waiting captions dropped at the cap on waiting captions.
    pub(crate) waiting_full: u64,
    /// Pairs dropped from the full pair backlog.
    pub(crate) pair_backlog_full: u64,
    /// Answers forgotten by question key at the cap (asked again when met again).
    pub(crate) answers_evicted: u64,
}

/// What a submit did.
#[derive(Debug, Default)]
pub(crate) struct Submitted {
    /// Captions that brought a new question for the LLM.
    pub(crate) queued: u32,
    /// Captions answered already, or waiting for a question already queued.
    pub(crate) known: u32,
    /// Records for captions answered by answers known already, to store.
    pub(crate) alike: Vec<LabelRecord>,
    /// Ranking pairs proposed for the new captions: the caller drops those the bank has
    /// answered and queues the rest (`queue_pairs`).
    pub(crate) pairs: Vec<Pair>,
}

/// The next questions for an LLM worker.
#[derive(Debug, PartialEq)]
pub(crate) enum Work {
    Captions(Vec<String>),
    Pairs(Vec<Pair>),
}

/// Entries in the ledger's maps of captions (`Core::map_sizes`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapSizes {
    /// Answers remembered by question key.
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

/// How `ask_or_wait` got its waiter the answer.
#[derive(PartialEq)]
enum Asked {
    /// An answer to the same question was known.
    Known,
    /// The question was queued already: the waiter waits for it.
    Waits,
    /// A new question was queued.
    Queued,
}

pub(crate) struct Ledger {
    rules: Vec<KeyRule>,
    split_messages: bool,
    /// `derivation_rule`, stamped on every answer derived from another's.
    rule: String,
    backlog: Backlog,
    in_flight: HashSet<String>,
    /// Question keys queued or in flight, with the captions that wait for their answers:
    /// at most `annotator.backlog_capacity`.
    waiting: Waiting,
    /// Captions of several messages waiting for the answers about their messages, with those
    /// in so far. Each waits in `waiting`, and goes when it goes from there.
    composites: HashMap<String, Vec<Part>>,
    /// The first answer of each question key: as many keys as the bank keeps records in
    /// memory, the oldest forgotten first.
    by_key: FifoMap<String, LabelRecord>,
    pairs: Pairs,
    tally: Tally,
    /// Questions queued since the start.
    queued_total: u64,
}

impl Ledger {
    /// `memory`: how many answers by question key to remember; `ranking_hash` and `model`
    /// name the ranking questions' pairs.
    pub(crate) fn new(cfg: &AnnotatorConfig, rule: String, memory: usize, ranking_hash: &str, model: &str) -> Self {
        Ledger {
            rules: cfg.caption_key.clone(),
            split_messages: cfg.split_messages,
            rule,
            backlog: Backlog::new(cfg.backlog_capacity, cfg.ask_order, cfg.caption_key.clone()),
            in_flight: HashSet::new(),
            waiting: Waiting::new(cfg.backlog_capacity),
            composites: HashMap::new(),
            by_key: FifoMap::new(memory),
            pairs: Pairs::new(cfg.pairs_per_caption, cfg.pair_pool, cfg.pair_backlog_capacity, ranking_hash, model),
            tally: Tally::default(),
            queued_total: 0,
        }
    }

    /// Answers stored before this process started (this run's only).
    pub(crate) fn load(&mut self, records: impl IntoIterator<Item = LabelRecord>) {
        for r in records {
            self.pairs.remember(&r.caption);
            self.remember(r);
        }
    }

    fn question(&self, caption: &str) -> String {
        question_key(caption, &self.rules)
    }

    /// Keeps the first answer to a question; the oldest key goes at the cap.
    fn remember(&mut self, r: LabelRecord) {
        let key = self.question(&r.caption);
        if self.by_key.get(&key).is_some() {
            return;
        }
        let evicted = self.by_key.evicted();
        self.by_key.put(key, r);
        self.tally.answers_evicted += self.by_key.evicted() - evicted;
    }

    /// Takes in captions the bank has no answer for: each is asked, waits for a question
    /// asked already, or takes the answer of the same question known already.
    pub(crate) fn submit(&mut self, fresh: Vec<Fresh>, now_ms: u64, rng: &mut impl Rng) -> Submitted {
        let mut out = Submitted::default();
        for Fresh { caption: c, parts } in fresh {
            if self.backlog.contains(&c) || self.in_flight.contains(&c) || self.composites.contains_key(&c) {
                out.known += 1;
                self.tally.duplicate += 1;
                continue;
            }
            if parts.is_empty() {
                match self.ask_or_wait(&c, &c, &mut out, now_ms) {
                    Asked::Queued => {
                        out.queued += 1;
                        out.pairs.extend(self.pairs.propose(&c, rng));
                    }
                    Asked::Known | Asked::Waits => {
                        out.known += 1;
                        self.tally.same_question += 1;
                    }
                }
                continue;
            }
            // several messages: the caption waits for an answer about each
            let parts: Vec<Part> = parts
                .into_iter()
                .map(|(m, banked)| {
                    let a = banked.or_else(|| self.by_key.get(&self.question(&m)).cloned());
                    (m, a)
                })
                .collect();
            if parts.iter().all(|(_, a)| a.is_some()) {
                let answers: Vec<LabelRecord> = parts.into_iter().filter_map(|(_, a)| a).collect();
                out.alike.push(combine(&c, &answers, now_ms, &self.rule));
                out.known += 1;
                self.tally.same_question += 1;
                continue;
            }
            out.pairs.extend(self.pairs.propose(&c, rng));
            // in before it waits, so that a wait that goes at the cap takes it along
            self.composites.insert(c.clone(), parts.clone());
            let mut brought_a_question = false;
            for (m, a) in &parts {
                if a.is_none() {
                    brought_a_question |= self.ask_or_wait(m, &c, &mut out, now_ms) == Asked::Queued;
                }
            }
            // the caption counts once: queued when it brought a new question
            if brought_a_question {
                out.queued += 1;
            } else {
                out.known += 1;
            }
        }
        out
    }

    /// Gets `waiter` the answer to `question` (the caption itself, or one of its messages):
    /// the answer of the same question if the caption is the question, else a wait for the
    /// question queued already, else the question queued.
    fn ask_or_wait(&mut self, question: &str, waiter: &str, out: &mut Submitted, now_ms: u64) -> Asked {
        let key = self.question(question);
        if question == waiter {
            if let Some(r) = self.by_key.get(&key) {
                out.alike.push(r.for_alike(waiter, now_ms, &self.rule));
                return Asked::Known;
            }
        }
        if self.waiting.is_pending(&key) {
            self.wait(&key, waiter);
            return Asked::Waits;
        }
        self.waiting.open(key.clone());
        if question != waiter {
            self.wait(&key, waiter);
        }
        if let Some(dropped) = self.backlog.push(question.to_string()) {
            self.dropped(vec![dropped]);
        }
        self.tally.queued += 1;
        self.queued_total += 1;
        Asked::Queued
    }

    /// `waiter` waits for the answer to `key`; the oldest waiting caption goes at the cap.
    fn wait(&mut self, key: &str, waiter: &str) {
        if let Some((_, old)) = self.waiting.add(key, waiter) {
            self.composites.remove(&old);
            self.tally.waiting_full += 1;
        }
    }

    /// Forgets questions dropped from the backlog, and the captions waiting for them.
    fn dropped(&mut self, questions: Vec<String>) {
        for q in questions {
            let lost = self.waiting.close(&self.question(&q));
            for w in &lost {
                self.composites.remove(w);
            }
            self.tally.backlog_full += 1 + lost.len() as u64;
        }
    }

    /// The actors met these captions this many more times: the questions they wait on move
    /// up the backlog (`annotator.ask_order = "frequent"`). Captions already answered, or
    /// never submitted, are ignored. Returns how many counts found a waiting question.
    pub(crate) fn met(&mut self, counts: &[(String, u64)]) -> usize {
        let mut found = 0;
        for (c, n) in counts {
            let Some(c) = normalise(c) else { continue };
            let parts = parts_of(&c, self.split_messages);
            for q in if parts.is_empty() { vec![c] } else { parts } {
                found += usize::from(self.backlog.met(&q, *n));
            }
        }
        found
    }

    /// Up to `n` questions for an LLM worker: captions first, pairs when no caption waits.
    pub(crate) fn take(&mut self, n: usize) -> Option<Work> {
        let captions = self.backlog.take_next(n);
        if !captions.is_empty() {
            self.in_flight.extend(captions.iter().cloned());
            return Some(Work::Captions(captions));
        }
        let pairs = self.pairs.take_newest(n);
        (!pairs.is_empty()).then_some(Work::Pairs(pairs))
    }

    /// These answers are stored: the captions waiting on them (the same question, or a
    /// message of theirs) are answered, and the answers remembered for later captions.
    /// Returns the records of the captions answered, to store.
    pub(crate) fn answers_stored(&mut self, records: &[LabelRecord], now_ms: u64) -> Vec<LabelRecord> {
        let mut out = Vec::new();
        for r in records {
            let key = self.question(&r.caption);
            self.remember(r.clone());
            for w in self.waiting.close(&key) {
                if self.question(&w) == key {
                    out.push(r.for_alike(&w, now_ms, &self.rule));
                    continue;
                }
                // a caption of several messages: done once every message has its answer
                let Some(parts) = self.composites.get_mut(&w) else { continue };
                for (m, answer) in parts.iter_mut() {
                    if answer.is_none() && question_key(m, &self.rules) == key {
                        *answer = Some(r.clone());
                    }
                }
                let answers: Option<Vec<LabelRecord>> = parts.iter().map(|(_, a)| a.clone()).collect();
                if let Some(answers) = answers {
                    self.composites.remove(&w);
                    out.push(combine(&w, &answers, now_ms, &self.rule));
                }
            }
        }
        out
    }

    /// The LLM worker is done with `batch`; `retry` (those not answered, or whose answers the
    /// bank did not take) go back to the backlog with their counts.
    pub(crate) fn captions_done(&mut self, batch: &[String], retry: Vec<String>) {
        for c in batch {
            self.in_flight.remove(c);
        }
        if !retry.is_empty() {
            let dropped = self.backlog.requeue(retry);
            self.dropped(dropped);
        }
    }

    /// Queues ranking pairs the bank has not answered.
    pub(crate) fn queue_pairs(&mut self, pairs: Vec<Pair>) {
        self.tally.pair_backlog_full += self.pairs.queue(pairs);
    }

    /// The LLM worker is done with pairs: `answered` are stored, `retry` go back.
    pub(crate) fn pairs_done(&mut self, answered: &[Pair], retry: Vec<Pair>) {
        self.pairs.answered(answered);
        self.tally.pair_backlog_full += self.pairs.put_back(retry);
    }

    /// What the changes since the last call did.
    pub(crate) fn take_tally(&mut self) -> Tally {
        std::mem::take(&mut self.tally)
    }

    pub(crate) fn queued_total(&self) -> u64 {
        self.queued_total
    }

    pub(crate) fn backlog(&self) -> usize {
        self.backlog.len()
    }

    pub(crate) fn pair_backlog(&self) -> usize {
        self.pairs.waiting()
    }

    pub(crate) fn is_nearly_full(&self) -> bool {
        self.backlog.is_nearly_full()
    }

    /// Questions at the LLM: captions and pairs.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len() + self.pairs.pending() - self.pairs.waiting()
    }

    pub(crate) fn sizes(&self) -> MapSizes {
        MapSizes {
            answers_by_question: self.by_key.len(),
            backlog: self.backlog.len(),
            in_flight: self.in_flight.len(),
            waiting_questions: self.waiting.questions(),
            waiting_captions: self.waiting.captions(),
            composites: self.composites.len(),
            pair_backlog: self.pairs.waiting(),
            pairs_pending: self.pairs.pending(),
            pair_pool: self.pairs.pool(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intake::AskOrder;
    use rand::SeedableRng;

    const RULE: &str = "key=numbers";

    fn ledger(capacity: usize, split_messages: bool) -> Ledger {
        let cfg = AnnotatorConfig {
            backlog_capacity: capacity,
            caption_key: vec![KeyRule::Numbers],
            split_messages,
            ask_order: AskOrder::Newest,
            ..AnnotatorConfig::default()
        };
        Ledger::new(&cfg, RULE.into(), 100, "rank", "m")
    }

    fn fresh(captions: &[&str]) -> Vec<Fresh> {
        captions.iter().map(|c| Fresh { caption: c.to_string(), parts: Vec::new() }).collect()
    }

    /// Each message of `caption` with no answer from the bank.
    fn split(l: &Ledger, caption: &str) -> Fresh {
        let parts = parts_of(caption, l.split_messages).into_iter().map(|m| (m, None)).collect();
        Fresh { caption: caption.into(), parts }
    }

    fn answer(caption: &str, label: Label) -> LabelRecord {
        LabelRecord {
            caption: caption.into(),
            label,
            prompt_hash: "p".into(),
            model: "m".into(),
            raw_answer: format!("{{\"helpful\": {}}}", label == Label::Helpful),
            latency_ms: 900,
            time_ms: 1,
            tokens: Some(40),
            asked_as: None,
            rule: None,
        }
    }

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(3)
    }

    #[test]
    fn a_caption_asking_a_question_already_asked_waits_for_its_answer_then_takes_it() {
        let mut l = ledger(10, false);
        let s = l.submit(fresh(&["You see here 5 gold pieces."]), 10, &mut rng());
        assert_eq!((s.queued, s.known, s.alike.len()), (1, 0, 0));
        // the same question with another number: no second question, it waits
        let s = l.submit(fresh(&["You see here 7 gold pieces."]), 11, &mut rng());
        assert_eq!((s.queued, s.known, s.alike.len()), (0, 1, 0));
        assert_eq!(l.take(4), Some(Work::Captions(vec!["You see here 5 gold pieces.".into()])));
        assert_eq!(l.take(4), None, "one question asked, nothing else to ask");
        // submitted again while at the LLM: counted as a duplicate
        let s = l.submit(fresh(&["You see here 5 gold pieces."]), 12, &mut rng());
        assert_eq!((s.queued, s.known), (0, 1));
        let got = l.answers_stored(&[answer("You see here 5 gold pieces.", Label::Helpful)], 20);
        assert_eq!(got.len(), 1);
        let r = &got[0];
        assert_eq!((r.caption.as_str(), r.label, r.time_ms), ("You see here 7 gold pieces.", Label::Helpful, 20));
        assert_eq!(r.asked_as.as_deref(), Some("You see here 5 gold pieces."));
        assert_eq!((r.rule.as_deref(), r.latency_ms, r.tokens), (Some(RULE), 0, None));
        l.captions_done(&["You see here 5 gold pieces.".into()], Vec::new());
        // the answer is remembered: a third number is answered at once
        let s = l.submit(fresh(&["You see here 9 gold pieces."]), 30, &mut rng());
        assert_eq!((s.queued, s.known), (0, 1));
        assert_eq!(s.alike[0].caption, "You see here 9 gold pieces.");
        assert_eq!(s.alike[0].asked_as.as_deref(), Some("You see here 5 gold pieces."));
        let t = l.take_tally();
        assert_eq!((t.queued, t.duplicate, t.same_question), (1, 1, 2));
        assert_eq!(l.take_tally(), Tally::default(), "taken: counted once");
        assert_eq!(l.sizes(), MapSizes { answers_by_question: 1, ..MapSizes::default() }, "nothing left waiting");
    }

    #[test]
    fn a_caption_of_several_messages_is_answered_once_each_message_is() {
        let mut l = ledger(10, true);
        let both = "k - a brass key. The newt bites!";
        let s = l.submit(vec![split(&l, both)], 1, &mut rng());
        assert_eq!((s.queued, s.known), (1, 0), "one caption, two questions");
        assert_eq!(l.take_tally().queued, 2);
        // a caption that is one of those messages is that question, waiting already
        let s = l.submit(vec![split(&l, "The newt bites!")], 2, &mut rng());
        assert_eq!((s.queued, s.known), (0, 1));
        assert_eq!(l.take_tally().duplicate, 1);
        // a caption whose new message needs a question, and whose other waits already
        let s = l.submit(vec![split(&l, "The newt bites! You kill the newt!")], 3, &mut rng());
        assert_eq!((s.queued, s.known), (1, 0));
        let Some(Work::Captions(asked)) = l.take(10) else { panic!("questions to ask") };
        assert_eq!(asked.len(), 3);
        let got = l.answers_stored(&[answer("The newt bites!", Label::Unhelpful)], 5);
        assert!(got.is_empty(), "both captions of that message still wait for their other message");
        let got = l.answers_stored(&[answer("k - a brass key.", Label::Helpful)], 6);
        assert_eq!(got.len(), 1, "the key caption has both answers now");
        assert_eq!((got[0].caption.as_str(), got[0].label), (both, Label::Helpful));
        assert_eq!(got[0].asked_as.as_deref(), Some("k - a brass key. | The newt bites!"));
        assert_eq!(got[0].raw_answer, "{\"helpful\": true} | {\"helpful\": false}");
        let got = l.answers_stored(&[answer("You kill the newt!", Label::Unhelpful)], 7);
        assert_eq!((got[0].caption.as_str(), got[0].label), ("The newt bites! You kill the newt!", Label::Unhelpful));
        l.captions_done(&asked, Vec::new());
        // every message known: a new caption of them is answered without a question
        let s = l.submit(vec![split(&l, "You kill the newt! k - a brass key.")], 8, &mut rng());
        assert_eq!((s.queued, s.known, s.alike[0].label), (0, 1, Label::Helpful));
        // a message the bank answered counts as known
        let mut f = split(&l, "It's a wall. The newt bites!");
        f.parts[0].1 = Some(answer("It's a wall.", Label::Unhelpful));
        let s = l.submit(vec![f], 9, &mut rng());
        assert_eq!((s.queued, s.alike[0].label), (0, Label::Unhelpful));
        assert_eq!(l.sizes().composites, 0);
    }

    #[test]
    fn a_full_backlog_drops_the_oldest_question_with_the_captions_waiting_for_it() {
        let mut l = ledger(2, true);
        l.submit(fresh(&["Old 1."]), 1, &mut rng());
        // waits for "Old #." as a message of its own
        let s = l.submit(vec![split(&l, "Old 2. Middle.")], 2, &mut rng());
        assert_eq!(s.queued, 1);
        assert_eq!((l.sizes().composites, l.sizes().waiting_captions), (1, 2));
        // a third question: "Old 1." goes, and the caption waiting on it with it
        l.submit(fresh(&["New."]), 3, &mut rng());
        let t = l.take_tally();
        assert_eq!(t.backlog_full, 2, "the question and the caption waiting for it");
        let s = l.sizes();
        assert_eq!((s.backlog, s.composites, s.waiting_questions), (2, 0, 2));
        assert_eq!(l.take(5), Some(Work::Captions(vec!["New.".into(), "Middle.".into()])));
    }

    #[test]
    fn a_question_not_answered_goes_back_and_a_full_waiting_list_drops_its_oldest() {
        let cfg = AnnotatorConfig {
            backlog_capacity: 2,
            caption_key: vec![KeyRule::Numbers],
            ask_order: AskOrder::Frequent,
            ..AnnotatorConfig::default()
        };
        let mut l = Ledger::new(&cfg, RULE.into(), 100, "rank", "m");
        l.submit(fresh(&["Welcome to level 1.", "A door."]), 1, &mut rng());
        // met 50 times: asked first, and back first when the server fails
        assert_eq!(l.met(&[("Welcome to level 3.".into(), 50), ("Never seen.".into(), 9)]), 1);
        let Some(Work::Captions(b)) = l.take(1) else { panic!() };
        assert_eq!(b, vec!["Welcome to level 1.".to_string()]);
        assert_eq!(l.in_flight(), 1);
        l.captions_done(&b, b.clone());
        assert_eq!((l.in_flight(), l.backlog()), (0, 2));
        assert_eq!(l.take(2), Some(Work::Captions(vec!["Welcome to level 1.".into(), "A door.".into()])));
        // two captions may wait at most: a third waiting one pushes the oldest out
        for c in ["Welcome to level 2.", "Welcome to level 4.", "Welcome to level 5."] {
            l.submit(fresh(&[c]), 2, &mut rng());
        }
        assert_eq!(l.take_tally().waiting_full, 1);
        let got = l.answers_stored(&[answer("Welcome to level 1.", Label::Unhelpful)], 3);
        let got: Vec<&str> = got.iter().map(|r| r.caption.as_str()).collect();
        assert_eq!(got, vec!["Welcome to level 4.", "Welcome to level 5."]);
    }

    #[test]
    fn ranking_pairs_are_proposed_queued_and_asked_when_no_caption_waits() {
        let cfg = AnnotatorConfig { pairs_per_caption: 1, ..AnnotatorConfig::default() };
        let mut l = Ledger::new(&cfg, RULE.into(), 100, "rank", "m");
        l.load([answer("An old caption.", Label::Helpful)]);
        let s = l.submit(fresh(&["A new caption."]), 1, &mut rng());
        assert_eq!(s.pairs.len(), 1);
        let mut pair = [s.pairs[0].0.clone(), s.pairs[0].1.clone()];
        pair.sort();
        assert_eq!(pair, ["A new caption.", "An old caption."]);
        l.queue_pairs(s.pairs.clone());
        assert_eq!(l.pair_backlog(), 1);
        assert_eq!(l.take(4), Some(Work::Captions(vec!["A new caption.".into()])), "captions before pairs");
        assert_eq!(l.take(4), Some(Work::Pairs(s.pairs.clone())));
        assert_eq!(l.in_flight(), 2, "the caption and the pair");
        l.pairs_done(&s.pairs, Vec::new());
        assert_eq!((l.in_flight(), l.sizes().pairs_pending), (1, 0));
        // the loaded answer is known by its question
        let s = l.submit(fresh(&["An old caption."]), 2, &mut rng());
        assert_eq!((s.queued, s.known, s.alike[0].asked_as.as_deref()), (0, 1, Some("An old caption.")));
    }
}
