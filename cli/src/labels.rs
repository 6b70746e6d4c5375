//! `oni annotator` (the service) and `oni labels` (inspect and export a label bank).

use crate::roles;
use crate::Common;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use oni_annotator::{FileBank, LabelBank, LabelKey, LabelRecord, PairKey, PairRecord, RedisBank};
use oni_proto::tasks::TaskGroup;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

pub async fn annotator(c: Common) -> Result<()> {
    let p = roles::prepare(&c)?;
    roles::init_metrics(&p.cfg)?;
    let mut tasks = TaskGroup::new();
    let (addr, core) = roles::start_annotator(&p, &mut tasks).await?;
    eprintln!("annotator listening on {addr}");
    tokio::select! {
        r = tasks.watch() => r?,
        _ = roles::shutdown_signal() => {
            oni_annotator::serve::drain(&core, std::time::Duration::from_secs(p.cfg.annotator.drain_secs)).await;
        }
    }
    tasks.shutdown(oni_proto::tasks::STOP_DEADLINE).await?;
    Ok(())
}

/// Gives the captions already received time to be labelled before stopping; what is left
/// at the deadline is counted as dropped.

#[derive(Subcommand)]
pub enum LabelsCmd {
    /// Counts by label, model and prompt.
    Stats(Common),
    /// One line per label.
    List(Common),
    /// Every field of the labels of one caption.
    Show {
        #[command(flatten)]
        common: Common,
        caption: String,
    },
    /// All records as JSON lines or CSV.
    Export(ExportArgs),
    /// Copies another bank's labels and pairs into this run's bank, keeping the answers this
    /// one has: what a slow judge answered once is never asked again.
    Import(ImportArgs),
}

#[derive(Args)]
pub struct ImportArgs {
    #[command(flatten)]
    common: Common,
    /// The source bank: a file bank's directory (e.g. runs/NAME/labels) or a redis:// URL.
    #[arg(long)]
    from: String,
    /// Key prefix of a Redis source.
    #[arg(long, default_value = "oni")]
    prefix: String,
}

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value = "jsonl")]
    format: String,
    /// Export the ranking answers (pairs) instead of the labels.
    #[arg(long)]
    pairs: bool,
    /// Output file (default: standard output).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

fn bank_of(c: &Common) -> Result<Arc<dyn LabelBank>> {
    let cfg = crate::config::load(c.config.as_deref(), &c.set)?;
    let run_dir = cfg.run_dir(c.run_dir.as_deref());
    roles::open_bank(&cfg, &run_dir)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn labels(cmd: LabelsCmd) -> Result<()> {
    match cmd {
        LabelsCmd::Stats(c) => {
            let all = bank_of(&c)?.all()?;
            let mut counts = std::collections::BTreeMap::new();
            for r in &all {
                *counts.entry((r.model.clone(), r.prompt_hash.clone(), r.label.name())).or_insert(0u64) += 1;
            }
            println!("{} labels", all.len());
            for ((model, prompt, label), n) in counts {
                println!("{model}\t{prompt}\t{label}\t{n}");
            }
            let unique = all.iter().map(|r| r.caption.as_str()).collect::<std::collections::HashSet<_>>().len();
            let (spent, told) =
                all.iter().filter_map(|r| r.tokens).fold((0u64, 0usize), |(s, n), t| (s + t as u64, n + 1));
            if told > 0 {
                println!(
                    "tokens: {spent} for {unique} unique captions ({:.1} per unique caption; {told} of {} labels report usage)",
                    spent as f64 / unique.max(1) as f64,
                    all.len()
                );
            }
            let bank = bank_of(&c)?;
            let pairs = bank.pairs()?;
            if !pairs.is_empty() {
                let mut counts = std::collections::BTreeMap::new();
                for r in &pairs {
                    *counts.entry((r.model.clone(), r.prompt_hash.clone(), r.preference.name())).or_insert(0u64) += 1;
                }
                println!("{} ranked pairs", pairs.len());
                for ((model, prompt, pref), n) in counts {
                    println!("{model}\t{prompt}\t{pref}\t{n}");
                }
            }
            if let Some((v, bytes)) = bank.latest_snapshot()? {
                println!("reward model snapshot v{v} ({} bytes)", bytes.len());
            }
        }
        LabelsCmd::List(c) => {
            for r in bank_of(&c)?.all()? {
                println!("{}\t{}", r.label.name(), r.caption);
            }
        }
        LabelsCmd::Show { common, caption } => {
            let bank = bank_of(&common)?;
            let found: Vec<LabelRecord> = bank.all()?.into_iter().filter(|r| r.caption == caption).collect();
            let pairs: Vec<PairRecord> =
                bank.pairs()?.into_iter().filter(|r| r.first == caption || r.second == caption).collect();
            if found.is_empty() && pairs.is_empty() {
                bail!("no label for caption {caption:?}");
            }
            for r in found {
                println!("{}", serde_json::to_string_pretty(&r)?);
            }
            for r in pairs {
                println!("{}", serde_json::to_string_pretty(&r)?);
            }
        }
        LabelsCmd::Import(a) => {
            let dest = bank_of(&a.common)?;
            let src: Arc<dyn LabelBank> = if a.from.starts_with("redis://") {
                Arc::new(RedisBank::open(&a.from, &a.prefix).with_context(|| format!("--from {}", a.from))?)
            } else {
                let dir = Path::new(&a.from);
                if !dir.join("labels.jsonl").exists() && !dir.join("pairs.jsonl").exists() {
                    bail!("--from {}: no label bank there (labels.jsonl or pairs.jsonl)", dir.display());
                }
                Arc::new(FileBank::open(dir)?)
            };
            let labels = src.all()?;
            let new_labels: Vec<LabelRecord> =
                labels.iter().filter(|r| dest.get(&LabelKey::of(r)).is_ok_and(|x| x.is_none())).cloned().collect();
            let pairs = src.pairs()?;
            let new_pairs: Vec<PairRecord> =
                pairs.iter().filter(|r| dest.get_pair(&PairKey::of(r)).is_ok_and(|x| x.is_none())).cloned().collect();
            dest.put(&new_labels)?;
            dest.put_pairs(&new_pairs)?;
            // answers of another prompt, model or caption rule stay apart (their keys differ);
            // say how many, so nobody believes a warm bank that this config will not use
            let cfg = crate::config::load(a.common.config.as_deref(), &a.common.set)?;
            let (hash, rule) = (cfg.prompts.classification_hash(), oni_annotator::derivation_rule(&cfg.annotator));
            let apart =
                labels.iter().filter(|r| !oni_annotator::usable_answer(r, &hash, &cfg.llm.model, &rule)).count();
            if apart > 0 {
                eprintln!(
                    "note: {apart} of the {} labels from {} were asked with another prompt or model, or derived under another \
                     caption rule, than this config's (prompt {hash}, model {:?}, rule {rule:?}); they are kept apart and a run \
                     with this config will not use them",
                    labels.len(),
                    a.from,
                    cfg.llm.model
                );
            }
            println!(
                "imported {} labels and {} pairs from {} ({} and {} were here already)",
                new_labels.len(),
                new_pairs.len(),
                a.from,
                labels.len() - new_labels.len(),
                pairs.len() - new_pairs.len()
            );
        }
        LabelsCmd::Export(a) => {
            let bank = bank_of(&a.common)?;
            let mut out: Box<dyn Write> = match &a.out {
                Some(p) => Box::new(std::fs::File::create(p).with_context(|| format!("cannot write {}", p.display()))?),
                None => Box::new(std::io::stdout().lock()),
            };
            if a.pairs {
                export(
                    &bank.pairs()?,
                    &a.format,
                    &mut out,
                    "first,second,preference,prompt_hash,model,raw_answer,latency_ms,time_ms",
                    |r| {
                        let (first, second) = (csv_field(&r.first), csv_field(&r.second));
                        format!(
                            "{first},{second},{},{}",
                            r.preference.name(),
                            provenance(&r.prompt_hash, &r.model, &r.raw_answer, r.latency_ms, r.time_ms)
                        )
                    },
                )?;
            } else {
                export(
                    &bank.all()?,
                    &a.format,
                    &mut out,
                    "caption,label,prompt_hash,model,raw_answer,latency_ms,time_ms",
                    |r| {
                        format!(
                            "{},{},{}",
                            csv_field(&r.caption),
                            r.label.name(),
                            provenance(&r.prompt_hash, &r.model, &r.raw_answer, r.latency_ms, r.time_ms)
                        )
                    },
                )?;
            }
        }
    }
    Ok(())
}

/// The CSV columns every answer record ends with.
fn provenance(prompt_hash: &str, model: &str, raw_answer: &str, latency_ms: u64, time_ms: u64) -> String {
    format!("{},{},{},{latency_ms},{time_ms}", csv_field(prompt_hash), csv_field(model), csv_field(raw_answer))
}

/// Writes records as JSON lines, or as CSV with `header` and one `row` per record.
fn export<R: serde::Serialize>(
    records: &[R],
    format: &str,
    out: &mut dyn Write,
    header: &str,
    row: impl Fn(&R) -> String,
) -> Result<()> {
    match format {
        "jsonl" => {
            for r in records {
                writeln!(out, "{}", serde_json::to_string(r)?)?;
            }
        }
        "csv" => {
            writeln!(out, "{header}")?;
            for r in records {
                writeln!(out, "{}", row(r))?;
            }
        }
        other => bail!("--format {other}: use jsonl or csv"),
    }
    Ok(())
}
