//! Atomic checkpoints: everything is written into a temporary directory, synced, then
//! renamed to `ckpt-<version>`; a crash leaves either the old or the new checkpoint, never
//! half of one. On start the newest loadable checkpoint wins.

use crate::trainer::Trainer;
use burn::module::Module;
use burn::optim::Optimizer;
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use oni_env::ObsSpec;
use oni_policy::{CpuBackend, Policy, PolicyConfig, TrainingBackend};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint I/O at {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("checkpoint {path} is unreadable: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointState {
    pub version: u64,
    pub env_steps: u64,
    pub updates: u64,
    pub rng_seed: [u8; 32],
    pub rng_word_pos: u128,
    pub fingerprint: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io { path: path.to_path_buf(), source }
}

fn recorder() -> BinFileRecorder<FullPrecisionSettings> {
    BinFileRecorder::new()
}

fn sync_dir(path: &Path) {
    if let Ok(f) = fs::File::open(path) {
        let _ = f.sync_all();
    }
}

/// Writes a checkpoint of `trainer` under `dir` and prunes all but the newest `keep`.
pub fn save<B: TrainingBackend>(
    dir: &Path,
    trainer: &Trainer<B>,
    resolved_config: &str,
    keep: usize,
) -> Result<PathBuf, CheckpointError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(format!("{TMP_PREFIX}{:012}-{}", trainer.version, std::process::id()));
    let written = write_into(dir, &tmp, trainer, resolved_config);
    if written.is_err() {
        // half a checkpoint must not keep the room a full disk needs for the next one
        let _ = fs::remove_dir_all(&tmp);
    }
    let final_dir = written?;
    sync_dir(dir);
    prune(dir, keep);
    Ok(final_dir)
}

/// Where checkpoints are written before they are renamed into place.
const TMP_PREFIX: &str = ".tmp-ckpt-";

/// Removes what a crash mid-write left behind (never a finished checkpoint).
fn remove_unfinished(dir: &Path) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name().to_str().is_some_and(|n| n.starts_with(TMP_PREFIX)) {
            tracing::info!(path = %e.path().display(), "removing an unfinished checkpoint");
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

fn write_into<B: TrainingBackend>(
    dir: &Path,
    tmp: &Path,
    trainer: &Trainer<B>,
    resolved_config: &str,
) -> Result<PathBuf, CheckpointError> {
    let final_dir = dir.join(format!("ckpt-{:012}", trainer.version));
    let _ = fs::remove_dir_all(tmp);
    fs::create_dir_all(tmp).map_err(io(tmp))?;
    let corrupt = |reason: String| CheckpointError::Corrupt { path: tmp.to_path_buf(), reason };
    trainer.model.clone().save_file(tmp.join("model"), &recorder()).map_err(|e| corrupt(e.to_string()))?;
    Recorder::<B>::record(&recorder(), trainer.optim.to_record(), tmp.join("optim"))
        .map_err(|e| corrupt(e.to_string()))?;
    let state = CheckpointState {
        version: trainer.version,
        env_steps: trainer.env_steps,
        updates: trainer.updates,
        rng_seed: trainer.rng.get_seed(),
        rng_word_pos: trainer.rng.get_word_pos(),
        fingerprint: trainer.fingerprint(),
    };
    let state_path = tmp.join("state.json");
    fs::write(&state_path, serde_json::to_vec_pretty(&state).unwrap()).map_err(io(&state_path))?;
    let cfg_path = tmp.join("config.toml");
    fs::write(&cfg_path, resolved_config).map_err(io(&cfg_path))?;
    for entry in fs::read_dir(tmp).map_err(io(tmp))? {
        let p = entry.map_err(io(tmp))?.path();
        fs::File::open(&p).and_then(|f| f.sync_all()).map_err(io(&p))?;
    }
    sync_dir(tmp);
    if final_dir.exists() {
        fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?;
    }
    fs::rename(tmp, &final_dir).map_err(io(&final_dir))?;
    Ok(final_dir)
}

/// Checkpoint directories, newest first.
pub fn list(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("ckpt-")))
        .collect();
    v.sort();
    v.reverse();
    v
}

fn prune(dir: &Path, keep: usize) {
    for old in list(dir).into_iter().skip(keep.max(1)) {
        let _ = fs::remove_dir_all(old);
    }
}

/// Restores `trainer` from one checkpoint directory.
pub fn load<B: TrainingBackend>(path: &Path, trainer: &mut Trainer<B>) -> Result<CheckpointState, CheckpointError> {
    let corrupt = |reason: String| CheckpointError::Corrupt { path: path.to_path_buf(), reason };
    let state_path = path.join("state.json");
    let state: CheckpointState =
        serde_json::from_slice(&fs::read(&state_path).map_err(io(&state_path))?).map_err(|e| corrupt(e.to_string()))?;
    if state.fingerprint != trainer.fingerprint() {
        return Err(corrupt(format!(
            "it was made for network {} but this run builds {} (policy or env settings changed)",
            state.fingerprint,
            trainer.fingerprint()
        )));
    }
    // burn's bincode loader panics on malformed files; turn that into an error.
    let device = trainer.device.clone();
    let model = trainer.model.clone();
    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let model = model.load_file(path.join("model"), &recorder(), &device)?;
        let optim_rec = Recorder::<B>::load(&recorder(), path.join("optim"), &device)?;
        Ok::<_, burn::record::RecorderError>((model, optim_rec))
    }))
    .map_err(|_| corrupt("malformed model or optimiser file".into()))?
    .map_err(|e| corrupt(e.to_string()))?;
    trainer.model = loaded.0;
    trainer.optim = trainer.optim.clone().load_record(loaded.1);
    trainer.version = state.version;
    trainer.env_steps = state.env_steps;
    trainer.updates = state.updates;
    let mut rng: ChaCha8Rng = rand::SeedableRng::from_seed(state.rng_seed);
    rng.set_word_pos(state.rng_word_pos);
    trainer.rng = rng;
    Ok(state)
}

/// The state (version, env steps, network fingerprint) of one checkpoint directory.
pub fn read_state(path: &Path) -> Result<CheckpointState, CheckpointError> {
    let state_path = path.join("state.json");
    let bytes = fs::read(&state_path).map_err(io(&state_path))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| CheckpointError::Corrupt { path: path.to_path_buf(), reason: e.to_string() })
}

/// The policy weights of one checkpoint, in the wire format of `oni_policy::weights` (what
/// actors load), for a network built from `cfg` and `spec`. The caller checks the
/// fingerprint first (`read_state`): this only fails on files that do not load.
pub fn load_policy_weights(path: &Path, cfg: &PolicyConfig, spec: &ObsSpec) -> Result<Vec<u8>, CheckpointError> {
    let device = Default::default();
    let model = Policy::<CpuBackend>::new(cfg, spec, &device);
    // burn's bincode loader panics on malformed files; turn that into an error.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.load_file(path.join("model"), &recorder(), &device)))
        .map_err(|_| CheckpointError::Corrupt { path: path.to_path_buf(), reason: "malformed model file".into() })?
        .map(|m| oni_policy::weights::to_bytes(&m))
        .map_err(|e| CheckpointError::Corrupt { path: path.to_path_buf(), reason: e.to_string() })
}

/// Resumes from the newest checkpoint that loads; broken ones are skipped with a warning.
pub fn resume_latest<B: TrainingBackend>(dir: &Path, trainer: &mut Trainer<B>) -> Option<CheckpointState> {
    remove_unfinished(dir);
    for path in list(dir) {
        match load(&path, trainer) {
            Ok(state) => {
                tracing::info!(path = %path.display(), version = state.version, env_steps = state.env_steps, "resumed from checkpoint");
                return Some(state);
            }
            Err(e) => tracing::warn!("skipping checkpoint: {e}"),
        }
    }
    None
}
