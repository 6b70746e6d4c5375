//! The LLM workers: one per concurrent request, each taking the newest captions (or, when
//! none wait, the newest pairs), asking the LLM and storing the answers; requests that fail
//! put their questions back. And the watch that says when the LLM falls behind.

use crate::annotator::{now_ms, Core, STARVATION_CHECK_SECS};
use crate::bank::BankError;
use crate::distill::Answered;
use crate::label::{truncate, Label, LabelRecord, PairRecord, Preference, RAW_ANSWER_MAX};
use crate::ledger::Work;
use crate::pairs::Pair;
use oni_proto::tasks::{CancellationToken, TaskGroup};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// Seconds between two questions to the LLM server about its parallel slots.
const SLOTS_CHECK_SECS: u64 = 60;

impl Core {
    /// One worker: takes the next questions (`annotator.ask_order`; when none wait, the newest pairs), asks
    /// the LLM, stores the answers.
    async fn work_loop(self: Arc<Self>, stop: CancellationToken) -> Result<(), Infallible> {
        while !stop.is_cancelled() {
            let llm = self.llm.config();
            let n =
                if llm.api == crate::llm::Api::Completions { self.cfg.batch.max(llm.batch) } else { self.cfg.batch };
            let n = n.max(1);
            let Some(work) = self.with_ledger(|l| l.take(n)) else {
                tokio::select! {
                    _ = self.work.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = stop.cancelled() => {}
                }
                continue;
            };
            let failed = match work {
                Work::Captions(captions) => self.label_captions(captions, &stop).await,
                Work::Pairs(pairs) => self.rank_pairs(pairs, &stop).await,
            };
            if failed > 0 {
                metrics::counter!(crate::metric_names::REQUEUED).increment(failed as u64);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(self.cfg.retry_pause_ms)) => {}
                    _ = stop.cancelled() => {}
                }
            }
        }
        Ok(())
    }

    /// Asks about a batch of captions; returns how many must be asked again.
    async fn label_captions(&self, batch: Vec<String>, stop: &CancellationToken) -> usize {
        // a request can wait on a busy server for its whole timeout, retries included: a stop
        // drops it and puts its questions back
        let results = tokio::select! {
            r = self.llm.classify(&self.prompts, &batch) => r,
            _ = stop.cancelled() => {
                self.with_ledger(|l| l.captions_done(&batch, batch.clone()));
                return batch.len();
            }
        };
        let model = &self.llm.config().model;
        let record = |caption: &String, label, raw_answer, latency_ms, tokens| LabelRecord {
            caption: caption.clone(),
            label,
            prompt_hash: self.prompt_hash.clone(),
            model: model.clone(),
            raw_answer,
            latency_ms,
            time_ms: now_ms(),
            tokens,
            asked_as: None,
            rule: None,
        };
        let (records, mut retry) = sort_answers(&batch, results, Label::Unknown, record);
        let stored = self.store(records.is_empty(), stop, || self.bank.put(&records)).await;
        if stored.is_err() {
            retry.extend(records.iter().map(|r| r.caption.clone()));
        } else {
            for r in &records {
                metrics::counter!(crate::metric_names::LABELS, "label" => r.label.name()).increment(1);
            }
            self.notify(records.iter().cloned().map(Answered::Label));
            let alike = self.with_ledger(|l| l.answers_stored(&records, now_ms()));
            if self.store(alike.is_empty(), stop, || self.bank.put(&alike)).await.is_ok() {
                self.notify(alike.into_iter().map(Answered::Label));
            } else {
                // stopping with a bank that refuses writes: they are asked again next time
                retry.extend(alike.into_iter().map(|r| r.caption));
            }
        }
        let failed = retry.len();
        self.with_ledger(|l| l.captions_done(&batch, retry));
        failed
    }

    /// Asks about a batch of pairs; returns how many must be asked again.
    async fn rank_pairs(&self, batch: Vec<(String, String)>, stop: &CancellationToken) -> usize {
        let results = tokio::select! {
            r = self.llm.rank(&self.prompts, &batch) => r,
            _ = stop.cancelled() => {
                self.with_ledger(|l| l.pairs_done(&[], batch.clone()));
                return batch.len();
            }
        };
        let model = &self.llm.config().model;
        let record = |(first, second): &(String, String), preference, raw_answer, latency_ms, tokens| PairRecord {
            first: first.clone(),
            second: second.clone(),
            preference,
            prompt_hash: self.ranking_hash.clone(),
            model: model.clone(),
            raw_answer,
            latency_ms,
            time_ms: now_ms(),
            tokens,
        };
        let (records, mut retry) = sort_answers(&batch, results, Preference::Unknown, record);
        let stored = self.store(records.is_empty(), stop, || self.bank.put_pairs(&records)).await;
        if stored.is_err() {
            retry.extend(records.iter().map(|r| (r.first.clone(), r.second.clone())));
        } else {
            for r in &records {
                metrics::counter!(crate::metric_names::PAIRS, "preference" => r.preference.name()).increment(1);
            }
            self.notify(records.iter().cloned().map(Answered::Pair));
        }
        let answered: Vec<Pair> = match stored {
            Ok(()) => records.iter().map(|r| (r.first.clone(), r.second.clone())).collect(),
            Err(_) => Vec::new(),
        };
        let failed = retry.len();
        self.with_ledger(|l| l.pairs_done(&answered, retry));
        failed
    }

    /// Stores answers, trying again while the bank refuses them (a full disk, Redis away):
    /// an answer the LLM gave is not asked again because it could not be written. Only a
    /// stop gives up, and then the questions go back to the backlog.
    async fn store(
        &self,
        nothing: bool,
        stop: &CancellationToken,
        put: impl Fn() -> Result<(), BankError>,
    ) -> Result<(), BankError> {
        if nothing {
            return Ok(());
        }
        let mut failures = 0u64;
        loop {
            match put() {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!("the label bank took the answers after {failures} failed writes");
                    }
                    return Ok(());
                }
                Err(e) => {
                    metrics::counter!(crate::metric_names::BANK_WRITE_FAILURES).increment(1);
                    if failures == 0 {
                        tracing::error!("label bank write failed; keeping the answers and trying again: {e}");
                    }
                    failures += 1;
                    if stop.is_cancelled() {
                        tracing::error!(
                            "stopping with answers the label bank did not take; they will be asked again: {e}"
                        );
                        return Err(e);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(self.cfg.retry_pause_ms.max(100))) => {}
                        _ = stop.cancelled() => {}
                    }
                }
            }
        }
    }

    /// Starts one worker per concurrent LLM request, and the watches on the LLM's pace and
    /// slots, in `group`.
    pub fn spawn_workers(self: &Arc<Self>, group: &mut TaskGroup) {
        for i in 0..self.llm.config().concurrency.max(1) {
            group.spawn(format!("annotator LLM worker {i}"), |stop| self.clone().work_loop(stop));
        }
        group.spawn("annotator pace watch", |stop| self.clone().watch_starvation(stop));
        group.spawn("annotator LLM slots watch", |stop| self.clone().watch_server_slots(stop));
    }

    /// Keeps the concurrency limit within the server's parallel slots, asking again now and
    /// then (a restarted server may have another `--parallel`).
    async fn watch_server_slots(self: Arc<Self>, stop: CancellationToken) -> Result<(), Infallible> {
        let mut known = None;
        loop {
            let slots = self.llm.fit_to_server().await;
            if slots.is_some() && slots != known {
                let n = slots.unwrap_or(0);
                tracing::info!(
                    "the LLM server has {n} parallel slots: at most {} requests at once",
                    n.min(self.llm.config().concurrency)
                );
                known = slots;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(SLOTS_CHECK_SECS)) => {}
                _ = stop.cancelled() => return Ok(()),
            }
        }
    }

    /// Says so (a warning per check, the `oni_annotator_starving` gauge) while new captions
    /// arrive faster than the LLM labels them and the backlog grows: the reward model then
    /// learns from a shrinking share of what the agent sees.
    async fn watch_starvation(self: Arc<Self>, stop: CancellationToken) -> Result<(), Infallible> {
        use std::sync::atomic::Ordering::Relaxed;
        let every = Duration::from_secs(STARVATION_CHECK_SECS);
        let (mut queued, mut answered, mut backlog) = (0u64, 0u64, 0usize);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return Ok(()),
            }
            let (q, a, b) = (self.queued(), self.answered.load(Relaxed), self.backlog());
            let secs = every.as_secs_f64();
            let (arriving, labelled) = ((q - queued) as f64 / secs, (a - answered) as f64 / secs);
            let starving = arriving > labelled && b > backlog;
            metrics::gauge!(crate::metric_names::NEW_CAPTIONS_PER_SECOND).set(arriving);
            metrics::gauge!(crate::metric_names::LABELS_PER_SECOND).set(labelled);
            metrics::gauge!(crate::metric_names::STARVING).set(if starving { 1.0 } else { 0.0 });
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
    record: impl Fn(&I, T, String, u64, Option<u32>) -> R,
) -> (Vec<R>, Vec<I>)
where
    T: Copy,
{
    let mut records = Vec::new();
    let mut retry = Vec::new();
    for (item, r) in batch.iter().zip(results) {
        match r {
            Ok(a) => records.push(record(item, a.label, a.raw, a.latency.as_millis() as u64, a.tokens)),
            Err(e) if e.is_final() => {
                records.push(record(item, unknown, truncate(&e.to_string(), RAW_ANSWER_MAX), 0, None))
            }
            Err(_) => retry.push(item.clone()),
        }
    }
    (records, retry)
}
