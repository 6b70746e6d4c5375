//! TensorBoard event files: a run's scalars in the format TensorBoard (and every tool that
//! reads Sample Factory's or TensorFlow's runs) reads, so our curves can sit beside theirs.
//!
//! A file is a sequence of TFRecords, each `len: u64 LE`, `masked_crc32c(len): u32 LE`,
//! `data`, `masked_crc32c(data): u32 LE`, where `data` is one `tensorflow.Event` protobuf.
//! The first event names the file version; every later one carries a `Summary` of
//! `simple_value` scalars at a step. (TensorFlow's `core/util/event.proto`,
//! `core/framework/summary.proto`, and `core/lib/io/record_writer.cc` define the layout.)

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("TensorBoard event file {path}: {source}")]
pub struct TensorBoardError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    /// One member of the `what` oneof: set only on a file's first event.
    #[prost(string, optional, tag = "3")]
    file_version: Option<String>,
    /// Another member of `what`.
    #[prost(message, optional, tag = "5")]
    summary: Option<Summary>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<SummaryValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SummaryValue {
    #[prost(string, tag = "1")]
    tag: String,
    /// The `simple_value` member of the value oneof.
    #[prost(float, optional, tag = "2")]
    simple_value: Option<f32>,
}

/// Appends scalars to one new event file in a directory.
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// Creates `dir` and a new event file in it, named as TensorBoard looks for them
    /// (`events.out.tfevents.<seconds>.<host>.<pid>`): a restarted run adds a file beside the
    /// old one rather than writing over it.
    pub fn create(dir: &Path) -> Result<Self, TensorBoardError> {
        let now = wall_time();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let host = host.trim();
        let name = format!(
            "events.out.tfevents.{}.{}.{}",
            now as u64,
            if host.is_empty() { "localhost" } else { host },
            std::process::id()
        );
        let path = dir.join(name);
        let err = |source| TensorBoardError { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(err)?;
        let file = File::create(&path).map_err(err)?;
        let mut w = EventWriter { path: path.clone(), out: BufWriter::new(file) };
        let first = Event { wall_time: now, step: 0, file_version: Some("brain.Event:2".into()), summary: None };
        w.record(&first).map_err(err)?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one event holding every `(tag, value)` at `step`, and flushes it, so a reader
    /// sees each row as soon as it is written. Non-finite values are skipped (TensorBoard
    /// would draw them as gaps anyway).
    pub fn scalars(&mut self, step: u64, values: &[(String, f64)]) -> Result<(), TensorBoardError> {
        let value = values
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(tag, v)| SummaryValue { tag: tag.clone(), simple_value: Some(*v as f32) })
            .collect();
        let ev = Event {
            wall_time: wall_time(),
            step: i64::try_from(step).unwrap_or(i64::MAX),
            file_version: None,
            summary: Some(Summary { value }),
        };
        self.record(&ev).map_err(|source| TensorBoardError { path: self.path.clone(), source })
    }

    fn record(&mut self, ev: &Event) -> std::io::Result<()> {
        let data = prost::Message::encode_to_vec(ev);
        let len = (data.len() as u64).to_le_bytes();
        self.out.write_all(&len)?;
        self.out.write_all(&masked_crc32c(&len).to_le_bytes())?;
        self.out.write_all(&data)?;
        self.out.write_all(&masked_crc32c(&data).to_le_bytes())?;
        self.out.flush()
    }
}

fn wall_time() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), one byte at a time through a table.
fn crc32c(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    !bytes.iter().fold(!0u32, |c, &b| TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8))
}

/// TFRecord's masking, which keeps a CRC of data that itself holds CRCs from being trivial.
fn masked_crc32c(bytes: &[u8]) -> u32 {
    let c = crc32c(bytes);
    c.rotate_right(15).wrapping_add(0xA282_EAD8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // RFC 3720 (iSCSI) B.4 and the CRC catalogue's check value for "123456789"
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(b""), 0);
    }

    /// Reads the records back the way TensorBoard does, checking both CRCs of each.
    fn read_records(bytes: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let len_bytes: [u8; 8] = rest[..8].try_into().unwrap();
            assert_eq!(u32::from_le_bytes(rest[8..12].try_into().unwrap()), masked_crc32c(&len_bytes));
            let len = u64::from_le_bytes(len_bytes) as usize;
            let data = &rest[12..12 + len];
            assert_eq!(u32::from_le_bytes(rest[12 + len..16 + len].try_into().unwrap()), masked_crc32c(data));
            out.push(<Event as prost::Message>::decode(data).unwrap());
            rest = &rest[16 + len..];
        }
        out
    }

    #[test]
    fn scalars_are_framed_records_of_events_after_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(&dir.path().join("tb")).unwrap();
        let name = w.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        w.scalars(100, &[("return".into(), 1.5), ("rm/accuracy".into(), f64::NAN)]).unwrap();
        w.scalars(200, &[("return".into(), 2.5)]).unwrap();
        let events = read_records(&std::fs::read(w.path()).unwrap());
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
        assert_eq!(events[1].step, 100);
        let v = &events[1].summary.as_ref().unwrap().value;
        assert_eq!(v.len(), 1, "the NaN is skipped");
        assert_eq!((v[0].tag.as_str(), v[0].simple_value), ("return", Some(1.5)));
        assert_eq!(events[2].step, 200);
        assert!(events[2].wall_time >= events[1].wall_time);
    }

    #[test]
    fn an_unwritable_directory_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let e = EventWriter::create(&blocker.join("tb")).err().expect("a file is in the way");
        assert!(e.to_string().contains("tb/events.out.tfevents."), "{e}");
    }
}
