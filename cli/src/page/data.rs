//! What the run page shows, read from where the run keeps it: `metrics.jsonl` (curves), the
//! recordings directory (episodes, replayed here from their ttyrec into screens), and the
//! label bank with the served reward model (the label table).

use oni_actor::record::ttyrec::{read_frames_until_damage, Terminal};
use oni_actor::record::{StepLine, Summary};
use oni_annotator::{Label, LabelRecord};
use oni_reward_model::RewardModel;
use serde::Serialize;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Most bytes of `metrics.jsonl` one request returns (the page asks again from where it
/// stopped).
const METRICS_CHUNK: u64 = 4 << 20;

/// Rows of `metrics.jsonl` from byte `from` on, whole lines only; the offset to ask from next.
pub fn metrics_rows(path: &Path, from: u64) -> std::io::Result<(Vec<serde_json::Value>, u64)> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    // a file shorter than the offset was started again: read it from its start
    let from = if from > len { 0 } else { from };
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    f.take(METRICS_CHUNK).read_to_end(&mut buf)?;
    let whole = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let rows = buf[..whole]
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect();
    Ok((rows, from + whole as u64))
}

/// A finished recording as the page lists it.
#[derive(Debug, Serialize)]
pub struct Listed {
    pub name: String,
    pub summary: Summary,
}

/// A recording the page cannot show, and why.
#[derive(Debug, Serialize)]
pub struct Skipped {
    pub name: String,
    pub note: String,
}

/// A recording's name is its file stem: what `record` writes, nothing that leaves the
/// directory.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 200 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn stem(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

fn read_summary(dir: &Path, name: &str) -> Result<Summary, String> {
    let path = stem(dir, &format!("{name}.json"));
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: not a recording summary ({e})", path.display()))
}

/// The finished recordings in `dir`, newest first; those whose summary cannot be read are
/// listed apart with the reason.
pub fn recordings(dir: &Path) -> (Vec<Listed>, Vec<Skipped>) {
    let mut listed = Vec::new();
    let mut skipped = Vec::new();
    for s in oni_actor::record::list(dir).into_iter().rev() {
        let Some(name) = s.file_name().and_then(|n| n.to_str()).map(str::to_string) else { continue };
        if !valid_name(&name) {
            continue;
        }
        match read_summary(dir, &name) {
            Ok(summary) => listed.push(Listed { name, summary }),
            Err(note) => skipped.push(Skipped { name, note }),
        }
    }
    (listed, skipped)
}

/// One terminal screen as the page draws it: a text line per row, and beside each the
/// colour of every cell as one hex digit (NetHack's 0–15).
#[derive(Debug, Serialize, PartialEq)]
pub struct ScreenRows {
    pub text: Vec<String>,
    pub colours: Vec<String>,
}

fn rows_of(screen: &oni_env::Screen) -> ScreenRows {
    let row = |r: usize| (0..screen.cols).map(move |c| screen.cell(r, c));
    ScreenRows {
        // what is not printable ASCII is drawn as a blank
        text: (0..screen.rows)
            .map(|r| row(r).map(|(ch, _)| if ch < 127 { ch as char } else { ' ' }).collect())
            .collect(),
        colours: (0..screen.rows)
            .map(|r| row(r).map(|(_, colour)| char::from_digit(colour as u32, 16).expect("0-15")).collect())
            .collect(),
    }
}

/// One recording, or a slice of its frames: its summary, its step lines, the screens
/// `from..from+count` (screen 0 is the start, screen k follows step k) and what could not
/// be read.
#[derive(Debug, Serialize)]
pub struct Episode {
    pub name: String,
    pub summary: Summary,
    pub steps: Vec<StepLine>,
    pub frames_total: usize,
    pub from: usize,
    pub frames: Vec<ScreenRows>,
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EpisodeError {
    #[error("no recording named {0:?}")]
    NotFound(String),
    #[error("recording {name:?} cannot be shown: {note}")]
    Unreadable { name: String, note: String },
}

/// Terminal size of NetHack's tty, and of the screens keyroom draws.
const ROWS: usize = 24;
const COLS: usize = 80;

/// Reads recording `name`; a damaged ttyrec or step file gives what could be read and a
/// note, never an error of the whole request.
pub fn episode(dir: &Path, name: &str, from: usize, count: usize) -> Result<Episode, EpisodeError> {
    if !valid_name(name) || !stem(dir, &format!("{name}.json")).exists() {
        return Err(EpisodeError::NotFound(name.to_string()));
    }
    let summary = read_summary(dir, name).map_err(|note| EpisodeError::Unreadable { name: name.to_string(), note })?;
    let mut notes = Vec::new();
    let mut steps = Vec::new();
    match std::fs::read_to_string(stem(dir, &format!("{name}.steps.jsonl"))) {
        Ok(text) => {
            for (i, line) in text.lines().enumerate() {
                match serde_json::from_str::<StepLine>(line) {
                    Ok(s) => steps.push(s),
                    Err(e) => {
                        notes.push(format!("steps file: line {} is damaged ({e}); the steps stop there", i + 1));
                        break;
                    }
                }
            }
        }
        Err(e) => notes.push(format!("steps file: {e}")),
    }
    let mut frames = Vec::new();
    let mut frames_total = 0;
    if summary.ttyrec {
        match std::fs::read(stem(dir, &format!("{name}.ttyrec"))) {
            Ok(bytes) => {
                let (read, damage) = read_frames_until_damage(&bytes);
                if let Some(e) = damage {
                    notes.push(format!("ttyrec: {e}; the frames before it are shown"));
                }
                frames_total = read.len();
                let mut term = Terminal::new(ROWS, COLS);
                for (k, f) in read.iter().enumerate().take(from.saturating_add(count)) {
                    term.feed(&f.data);
                    if k >= from {
                        frames.push(rows_of(&term.screen));
                    }
                }
            }
            Err(e) => notes.push(format!("ttyrec: {e}")),
        }
    }
    Ok(Episode { name: name.to_string(), summary, steps, frames_total, from, frames, notes })
}

/// How often the agents met each caption and what its steps were paid, over the run (the
/// actors' ledgers, summed as `oni run` takes them).
#[derive(Default)]
pub struct MetCounts {
    inner: Mutex<HashMap<String, (u64, f64)>>,
}

/// Distinct captions counted; a run that meets more keeps counting those it has.
const MET_CAPTIONS: usize = 1 << 18;

impl MetCounts {
    pub fn add(&self, captions: &HashMap<String, oni_actor::intrinsic::Booked>) {
        let mut m = self.inner.lock().unwrap();
        for (c, b) in captions {
            let (n, r) = (b.met, b.paid);
            if let Some(e) = m.get_mut(c) {
                *e = (e.0 + n, e.1 + r);
            } else if m.len() < MET_CAPTIONS {
                m.insert(c.clone(), (n, r));
            }
        }
    }

    fn get(&self, caption: &str) -> Option<(u64, f64)> {
        self.inner.lock().unwrap().get(caption).copied()
    }
}

/// A row of the label table.
#[derive(Debug, Serialize)]
pub struct LabelRow {
    pub caption: String,
    pub label: &'static str,
    /// Steps on which the agents met it during this run (where counted).
    pub met: Option<u64>,
    /// Intrinsic reward its steps were paid so far (`r_int · N_ep^(−β)`, before α_int).
    pub paid: Option<f64>,
    /// What the served reward model pays for it now (`r_int`) and its raw score.
    pub pays_now: Option<f32>,
    pub score_now: Option<f32>,
    /// Unix milliseconds of the answer.
    pub asked_ms: u64,
    pub model: String,
    pub answer: String,
    /// The caption the LLM was asked about, where this answer was derived from another's.
    pub asked_as: Option<String>,
}

/// How the table is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Most met first.
    #[default]
    Met,
    /// Newest answer first.
    Recent,
    /// Alphabetical.
    Caption,
}

#[derive(Debug, Serialize)]
pub struct LabelPage {
    /// Answers in the bank.
    pub total: usize,
    /// Of those, matching the search.
    pub matched: usize,
    pub offset: usize,
    pub rows: Vec<LabelRow>,
    /// The served reward model's version (0: none yet).
    pub rm_version: u64,
}

fn label_name(l: Label) -> &'static str {
    match l {
        Label::Helpful => "helpful",
        Label::Unhelpful => "unhelpful",
        Label::Unknown => "unknown",
    }
}

/// One page of the bank's answers, searched (case-insensitive substring) and ordered.
pub fn label_page(
    all: Vec<LabelRecord>,
    met: &MetCounts,
    model: Option<&RewardModel>,
    query: &str,
    order: Order,
    offset: usize,
    limit: usize,
) -> LabelPage {
    let total = all.len();
    let q = query.to_lowercase();
    let mut hits: Vec<(LabelRecord, Option<(u64, f64)>)> = all
        .into_iter()
        .filter(|r| q.is_empty() || r.caption.to_lowercase().contains(&q))
        .map(|r| {
            let m = met.get(&r.caption);
            (r, m)
        })
        .collect();
    match order {
        Order::Met => hits.sort_by(|a, b| {
            b.1.map_or(0, |m| m.0).cmp(&a.1.map_or(0, |m| m.0)).then_with(|| b.0.time_ms.cmp(&a.0.time_ms))
        }),
        Order::Recent => hits.sort_by(|a, b| b.0.time_ms.cmp(&a.0.time_ms).then_with(|| a.0.caption.cmp(&b.0.caption))),
        Order::Caption => hits.sort_by(|a, b| a.0.caption.cmp(&b.0.caption)),
    }
    let matched = hits.len();
    let shown: Vec<_> = hits.into_iter().skip(offset).take(limit).collect();
    let captions: Vec<&str> = shown.iter().map(|(r, _)| r.caption.as_str()).collect();
    let (pays, scores) = match model {
        Some(m) if !captions.is_empty() => (m.rewards(&captions), m.scores(&captions)),
        _ => (Vec::new(), Vec::new()),
    };
    let rows = shown
        .into_iter()
        .enumerate()
        .map(|(i, (r, m))| LabelRow {
            label: label_name(r.label),
            met: m.map(|m| m.0),
            paid: m.map(|m| m.1),
            pays_now: pays.get(i).copied(),
            score_now: scores.get(i).copied(),
            asked_ms: r.time_ms,
            model: r.model,
            answer: r.raw_answer,
            asked_as: r.asked_as,
            caption: r.caption,
        })
        .collect();
    LabelPage { total, matched, offset, rows, rm_version: model.map_or(0, |m| m.version()) }
}

/// The served reward model, decoded once per version.
#[derive(Default)]
pub struct ModelCache {
    inner: Mutex<Option<Arc<RewardModel>>>,
}

impl ModelCache {
    pub fn get(&self, published: Option<(u64, Arc<Vec<u8>>)>) -> Option<Arc<RewardModel>> {
        let (version, bytes) = published?;
        let mut slot = self.inner.lock().unwrap();
        if slot.as_ref().is_none_or(|m| m.version() != version) {
            match RewardModel::decode(&bytes) {
                Ok(m) => *slot = Some(Arc::new(m)),
                Err(e) => {
                    tracing::warn!("run page: reward model v{version} cannot be decoded: {e}");
                    return None;
                }
            }
        }
        slot.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_rows_stop_at_the_last_whole_line_and_resume_there() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        assert_eq!(metrics_rows(&p, 0).unwrap(), (vec![], 0));
        std::fs::write(&p, "{\"a\":1}\n{\"a\":2}\n{\"a\":").unwrap();
        let (rows, next) = metrics_rows(&p, 0).unwrap();
        assert_eq!(rows, vec![serde_json::json!({"a":1}), serde_json::json!({"a":2})]);
        assert_eq!(next, 16);
        std::fs::write(&p, "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n").unwrap();
        let (rows, next) = metrics_rows(&p, next).unwrap();
        assert_eq!(rows, vec![serde_json::json!({"a":3})]);
        assert_eq!(next, 24);
        // a file started again is read from its start
        std::fs::write(&p, "{\"a\":9}\n").unwrap();
        assert_eq!(metrics_rows(&p, next).unwrap().0, vec![serde_json::json!({"a":9})]);
    }

    #[test]
    fn names_that_leave_the_directory_are_not_recordings() {
        for bad in ["", "../x", "a/b", "a.json", "..", "a b", &"x".repeat(201)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(valid_name("000001733561234567-actor-0-000003"));
    }

    fn record(caption: &str, label: Label, time_ms: u64) -> LabelRecord {
        LabelRecord {
            caption: caption.into(),
            label,
            prompt_hash: "p".into(),
            model: "m".into(),
            raw_answer: format!("answer about {caption}"),
            latency_ms: 1,
            time_ms,
            tokens: None,
            asked_as: None,
            rule: None,
        }
    }

    #[test]
    fn the_label_table_searches_orders_and_pages() {
        let all: Vec<LabelRecord> = (0..250)
            .map(|i| {
                record(&format!("You see {i} doors."), if i % 2 == 0 { Label::Helpful } else { Label::Unhelpful }, i)
            })
            .collect();
        let met = MetCounts::default();
        let booked = |met, paid| oni_actor::intrinsic::Booked { met, paid_steps: met, paid };
        met.add(&HashMap::from([
            ("You see 7 doors.".to_string(), booked(40, 2.0)),
            ("You see 8 doors.".into(), booked(3, 0.5)),
        ]));
        let page = label_page(all.clone(), &met, None, "", Order::Met, 0, 50);
        assert_eq!((page.total, page.matched, page.rows.len()), (250, 250, 50));
        assert_eq!(page.rows[0].caption, "You see 7 doors.");
        assert_eq!((page.rows[0].met, page.rows[0].paid), (Some(40), Some(2.0)));
        assert_eq!(page.rows[1].caption, "You see 8 doors.");
        assert_eq!(page.rows[0].label, "unhelpful");
        // the rest newest first
        assert_eq!(page.rows[2].caption, "You see 249 doors.");
        let last = label_page(all.clone(), &met, None, "", Order::Recent, 200, 100);
        assert_eq!(last.rows.len(), 50);
        assert_eq!(last.rows[49].caption, "You see 0 doors.");
        let found = label_page(all, &met, None, "SEE 12", Order::Caption, 0, 50);
        assert_eq!(found.matched, 11); // 12, 120..129
        assert_eq!(found.rows[0].caption, "You see 12 doors.");
        assert!(found.rows.iter().all(|r| r.pays_now.is_none()));
    }
}
