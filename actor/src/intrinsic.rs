//! The intrinsic reward on the actor: a task pulls reward-model snapshots from the
//! annotator on a schedule (checksum and kind checked; a bad one is refused and the previous
//! model kept), and the stepping thread rewards each step with `r_int(m) · N_ep(m)^(−β)`
//! (`oni_reward_model::decay`). The learner adds `α_int` times this to `α_ext · clip(r_ext)`.

use oni_proto::v1::annotator_client::AnnotatorClient;
use oni_proto::v1::RewardModelRequest;
use oni_proto::{AuthInterceptor, Backoff, ClientOptions};
use oni_reward_model::{normalise, EpisodeCounts, RewardModel};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IntrinsicConfig {
    /// β of the count decay `N_ep(m)^(−β)`.
    pub beta: f32,
    /// How often to ask the annotator for a newer reward model.
    pub pull_ms: u64,
}

/// The newest reward model the puller accepted.
#[derive(Default)]
pub struct RewardSlot {
    pub latest: Mutex<Option<Arc<RewardModel>>>,
}

/// Pulls `GetRewardModel` every `pull_ms` until stopped. The annotator being down only
/// delays updates: the actor keeps its current model and keeps training.
pub async fn pull_reward_models(
    addr: String,
    opts: ClientOptions,
    token: Option<String>,
    pull_ms: u64,
    slot: Arc<RewardSlot>,
    mut stop: watch::Receiver<bool>,
) {
    let mut client = None;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut warned = false;
    loop {
        let version = slot.latest.lock().unwrap().as_ref().map_or(0, |m| m.version());
        let mut pause = Duration::from_millis(pull_ms.max(10));
        if client.is_none() {
            match opts.connect(&addr).await {
                Ok(ch) => {
                    let auth = AuthInterceptor::new(token.as_deref()).expect("token checked at start");
                    client = Some(AnnotatorClient::with_interceptor(ch, auth).max_decoding_message_size(64 << 20));
                }
                Err(e) => {
                    tracing::debug!("annotator unreachable for reward models: {e}");
                    metrics::counter!("oni_reconnects_total", "peer" => "annotator").increment(1);
                    pause = backoff.next_delay().max(pause);
                }
            }
        }
        if let Some(c) = client.as_mut() {
            let mut req = tonic::Request::new(RewardModelRequest { since_version: version });
            req.set_timeout(opts.request_timeout);
            match c.get_reward_model(req).await {
                Ok(reply) => {
                    backoff.reset();
                    let reply = reply.into_inner();
                    metrics::gauge!("oni_reward_model_pull_timestamp_seconds").set(now_secs());
                    if !reply.unchanged {
                        accept(&slot, &reply.snapshot, reply.version);
                    }
                }
                Err(st) => {
                    metrics::counter!("oni_rpc_errors_total", "method" => "GetRewardModel", "code" => format!("{:?}", st.code()))
                        .increment(1);
                    if !warned || st.code() != tonic::Code::FailedPrecondition {
                        tracing::warn!("GetRewardModel failed ({:?}): {}", st.code(), st.message());
                        warned = true;
                    }
                    if st.code() == tonic::Code::Unavailable {
                        client = None;
                    }
                    pause = backoff.next_delay().max(pause);
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Loads a snapshot and swaps it in whole, or refuses it and keeps the current model.
pub fn accept(slot: &RewardSlot, bytes: &[u8], announced: u64) -> bool {
    match RewardModel::decode(bytes) {
        Ok(m) if m.version() == announced => {
            let first = slot.latest.lock().unwrap().is_none();
            if first || m.version() % 100 == 0 {
                tracing::info!(version = m.version(), kind = m.kind().name(), "reward model updated");
            }
            metrics::gauge!("oni_reward_model_version", "role" => "actor").set(m.version() as f64);
            *slot.latest.lock().unwrap() = Some(Arc::new(m));
            true
        }
        Ok(m) => {
            tracing::warn!("refused reward model: reply says v{announced}, snapshot says v{}", m.version());
            metrics::counter!("oni_reward_model_refused_total", "reason" => "version").increment(1);
            false
        }
        Err(e) => {
            tracing::warn!("refused reward model v{announced}: {e}");
            let reason = match e {
                oni_reward_model::SnapshotError::Checksum => "checksum",
                oni_reward_model::SnapshotError::UnknownKind(_) => "unknown_kind",
                _ => "malformed",
            };
            metrics::counter!("oni_reward_model_refused_total", "reason" => reason).increment(1);
            false
        }
    }
}

fn now_secs() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Most captions whose reward is remembered per model version.
const CACHE_CAPACITY: usize = 100_000;
/// Steps between updates of the intrinsic-reward gauges.
const GAUGE_EVERY: u64 = 20_000;

/// Rewards the steps of one group of envs; lives on the stepping thread.
pub struct Rewarder {
    slot: Arc<RewardSlot>,
    model: Option<Arc<RewardModel>>,
    beta: f32,
    /// r_int per caption under the current model (captions repeat a lot).
    cache: HashMap<String, f32>,
    counts: Vec<EpisodeCounts>,
    episode_sum: Vec<f32>,
    window: (u64, u64, f64),
}

impl Rewarder {
    pub fn new(slot: Arc<RewardSlot>, beta: f32, envs: usize) -> Self {
        Rewarder {
            slot,
            model: None,
            beta,
            cache: HashMap::new(),
            counts: vec![EpisodeCounts::default(); envs],
            episode_sum: vec![0.0; envs],
            window: (0, 0, 0.0),
        }
    }

    /// The model version rewards are computed with (0: none yet, every reward is 0).
    pub fn version(&self) -> u64 {
        self.model.as_ref().map_or(0, |m| m.version())
    }

    fn refresh(&mut self) {
        let latest = self.slot.latest.lock().unwrap().clone();
        if latest.as_ref().map(|m| m.version()) != self.model.as_ref().map(|m| m.version()) {
            self.model = latest;
            self.cache.clear();
        }
    }

    /// `r_int(m) · N_ep(m)^(−β)` for each env's caption of this step; episodes that ended
    /// here (`dones`) return their intrinsic sum in the second vector (else 0) and restart
    /// their counts.
    pub fn step(&mut self, captions: &[String], dones: &[bool]) -> (Vec<f32>, Vec<f32>) {
        self.refresh();
        let keys: Vec<Option<String>> = captions.iter().map(|c| normalise(c)).collect();
        if let Some(model) = &self.model {
            let mut missing: Vec<&str> = keys.iter().flatten().filter(|k| !self.cache.contains_key(*k)).map(|k| k.as_str()).collect();
            missing.sort_unstable();
            missing.dedup();
            if !missing.is_empty() {
                if self.cache.len() + missing.len() > CACHE_CAPACITY {
                    self.cache.clear();
                }
                for (k, r) in missing.iter().zip(model.rewards(&missing)) {
                    self.cache.insert(k.to_string(), r);
                }
            }
        }
        let mut rewards = Vec::with_capacity(captions.len());
        let mut finished = vec![0.0; captions.len()];
        for (i, key) in keys.iter().enumerate() {
            let r = match key {
                Some(k) => {
                    let decay = self.counts[i].observe(k, self.beta);
                    self.cache.get(k).copied().unwrap_or(0.0) * decay
                }
                None => 0.0,
            };
            self.episode_sum[i] += r;
            rewards.push(r);
            if dones[i] {
                finished[i] = std::mem::take(&mut self.episode_sum[i]);
                self.counts[i].reset();
            }
            self.window.0 += 1;
            self.window.1 += (r > 0.0) as u64;
            self.window.2 += r as f64;
        }
        if self.window.0 >= GAUGE_EVERY {
            let (n, pos, sum) = std::mem::take(&mut self.window);
            metrics::gauge!("oni_intrinsic_reward_mean").set(sum / n as f64);
            metrics::gauge!("oni_intrinsic_rewarded_fraction").set(pos as f64 / n as f64);
        }
        (rewards, finished)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oni_reward_model::{DistillConfig, Distiller, Example, Kind};
    use std::collections::HashSet;

    /// A hashing model that rewards exactly the captions in `helpful`.
    fn model(version: u64, helpful: &[&str], unhelpful: &[&str]) -> Vec<u8> {
        let mut d = Distiller::new(Kind::Hashing, DistillConfig::default(), 0);
        d.add_labels(helpful.iter().map(|c| Example { caption: c.to_string(), helpful: true }));
        d.add_labels(unhelpful.iter().map(|c| Example { caption: c.to_string(), helpful: false }));
        d.snapshot(version).encode()
    }

    const KEY: &str = "You see here a brass key.";
    const NEWT: &str = "You hit the newt.";

    #[test]
    fn a_damaged_snapshot_is_refused_and_the_previous_model_kept() {
        let slot = RewardSlot::default();
        assert!(accept(&slot, &model(1, &[KEY], &[NEWT]), 1));
        let mut bad = model(2, &[NEWT], &[KEY]);
        let n = bad.len();
        bad[n / 2] ^= 0x40;
        assert!(!accept(&slot, &bad, 2));
        assert!(!accept(&slot, &model(3, &[NEWT], &[KEY]), 4), "version announced and carried must agree");
        let m = slot.latest.lock().unwrap().clone().unwrap();
        assert_eq!((m.version(), m.rewards(&[KEY, NEWT])), (1, vec![1.0, 0.0]));
    }

    #[test]
    fn count_decay_and_episode_sums_against_hand_worked_values() {
        let slot = Arc::new(RewardSlot::default());
        accept(&slot, &model(1, &[KEY], &[NEWT]), 1);
        let mut rw = Rewarder::new(slot, 3.0, 2);
        let caps = |a: &str, b: &str| vec![a.to_string(), b.to_string()];
        // env 0 sees the key message three times, env 1 sees it once among other messages
        let (r, f) = rw.step(&caps(KEY, NEWT), &[false, false]);
        assert_eq!((r, f), (vec![1.0, 0.0], vec![0.0, 0.0]));
        let (r, _) = rw.step(&caps(&format!("  {KEY} "), ""), &[false, false]);
        assert_eq!(r, vec![0.125, 0.0], "normalised caption counts as the same message");
        let (r, f) = rw.step(&caps(KEY, KEY), &[true, false]);
        assert!((r[0] - 1.0 / 27.0).abs() < 1e-7 && r[1] == 1.0);
        assert!((f[0] - (1.0 + 0.125 + 1.0 / 27.0)).abs() < 1e-6, "episode sum {}", f[0]);
        // env 0's new episode starts its counts afresh
        let (r, _) = rw.step(&caps(KEY, KEY), &[false, true]);
        assert_eq!(r, vec![1.0, 0.125]);
        assert_eq!(rw.version(), 1);
    }

    #[test]
    fn models_swap_whole_under_load() {
        // v odd rewards KEY only, v even rewards NEWT only: every step must see one model
        let slot = Arc::new(RewardSlot::default());
        accept(&slot, &model(1, &[KEY], &[NEWT]), 1);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = {
            let (slot, stop) = (slot.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut v = 1;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    v += 1;
                    let bytes = if v % 2 == 0 { model(v, &[NEWT], &[KEY]) } else { model(v, &[KEY], &[NEWT]) };
                    assert!(accept(&slot, &bytes, v));
                }
                v
            })
        };
        let mut rw = Rewarder::new(slot, 0.0, 2);
        let caps = vec![KEY.to_string(), NEWT.to_string()];
        let mut seen = HashSet::new();
        for _ in 0..20_000 {
            let (r, _) = rw.step(&caps, &[true, true]);
            let want = if rw.version() % 2 == 1 { vec![1.0, 0.0] } else { vec![0.0, 1.0] };
            assert_eq!(r, want, "v{} gave {r:?}", rw.version());
            seen.insert(rw.version());
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let last = swapper.join().unwrap();
        assert!(seen.len() > 2 && last > 2, "{} versions seen while {last} were published", seen.len());
    }
}
