//! Soak: many NetHack episodes across instances in one process. In its own test binary so
//! that no other test's allocations share the process whose memory it measures.

use oni_env::nethack::{NetHackConfig, NetHackEnv};
use oni_env::Env;

mod common;
use common::{rng, Obs};

#[test]
fn thousands_of_episodes_across_instances_without_memory_growth() {
    let cfg = NetHackConfig { max_episode_steps: 10, ..Default::default() };
    let mut envs: Vec<NetHackEnv> = (0..8).map(|_| NetHackEnv::new("nethack-score", &cfg).unwrap()).collect();
    let mut o = Obs::new(&envs[0]);
    let mut next = rng(9);
    let rss = || -> u64 {
        let s = std::fs::read_to_string("/proc/self/statm").unwrap();
        s.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
    };
    let mut episodes = 0u64;
    let mut seed = 0;
    let mut play = |n: u64, envs: &mut Vec<NetHackEnv>, o: &mut Obs| {
        let target = episodes + n;
        while episodes < target {
            for e in envs.iter_mut() {
                seed += 1;
                e.reset(seed, o.buf()).unwrap();
                loop {
                    let a = (next() % 23) as usize;
                    if e.step(a, o.buf()).unwrap().done {
                        break;
                    }
                }
                episodes += 1;
            }
        }
    };
    play(400, &mut envs, &mut o);
    let before = rss();
    play(2000, &mut envs, &mut o);
    let after = rss();
    let growth = after.saturating_sub(before);
    assert!(growth < 16 << 20, "resident memory grew by {} MiB over 2000 episodes", growth >> 20);
    // dropping the instances removes their var directories
    let dirs: Vec<_> = envs.iter().map(|e| e.var_dir().to_path_buf()).collect();
    assert!(dirs.iter().all(|d| d.join("nhdat").exists()));
    drop(envs);
    let left: Vec<_> = dirs.iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "var directories left behind: {left:?}");
}
