//! The label bank: every LLM answer with its provenance, keyed by (caption, prompt hash,
//! model) so the LLM is asked once per key across restarts and runs. `FileBank` is the
//! embedded store of `oni run`: an append-only JSON-lines file, synced on every write,
//! indexed in memory.

use crate::label::LabelRecord;
use std::collections::HashMap;
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
}

pub struct FileBank {
    path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    file: File,
    index: HashMap<LabelKey, usize>,
    records: Vec<LabelRecord>,
}

impl FileBank {
    /// Opens (or creates) `dir/labels.jsonl`. A torn last line from a crash mid-write is
    /// ignored; every complete record is kept.
    pub fn open(dir: &Path) -> Result<Self, BankError> {
        let path = dir.join("labels.jsonl");
        let io = |source| BankError::Io { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut records = Vec::new();
        let mut index = HashMap::new();
        if path.exists() {
            let reader = BufReader::new(File::open(&path).map_err(io)?);
            for (n, line) in reader.lines().enumerate() {
                let line = line.map_err(io)?;
                match serde_json::from_str::<LabelRecord>(&line) {
                    Ok(r) => {
                        let key = LabelKey::of(&r);
                        match index.get(&key) {
                            Some(&i) => records[i] = r,
                            None => {
                                index.insert(key, records.len());
                                records.push(r);
                            }
                        }
                    }
                    Err(e) => tracing::warn!(path = %path.display(), line = n + 1, "skipping unreadable label record: {e}"),
                }
            }
        }
        let mut file = OpenOptions::new().create(true).append(true).open(&path).map_err(io)?;
        // a torn line must not swallow the next record
        if file.metadata().map_err(io)?.len() > 0 && !std::fs::read(&path).map_err(io)?.ends_with(b"\n") {
            file.write_all(b"\n").map_err(io)?;
        }
        Ok(FileBank { inner: Mutex::new(Inner { file, index, records }), path })
    }
}

impl LabelBank for FileBank {
    fn get(&self, key: &LabelKey) -> Result<Option<LabelRecord>, BankError> {
        let g = self.inner.lock().unwrap();
        Ok(g.index.get(key).map(|&i| g.records[i].clone()))
    }

    fn put(&self, records: &[LabelRecord]) -> Result<(), BankError> {
        let io = |source| BankError::Io { path: self.path.clone(), source };
        let mut g = self.inner.lock().unwrap();
        let mut buf = Vec::new();
        for r in records {
            serde_json::to_writer(&mut buf, r).expect("record serialises");
            buf.push(b'\n');
        }
        g.file.write_all(&buf).map_err(io)?;
        g.file.sync_data().map_err(io)?;
        for r in records {
            let key = LabelKey::of(r);
            match g.index.get(&key) {
                Some(&i) => g.records[i] = r.clone(),
                None => {
                    let i = g.records.len();
                    g.index.insert(key, i);
                    g.records.push(r.clone());
                }
            }
        }
        Ok(())
    }

    fn len(&self) -> Result<usize, BankError> {
        Ok(self.inner.lock().unwrap().records.len())
    }

    fn all(&self) -> Result<Vec<LabelRecord>, BankError> {
        Ok(self.inner.lock().unwrap().records.clone())
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
        }
    }

    #[test]
    fn records_survive_reopen_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = FileBank::open(dir.path()).unwrap();
            b.put(&[rec("You see here a brass key.", Label::Helpful, "m"), rec("You hit the newt.", Label::Unhelpful, "m")]).unwrap();
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
}
