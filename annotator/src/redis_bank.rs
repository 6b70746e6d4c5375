//! The label bank in Redis, for clusters: per record kind, one hash per (prompt hash, model)
//! mapping item (caption, or unordered pair) → record JSON, plus a sorted set keeping
//! first-seen order; reward-model snapshots as plain keys. Redis should run with AOF
//! (`appendonly yes`) so a restart loses nothing; every write waits for Redis's reply.

use crate::bank::{pair_item, BankError, LabelBank, LabelKey, PairKey, Stored};
use crate::label::{LabelRecord, PairRecord};
use std::sync::Mutex;
use std::time::Duration;

pub struct RedisBank {
    client: redis::Client,
    conn: Mutex<Option<redis::Connection>>,
    prefix: String,
    url: String,
}

fn err(url: &str, e: impl std::fmt::Display) -> BankError {
    BankError::Io { path: url.into(), source: std::io::Error::other(e.to_string()) }
}

/// Per record: keys (its hash, the order set), arguments (item, record, time, member).
static PUT_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        local n = #KEYS / 2
        for i = 0, n - 1 do
          redis.call('HSET', KEYS[2 * i + 1], ARGV[4 * i + 1], ARGV[4 * i + 2])
          redis.call('ZADD', KEYS[2 * i + 2], 'NX', ARGV[4 * i + 3], ARGV[4 * i + 4])
        end
        return n
        ",
    )
});

impl RedisBank {
    /// Connects to `url` (e.g. `redis://127.0.0.1:6390`); keys start with `prefix`.
    pub fn open(url: &str, prefix: &str) -> Result<Self, BankError> {
        let client = redis::Client::open(url).map_err(|e| err(url, e))?;
        let bank = RedisBank { client, conn: Mutex::new(None), prefix: prefix.into(), url: url.into() };
        bank.with(|c| redis::cmd("PING").query::<String>(c))?;
        Ok(bank)
    }

    fn hash_key(&self, table: &str, prompt_hash: &str, model: &str) -> String {
        format!("{}:{table}:{prompt_hash}:{model}", self.prefix)
    }

    fn order_key(&self, table: &str) -> String {
        format!("{}:{table}:order", self.prefix)
    }

    /// Runs `f` on a live connection, reconnecting once if the old one broke (Redis restarted).
    fn with<T>(&self, f: impl Fn(&mut redis::Connection) -> redis::RedisResult<T>) -> Result<T, BankError> {
        let mut g = self.conn.lock().unwrap();
        for attempt in 0..2 {
            if g.is_none() {
                let c =
                    self.client.get_connection_with_timeout(Duration::from_secs(5)).map_err(|e| err(&self.url, e))?;
                c.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| err(&self.url, e))?;
                c.set_write_timeout(Some(Duration::from_secs(10))).map_err(|e| err(&self.url, e))?;
                *g = Some(c);
            }
            match f(g.as_mut().unwrap()) {
                Ok(v) => return Ok(v),
                Err(e)
                    if attempt == 0 && (e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()) =>
                {
                    *g = None;
                }
                Err(e) => return Err(err(&self.url, e)),
            }
        }
        unreachable!("second attempt returns")
    }

    fn get_rec<R: Stored>(&self, prompt_hash: &str, model: &str, item: &str) -> Result<Option<R>, BankError> {
        let h = self.hash_key(R::TABLE, prompt_hash, model);
        let raw: Option<String> = self.with(|c| redis::cmd("HGET").arg(&h).arg(item).query(c))?;
        raw.map(|s| serde_json::from_str(&s).map_err(|e| err(&self.url, e))).transpose()
    }

    /// Stores records in one atomic script call. Not a MULTI/EXEC pipeline: that waits for
    /// one reply per command, each up to the read timeout, so an unreachable Redis held a
    /// batch of 8 labels for minutes; a script has one reply.
    fn put_recs<R: Stored>(&self, records: &[R]) -> Result<(), BankError> {
        let mut invocation = PUT_SCRIPT.prepare_invoke();
        for r in records {
            let json = serde_json::to_string(r).expect("record serialises");
            let (prompt_hash, model, item) = r.parts();
            // first-seen order; NX keeps a re-label at its original place
            let member = serde_json::to_string(&(&prompt_hash, &model, &item)).unwrap();
            invocation.key(self.hash_key(R::TABLE, &prompt_hash, &model)).key(self.order_key(R::TABLE));
            invocation.arg(&item).arg(&json).arg(r.time_ms()).arg(&member);
        }
        self.with(|c| invocation.invoke::<i64>(c)).map(|_| ())
    }

    fn all_recs<R: Stored>(&self) -> Result<Vec<R>, BankError> {
        let members: Vec<String> =
            self.with(|c| redis::cmd("ZRANGE").arg(self.order_key(R::TABLE)).arg(0).arg(-1).query(c))?;
        let mut out = Vec::with_capacity(members.len());
        for m in members {
            let (prompt_hash, model, item): (String, String, String) =
                serde_json::from_str(&m).map_err(|e| err(&self.url, e))?;
            if let Some(r) = self.get_rec(&prompt_hash, &model, &item)? {
                out.push(r);
            }
        }
        Ok(out)
    }
}

impl LabelBank for RedisBank {
    fn location(&self) -> String {
        format!("label bank {} (prefix {:?})", self.url, self.prefix)
    }

    fn get(&self, key: &LabelKey) -> Result<Option<LabelRecord>, BankError> {
        self.get_rec(&key.prompt_hash, &key.model, &key.caption)
    }

    fn put(&self, records: &[LabelRecord]) -> Result<(), BankError> {
        self.put_recs(records)
    }

    fn len(&self) -> Result<usize, BankError> {
        self.with(|c| redis::cmd("ZCARD").arg(self.order_key(LabelRecord::TABLE)).query(c))
    }

    fn all(&self) -> Result<Vec<LabelRecord>, BankError> {
        self.all_recs()
    }

    fn get_pair(&self, key: &PairKey) -> Result<Option<PairRecord>, BankError> {
        self.get_rec(&key.prompt_hash, &key.model, &pair_item(&key.low, &key.high))
    }

    fn put_pairs(&self, records: &[PairRecord]) -> Result<(), BankError> {
        self.put_recs(records)
    }

    fn pairs(&self) -> Result<Vec<PairRecord>, BankError> {
        self.all_recs()
    }

    fn put_snapshot(&self, version: u64, bytes: &[u8]) -> Result<(), BankError> {
        let key = format!("{}:reward-model:latest", self.prefix);
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("HSET").arg(&key).arg("version").arg(version).arg("bytes").arg(bytes).ignore();
        self.with(|c| pipe.query::<()>(c))
    }

    fn latest_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, BankError> {
        let key = format!("{}:reward-model:latest", self.prefix);
        let (v, b): (Option<u64>, Option<Vec<u8>>) =
            self.with(|c| redis::cmd("HMGET").arg(&key).arg("version").arg("bytes").query(c))?;
        Ok(v.zip(b))
    }
}
