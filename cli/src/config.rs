//! The `oni` configuration: one TOML document with a section per role, presets in
//! `configs/`, `--set section.key=value` overrides, and strict checking (an unknown key or
//! a wrong type fails at start, naming the key).

use anyhow::{anyhow, bail, Context, Result};
use oni_actor::record::RecordConfig;
use oni_actor::ActorConfig;
use oni_annotator::AnnotatorConfig;
use oni_annotator::{LlmConfig, PromptConfig};
use oni_env::EnvConfig;
use oni_inference::InferenceConfig;
use oni_learner::batch::RewardMix;
use oni_learner::LearnerConfig;
use oni_policy::PolicyConfig;
use oni_proto::TransportConfig;
use oni_reward_model::{DistillConfig, Kind};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Run name: the run directory is `runs/<name>` unless `--run-dir` says otherwise.
    pub name: String,
    /// Token, TLS and client deadlines of every gRPC endpoint and client. The token may also
    /// come from `ONI_TOKEN`, or from the file `ONI_TOKEN_FILE` names (a Docker secret).
    pub transport: TransportConfig,
    pub env: EnvConfig,
    pub policy: PolicyConfig,
    pub learner: LearnerConfig,
    /// The learner's central inference service (`actor.inference = "remote"`).
    pub inference: InferenceConfig,
    pub actor: ActorConfig,
    /// Episodes the actors record (`oni eval --record` records too).
    pub record: RecordConfig,
    pub reward: RewardConfig,
    pub run: RunConfig,
    pub telemetry: TelemetryConfig,
    pub annotator: AnnotatorConfig,
    pub llm: LlmConfig,
    pub prompts: PromptConfig,
    pub label_bank: LabelBankConfig,
    pub page: crate::page::PageConfig,
    /// How the annotator trains the reward model (`reward.kind`) from its labels.
    pub distill: DistillConfig,
}

/// Where the annotator keeps its labels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BankKind {
    /// Embedded: a JSON-lines file under the run directory (or `label_bank.path`).
    #[default]
    File,
    /// A Redis server at `label_bank.redis_url`, shared by runs and annotators.
    Redis,
}

/// `[label_bank]`: where the annotator keeps the judge's answers and the reward-model snapshots.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LabelBankConfig {
    /// `file` (embedded, under the run directory unless `path` is set) or `redis`.
    pub kind: BankKind,
    /// The file bank's directory (default: `labels/` in the run directory); runs that name
    /// the same one share their labels.
    pub path: Option<PathBuf>,
    /// The Redis bank's server.
    pub redis_url: String,
    /// Key prefix in Redis.
    pub prefix: String,
    /// The file bank holds the newest this many labels (and as many pairs) in memory; the
    /// file keeps them all. A caption whose record was forgotten is asked again.
    pub memory_records: usize,
}

impl Default for LabelBankConfig {
    fn default() -> Self {
        LabelBankConfig {
            kind: BankKind::File,
            path: None,
            redis_url: "redis://127.0.0.1:6390".into(),
            prefix: "oni".into(),
            memory_records: oni_annotator::bank::DEFAULT_MEMORY_RECORDS,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "default".into(),
            transport: TransportConfig::default(),
            env: EnvConfig::default(),
            policy: PolicyConfig::default(),
            learner: LearnerConfig::default(),
            inference: InferenceConfig::default(),
            actor: ActorConfig::default(),
            record: RecordConfig::default(),
            reward: RewardConfig::default(),
            run: RunConfig::default(),
            telemetry: TelemetryConfig::default(),
            annotator: AnnotatorConfig::default(),
            llm: LlmConfig::default(),
            prompts: PromptConfig::default(),
            label_bank: LabelBankConfig::default(),
            page: crate::page::PageConfig::default(),
            distill: DistillConfig::default(),
        }
    }
}

/// r = α_ext · clip(r_ext, ±clip) + α_int · r_int(m) · N_ep(m)^(−β) · (1 + E(m))^(−γ).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RewardConfig {
    /// α_ext, the weight of the environment's reward.
    pub extrinsic_coef: f32,
    /// α_int, the weight of the reward model's.
    pub intrinsic_coef: f32,
    /// The environment's reward is clipped to ±clip.
    pub clip: f32,
    /// The intrinsic reward model: `hashing`, `classification`, `ranking`, or `none`.
    #[serde(with = "oni_proto::off::none")]
    #[schemars(schema_with = "oni_reward_model::kind::schema_or_none")]
    pub kind: Option<Kind>,
    /// β of the per-episode count decay `N_ep(m)^(−β)`: a message's reward falls with the
    /// times the current episode met it.
    pub beta: f32,
    /// γ of the run-level decay `(1 + E(m))^(−γ)`, `E(m)` the earlier episodes (of the same
    /// actor thread) that met the message. 0 (the default, ONI's reward) turns it off. Above
    /// 0, a message met in every episode pays less in each: a wrong "helpful" on such a
    /// message (hunger on NetHack) cannot be collected anew every episode.
    pub run_gamma: f32,
    /// How often actors pull a newer reward model from the annotator.
    pub pull_ms: u64,
}

impl Default for RewardConfig {
    fn default() -> Self {
        RewardConfig {
            extrinsic_coef: 1.0,
            intrinsic_coef: 0.0,
            clip: 10.0,
            kind: None,
            beta: 3.0,
            run_gamma: 0.0,
            pull_ms: 2000,
        }
    }
}

impl RewardConfig {
    pub fn decay(&self) -> oni_reward_model::Decay {
        oni_reward_model::Decay { beta: self.beta, run_gamma: self.run_gamma }
    }

    pub fn mix(&self) -> RewardMix {
        RewardMix { extrinsic_coef: self.extrinsic_coef, intrinsic_coef: self.intrinsic_coef, clip: self.clip }
    }
}

/// `[run]`: when a run stops and how often it reports.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Stop after this many env steps (0 = no limit).
    pub max_env_steps: u64,
    /// Stop after this many seconds (0 = no limit).
    pub max_seconds: u64,
    /// Seconds between progress lines (and rows of `metrics.jsonl`).
    pub progress_interval_secs: f64,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig { max_env_steps: 0, max_seconds: 0, progress_interval_secs: 2.0 }
    }
}

/// `[telemetry]`: logs and the Prometheus endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `/metrics` listen address; `""`: no endpoint.
    #[serde(with = "oni_proto::off")]
    #[schemars(with = "String")]
    pub metrics_listen: Option<String>,
    /// `error`, `warn`, `info`, `debug` or `trace`, or a `tracing` filter (`RUST_LOG` wins).
    pub log_level: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig { metrics_listen: Some("127.0.0.1:9100".into()), log_level: "info".into() }
    }
}

/// A config enum from its name as the config spells it (`--actions task`), for command
/// line flags that set one key.
pub fn parse_kind<T: serde::de::DeserializeOwned>(name: &str) -> Result<T, String> {
    oni_proto::off::from_name(name).map_err(|e| e.to_string())
}

/// Parses `value` as a TOML value (number, bool, string, array…); anything that is not
/// valid TOML is taken as a plain string, so `--set env.name=keyroom-small` works.
fn parse_value(value: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {value}")) {
        Ok(mut t) => t.remove("v").unwrap(),
        Err(_) => toml::Value::String(value.to_string()),
    }
}

fn set_path(root: &mut toml::Table, key: &str, value: toml::Value) -> Result<()> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        bail!("--set key `{key}` is not of the form section.key");
    }
    let mut table = root;
    for p in &parts[..parts.len() - 1] {
        let entry = table.entry(p.to_string()).or_insert_with(|| toml::Value::Table(Default::default()));
        table = entry.as_table_mut().ok_or_else(|| anyhow!("--set {key}: `{p}` is not a section"))?;
    }
    table.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// Reads a config file. A top-level `base = "other.toml"` (relative to this file) is read
/// first and this file's keys are laid over it, so presets share one base.
fn read_table(p: &Path, depth: usize) -> Result<toml::Table> {
    let text = std::fs::read_to_string(p).with_context(|| format!("cannot read config file {}", p.display()))?;
    let mut t = toml::from_str::<toml::Table>(&text)
        .with_context(|| format!("config file {} is not valid TOML", p.display()))?;
    let Some(base) = t.remove("base") else { return Ok(t) };
    let base = base.as_str().ok_or_else(|| anyhow!("config key `base` in {} must be a file name", p.display()))?;
    if depth >= 8 {
        bail!("config key `base` in {}: too many nested bases (a cycle?)", p.display());
    }
    let mut merged = read_table(&p.parent().unwrap_or(Path::new(".")).join(base), depth + 1)?;
    overlay(&mut merged, t);
    Ok(merged)
}

fn overlay(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => overlay(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// Loads `path` (or the defaults), applies the overrides and checks every key.
pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Config> {
    let mut table = match path {
        Some(p) => read_table(p, 0)?,
        None => toml::Table::new(),
    };
    // Environment overrides (containers: one config file, per-service settings in the
    // environment): ONI__LEARNER__LISTEN=0.0.0.0:50051 sets learner.listen. `--set` wins.
    let mut from_env: Vec<(String, String)> = std::env::vars()
        .filter_map(|(k, v)| k.strip_prefix("ONI__").map(|k| (k.to_ascii_lowercase().replace("__", "."), v)))
        .collect();
    from_env.sort();
    for (k, v) in from_env {
        set_path(&mut table, &k, parse_value(v.trim()))
            .map_err(|e| anyhow!("environment variable ONI__{}: {e}", k.to_ascii_uppercase().replace('.', "__")))?;
    }
    for o in overrides {
        let (k, v) = o.split_once('=').ok_or_else(|| anyhow!("--set `{o}` must be key=value"))?;
        set_path(&mut table, k.trim(), parse_value(v.trim()))?;
    }
    let mut cfg: Config = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let key = e.path().to_string();
        anyhow!("config key `{key}`: {}", e.into_inner())
    })?;
    // The token from the environment, or from a file (a Docker or Kubernetes secret).
    let token = match (std::env::var("ONI_TOKEN"), std::env::var_os("ONI_TOKEN_FILE")) {
        (Ok(t), _) => Some(t),
        (Err(_), Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("ONI_TOKEN_FILE {}: cannot read the token", Path::new(&path).display()))?;
            Some(text.trim_end_matches(['\n', '\r']).to_string())
        }
        (Err(_), None) => None,
    };
    if let Some(t) = token {
        cfg.transport.token = (!t.is_empty()).then_some(t);
    }
    validate(&cfg)?;
    Ok(cfg)
}

fn validate(cfg: &Config) -> Result<()> {
    let l = &cfg.learner;
    let decay_ok = |x: f32| x.is_finite() && x >= 0.0;
    let checks: [(&str, bool); 7] = [
        ("learner.batch_rollouts", l.batch_rollouts >= 1),
        ("learner.rollout_len", l.rollout_len >= 1),
        ("learner.gamma", (0.0..=1.0).contains(&l.gamma)),
        ("learner.learning_rate", l.learning_rate > 0.0),
        ("actor.num_envs", cfg.actor.num_envs >= 1),
        ("reward.beta", decay_ok(cfg.reward.beta)),
        ("reward.run_gamma", decay_ok(cfg.reward.run_gamma)),
    ];
    for (key, ok) in checks {
        if !ok {
            bail!("config key `{key}` has an invalid value");
        }
    }
    // Sizes that buffers are allocated from: a typo of a few digits must be an error at start,
    // not an allocation that fails (or succeeds) later. (The update's own size is checked
    // against the memory at hand when the learner starts.)
    let a = &cfg.actor;
    let sizes: [(&str, usize, usize); 7] = [
        ("learner.queue_capacity", l.queue_capacity, 1 << 20),
        ("actor.num_envs", a.num_envs, 1 << 16),
        ("actor.count", a.count, 1 << 10),
        ("actor.send_queue", a.send_queue, 1 << 16),
        ("actor.max_in_flight", a.max_in_flight, 1 << 16),
        ("inference.max_batch", cfg.inference.max_batch, 1 << 20),
        ("inference.queue", cfg.inference.queue, 1 << 20),
    ];
    for (key, v, max) in sizes {
        if v > max {
            bail!("config key `{key}`: {v} is more than {max}");
        }
    }
    if let Some(spec) = oni_env::registry::known_spec(&cfg.env).map_err(|e| anyhow!("config key `env.name`: {e}"))? {
        cfg.policy.check(&spec)?;
    } else if cfg.policy.network == oni_policy::Network::Oni {
        bail!("config key `policy.network`: `oni` draws NetHack's terminal; attached environments declare glyph grids and vectors, use `glyph-crop`");
    }
    if cfg.reward.kind == Some(Kind::Ranking) && cfg.annotator.pairs_per_caption == 0 {
        bail!("config key `annotator.pairs_per_caption` must be at least 1 with reward.kind = ranking (it learns from pairs)");
    }
    let r = &cfg.record;
    if !(r.every_seconds >= 0.0 && r.every_seconds.is_finite()) {
        bail!("config key `record.every_seconds` must be a number of seconds, 0 or more");
    }
    if r.mode != oni_proto::Switch::Off && r.max_files == 0 {
        bail!("config key `record.max_files` must be at least 1 while recording (record.mode = \"off\" turns it off)");
    }
    if !(0.0..1.0).contains(&cfg.distill.heldout_fraction) {
        bail!("config key `distill.heldout_fraction` must be in [0, 1)");
    }
    cfg.prompts.validate().map_err(|e| anyhow!("config key {e}"))?;
    cfg.inference.check().map_err(|e| anyhow!("config key {e}"))?;
    Ok(())
}

impl Config {
    pub fn run_dir(&self, explicit: Option<&Path>) -> PathBuf {
        explicit.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("runs").join(&self.name))
    }

    /// What the actors record: `in_run` for `oni run` (recordings go to the run directory
    /// and `auto` means on), else a cluster actor (`auto` means off).
    pub fn record_plan(&self, in_run: Option<&Path>) -> Option<oni_actor::record::RecordPlan> {
        let on = self.record.mode.on(in_run.is_some());
        let dir = match (self.record.dir.as_str(), in_run) {
            ("", Some(run_dir)) => run_dir.join("recordings"),
            ("", None) => PathBuf::from("recordings"),
            (d, _) => PathBuf::from(d),
        };
        on.then(|| oni_actor::record::RecordPlan { cfg: self.record.clone(), dir })
    }

    /// The resolved config as TOML, as written into the run directory and checkpoints:
    /// without the token, which is a secret (give it again with ONI_TOKEN to reuse the file).
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        shown.transport.token = None;
        toml::to_string_pretty(&shown).expect("config serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shipped config, mutated (a byte changed, the file cut, a line dropped or repeated,
    /// a value replaced by one of the wrong type or size) and loaded: each case loads or fails
    /// with an error; none panics. The mutants are copies beside copies of all configs, so
    /// `base` files still resolve.
    #[test]
    fn mutated_config_files_load_or_fail_but_never_panic() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for e in std::fs::read_dir(repo.join("configs")).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "toml") {
                std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
                files.push(std::fs::read_to_string(e.path()).unwrap());
            }
        }
        assert!(files.len() >= 5, "configs/ holds {} files", files.len());
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n.max(1) as u64) as usize
        };
        let values =
            ["-1", "0", "1e308", "nan", "-inf", "\"\"", "[]", "{}", "true", "18446744073709551615", "4294967296"];
        let (mut cases, mut refused) = (0, 0);
        for text in &files {
            for _ in 0..60 {
                let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
                let mutant = match next(5) {
                    0 => {
                        let mut b = text.clone().into_bytes();
                        let i = next(b.len());
                        b[i] = next(256) as u8;
                        String::from_utf8_lossy(&b).into_owned()
                    }
                    1 => text.chars().take(next(text.len())).collect(),
                    2 => {
                        lines.remove(next(lines.len()));
                        lines.join("\n")
                    }
                    3 => {
                        let i = next(lines.len());
                        lines.insert(i, lines[i].clone());
                        lines.join("\n")
                    }
                    _ => {
                        let keyed: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].contains('=')).collect();
                        if let Some(&i) = keyed.get(next(keyed.len())) {
                            let key = lines[i].split('=').next().unwrap().to_string();
                            lines[i] = format!("{key}= {}", values[next(values.len())]);
                        }
                        lines.join("\n")
                    }
                };
                let path = dir.path().join("mutant.toml");
                std::fs::write(&path, &mutant).unwrap();
                let outcome = std::panic::catch_unwind(|| load(Some(&path), &[]));
                match outcome {
                    Err(_) => panic!("loading this config panicked:\n{mutant}"),
                    Ok(Err(e)) => {
                        assert!(!e.to_string().is_empty());
                        refused += 1;
                    }
                    Ok(Ok(_)) => {}
                }
                cases += 1;
            }
        }
        // many mutations are harmless (a comment changed, a blank line dropped, a file cut after
        // its last key); about half break something, and the checks must notice
        assert!(refused * 3 > cases, "only {refused} of {cases} mutated configs were refused");
    }

    #[test]
    fn overrides_apply_and_bad_keys_are_named() {
        let c = load(None, &["learner.learning_rate=0.001".into(), "env.name=keyroom-sparse".into()]).unwrap();
        assert_eq!(c.learner.learning_rate, 0.001);
        assert_eq!(c.env.name, "keyroom-sparse");
        let e = load(None, &["learner.lerning_rate=0.1".into()]).unwrap_err().to_string();
        assert!(e.contains("learner") && e.contains("lerning_rate"), "{e}");
        let e = load(None, &["learner.batch_rollouts=\"many\"".into()]).unwrap_err().to_string();
        assert!(e.contains("learner.batch_rollouts"), "{e}");
        let e = load(None, &["env.name=nope".into()]).unwrap_err().to_string();
        assert!(e.contains("env.name") && e.contains("nope"), "{e}");
        for set in ["reward.run_gamma=-0.5", "reward.beta=-1", "reward.run_gamma=nan"] {
            let e = load(None, &[set.into()]).unwrap_err().to_string();
            assert!(e.contains(set.split('=').next().unwrap()), "{set}: {e}");
        }
        let e = load(Some(Path::new("/no/such/file.toml")), &[]).unwrap_err().to_string();
        assert!(e.contains("/no/such/file.toml"), "{e}");
    }

    /// Kinds are enums and "off" is an `Option`: a wrong kind names the key and the values it
    /// takes, `""`/`"none"` turn a value off, and the resolved document (without the token)
    /// reads back as the same config.
    #[test]
    fn kinds_are_typed_and_the_resolved_config_reads_back() {
        for (set, key, expect) in [
            ("llm.api=telepathy", "llm.api", "chat"),
            ("reward.kind=telepathy", "reward.kind", "`none`"),
            ("label_bank.kind=sqlite", "label_bank.kind", "redis"),
            ("learner.device=tpu", "learner.device", "cuda"),
            ("env.nethack.actions=all", "env.nethack.actions", "task"),
        ] {
            let e = load(None, &[set.into()]).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(expect), "{set}: {e}");
        }
        let sets = [
            "reward.kind=\"none\"".to_string(),
            "telemetry.metrics_listen=\"\"".into(),
            "transport.token=\"abc\"".into(),
            "actor.annotator=\"10.0.0.2:50052\"".into(),
            "llm.api=chat".into(),
            "learner.device=cuda".into(),
        ];
        let c = load(None, &sets).unwrap();
        assert_eq!((c.reward.kind, c.telemetry.metrics_listen.as_deref()), (None, None));
        assert_eq!(c.transport.token.as_deref(), Some("abc"));
        assert_eq!(c.actor.annotator.as_deref(), Some("10.0.0.2:50052"));
        assert_eq!((c.llm.api, c.learner.device), (oni_annotator::llm::Api::Chat, oni_policy::Device::Cuda));
        let text = c.to_toml();
        assert!(!text.contains("abc"), "the token was written out:\n{text}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("resolved.toml"), &text).unwrap();
        let back = load(Some(&dir.path().join("resolved.toml")), &[]).unwrap();
        assert_eq!(back.to_toml(), text);
        assert_eq!(back.transport.token, None);
    }

    #[test]
    fn environment_overrides_sit_between_the_file_and_set() {
        // a key no other test looks at, since the environment is shared by the test threads
        std::env::set_var("ONI__ACTOR__HUB__IDLE_TIMEOUT_MS", "1234");
        assert_eq!(load(None, &[]).unwrap().actor.hub.idle_timeout_ms, 1234);
        assert_eq!(load(None, &["actor.hub.idle_timeout_ms=99".into()]).unwrap().actor.hub.idle_timeout_ms, 99);
        std::env::remove_var("ONI__ACTOR__HUB__IDLE_TIMEOUT_MS");
    }

    #[test]
    fn presets_layer_over_their_base() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("base.toml"), "name = \"b\"\n[learner]\nlearning_rate = 0.5\ngamma = 0.9\n")
            .unwrap();
        std::fs::write(
            dir.path().join("top.toml"),
            "base = \"base.toml\"\n[learner]\ngamma = 0.7\n[reward]\nkind = \"hashing\"\n",
        )
        .unwrap();
        let c = load(Some(&dir.path().join("top.toml")), &[]).unwrap();
        assert_eq!(
            (c.name.as_str(), c.learner.learning_rate, c.learner.gamma, c.reward.kind),
            ("b", 0.5, 0.7, Some(Kind::Hashing))
        );
        std::fs::write(dir.path().join("loop.toml"), "base = \"loop.toml\"\n").unwrap();
        assert!(load(Some(&dir.path().join("loop.toml")), &[]).unwrap_err().to_string().contains("cycle"));
        let e = load(None, &["reward.kind=telepathy".into()]).unwrap_err().to_string();
        assert!(e.contains("reward.kind"), "{e}");
        let e = load(None, &["reward.kind=ranking".into()]).unwrap_err().to_string();
        assert!(e.contains("pairs_per_caption"), "{e}");
    }
}
