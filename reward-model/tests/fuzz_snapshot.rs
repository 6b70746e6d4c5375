//! The reward-model snapshot reader against random, truncated and bit-flipped snapshots,
//! and crafted ones with a valid checksum and absurd sizes: every case is an error and none
//! panics or builds a network from sizes it has not checked.

use oni_reward_model::{DistillConfig, Distiller, Example, Kind, RewardModel};
use rand::{Rng, SeedableRng};

fn crc_sealed(body: Vec<u8>) -> Vec<u8> {
    let mut out = body;
    let crc = oni_policy::weights::crc32(&out);
    out.extend(crc.to_le_bytes());
    out
}

/// A snapshot body (magic, format, header, weights) with the given header JSON and weights.
fn body(good: &[u8], header: &[u8], weights: &[u8]) -> Vec<u8> {
    let mut b = good[..8].to_vec();
    b.extend((header.len() as u32).to_le_bytes());
    b.extend(header);
    b.extend((weights.len() as u32).to_le_bytes());
    b.extend(weights);
    b
}

#[test]
fn every_damaged_or_crafted_snapshot_is_an_error() {
    let mut d = Distiller::new(Kind::Classification, DistillConfig::default(), 3);
    d.add_labels((0..40).map(|i| Example { caption: format!("message {i}"), helpful: i % 3 == 0 }));
    let good = d.snapshot(1).encode();
    assert!(RewardModel::decode(&good).is_ok());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut cases = 0;
    for len in (0..good.len()).step_by((good.len() / 2_000).max(1)) {
        assert!(RewardModel::decode(&good[..len]).is_err(), "truncated to {len}");
        cases += 1;
    }
    for _ in 0..2_000 {
        let mut b = good.clone();
        let i = rng.random_range(0..b.len());
        b[i] ^= 1 << rng.random_range(0..8);
        assert!(RewardModel::decode(&b).is_err(), "a flipped bit at byte {i} went unnoticed");
        cases += 1;
    }
    for _ in 0..2_000 {
        let mut b: Vec<u8> = (0..rng.random_range(0..2048)).map(|_| rng.random()).collect();
        if rng.random() && b.len() >= 8 {
            b[..8].copy_from_slice(&good[..8]);
        }
        assert!(RewardModel::decode(&b).is_err());
        cases += 1;
    }
    let header_of = |kind: &str, net: &str| {
        format!(
            r#"{{"version":1,"kind":"{kind}","threshold":0.5,"norm_mean":0,"norm_std":1,"net":{net},"table":[],"trained_on":1,"heldout_accuracy":null}}"#
        )
        .into_bytes()
    };
    let header = |net: &str| header_of("classification", net);
    let crafted = [
        // a network of a billion channels, declared by a header with a valid checksum
        body(&good, &header(r#"{"embed":16,"channels":1000000000,"hidden":64}"#), &[]),
        body(&good, &header(r#"{"embed":0,"channels":64,"hidden":64}"#), &[]),
        // the right network, no weights
        body(&good, &header(r#"{"embed":16,"channels":64,"hidden":64}"#), &[]),
        // header and weight lengths far beyond the payload
        [good[..8].to_vec(), u32::MAX.to_le_bytes().to_vec()].concat(),
        [good[..8].to_vec(), 2u32.to_le_bytes().to_vec(), b"{}".to_vec(), u32::MAX.to_le_bytes().to_vec()].concat(),
        body(&good, b"not json", &[]),
        body(&good, &header_of("telepathy", r#"{"embed":16,"channels":64,"hidden":64}"#), &[]),
    ];
    for b in crafted {
        assert!(RewardModel::decode(&crc_sealed(b)).is_err());
        cases += 1;
    }
    eprintln!("{cases} damaged snapshots, all refused");
}
