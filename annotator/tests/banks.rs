//! Both label banks pass the same tests; Redis (with AOF) keeps every label across a
//! restart. Redis is started on 127.0.0.1 by the test itself.

use oni_annotator::{FileBank, Label, LabelBank, LabelKey, LabelRecord, PairKey, PairRecord, Preference, RedisBank};
use oni_test_support::{free_port, redis_server, Persistence, Server};

fn rec(caption: &str, label: Label, model: &str, t: u64) -> LabelRecord {
    LabelRecord {
        caption: caption.into(),
        label,
        prompt_hash: "abc".into(),
        model: model.into(),
        raw_answer: "{\"helpful\": true}".into(),
        latency_ms: 40,
        time_ms: t,
        tokens: Some(57),
        asked_as: None,
        rule: None,
    }
}

fn key(caption: &str, model: &str) -> LabelKey {
    LabelKey { caption: caption.into(), prompt_hash: "abc".into(), model: model.into() }
}

/// The behaviour every bank must have.
fn exercise(bank: &dyn LabelBank) {
    assert!(bank.is_empty().unwrap());
    bank.put(&[
        rec("You see here a brass key.", Label::Helpful, "m", 1),
        rec("You hit the newt.", Label::Unhelpful, "m", 2),
    ])
    .unwrap();
    bank.put(&[rec("You see here a brass key.", Label::Unknown, "m2", 3)]).unwrap();
    assert_eq!(bank.len().unwrap(), 3);
    assert_eq!(bank.get(&key("You see here a brass key.", "m")).unwrap().unwrap().label, Label::Helpful);
    assert_eq!(bank.get(&key("You see here a brass key.", "m2")).unwrap().unwrap().label, Label::Unknown);
    assert!(bank.get(&key("You unlock the door.", "m")).unwrap().is_none());
    // a re-label replaces the record but keeps its place
    bank.put(&[rec("You hit the newt.", Label::Helpful, "m", 9)]).unwrap();
    let all = bank.all().unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[1].caption, "You hit the newt.");
    assert_eq!(all[1].label, Label::Helpful);
    assert_eq!(all[0], rec("You see here a brass key.", Label::Helpful, "m", 1));

    // ranking answers: a pair is one question whichever way round it was asked
    let pair = |a: &str, b: &str, p: Preference, t: u64| PairRecord {
        first: a.into(),
        second: b.into(),
        preference: p,
        prompt_hash: "r1".into(),
        model: "m".into(),
        raw_answer: "{\"better\": \"first\"}".into(),
        latency_ms: 5,
        time_ms: t,
        tokens: None,
    };
    assert!(bank.pairs().unwrap().is_empty());
    bank.put_pairs(&[
        pair("The door opens.", "You hit the newt.", Preference::First, 1),
        pair("a", "b", Preference::Tie, 2),
    ])
    .unwrap();
    let k = PairKey::new("You hit the newt.", "The door opens.", "r1", "m");
    assert_eq!(bank.get_pair(&k).unwrap().unwrap().preference, Preference::First);
    assert!(bank.get_pair(&PairKey::new("a", "b", "r2", "m")).unwrap().is_none());
    bank.put_pairs(&[pair("b", "a", Preference::Second, 3)]).unwrap();
    let pairs = bank.pairs().unwrap();
    assert_eq!(pairs.len(), 2);
    assert_eq!((pairs[1].first.as_str(), pairs[1].preference), ("b", Preference::Second));

    // reward-model snapshots: the newest version is served
    assert!(bank.latest_snapshot().unwrap().is_none());
    for v in 1..=5u64 {
        bank.put_snapshot(v, &vec![v as u8; 10 + v as usize]).unwrap();
    }
    assert_eq!(bank.latest_snapshot().unwrap().unwrap(), (5, vec![5u8; 15]));
}

#[test]
fn file_bank() {
    let dir = tempfile::tempdir().unwrap();
    exercise(&FileBank::open(dir.path()).unwrap());
    let again = FileBank::open(dir.path()).unwrap();
    assert_eq!((again.len().unwrap(), again.pairs().unwrap().len()), (3, 2), "not durable across reopen");
    assert_eq!(again.latest_snapshot().unwrap().unwrap().0, 5);
}

fn start_redis(dir: &std::path::Path, port: u16) -> Server {
    redis_server("127.0.0.1", port, dir, Persistence::Durable)
}

#[test]
fn redis_bank_and_a_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let mut redis = start_redis(dir.path(), port);
    let bank = RedisBank::open(&url, "test").unwrap();
    exercise(&bank);

    // kill -9 Redis and start it again on the same AOF: every label is still there, and
    // the bank's connection recovers by itself
    redis.0.kill().unwrap();
    redis.0.wait().unwrap();
    assert!(bank.len().is_err(), "a dead Redis must be an error, not an empty bank");
    let _redis = start_redis(dir.path(), port);
    assert_eq!(bank.len().unwrap(), 3);
    assert_eq!(bank.get(&key("You hit the newt.", "m")).unwrap().unwrap().label, Label::Helpful);
    assert_eq!((bank.pairs().unwrap().len(), bank.latest_snapshot().unwrap().unwrap().0), (2, 5));
    bank.put(&[rec("You unlock the door.", Label::Helpful, "m", 10)]).unwrap();
    assert_eq!(RedisBank::open(&url, "test").unwrap().len().unwrap(), 4);
    let closed = free_port();
    let e = RedisBank::open(&format!("redis://127.0.0.1:{closed}"), "test").err().expect("no Redis there");
    assert!(e.to_string().contains(&closed.to_string()), "{e}");
}
