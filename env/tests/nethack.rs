#![allow(clippy::unnecessary_cast)] // `c_long` is 32 bits on some platforms
//! Real NetHack through the nle==1.3.0 wheel's libnethack.so (installed by scripts/setup.sh
//! into ~/.cache/oni/venv, or wherever ONI_NLE_DIR points).

use oni_env::nethack::ffi::{bl, glyph, COLS, ROWS};
use oni_env::nethack::tasks::TASK_ACTIONS;
use oni_env::nethack::{NetHackConfig, NetHackEnv};
use oni_env::spec::message_text;
use oni_env::{Env, EnvError, StepOutcome};
use std::collections::VecDeque;

mod common;
use common::{rng, Obs};

fn env(task: &str) -> NetHackEnv {
    NetHackEnv::new(task, &NetHackConfig::default()).expect("NLE installed (run scripts/setup.sh)")
}

type Trace = Vec<(Vec<u16>, Vec<f32>, Vec<u8>, f32)>;

/// 300 seeded random steps (or to the episode's end) from a reset with `seed`.
fn trace(e: &mut NetHackEnv, seed: u64) -> Trace {
    let mut o = Obs::new(e);
    e.reset(seed, o.buf()).unwrap();
    let mut trace = vec![(o.g.clone(), o.s.clone(), o.m.clone(), 0.0f32)];
    let mut next = rng(42);
    for _ in 0..300 {
        let a = (next() % e.spec().num_actions as u64) as usize;
        let out = e.step(a, o.buf()).unwrap();
        trace.push((o.g.clone(), o.s.clone(), o.m.clone(), out.reward));
        if out.done {
            break;
        }
    }
    trace
}

#[test]
fn same_seed_same_game_different_seed_different_game() {
    let run = |seed: u64| {
        let mut e = env("nethack-score");
        let t = trace(&mut e, seed);
        (t, e.glyph_map().to_vec())
    };
    let (a, _) = run(7);
    let (b, _) = run(7);
    assert_eq!(a.len(), b.len());
    assert!(a == b, "same seed and actions gave different observations");
    let (_, map7) = run(7);
    let (_, map8) = run(8);
    assert_ne!(map7, map8, "different seeds gave the same game");
    // One instance reused across games cut short (its globals put back between games, not
    // reloaded) plays a seed exactly as a fresh instance does.
    let mut e = env("nethack-score");
    for seed in [8, 7, 9] {
        trace(&mut e, seed);
    }
    assert!(trace(&mut e, 7) == a, "a reused instance played seed 7 differently from a fresh one");
}

#[test]
fn messages_decode_to_what_nethack_printed() {
    let mut e = env("nethack-score");
    let mut o = Obs::new(&e);
    e.reset(3, o.buf()).unwrap();
    let start = message_text(&o.m);
    assert!(
        start.starts_with("Hello Agent, welcome to NetHack!") || start.contains("moon"),
        "unexpected first message {start:?}"
    );
    // with NLE's `mention_walls` option, walking into a wall says so
    for _ in 0..40 {
        let wall = wall_move(&e);
        e.step(wall.unwrap_or(4), o.buf()).unwrap();
        if wall.is_some() {
            assert_eq!(message_text(&o.m), "It's a wall.");
            return;
        }
    }
    panic!("never found a wall to walk into");
}

/// NetHackScore: reward = Δscore − 0.01 on steps where game time stands still.
#[test]
fn score_reward_is_score_delta_minus_the_frozen_time_penalty() {
    let mut e = env("nethack-score");
    let mut o = Obs::new(&e);
    let mut next = rng(5);
    let mut checked = 0;
    let mut penalised = 0;
    let mut scored = 0;
    for seed in 0..4 {
        e.reset(seed, o.buf()).unwrap();
        let (mut score, mut time) = (e.blstats()[bl::SCORE], e.blstats()[bl::TIME]);
        for _ in 0..400 {
            let a = (next() % 23) as usize;
            let out = e.step(a, o.buf()).unwrap();
            if out.done {
                break;
            }
            let (s, t) = (e.blstats()[bl::SCORE], e.blstats()[bl::TIME]);
            assert_eq!(out.score, Some(s as f32), "the step reports the bottom line's score");
            let expected = (s - score) as f32 + if t == time { -0.01 } else { 0.0 };
            assert!((out.reward - expected).abs() < 1e-5, "reward {} expected {expected}", out.reward);
            checked += 1;
            penalised += (t == time) as u32;
            scored += (s != score) as u32;
            (score, time) = (s, t);
        }
    }
    assert!(checked > 500 && penalised > 0 && scored > 0, "{checked} steps, {penalised} penalised, {scored} scored");
}

fn walkable(g: i16) -> bool {
    let c = g - glyph::CMAP_OFF;
    (12..=14).contains(&c) || (19..=31).contains(&c) || (1906..2359).contains(&g)
}

/// Four-way BFS on the visible map from the hero to a target glyph; returns the moves.
fn path_to(map: &[i16], from: (usize, usize), target: i16) -> Option<Vec<usize>> {
    let moves = [(0i64, -1i64, 1usize), (1, 0, 2), (0, 1, 3), (-1, 0, 4)]; // k l j h
    let mut prev = vec![None; ROWS * COLS];
    let mut q = VecDeque::from([from]);
    prev[from.1 * COLS + from.0] = Some((from, 0));
    while let Some((x, y)) = q.pop_front() {
        if map[y * COLS + x] == target {
            let mut path = Vec::new();
            let mut cur = (x, y);
            while cur != from {
                let (p, a) = prev[cur.1 * COLS + cur.0].unwrap();
                path.push(a);
                cur = p;
            }
            path.reverse();
            return Some(path);
        }
        for (dx, dy, a) in moves {
            let (nx, ny) = (x as i64 + dx, y as i64 + dy);
            if nx < 0 || ny < 0 || nx >= COLS as i64 || ny >= ROWS as i64 {
                continue;
            }
            let (nx, ny) = (nx as usize, ny as usize);
            let g = map[ny * COLS + nx];
            if prev[ny * COLS + nx].is_none() && (walkable(g) || g == target) {
                prev[ny * COLS + nx] = Some(((x, y), a));
                q.push_back((nx, ny));
            }
        }
    }
    None
}

fn closed_door(g: i16) -> bool {
    (15..=16).contains(&(g - glyph::CMAP_OFF))
}

/// Wizard mode only: maps the level (^F) and plans a walk from the hero to the down
/// staircase, through doors (they open by walking into them).
fn mapped_path_to_stairs(e: &mut NetHackEnv) -> Option<Vec<usize>> {
    e.send_key(6).unwrap();
    let map: Vec<i16> = e.glyph_map().iter().map(|&g| if closed_door(g) { glyph::CMAP_OFF + 12 } else { g }).collect();
    let hero = (e.blstats()[bl::X] as usize, e.blstats()[bl::Y] as usize);
    path_to(&map, hero, glyph::DOWN_STAIRS)
}

/// The move (k l j h as action indices) that walks into an adjacent wall, if any.
fn wall_move(e: &NetHackEnv) -> Option<usize> {
    let (x, y) = (e.blstats()[bl::X] as i64, e.blstats()[bl::Y] as i64);
    [(0i64, -1i64, 1usize), (1, 0, 2), (0, 1, 3), (-1, 0, 4)].into_iter().find_map(|(dx, dy, a)| {
        let (nx, ny) = (x + dx, y + dy);
        let inside = nx >= 0 && ny >= 0 && nx < COLS as i64 && ny < ROWS as i64;
        (inside && (1..=11).contains(&(e.glyph_map()[(ny as usize) * COLS + nx as usize] - glyph::CMAP_OFF)))
            .then_some(a)
    })
}

/// In wizard mode, maps the level (^F) and walks to the down staircase along a BFS path
/// (doors open by walking into them). Returns the last step's outcome on the first seed
/// where the walk succeeds.
fn walk_to_stairs(task: &str) -> (NetHackEnv, StepOutcome) {
    let (e, out, _, _) = walk_to_stairs_recorded(task);
    (e, out)
}

/// `walk_to_stairs`, with the seed and the actions that got there.
fn walk_to_stairs_recorded(task: &str) -> (NetHackEnv, StepOutcome, u64, Vec<usize>) {
    let mut e = NetHackEnv::new(task, &NetHackConfig { wizard: true, ..Default::default() }).unwrap();
    let mut o = Obs::new(&e);
    'seeds: for seed in 0..30 {
        e.reset(seed, o.buf()).unwrap();
        let Some(path) = mapped_path_to_stairs(&mut e) else { continue };
        let mut last = None;
        let mut taken = Vec::new();
        for a in path {
            let before = (e.blstats()[bl::X], e.blstats()[bl::Y]);
            let mut tries = 0;
            loop {
                let out = e.step(a, o.buf()).unwrap();
                taken.push(a);
                last = Some(out);
                if out.done {
                    break;
                }
                if (e.blstats()[bl::X], e.blstats()[bl::Y]) != before {
                    break;
                }
                tries += 1; // a door opening, a monster in the way
                if tries > 20 {
                    continue 'seeds;
                }
            }
            if last.unwrap().done {
                break;
            }
        }
        if let Some(out) = last.filter(|l| l.success) {
            return (e, out, seed, taken);
        }
    }
    panic!("no seed in 0..30 let the hero walk to the down staircase");
}

#[test]
fn staircase_task_rewards_reaching_the_stairs() {
    let (_, out) = walk_to_stairs("nethack-staircase");
    assert!(out.done && out.success);
    assert!((out.reward - 1.0).abs() < 0.011, "reward {}", out.reward);
}

/// Reaching the goal on the very step the cap is reached: NLE's abort check comes first,
/// so the episode is cut (truncated), not a success, and earns no goal reward.
#[test]
fn a_goal_reached_on_the_capped_step_is_an_abort_as_in_nle() {
    let (_, out, seed, actions) = walk_to_stairs_recorded("nethack-staircase");
    assert!(out.success && !out.truncated);
    let cfg = NetHackConfig { wizard: true, max_episode_steps: actions.len() as u32, ..Default::default() };
    let mut e = NetHackEnv::new("nethack-staircase", &cfg).unwrap();
    let mut o = Obs::new(&e);
    e.reset(seed, o.buf()).unwrap();
    mapped_path_to_stairs(&mut e).expect("the same map");
    let mut last = None;
    for &a in &actions {
        last = Some(e.step(a, o.buf()).unwrap());
    }
    let last = last.unwrap();
    assert!(last.done && last.truncated && !last.success, "{last:?}");
    assert!(last.reward.abs() < 0.011, "no goal reward on an aborted step: {}", last.reward);
}

#[test]
fn descending_the_stairs_reaches_level_2_and_ends_the_lvl_tasks_only_at_their_level() {
    // walking onto the stairs does not end staircase-lvl3; `>` then takes the hero down
    let mut e =
        NetHackEnv::new("nethack-staircase-lvl3", &NetHackConfig { wizard: true, ..Default::default() }).unwrap();
    let mut o = Obs::new(&e);
    let down = TASK_ACTIONS.iter().position(|&k| k == b'>' as i32).unwrap();
    for seed in 0..30 {
        e.reset(seed, o.buf()).unwrap();
        let Some(path) = mapped_path_to_stairs(&mut e) else { continue };
        for a in path {
            for _ in 0..20 {
                let before = (e.blstats()[bl::X], e.blstats()[bl::Y]);
                let out = e.step(a, o.buf()).unwrap();
                assert!(!out.success, "staircase-lvl3 succeeded on level 1");
                if out.done || (e.blstats()[bl::X], e.blstats()[bl::Y]) != before {
                    break;
                }
            }
        }
        if e.blstats()[bl::DEPTH] != 1 || !e.glyph_map().iter().all(|&g| g != glyph::DOWN_STAIRS) {
            continue; // not standing on the stairs
        }
        let out = e.step(down, o.buf()).unwrap();
        assert_eq!(e.blstats()[bl::DEPTH], 2, "still on level 1 after `>`: {:?}", e.message());
        assert!(!out.done && !out.success, "level 2 is not level 3");
        return;
    }
    panic!("no seed in 0..30 let the hero reach the stairs");
}

/// Kicking a wall hurts; doing it long enough kills, and the episode ends on death.
#[test]
fn episodes_end_on_death() {
    let mut e = env("nethack-score");
    let mut o = Obs::new(&e);
    e.reset(11, o.buf()).unwrap();
    let kick = TASK_ACTIONS.iter().position(|&k| k == 4).unwrap();
    let mut ended = None;
    for step in 0..3000 {
        let out = match wall_move(&e) {
            Some(a) => {
                let o1 = e.step(kick, o.buf()).unwrap();
                if o1.done {
                    o1
                } else {
                    e.step(a, o.buf()).unwrap()
                }
            }
            // walk west until a wall is adjacent
            None => e.step(4, o.buf()).unwrap(),
        };
        if out.done {
            ended = Some((step, out));
            break;
        }
    }
    let (_, out) = ended.expect("kicking walls for 3000 steps never ended the episode");
    assert!(!out.success);
    assert!(out.score.is_some_and(|s| s >= 0.0), "a dead hero's episode keeps its last score: {:?}", out.score);
    assert_eq!(e.how_done(), 0, "the game ended other than by death");
    // after a game NetHack itself ended, the next one is as a fresh instance's
    let again = trace(&mut e, 7);
    assert!(again == trace(&mut env("nethack-score"), 7), "the game after a death differs from a fresh one");
}

#[test]
fn bad_setups_and_inputs_get_clear_errors() {
    let err = |r: Result<NetHackEnv, EnvError>| r.err().expect("should fail").to_string();
    let e = err(NetHackEnv::new(
        "nethack-score",
        &NetHackConfig { nle_dir: Some("/nonexistent/nle".into()), ..Default::default() },
    ));
    assert!(
        e.contains("libnethack.so was not found") && e.contains("nle==1.3.0") && e.contains("/nonexistent/nle"),
        "{e}"
    );

    // a library of another NLE release is refused before anything is loaded
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("nle");
    std::fs::create_dir_all(pkg.join("nethackdir")).unwrap();
    std::fs::write(pkg.join("libnethack.so"), b"not a library").unwrap();
    let e = err(NetHackEnv::new("nethack-score", &NetHackConfig { nle_dir: Some(pkg.clone()), ..Default::default() }));
    assert!(e.contains("nhdat"), "{e}");
    std::fs::write(pkg.join("nethackdir/nhdat"), b"").unwrap();
    std::fs::create_dir_all(dir.path().join("nle-1.2.0.dist-info")).unwrap();
    std::fs::write(dir.path().join("nle-1.2.0.dist-info/METADATA"), "Name: nle\nVersion: 1.2.0\n").unwrap();
    let e = err(NetHackEnv::new("nethack-score", &NetHackConfig { nle_dir: Some(pkg.clone()), ..Default::default() }));
    assert!(e.contains("1.2.0") && e.contains("1.3.0"), "{e}");
    std::fs::write(dir.path().join("nle-1.2.0.dist-info/METADATA"), "Name: nle\nVersion: 1.3.0\n").unwrap();
    let e = err(NetHackEnv::new("nethack-score", &NetHackConfig { nle_dir: Some(pkg), ..Default::default() }));
    assert!(e.contains("not a libnethack.so build"), "{e}");

    let e = err(NetHackEnv::new("nethack-dance", &NetHackConfig::default()));
    assert!(e.contains("nethack-dance") && e.contains("nethack-score"), "{e}");

    let mut env = env("nethack-score");
    let mut o = Obs::new(&env);
    env.reset(1, o.buf()).unwrap();
    let e = env.step(28, o.buf()).unwrap_err().to_string();
    assert!(e.contains("28") && e.contains("28 actions"), "{e}");
    // the env is still usable after the refused action
    env.step(19, o.buf()).unwrap();
}

/// With `grid = "tty"` the crop holds terminal cells (character + 256 · colour) from the
/// window ONI's image encoder crops: tty rows y − 6 … y + 5 and columns x − 6 … x + 5, so the
/// hero's `@` (map row y is screen row y + 1, below the message line) sits at crop row 7,
/// column 6. The crop moves with the hero, and cells off the screen are 0.
#[test]
fn tty_crop_is_onis_window_around_the_hero() {
    use oni_env::GridKind;
    let cfg = NetHackConfig { grid: GridKind::Tty, crop_rows: 12, crop_cols: 12, ..Default::default() };
    let mut e = NetHackEnv::new("nethack-score", &cfg).unwrap();
    assert_eq!((e.spec().grid, e.spec().num_glyphs), (GridKind::Tty, oni_env::TTY_CELLS));
    let mut o = Obs::new(&e);
    let mut next = rng(5);
    let (mut frames, mut hero_there) = (0, 0);
    for seed in [3u64, 11, 29] {
        e.reset(seed, o.buf()).unwrap();
        for _ in 0..40 {
            // (a menu or message overlay may hide the hero in some frames)
            frames += 1;
            hero_there += (o.g[7 * 12 + 6] % 256 == b'@' as u16) as usize;
            assert!(o.g.iter().all(|&c| (c as usize) < oni_env::TTY_CELLS));
            let x = e.blstats()[bl::X] as i64;
            if x - 6 < 0 {
                assert_eq!(o.g[7 * 12], 0, "a cell left of the screen is blank");
            }
            let a = (next() % e.spec().num_actions as u64) as usize;
            if e.step(a, o.buf()).unwrap().done {
                break;
            }
        }
    }
    let rows: Vec<String> =
        o.g.chunks(12).map(|r| r.iter().map(|&c| ((c % 256) as u8).max(b' ') as char).collect()).collect();
    assert!(
        hero_there * 10 >= frames * 9,
        "@ at (7, 6) in only {hero_there} of {frames} frames; last crop:\n{}",
        rows.join("\n")
    );
}

/// Seed 8908's game asks a question before the first move; SPACE never answers it, so the
/// start-up declines it instead of giving up ("game did not reach the move loop").
#[test]
fn a_game_that_asks_before_its_first_move_still_starts() {
    let mut e = env("nethack-score");
    let mut o = Obs::new(&e);
    e.reset(8908, o.buf()).expect("seed 8908 starts");
    assert!(e.step(TASK_ACTIONS.iter().position(|&k| k == 's' as i32).unwrap(), o.buf()).is_ok());
}

/// `view = "screen"` is the whole glyph map, fixed to the screen (the crop sizes unused), and
/// `cursor` appends the terminal cursor, which sits on the hero after a move.
#[test]
fn screen_view_is_the_whole_map_and_the_cursor_follows_the_hero() {
    use oni_env::nethack::View;
    let cfg = NetHackConfig { view: View::Screen, cursor: true, crop_rows: 3, ..Default::default() };
    let mut e = NetHackEnv::new("nethack-score", &cfg).unwrap();
    assert_eq!((e.spec().crop_rows, e.spec().crop_cols, e.spec().stats_dim), (ROWS, COLS, 29));
    let mut o = Obs::new(&e);
    e.reset(5, o.buf()).unwrap();
    let mut next = rng(3);
    let mut on_hero = 0;
    for _ in 0..50 {
        let want: Vec<u16> = e.glyph_map().iter().map(|&g| g.max(0) as u16).collect();
        assert_eq!(o.g, want, "the screen view is the glyph map");
        let (row, col) = e.tty_cursor();
        assert_eq!((o.s[27], o.s[28]), (row as f32 / 23.0, col as f32 / 79.0));
        // map row y is terminal row y + 1, below the message line
        let hero = (e.blstats()[bl::Y] as u8 + 1, e.blstats()[bl::X] as u8);
        on_hero += ((row, col) == hero) as usize;
        let a = (next() % e.spec().num_actions as u64) as usize;
        if e.step(a, o.buf()).unwrap().done {
            break;
        }
    }
    // (prompts and menus put it elsewhere in some frames)
    assert!(on_hero >= 30, "the cursor sat on the hero in only {on_hero} of 50 frames");
    // with the tty grid, the screen view is the 24×80 terminal
    let tty = NetHackConfig { view: View::Screen, grid: oni_env::GridKind::Tty, ..Default::default() };
    let spec = oni_env::nethack::spec(&tty).unwrap();
    assert_eq!((spec.crop_rows, spec.crop_cols, spec.stats_dim), (24, 80, 27));
}

/// A question the game puts to the player ("In what direction?" after kick) is in the
/// observation's message but not in the step's caption, unless `prompt_captions`; the
/// answer's outcome is the next step's caption.
#[test]
fn questions_to_the_player_are_left_out_of_captions() {
    use oni_env::vec_env::VecEnv;
    let kick = TASK_ACTIONS.iter().position(|&k| k == 4).unwrap();
    let north = TASK_ACTIONS.iter().position(|&k| k == 'k' as i32).unwrap();
    for prompt_captions in [false, true] {
        let cfg = NetHackConfig { prompt_captions, ..Default::default() };
        let factory: oni_env::vec_env::EnvFactory =
            Box::new(move || Ok(Box::new(NetHackEnv::new("nethack-score", &cfg)?) as Box<dyn Env>));
        let mut v = VecEnv::new(factory, 1, 5, 0).expect("NLE installed (run scripts/setup.sh)");
        v.step(&[kick]).unwrap();
        assert_eq!(message_text(&v.messages), "In what direction?");
        let caption = message_text(&v.last.captions);
        assert_eq!(
            caption,
            if prompt_captions { "In what direction?" } else { "" },
            "prompt_captions = {prompt_captions}"
        );
        v.step(&[north]).unwrap();
        let outcome = message_text(&v.messages);
        assert!(!outcome.is_empty() && !outcome.contains('?'), "kicking north said {outcome:?}");
        assert_eq!(message_text(&v.last.captions), outcome, "the answer's outcome is the caption");
    }
}

/// Climbing the up stairs of level 1 asks "Beware, there will be no return! Still climb?",
/// which the env declines; neither the question nor its echo with the answer ("… [yn] (n) n")
/// is a caption.
#[test]
fn a_declined_question_and_its_echo_are_not_captions() {
    use oni_env::vec_env::VecEnv;
    let up = TASK_ACTIONS.iter().position(|&k| k == '<' as i32).unwrap();
    let cfg = NetHackConfig::default();
    let factory: oni_env::vec_env::EnvFactory =
        Box::new(move || Ok(Box::new(NetHackEnv::new("nethack-score", &cfg)?) as Box<dyn Env>));
    let mut v = VecEnv::new(factory, 1, 5, 0).expect("NLE installed (run scripts/setup.sh)");
    v.step(&[up]).unwrap();
    let shown = message_text(&v.messages);
    assert!(shown.contains("Still climb?"), "the hero did not start on the up stairs: {shown:?}");
    let caption = message_text(&v.last.captions);
    assert_eq!(caption, "", "declining printed nothing else; the question or its echo is in the caption");
}
