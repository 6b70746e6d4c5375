//! The label bank: every LLM answer with its provenance, keyed by (caption or pair, prompt
//! hash, model) so the LLM is asked once per key across restarts and runs, plus the reward
//! model snapshots distilled from it. `FileBank` is the embedded store of `oni run`:
//! append-only JSON-lines files, synced on every write, indexed in memory.

use crate::label::{LabelRecord, PairRecord};
use oni_reward_model::fifo::FifoMap;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LabelKey {
    pub caption: String,
    pub prompt_hash: String,
    pub model: String,
}

impl LabelKey {
    pub fn of(r: &LabelRecord) -> Self {
        LabelKey { caption: r.caption.clone(), prompt_hash: r.prompt_hash.clone(), model: r.model.clone() }
    }
}

/// A ranking question, unordered: (a, b) and (b, a) are the same question.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PairKey {
    pub low: String,
    pub high: String,
    pub prompt_hash: String,
    pub model: String,
}

impl PairKey {
    pub fn new(a: &str, b: &str, prompt_hash: &str, model: &str) -> Self {
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        PairKey { low: low.into(), high: high.into(), prompt_hash: prompt_hash.into(), model: model.into() }
    }

    pub fn of(r: &PairRecord) -> Self {
        PairKey::new(&r.first, &r.second, &r.prompt_hash, &r.model)
    }
}

/// What the stores need to know about a kind of record.
pub trait Stored: Serialize + DeserializeOwned + Clone + Send + Sync {
    /// Table (file / key namespace) name.
    const TABLE: &'static str;
    /// (prompt hash, model, item): the item is the caption or the unordered pair.
    fn parts(&self) -> (String, String, String);
    fn time_ms(&self) -> u64;
}

impl Stored for LabelRecord {
    const TABLE: &'static str = "labels";
    fn parts(&self) -> (String, String, String) {
        (self.prompt_hash.clone(), self.model.clone(), self.caption.clone())
    }
    fn time_ms(&self) -> u64 {
        self.time_ms
    }
}

impl Stored for PairRecord {
    const TABLE: &'static str = "pairs";
    fn parts(&self) -> (String, String, String) {
        let k = PairKey::of(self);
        (k.prompt_hash, k.model, pair_item(&k.low, &k.high))
    }
    fn time_ms(&self) -> u64 {
        self.time_ms
    }
}

/// One string for an unordered pair (unit separator between the two captions).
pub fn pair_item(low: &str, high: &str) -> String {
    format!("{low}\u{1f}{high}")
}

#[derive(Debug, thiserror::Error)]
pub enum BankError {
    #[error("label bank I/O at {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

pub trait LabelBank: Send + Sync {
    fn get(&self, key: &LabelKey) -> Result<Option<LabelRecord>, BankError>;
    /// Stores records durably before returning; a later record for a key replaces it.
    fn put(&self, records: &[LabelRecord]) -> Result<(), BankError>;
    fn len(&self) -> Result<usize, BankError>;
    fn is_empty(&self) -> Result<bool, BankError> {
        Ok(self.len()? == 0)
    }
    /// Every record, oldest first.
    fn all(&self) -> Result<Vec<LabelRecord>, BankError>;
    /// Where the bank is, for messages (a directory, or a Redis URL and prefix).
    fn location(&self) -> String {
        "the label bank".into()
    }

    /// Most records of a kind it holds in this process's memory (`None`: it holds them
    /// elsewhere). The annotator remembers answers by question key for as many.
    fn memory_records(&self) -> Option<usize> {
        None
    }

    fn get_pair(&self, key: &PairKey) -> Result<Option<PairRecord>, BankError>;
    fn put_pairs(&self, records: &[PairRecord]) -> Result<(), BankError>;
    /// Every ranking record, oldest first.
    fn pairs(&self) -> Result<Vec<PairRecord>, BankError>;

    /// Keeps a reward-model snapshot (encoded); the newest version is what a restarted
    /// annotator serves and continues from.
    fn put_snapshot(&self, version: u64, bytes: &[u8]) -> Result<(), BankError>;
    fn latest_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, BankError>;
}

/// An append-only JSON-lines file of one kind of record, indexed in memory: the newest
/// `memory_records` of it (the file keeps them all).
struct Table<R> {
    path: PathBuf,
    file: File,
    records: FifoMap<(String, String, String), R>,
    /// The file ends in a fragment of a failed write.
    torn: bool,
}

impl<R: Stored> Table<R> {
    /// A torn last line from a crash mid-write is ignored; every complete record is kept.
    fn open(dir: &Path, memory_records: usize) -> Result<Self, BankError> {
        let path = dir.join(format!("{}.jsonl", R::TABLE));
        let io = |source| BankError::Io { path: path.clone(), source };
        let mut t = Table {
            file: open_append(&path).map_err(io)?,
            path: path.clone(),
            records: FifoMap::new(memory_records),
            torn: false,
        };
        if path.exists() {
            let reader = BufReader::new(File::open(&path).map_err(io)?);
            for (n, line) in reader.lines().enumerate() {
                let line = line.map_err(io)?;
                match serde_json::from_str::<R>(&line) {
                    Ok(r) => t.index(r),
                    Err(e) => tracing::warn!(path = %path.display(), line = n + 1, "skipping unreadable record: {e}"),
                }
            }
        }
        // a torn line must not swallow the next record
        if t.file.metadata().map_err(io)?.len() > 0 && !std::fs::read(&path).map_err(io)?.ends_with(b"\n") {
            t.file.write_all(b"\n").map_err(io)?;
        }
        Ok(t)
    }

    fn index(&mut self, r: R) {
        self.records.put(r.parts(), r);
    }

    fn all(&self) -> Vec<R> {
        self.records.iter().cloned().collect()
    }

    fn get(&self, key: &(String, String, String)) -> Option<R> {
        self.records.get(key).cloned()
    }

    fn put(&mut self, records: &[R]) -> Result<(), BankError> {
        let io = |source| BankError::Io { path: self.path.clone(), source };
        // after a torn write that could not be cut off, a newline ends the fragment
        let mut buf = if self.torn { vec![b'\n'] } else { Vec::new() };
        for r in records {
            serde_json::to_writer(&mut buf, r).expect("record serialises");
            buf.push(b'\n');
        }
        // A write cut short (a full disk) is cut back off, so that the file never holds half a
        // record and a retried batch is not stored twice.
        let before = self.file.metadata().map_err(io)?.len();
        if let Err(e) = self.file.write_all(&buf).and_then(|()| self.file.sync_data()) {
            if let Err(cut) = self.file.set_len(before) {
                tracing::error!(path = %self.path.display(), "could not cut off a failed write: {cut}");
                self.torn = true;
            }
            return Err(io(e));
        }
        self.torn = false;
        for r in records {
            self.index(r.clone());
        }
        Ok(())
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Records of each kind a file bank holds in memory unless told otherwise.
pub const DEFAULT_MEMORY_RECORDS: usize = 1_000_000;

pub struct FileBank {
    dir: PathBuf,
    memory_records: usize,
    labels: Mutex<Table<LabelRecord>>,
    pairs: Mutex<Table<PairRecord>>,
}

impl FileBank {
    /// Opens (or creates) `dir/labels.jsonl`, `dir/pairs.jsonl` and `dir/reward-models/`,
    /// holding up to `DEFAULT_MEMORY_RECORDS` of each in memory.
    pub fn open(dir: &Path) -> Result<Self, BankError> {
        Self::open_with(dir, DEFAULT_MEMORY_RECORDS)
    }

    /// `open`, keeping the newest `memory_records` labels and pairs in memory: the bank's
    /// memory stays bounded however many distinct captions arrive, and a caption whose
    /// record was forgotten is asked again (its new answer appended to the file).
    pub fn open_with(dir: &Path, memory_records: usize) -> Result<Self, BankError> {
        std::fs::create_dir_all(dir.join("reward-models"))
            .map_err(|source| BankError::Io { path: dir.into(), source })?;
        Ok(FileBank {
            labels: Mutex::new(Table::open(dir, memory_records)?),
            pairs: Mutex::new(Table::open(dir, memory_records)?),
            dir: dir.into(),
            memory_records,
        })
    }

    fn snapshot_dir(&self) -> PathBuf {
        self.dir.join("reward-models")
    }
}

impl LabelBank for FileBank {
    fn location(&self) -> String {
        format!("label bank {}", self.dir.join("labels.jsonl").display())
    }

    fn memory_records(&self) -> Option<usize> {
        Some(self.memory_records)
    }

    fn get(&self, key: &LabelKey) -> Result<Option<LabelRecord>, BankError> {
        Ok(self.labels.lock().unwrap().get(&(key.prompt_hash.clone(), key.model.clone(), key.caption.clone())))
    }

    fn put(&self, records: &[LabelRecord]) -> Result<(), BankError> {
        self.labels.lock().unwrap().put(records)
    }

    fn len(&self) -> Result<usize, BankError> {
        Ok(self.labels.lock().unwrap().records.len())
    }

    fn all(&self) -> Result<Vec<LabelRecord>, BankError> {
        Ok(self.labels.lock().unwrap().all())
    }

    fn get_pair(&self, key: &PairKey) -> Result<Option<PairRecord>, BankError> {
        Ok(self.pairs.lock().unwrap().get(&(
            key.prompt_hash.clone(),
            key.model.clone(),
            pair_item(&key.low, &key.high),
        )))
    }

    fn put_pairs(&self, records: &[PairRecord]) -> Result<(), BankError> {
        self.pairs.lock().unwrap().put(records)
    }

    fn pairs(&self) -> Result<Vec<PairRecord>, BankError> {
        Ok(self.pairs.lock().unwrap().all())
    }

    fn put_snapshot(&self, version: u64, bytes: &[u8]) -> Result<(), BankError> {
        let dir = self.snapshot_dir();
        let path = dir.join(format!("rm-{version:010}.bin"));
        let io = |source| BankError::Io { path: path.clone(), source };
        let tmp = dir.join(format!(".rm-{version:010}.tmp"));
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        // keep the newest few: older versions are never served again
        let mut old: Vec<PathBuf> =
            std::fs::read_dir(&dir).map_err(io)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        old.retain(|p| p.extension().is_some_and(|e| e == "bin"));
        old.sort();
        for p in old.iter().rev().skip(3) {
            let _ = std::fs::remove_file(p);
        }
        Ok(())
    }

    fn latest_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, BankError> {
        let dir = self.snapshot_dir();
        let io = |source| BankError::Io { path: dir.clone(), source };
        let mut best: Option<(u64, PathBuf)> = None;
        for e in std::fs::read_dir(&dir).map_err(io)? {
            let p = e.map_err(io)?.path();
            let v = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("rm-")?.strip_suffix(".bin")?.parse::<u64>().ok());
            if let Some(v) = v {
                if best.as_ref().is_none_or(|(b, _)| v > *b) {
                    best = Some((v, p));
                }
            }
        }
        best.map(|(v, p)| std::fs::read(&p).map(|b| (v, b)).map_err(|source| BankError::Io { path: p, source }))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::label::Label;

    fn rec(caption: &str, label: Label, model: &str) -> LabelRecord {
        LabelRecord {
            caption: caption.into(),
            label,
            prompt_hash: "p1".into(),
            model: model.into(),
            raw_answer: "{\"helpful\": true}".into(),
            latency_ms: 12,
            time_ms: 1,
            tokens: None,
            asked_as: None,
            rule: None,
        }
    }

    #[test]
    fn records_survive_reopen_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = FileBank::open(dir.path()).unwrap();
            b.put(&[
                rec("You see here a brass key.", Label::Helpful, "m"),
                rec("You hit the newt.", Label::Unhelpful, "m"),
            ])
            .unwrap();
            b.put(&[rec("You see here a brass key.", Label::Unknown, "other-model")]).unwrap();
            assert_eq!(b.len().unwrap(), 3);
        }
        // a crash mid-write leaves half a line
        let path = dir.path().join("labels.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"caption\":\"You unl").unwrap();
        drop(f);
        let b = FileBank::open(dir.path()).unwrap();
        assert_eq!(b.len().unwrap(), 3);
        let key = LabelKey { caption: "You see here a brass key.".into(), prompt_hash: "p1".into(), model: "m".into() };
        assert_eq!(b.get(&key).unwrap().unwrap().label, Label::Helpful);
        // writing after the torn line keeps the new record readable
        b.put(&[rec("You unlock the door.", Label::Helpful, "m")]).unwrap();
        drop(b);
        let b = FileBank::open(dir.path()).unwrap();
        assert_eq!(b.len().unwrap(), 4);
        let all = b.all().unwrap();
        assert_eq!(all.last().unwrap().caption, "You unlock the door.");
    }

    /// Memory holds the newest `memory_records`; the file keeps every record, and a reopen
    /// with a larger bound sees them all again.
    #[test]
    fn memory_holds_the_newest_records_and_the_file_all() {
        let dir = tempfile::tempdir().unwrap();
        let b = FileBank::open_with(dir.path(), 10).unwrap();
        for i in 0..100 {
            b.put(&[rec(&format!("caption {i}"), Label::Helpful, "m")]).unwrap();
        }
        assert_eq!(b.len().unwrap(), 10);
        let key = |i: usize| LabelKey { caption: format!("caption {i}"), prompt_hash: "p1".into(), model: "m".into() };
        assert!(b.get(&key(3)).unwrap().is_none(), "an old record is forgotten in memory");
        assert!(b.get(&key(95)).unwrap().is_some());
        assert_eq!(b.all().unwrap().first().unwrap().caption, "caption 90");
        drop(b);
        let b = FileBank::open_with(dir.path(), 10).unwrap();
        assert_eq!(b.all().unwrap().first().unwrap().caption, "caption 90", "a reopen loads the newest");
        assert_eq!(FileBank::open_with(dir.path(), 1000).unwrap().len().unwrap(), 100);
    }
}
