//! Observation buffers and a cheap action stream for the NetHack tests.
#![allow(dead_code)]

use oni_env::nethack::NetHackEnv;
use oni_env::{Env, ObsBuf, MESSAGE_LEN};

pub struct Obs {
    pub g: Vec<u16>,
    pub s: Vec<f32>,
    pub m: Vec<u8>,
}

impl Obs {
    pub fn new(env: &NetHackEnv) -> Obs {
        let sp = env.spec();
        Obs { g: vec![0; sp.crop_len()], s: vec![0.0; sp.stats_dim], m: vec![0; MESSAGE_LEN] }
    }
    pub fn buf(&mut self) -> ObsBuf<'_> {
        ObsBuf { glyphs: &mut self.g, stats: &mut self.s, message: &mut self.m }
    }
}

pub fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}
