//! Each reward model learns a small labelled set; snapshots round-trip bit-exactly and a
//! damaged or unknown one is refused.

use oni_reward_model::{DistillConfig, Distiller, Example, Kind, Pair, RewardModel, Snapshot, SnapshotError};

/// NetHack-like captions; the rule (as the CI judge's): a message about a key, a door or
/// stairs shows progress.
fn captions() -> Vec<(String, bool)> {
    let adjs = ["brass", "iron", "old", "rusty", "small", "heavy", "silver", "wooden"];
    let monsters = ["newt", "jackal", "rat", "lichen", "kobold", "gnome", "bat", "grid bug"];
    let mut out = Vec::new();
    for (i, a) in adjs.iter().enumerate() {
        out.push((format!("You see here a {a} key."), true));
        out.push((format!("{} - a {a} key.", (b'a' + i as u8) as char), true));
        out.push((format!("You unlock the {a} door."), true));
        out.push((format!("This {a} door is locked."), true));
        out.push((format!("There is a {a} staircase down here."), true));
        out.push((format!("You see here a {a} ring."), false));
        out.push((format!("There is a {a} fountain here."), false));
    }
    for m in monsters {
        out.push((format!("You hit the {m}."), false));
        out.push((format!("The {m} bites!"), false));
        out.push((format!("You kill the {m}!"), false));
        out.push((format!("You miss the {m}."), false));
    }
    for n in [2, 7, 13, 21, 34, 55, 89, 144] {
        out.push((format!("You see here {n} gold pieces."), false));
    }
    out
}

/// A distiller seeds the backend's generator, which is global to the process, and then draws
/// its network's initial weights from it: tests that build networks at the same time would
/// draw each other's numbers. Each takes this lock, so every network starts from its seed.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn cfg() -> DistillConfig {
    DistillConfig { heldout_fraction: 0.25, min_per_class: 2, ..Default::default() }
}

#[test]
fn hashing_is_exact_and_unlabelled_is_zero() {
    let mut d = Distiller::new(Kind::Hashing, cfg(), 1);
    assert!(d.ready().is_err(), "nothing to publish without labels");
    let data = captions();
    d.add_labels(data.iter().map(|(c, h)| Example { caption: c.clone(), helpful: *h }));
    assert_eq!(d.steps_due(true), 0, "hashing does not train");
    d.ready().unwrap();
    let m = RewardModel::decode(&d.snapshot(3).encode()).unwrap();
    assert_eq!((m.version(), m.kind()), (3, Kind::Hashing));
    let caps: Vec<&str> = data.iter().map(|(c, _)| c.as_str()).collect();
    let want: Vec<f32> = data.iter().map(|(_, h)| if *h { 1.0 } else { 0.0 }).collect();
    assert_eq!(m.rewards(&caps), want);
    assert_eq!(m.rewards(&["You see here a golden key.", ""]), vec![0.0, 0.0], "unlabelled and empty earn 0");
}

#[test]
fn classifier_learns_and_generalises_to_held_out_captions() {
    let _seeded = one_at_a_time();
    // the network alone (ONI's way), so every caption below is its judgement
    let mut d = Distiller::new(Kind::Classification, DistillConfig { bank_first: false, ..cfg() }, 2);
    d.add_labels([Example { caption: "You hit the newt.".into(), helpful: false }]);
    assert!(d.ready().unwrap_err().contains("helpful"), "one class only must not publish");
    let data = captions();
    d.add_labels(data.iter().map(|(c, h)| Example { caption: c.clone(), helpful: *h }));
    assert_eq!(d.steps_due(true), 32);
    assert_eq!(d.steps_due(false), 0);
    let first = d.train(10).unwrap();
    for _ in 0..20 {
        d.train(32);
    }
    let last = d.train(32).unwrap();
    assert!(last < first * 0.5, "loss {first} → {last}");
    let snap = d.snapshot(1);
    let acc = snap.heldout_accuracy.expect("a held-out split");
    // held-out captions recombine words seen in training (the majority class alone scores 0.67)
    assert!(acc >= 0.8, "held-out accuracy {acc}");
    let m = RewardModel::from_snapshot(snap).unwrap();
    let caps: Vec<&str> = data.iter().map(|(c, _)| c.as_str()).collect();
    let right = data.iter().zip(m.rewards(&caps)).filter(|((_, h), r)| *h == (*r > 0.5)).count();
    assert!(right as f32 / data.len() as f32 >= 0.95, "{right}/{} right overall", data.len());
}

#[test]
fn bank_first_pays_judged_captions_their_label_and_the_network_the_rest() {
    let _seeded = one_at_a_time();
    let labels = [("You see no objects here.", false), ("You see here a brass key.", true), ("It's a wall.", false)];
    let snapshot_of = |bank_first: bool, heldout_fraction: f32| {
        let mut d = Distiller::new(Kind::Classification, DistillConfig { bank_first, heldout_fraction, ..cfg() }, 4);
        d.add_labels(labels.iter().map(|(c, h)| Example { caption: c.to_string(), helpful: *h }));
        d.add_labels([Example { caption: "k - a brass key.".into(), helpful: true }]);
        let mut snap = d.snapshot(1);
        // a network fitted to nothing yet, made to pay every caption: what an early model
        // trained on a handful of labels can do
        snap.threshold = -1.0;
        RewardModel::decode(&snap.encode()).unwrap()
    };
    let caps = ["You see no objects here.", "You see here a brass key.", "It's a wall.", "You hear a door open.", ""];
    // every label in training, then every label held out (kept from training to measure the
    // network): the judge's answer is known either way and is what a judged caption is paid
    for heldout_fraction in [0.0, 1.0] {
        let with = snapshot_of(true, heldout_fraction);
        assert_eq!(
            with.rewards(&caps),
            vec![0.0, 1.0, 0.0, 1.0, 0.0],
            "judged captions paid their label, the rest by the network (held out: {heldout_fraction})"
        );
        assert!(with.is_labelled("It's a wall.") && !with.is_labelled("You hear a door open."));
    }
    let without = snapshot_of(false, 0.0);
    assert_eq!(without.rewards(&caps), vec![1.0, 1.0, 1.0, 1.0, 0.0], "ONI's way: the network judges everything");
    assert!(without.is_labelled("It's a wall."), "the labelled set is there either way, for the diagnosis");
}

#[test]
fn ranker_learns_preferences_with_ties() {
    let _seeded = one_at_a_time();
    let mut d = Distiller::new(Kind::Ranking, cfg(), 3);
    let data = captions();
    let mut pairs = Vec::new();
    for (i, (a, ha)) in data.iter().enumerate() {
        for (b, hb) in data.iter().skip(i + 1).step_by(5) {
            let target = match (ha, hb) {
                (true, false) => 1.0,
                (false, true) => 0.0,
                _ => 0.5,
            };
            pairs.push(Pair { first: a.clone(), second: b.clone(), target });
        }
    }
    assert!(d.add_pairs(pairs.clone()) > 100);
    assert_eq!(
        d.add_pairs(pairs[..5].iter().map(|p| Pair {
            first: p.second.clone(),
            second: p.first.clone(),
            target: 1.0 - p.target
        })),
        0,
        "a pair asked the other way round is the same pair"
    );
    d.ready().unwrap();
    for _ in 0..15 {
        d.train(32);
    }
    let snap = d.snapshot(2);
    assert!(snap.norm_std > 0.0);
    let acc = snap.heldout_accuracy.expect("held-out decisive pairs");
    assert!(acc >= 0.85, "held-out pair accuracy {acc}");
    let m = RewardModel::from_snapshot(snap).unwrap();
    let caps: Vec<&str> = data.iter().map(|(c, _)| c.as_str()).collect();
    let r = m.rewards(&caps);
    let right = data.iter().zip(&r).filter(|((_, h), r)| *h == (**r > 0.5)).count();
    assert!(right as f32 / data.len() as f32 >= 0.85, "{right}/{} thresholded right", data.len());
}

#[test]
fn snapshots_round_trip_bit_exactly_and_damage_is_refused() {
    let _seeded = one_at_a_time();
    let mut d = Distiller::new(Kind::Classification, cfg(), 4);
    d.add_labels(captions().into_iter().map(|(caption, helpful)| Example { caption, helpful }));
    d.train(5);
    let bytes = d.snapshot(7).encode();
    let snap = Snapshot::decode(&bytes).unwrap();
    assert_eq!(snap.encode(), bytes, "decode + encode is the identity");
    let a = RewardModel::decode(&bytes).unwrap();
    let b = RewardModel::from_snapshot(snap).unwrap();
    let caps = ["You see here a brass key.", "You hit the newt."];
    assert_eq!(a.scores(&caps), b.scores(&caps));
    assert_eq!(
        oni_policy::weights::to_bytes(&oni_reward_model::net::ByteCnn::<oni_reward_model::Backend>::new(
            &Default::default(),
            2,
            &Default::default()
        ))
        .len(),
        a.snapshot().weights.len()
    );

    let mut bad = bytes.clone();
    bad[bytes.len() / 2] ^= 0x10;
    assert_eq!(RewardModel::decode(&bad).err(), Some(SnapshotError::Checksum));
    assert!(matches!(
        RewardModel::decode(&bytes[..30]).err(),
        Some(SnapshotError::Checksum | SnapshotError::Malformed(_))
    ));

    // a well-formed snapshot of a kind this build does not know
    let text = String::from_utf8_lossy(&bytes).into_owned();
    assert!(text.contains("\"kind\":\"classification\""));
    let mut d2 = Distiller::new(Kind::Hashing, cfg(), 5);
    d2.add_labels([Example { caption: "x".into(), helpful: true }]);
    let hb = d2.snapshot(1).encode();
    let body = &hb[..hb.len() - 4];
    let hlen = u32::from_le_bytes(body[8..12].try_into().unwrap()) as usize;
    let header = String::from_utf8(body[12..12 + hlen].to_vec()).unwrap().replace("\"hashing\"", "\"telepathy\"");
    let mut forged = Vec::new();
    forged.extend(&body[..8]);
    forged.extend((header.len() as u32).to_le_bytes());
    forged.extend(header.as_bytes());
    forged.extend(&body[12 + hlen..]);
    let crc = oni_policy::weights::crc32(&forged);
    forged.extend(crc.to_le_bytes());
    assert_eq!(RewardModel::decode(&forged).err(), Some(SnapshotError::UnknownKind("telepathy".into())));
}
