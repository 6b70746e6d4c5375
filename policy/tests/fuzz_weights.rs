//! The weights reader against random, truncated and bit-flipped payloads, and against
//! crafted ones with a valid checksum and absurd sizes in their headers: every case is an
//! error, none panics or allocates from a size it has not checked.

use oni_env::ObsSpec;
use oni_policy::{weights, CpuBackend, Policy, PolicyConfig};
use rand::{Rng, SeedableRng};

fn policy() -> Policy<CpuBackend> {
    let spec =
        ObsSpec { crop_rows: 3, crop_cols: 3, num_glyphs: 5, stats_dim: 2, num_actions: 3, grid: Default::default() };
    let cfg = PolicyConfig { core_hidden: 8, glyph_hidden: 8, message_bytes: 8, ..Default::default() };
    Policy::new(&cfg, &spec, &Default::default())
}

/// A payload with a valid checksum over `body` (magic and format prepended).
fn sealed(good: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = good[..8].to_vec();
    out.extend_from_slice(body);
    let crc = weights::crc32(&out);
    out.extend(crc.to_le_bytes());
    out
}

fn le(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn every_damaged_or_crafted_payload_is_an_error() {
    let p = policy();
    let good = weights::to_bytes(&p);
    let load = |b: &[u8]| weights::load_bytes(p.clone(), b);
    assert!(load(&good).is_ok());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut cases = 0;
    for len in 0..good.len() {
        assert!(load(&good[..len]).is_err(), "truncated to {len} bytes");
        cases += 1;
    }
    for _ in 0..2_000 {
        let mut b = good.clone();
        let i = rng.random_range(0..b.len());
        b[i] ^= 1 << rng.random_range(0..8);
        assert!(load(&b).is_err(), "a flipped bit at byte {i} went unnoticed");
        cases += 1;
    }
    for _ in 0..2_000 {
        let n = rng.random_range(0..4096);
        let mut b: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        if rng.random() && b.len() >= 8 {
            b[..8].copy_from_slice(&good[..8]);
        }
        assert!(load(&b).is_err());
        cases += 1;
    }
    // valid checksums around lies: 4 billion tensors, a rank-8 tensor of 4 billion per side,
    // dimensions whose product overflows, a rank above 8, a count of zero, trailing bytes
    let crafted = [
        le(&[u32::MAX]),
        le(&[1, 8, u32::MAX, u32::MAX, u32::MAX, u32::MAX, u32::MAX, u32::MAX, u32::MAX, u32::MAX]),
        le(&[1, 2, 1 << 31, 1 << 31]),
        le(&[1, 9, 1, 1, 1, 1, 1, 1, 1, 1, 1]),
        le(&[0]),
        [good[8..good.len() - 4].to_vec(), vec![0]].concat(),
    ];
    for body in &crafted {
        assert!(load(&sealed(&good, body)).is_err(), "crafted body {:?}…", &body[..body.len().min(16)]);
        cases += 1;
    }
    eprintln!("{cases} damaged weight payloads, all refused");
}
