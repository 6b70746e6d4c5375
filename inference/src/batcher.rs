//! The batcher thread of the central inference service: it merges the waiting requests of
//! all actors' groups into one forward pass with the newest weights, keeps every env's
//! recurrent state, and assembles the rollouts the learner trains on from what it saw.

use crate::act::Acting;
use crate::config::InferenceConfig;
use crate::group::ActingGroup;
use crate::rollout::RunIds;
use crate::wire::Decoded;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use oni_env::{ObsSpec, MESSAGE_LEN};
use oni_policy::{PolicyBackend, PolicyConfig};
use oni_proto::tasks::CancellationToken;
use oni_proto::v1::{ActReply, GroupHello, Rollout};
use oni_proto::Refusal;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Weights as the learner publishes them after every update.
pub struct PublishedWeights {
    pub version: u64,
    pub bytes: Vec<u8>,
}

/// The learner's newest weights, read by the batcher before every pass.
pub type WeightsBoard = RwLock<Arc<PublishedWeights>>;

/// Where finished rollouts go: the learner's admission (checks, run table, queue). It may
/// block while the learner's queue is full: that is the service's backpressure.
pub type RolloutSink = Box<dyn FnMut(Rollout) -> Result<(), Refusal> + Send>;

pub(crate) type Answer = oneshot::Sender<Result<(ActReply, Decoded), Refusal>>;

pub(crate) enum Msg {
    Join { key: u64, hello: GroupHello, reply: oneshot::Sender<Result<(), Refusal>> },
    Leave { key: u64, why: &'static str },
    Job(Box<Job>),
}

pub(crate) struct Job {
    pub key: u64,
    pub step: u64,
    pub decoded: Decoded,
    pub queued: Instant,
    pub reply: Answer,
}

struct GroupState {
    n: usize,
    first_slot: usize,
    acting: ActingGroup,
    run: Arc<RunIds>,
}

/// Runs whose groups all left are remembered this long (by count), so that a group that
/// reconnects after a network failure continues its rollout sequence numbers.
const REMEMBERED_RUNS: usize = 4096;

pub(crate) struct Batcher<B: PolicyBackend> {
    acting: Acting<B>,
    cfg: InferenceConfig,
    rollout_len: usize,
    groups: HashMap<u64, GroupState>,
    runs: HashMap<String, Arc<RunIds>>,
    run_order: VecDeque<String>,
    board: Arc<WeightsBoard>,
    sink: RolloutSink,
}

/// The batcher and the queue to it; `Batcher::run` serves it until `stop` is cancelled or
/// every sender is dropped.
#[allow(clippy::too_many_arguments)]
pub(crate) fn prepare<B: PolicyBackend>(
    policy: &PolicyConfig,
    spec: &ObsSpec,
    device: B::Device,
    cfg: InferenceConfig,
    rollout_len: usize,
    board: Arc<WeightsBoard>,
    sink: RolloutSink,
) -> (Sender<Msg>, Receiver<Msg>, Batcher<B>) {
    let (tx, rx) = crossbeam_channel::bounded::<Msg>(cfg.queue.max(1));
    let acting = Acting::<B>::new(policy, spec, device, cfg.seed);
    let b = Batcher {
        acting,
        cfg,
        rollout_len,
        groups: HashMap::new(),
        runs: HashMap::new(),
        run_order: VecDeque::new(),
        board,
        sink,
    };
    (tx, rx, b)
}

impl<B: PolicyBackend> Batcher<B> {
    pub(crate) fn run(&mut self, rx: Receiver<Msg>, stop: CancellationToken) {
        let max_wait = Duration::from_micros(self.cfg.max_wait_us);
        let mut jobs: Vec<Job> = Vec::new();
        while !stop.is_cancelled() {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(m) => self.handle(m, &mut jobs),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let deadline = Instant::now() + max_wait;
            while self.envs(&jobs) < self.cfg.max_batch {
                match rx.try_recv() {
                    Ok(m) => self.handle(m, &mut jobs),
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) => {
                        let now = Instant::now();
                        if now >= deadline || jobs.is_empty() {
                            break;
                        }
                        match rx.recv_timeout(deadline - now) {
                            Ok(m) => self.handle(m, &mut jobs),
                            Err(_) => break,
                        }
                    }
                }
            }
            if !jobs.is_empty() {
                self.pass(std::mem::take(&mut jobs));
            }
        }
    }

    fn envs(&self, jobs: &[Job]) -> usize {
        jobs.iter().map(|j| self.groups.get(&j.key).map_or(0, |g| g.n)).sum()
    }

    fn handle(&mut self, m: Msg, jobs: &mut Vec<Job>) {
        match m {
            Msg::Join { key, hello, reply } => {
                let _ = reply.send(self.join(key, hello));
            }
            Msg::Leave { key, why } => {
                if let Some(g) = self.groups.remove(&key) {
                    metrics::counter!(crate::metric_names::GROUPS_LEFT, "why" => why).increment(1);
                    let partial = g.acting.partial();
                    if partial > 0 {
                        metrics::counter!(crate::metric_names::DROPPED_PARTIAL_ROLLOUTS).increment(partial as u64);
                    }
                    tracing::debug!(run = %g.run.run_id, first_slot = g.first_slot, partial, "inference group left ({why})");
                }
                metrics::gauge!(crate::metric_names::GROUPS).set(self.groups.len() as f64);
                // a job of the group that is still waiting is answered by its dropped sender
                jobs.retain(|j| j.key != key);
            }
            Msg::Job(j) => jobs.push(*j),
        }
    }

    fn join(&mut self, key: u64, h: GroupHello) -> Result<(), Refusal> {
        let (first, n) = (h.first_slot as usize, h.num_envs as usize);
        if let Some(other) = self
            .groups
            .values()
            .find(|g| g.run.run_id == h.run_id && first < g.first_slot + g.n && g.first_slot < first + n)
        {
            return Err(Refusal::field(
                "hello.first_slot",
                format!(
                    "slots {first}..{} of run `{}` overlap slots {}..{} that another stream serves",
                    first + n,
                    h.run_id,
                    other.first_slot,
                    other.first_slot + other.n
                ),
            ));
        }
        let run = match self.runs.get(&h.run_id) {
            Some(r) if r.actor_id == h.actor_id => r.clone(),
            Some(_) => {
                return Err(Refusal::field(
                    "hello.run_id",
                    format!("run `{}` belongs to another actor than `{}`", h.run_id, h.actor_id),
                ))
            }
            None => {
                let r = Arc::new(RunIds::with_run(h.run_id.clone(), h.actor_id.clone()));
                self.runs.insert(h.run_id.clone(), r.clone());
                self.run_order.push_back(h.run_id.clone());
                while self.run_order.len() > REMEMBERED_RUNS {
                    if let Some(old) = self.run_order.pop_front() {
                        if !self.groups.values().any(|g| g.run.run_id == old) {
                            self.runs.remove(&old);
                        } else {
                            self.run_order.push_back(old);
                            break;
                        }
                    }
                }
                r
            }
        };
        let acting = ActingGroup::new(&self.acting.spec, self.rollout_len, n, first, self.acting.hidden_size());
        self.groups.insert(key, GroupState { n, first_slot: first, acting, run });
        metrics::gauge!(crate::metric_names::GROUPS).set(self.groups.len() as f64);
        Ok(())
    }

    /// One forward pass for every job: record each group's step, hand finished rollouts to
    /// the learner, choose and answer the actions.
    fn pass(&mut self, jobs: Vec<Job>) {
        let start = Instant::now();
        let latest = self.board.read().unwrap().clone();
        if let Err(e) = self.acting.update(latest.version, &latest.bytes) {
            tracing::error!("inference: the learner's own weights do not load: {e}");
            for j in jobs {
                let _ = j.reply.send(Err(Refusal::Internal(format!("the service cannot load its weights: {e}"))));
            }
            return;
        }
        let version = self.acting.version;
        let h = self.acting.hidden_size();
        let spec = self.acting.spec.clone();
        let (mut glyphs, mut stats, mut messages, mut hidden) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut live = Vec::with_capacity(jobs.len());
        for mut j in jobs {
            let Some(g) = self.groups.get_mut(&j.key) else { continue };
            metrics::histogram!(crate::metric_names::QUEUE_WAIT_SECONDS)
                .record(start.duration_since(j.queued).as_secs_f64());
            if j.decoded.has_result {
                let intrinsic = j.decoded.intrinsic.take();
                g.acting.stepped(&j.decoded.view(), intrinsic);
            }
            let finished = g.acting.observe(&j.decoded.view(), version, &g.run);
            let mut superseded = None;
            for r in finished {
                if let Err(refused) = (self.sink)(r) {
                    metrics::counter!(crate::metric_names::ROLLOUTS_REFUSED).increment(1);
                    tracing::warn!(run = %g.run.run_id, "the learner refused a rollout the service assembled: {refused}");
                    // a newer run of the same actor took over: this one must stop, as a local
                    // actor does when its rollouts are refused so
                    if matches!(refused, Refusal::Mismatch(_)) {
                        superseded = Some(refused);
                    }
                }
            }
            if let Some(st) = superseded {
                self.groups.remove(&j.key);
                metrics::gauge!(crate::metric_names::GROUPS).set(self.groups.len() as f64);
                let _ = j.reply.send(Err(st));
                continue;
            }
            glyphs.extend_from_slice(&j.decoded.glyphs);
            stats.extend_from_slice(&j.decoded.stats);
            messages.extend_from_slice(&j.decoded.messages);
            hidden.extend_from_slice(&g.acting.hidden);
            live.push(j);
        }
        if live.is_empty() {
            return;
        }
        let n_total = stats.len() / spec.stats_dim.max(1);
        debug_assert_eq!(messages.len(), n_total * MESSAGE_LEN);
        let t_fwd = Instant::now();
        let chosen = self.acting.choose(&glyphs, &stats, &messages, &hidden);
        metrics::histogram!(crate::metric_names::FORWARD_SECONDS).record(t_fwd.elapsed().as_secs_f64());
        metrics::histogram!(crate::metric_names::BATCH_ENVS).record(n_total as f64);
        metrics::counter!(crate::metric_names::REQUESTS).increment(live.len() as u64);
        metrics::counter!(crate::metric_names::ENV_STEPS).increment(n_total as u64);
        let mut at = 0;
        for j in live {
            let Some(g) = self.groups.get_mut(&j.key) else { continue };
            let range = at..at + g.n;
            at += g.n;
            let acts = &chosen.actions[range.clone()];
            g.acting.chose(acts, &chosen.hidden[range.start * h..range.end * h]);
            let reply = ActReply {
                step: j.step,
                actions: acts.iter().map(|&(a, _)| a as u32).collect(),
                policy_version: version,
            };
            let _ = j.reply.send(Ok((reply, j.decoded)));
        }
    }
}
