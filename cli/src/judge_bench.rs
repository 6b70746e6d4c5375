//! `oni bench judge`: how well an LLM judge agrees with the project's labelled captions
//! (`data/judging/`, rubrics in `docs/judging.md`). It asks through the annotator's own
//! client, prompt templates and answer grammar, so a row is what a run would get.

use crate::judge::{Rule, DEFAULT_KEYWORDS};
use crate::Common;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use oni_annotator::judging::{self, Agreement, CaptionSet, Part};
use oni_annotator::{Label, LlmClient, Preference, PromptConfig};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct JudgeBench {
    #[command(flatten)]
    common: Common,
    /// The judge: an OpenAI-compatible server's base URL, or `rule` for the keyword rule of
    /// `oni judge`, served in this process.
    #[arg(long, required_unless_present = "table")]
    llm: Option<String>,
    /// The `model` field of each request (default: llm.model).
    #[arg(long)]
    model: Option<String>,
    /// Sets to score, by file name without `.tsv` (default: every set in --data).
    #[arg(long, value_delimiter = ',')]
    sets: Vec<String>,
    #[arg(long, default_value = "data/judging")]
    data: PathBuf,
    /// The rubric file naming each goal.
    #[arg(long, default_value = "docs/judging.md")]
    rubrics: PathBuf,
    /// `whole`: one question per caption; `each`: one per message of the caption, and the
    /// caption is helpful when any of its messages is.
    #[arg(long, value_enum, default_value_t = Split::Whole)]
    split: Split,
    /// Score at most this many captions (and pairs) of each set, taken evenly across it.
    #[arg(long)]
    limit: Option<usize>,
    /// The row's name in the table (default: the model, the API and the split).
    #[arg(long)]
    name: Option<String>,
    /// Also write every answer (caption, gold, answer, raw text) as JSON lines here.
    #[arg(long)]
    answers: Option<PathBuf>,
    /// Append each set's JSON result to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the table of the results saved in this file (by --out) and ask nothing.
    #[arg(long, conflicts_with = "llm")]
    table: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Split {
    Whole,
    Each,
}

/// Every `limit`-th item, spread over the whole list.
fn spread<T: Clone>(items: &[T], limit: Option<usize>) -> Vec<T> {
    match limit {
        Some(k) if k < items.len() => (0..k).map(|i| items[i * items.len() / k].clone()).collect(),
        _ => items.to_vec(),
    }
}

pub async fn bench_judge(b: JudgeBench) -> Result<()> {
    if let Some(saved) = &b.table {
        let text = std::fs::read_to_string(saved).with_context(|| format!("--table {}", saved.display()))?;
        let rows = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<Vec<Value>, _>>()
            .with_context(|| format!("--table {}: not JSON lines from --out", saved.display()))?;
        print!("{}", markdown(&rows));
        return Ok(());
    }
    let llm = b.llm.clone().context("--llm is required")?;
    let mut set_overrides = b.common.set.clone();
    set_overrides.push("telemetry.metrics_listen=\"\"".into());
    let cfg = crate::config::load(b.common.config.as_deref(), &set_overrides)?;
    let rubrics = judging::read_rubrics(&b.rubrics)?;
    let mut files: Vec<PathBuf> = if b.sets.is_empty() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&b.data)
            .with_context(|| format!("--data {}", b.data.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "tsv"))
            .collect();
        v.sort();
        v
    } else {
        b.sets.iter().map(|s| b.data.join(format!("{s}.tsv"))).collect()
    };
    if files.is_empty() {
        bail!("no caption sets (*.tsv) in {}", b.data.display());
    }
    // read them all first: a bad set fails before any judge time is spent
    let sets = files.drain(..).map(|f| CaptionSet::read(&f, &rubrics)).collect::<Result<Vec<_>, _>>()?;
    let model =
        b.model.clone().unwrap_or_else(|| if llm == "rule" { "rule-judge".into() } else { cfg.llm.model.clone() });
    let api = if llm == "rule" { "rule".to_string() } else { format!("{:?}", cfg.llm.api).to_lowercase() };
    let split = if b.split == Split::Each { "each" } else { "whole" };
    let name = b.name.clone().unwrap_or_else(|| format!("{model} ({api}, {split})"));
    let mut answers_out = match &b.answers {
        Some(p) => Some(std::fs::File::create(p).with_context(|| format!("--answers {}", p.display()))?),
        None => None,
    };
    let mut rows = Vec::new();
    for set in &sets {
        let prompts = PromptConfig { goal: set.rubric.goal.clone(), ..cfg.prompts.clone() };
        prompts.validate().map_err(|e| anyhow::anyhow!(e))?;
        let mut llm_cfg = cfg.llm.clone();
        llm_cfg.model = model.clone();
        llm_cfg.base_url = if llm == "rule" { serve_rule(&prompts).await? } else { llm.clone() };
        let client = LlmClient::new(llm_cfg)?;
        client.fit_to_server().await;

        let gold = spread(&set.captions, b.limit);
        let t0 = Instant::now();
        let verdicts = judge_captions(&client, &prompts, &gold, b.split).await;
        let pairs = spread(&set.pairs, b.limit);
        let texts: Vec<(String, String)> = pairs.iter().map(|p| (p.first.clone(), p.second.clone())).collect();
        let ranked = client.rank(&prompts, &texts).await;
        let secs = t0.elapsed().as_secs_f64();

        if let Some(f) = answers_out.as_mut() {
            for (g, v) in gold.iter().zip(&verdicts) {
                let line = json!({"set": set.name, "part": g.part, "caption": g.caption, "gold": if g.helpful {"helpful"} else {"unhelpful"},
                                  "answer": v.label.name(), "raw": v.raw});
                writeln!(f, "{line}")?;
            }
        }
        let asked = client.prompts_sent().max(1) as f64;
        let (pt, ct) = client.tokens();
        // one row per part: dev is what prompts may be tuned on, test is what is reported
        for part in [Part::Dev, Part::Test] {
            let scored: Vec<(bool, Label)> =
                gold.iter().zip(&verdicts).filter(|(g, _)| g.part == part).map(|(g, v)| (g.helpful, v.label)).collect();
            let prefs: Vec<(Preference, Preference)> = pairs
                .iter()
                .zip(&ranked)
                .filter(|(g, _)| g.part == part)
                .map(|(g, r)| (g.better, r.as_ref().map_or(Preference::Unknown, |a| a.label)))
                .collect();
            if scored.is_empty() && prefs.is_empty() {
                continue;
            }
            let agree = judging::agreement(&scored);
            let (pair_agreement, pair_unknown) = judging::pair_agreement(&prefs);
            let row = row_json(&name, &model, &api, split, set, &agree);
            let mut row = row.as_object().cloned().unwrap_or_default();
            for (k, v) in [
                ("part", json!(part.name())),
                ("pairs", json!(prefs.len())),
                ("pair_agreement", json!(pair_agreement)),
                ("pair_unknown_rate", json!(pair_unknown)),
                ("seconds", json!(secs)),
                ("labels_per_sec", json!((gold.len() + pairs.len()) as f64 / secs.max(1e-9))),
                ("prompts", json!(client.prompts_sent())),
                ("prompt_tokens_per_label", json!(pt as f64 / asked)),
                ("completion_tokens_per_label", json!(ct as f64 / asked)),
                ("prompt_hash", json!(prompts.classification_hash())),
            ] {
                row.insert(k.into(), v);
            }
            let row = Value::Object(row);
            println!("{row}");
            if let Some(p) = &b.out {
                let mut f = std::fs::OpenOptions::new().create(true).append(true).open(p)?;
                writeln!(f, "{row}")?;
            }
            rows.push(row);
        }
    }
    println!();
    print!("{}", markdown(&rows));
    Ok(())
}

fn row_json(name: &str, model: &str, api: &str, split: &str, set: &CaptionSet, a: &Agreement) -> Value {
    json!({"bench": "judge", "judge": name, "model": model, "api": api, "split": split, "set": set.name,
           "goal": set.rubric.name, "n": a.n, "accuracy": a.accuracy, "balanced_accuracy": a.balanced_accuracy,
           "kappa": a.kappa, "helpful_rate": a.helpful_rate, "gold_helpful_rate": a.gold_helpful_rate,
           "unknown_rate": a.unknown_rate})
}

/// One Markdown table of result rows (as `bench judge` prints them).
pub fn markdown(rows: &[Value]) -> String {
    let mut s = String::from(
        "| judge | set | part | n | accuracy | balanced acc. | κ | helpful (gold) | unknown | pairs agree | labels/s | tokens/label (prompt+completion) |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        let captions = if r["n"].as_u64().unwrap_or(0) > 0 {
            format!(
                "{:.3} | {:.3} | {:.3} | {:.2} ({:.2}) | {:.2}",
                f("accuracy"),
                f("balanced_accuracy"),
                f("kappa"),
                f("helpful_rate"),
                f("gold_helpful_rate"),
                f("unknown_rate")
            )
        } else {
            format!("– | – | – | – | {:.2}", f("pair_unknown_rate"))
        };
        s += &format!(
            "| {} | {} | {} | {} | {captions} | {} | {:.2} | {:.0}+{:.1} |\n",
            r["judge"].as_str().unwrap_or(""),
            r["set"].as_str().unwrap_or(""),
            // rows saved before the dev/test split scored the whole set
            r["part"].as_str().unwrap_or("all"),
            r["n"].as_u64().unwrap_or(0).max(r["pairs"].as_u64().unwrap_or(0)),
            if r["pairs"].as_u64().unwrap_or(0) > 0 { format!("{:.3}", f("pair_agreement")) } else { "–".into() },
            f("labels_per_sec"),
            f("prompt_tokens_per_label"),
            f("completion_tokens_per_label"),
        );
    }
    s
}

/// The judge's label for each caption: one question per caption, or one per distinct
/// message with the caption helpful when any message is (unknown when none is helpful and
/// some answer was unreadable). Failed requests are unknown.
async fn judge_captions(
    client: &LlmClient,
    prompts: &PromptConfig,
    gold: &[judging::Gold],
    split: Split,
) -> Vec<Verdict> {
    let unknown = |raw: String| Verdict { label: Label::Unknown, raw };
    let ask = |texts: Vec<String>| async move {
        client
            .classify(prompts, &texts)
            .await
            .into_iter()
            .map(|r| match r {
                Ok(a) => Verdict { label: a.label, raw: a.raw },
                Err(e) => unknown(format!("error: {e}")),
            })
            .collect::<Vec<_>>()
    };
    match split {
        Split::Whole => ask(gold.iter().map(|g| g.caption.clone()).collect()).await,
        Split::Each => {
            let mut distinct: Vec<String> = Vec::new();
            let mut index: HashMap<String, usize> = HashMap::new();
            for g in gold {
                for m in oni_annotator::intake::messages(&g.caption) {
                    index.entry(m.clone()).or_insert_with(|| {
                        distinct.push(m);
                        distinct.len() - 1
                    });
                }
            }
            let answers = ask(distinct.clone()).await;
            gold.iter()
                .map(|g| {
                    let parts: Vec<&Verdict> = oni_annotator::intake::messages(&g.caption)
                        .iter()
                        .map(|m| &answers[index[m.as_str()]])
                        .collect();
                    let label = Label::of_messages(parts.iter().map(|v| v.label));
                    let raw = parts.iter().map(|v| v.raw.as_str()).collect::<Vec<_>>().join(" | ");
                    Verdict { label, raw }
                })
                .collect()
        }
    }
}

struct Verdict {
    label: Label,
    raw: String,
}

/// Serves the keyword rule for these prompts on a loopback port; returns its base URL.
async fn serve_rule(prompts: &PromptConfig) -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(crate::judge::serve(listener, Rule::new(prompts.clone(), DEFAULT_KEYWORDS)));
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_evenly_and_keeps_short_lists() {
        let v: Vec<u32> = (0..10).collect();
        assert_eq!(spread(&v, Some(3)), vec![0, 3, 6]);
        assert_eq!(spread(&v, Some(20)), v);
        assert_eq!(spread(&v, None), v);
    }
}
