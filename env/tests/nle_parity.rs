#![allow(clippy::unnecessary_cast)] // `c_long` is 32 bits on some platforms
//! Step-for-step parity with Python NLE: the same task, seeds and actions played by the
//! project venv's nle==1.3.0 (`scripts/nle_trace.py`) and by our env must show the same
//! message, reward, done flag, raw bottom-line stats, 21×79 glyph map, 24×80 terminal and
//! cursor on every frame.

use oni_env::nethack::{NetHackConfig, NetHackEnv, View};
use oni_env::{Env, GridKind};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

mod common;
use common::{rng, Obs};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn python() -> PathBuf {
    let cache = std::env::var_os("ONI_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/oni"));
    cache.join("venv/bin/python")
}

/// Python NLE's frames for the actions (reset frames included).
fn reference(task: &str, set: &str, seeds: [u64; 2], max_steps: u32, actions: &[usize]) -> Vec<Value> {
    let mut child = Command::new(python())
        .arg(repo().join("scripts/nle_trace.py"))
        .args([task.to_string(), seeds[0].to_string(), seeds[1].to_string(), max_steps.to_string(), set.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the project venv's python (scripts/setup.sh installs it)");
    let input: String = actions.iter().map(|a| format!("{a}\n")).collect();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "nle_trace.py failed");
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn frame(env: &NetHackEnv, obs: &Obs, kind: &str, reward: f32, done: bool) -> Value {
    serde_json::json!({
        "tty": obs.g,
        "cursor": [env.tty_cursor().0, env.tty_cursor().1],
        "kind": kind,
        "reward": reward,
        "done": done,
        "message": env.message(),
        "blstats": env.blstats().iter().map(|&x| x as i64).collect::<Vec<_>>(),
        "glyphs": env.glyph_map().to_vec(),
    })
}

/// Our frames for the same actions.
fn ours(task: &str, set: &str, seeds: [u64; 2], max_steps: u32, actions: &[usize]) -> Vec<Value> {
    // the whole terminal and its cursor as the observation, to compare with NLE's tty_* keys
    let cfg = NetHackConfig {
        actions: if set == "oni" { oni_env::nethack::ActionSet::Oni } else { oni_env::nethack::ActionSet::Task },
        seeds: Some(seeds),
        max_episode_steps: max_steps,
        grid: GridKind::Tty,
        view: View::Screen,
        cursor: true,
        ..Default::default()
    };
    let mut env = NetHackEnv::new(task, &cfg).expect("NLE installed (run scripts/setup.sh)");
    let mut obs = Obs::new(&env);
    env.reset(0, obs.buf()).unwrap();
    let mut frames = vec![frame(&env, &obs, "reset", 0.0, false)];
    for &a in actions {
        let out = env.step(a, obs.buf()).unwrap();
        frames.push(frame(&env, &obs, "step", out.reward, out.done));
        if out.done {
            env.reset(0, obs.buf()).unwrap();
            frames.push(frame(&env, &obs, "reset", 0.0, false));
        }
    }
    frames
}

/// Numbers to float precision; messages up to trailing blanks, which our message line drops
/// (NLE keeps the space after a question mark).
fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-4,
        (Value::String(x), Value::String(y)) => x.trim_end() == y.trim_end(),
        _ => a == b,
    }
}

/// `set`: `task` (NLE's 23 actions) or `oni` (28).
fn check_with(task: &str, set: &str, seeds: [u64; 2], max_steps: u32, steps: usize, action_seed: u64) {
    let n = if set == "oni" { 28 } else { 23 };
    let mut next = rng(action_seed);
    let actions: Vec<usize> = (0..steps).map(|_| (next() % n) as usize).collect();
    let (mut want, mut got) =
        (reference(task, set, seeds, max_steps, &actions), ours(task, set, seeds, max_steps, &actions));
    // The seeds pick the first game only; later ones are random in NLE.
    let first_game = |v: &mut Vec<Value>| {
        if let Some(end) = v.iter().skip(1).position(|f| f["kind"] == "reset") {
            v.truncate(end + 1);
        }
    };
    first_game(&mut want);
    first_game(&mut got);
    assert_eq!(want.len(), got.len(), "{task} {seeds:?}: the first episode ends at another step");
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        // On the frame that ends an episode by a task end or the step cap NLE returns blanked
        // arrays; ours keep the real last frame (the learner bootstraps a time limit from it).
        let blanked = w["done"] == Value::Bool(true) && w["blstats"].as_array().unwrap().iter().all(|x| x == 0);
        let fields: &[&str] = if blanked {
            &["kind", "reward", "done"]
        } else {
            &["kind", "reward", "done", "message", "blstats", "glyphs", "tty", "cursor"]
        };
        for &field in fields {
            assert!(
                close(&w[field], &g[field]),
                "{task} seeds {seeds:?} frame {i}: `{field}` differs\n  NLE: {}\n  oni: {}",
                w[field],
                g[field]
            );
        }
    }
}

fn check(task: &str, seeds: [u64; 2], max_steps: u32, steps: usize, action_seed: u64) {
    check_with(task, "task", seeds, max_steps, steps, action_seed)
}

#[test]
fn score_and_gold_match_nle_frame_for_frame() {
    check("nethack-score", [12345, 678], 5000, 300, 1);
    check("nethack-gold", [42, 4242], 5000, 300, 2);
}

#[test]
fn staircase_pet_eat_and_scout_match_nle_frame_for_frame() {
    check("nethack-staircase", [7, 77], 5000, 300, 3);
    check("nethack-staircase-pet", [7, 77], 5000, 300, 3);
    check("nethack-eat", [2024, 11], 5000, 200, 4);
    check("nethack-scout", [999, 1], 5000, 200, 5);
}

/// A short step cap: NLE's abort ends the episode at the cap, with the same reward.
#[test]
fn the_step_cap_and_replayed_episodes_match_nle() {
    check("nethack-staircase", [31337, 5], 40, 60, 6);
    check("nethack-score", [5, 31337], 25, 60, 7);
}

/// ONI's 28 actions. Seed 117's game quaffs at a fountain: NLE declines "Drink from the
/// fountain?" and stops at the next question ("What do you want to drink?"), where declining
/// every question in turn would answer it too.
#[test]
fn onis_actions_and_declined_questions_match_nle() {
    check_with("nethack-score", "oni", [117, 820], 5000, 400, 117);
    check_with("nethack-staircase", "oni", [8, 9], 5000, 300, 8);
}
