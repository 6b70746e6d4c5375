//! Real NetHack through NLE 1.3.0's `libnethack.so`, with no Python at run time.

pub mod ffi;
pub mod game;
pub mod library;
pub mod tasks;

use crate::spec::{write_message, GridKind, ObsBuf, ObsSpec, StepOutcome, TTY_CELLS};
use crate::{Env, EnvError};
use ffi::{bl, glyph, internal, key, COLS, ROWS, TTY_COLS, TTY_ROWS};
use game::{Game, DEFAULT_OPTIONS};
use library::NleLibrary;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use tasks::{Snapshot, Task, TaskState};

/// `[env.nethack]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NetHackConfig {
    /// The `nle` package directory of an nle==1.3.0 install (else ONI_NLE_DIR, else the
    /// project's venv under ~/.cache/oni).
    pub nle_dir: Option<PathBuf>,
    /// What the crop around the hero holds: `glyphs` (NetHack's glyph ids) or `tty` (the
    /// terminal's characters and colours, which ONI's network renders to pixels).
    pub grid: GridKind,
    /// `hero`: a crop of `crop_rows` × `crop_cols` centred on the hero. `screen`: the whole
    /// grid, fixed to the screen (the 21×79 glyph map, or the 24×80 terminal with `grid =
    /// "tty"`); the crop sizes are then not used.
    pub view: View,
    /// Rows of the egocentric crop around the hero.
    pub crop_rows: usize,
    /// Columns of the crop.
    pub crop_cols: usize,
    /// Appends the terminal cursor (row / 23, column / 79) to the stats, after the 27
    /// bottom-line values.
    pub cursor: bool,
    /// `oni` = NLE's 23 task actions + CAST, QUAFF, PRAY, PICKUP, PAY (28); `task` = the 23.
    pub actions: ActionSet,
    /// Episode step cap (NLE's default is 5000).
    pub max_episode_steps: u32,
    /// NetHack's debug ("wizard") mode, for scripted tests and tools, never for training.
    pub wizard: bool,
    /// NLE's seeds `[core, disp]` for the first episode of each env, as NLE's
    /// `env.seed(core, disp, reseed=False)` with `fix_moon_phase=True` sets them for the next
    /// game: that game is the one Python NLE plays. Later episodes (and every episode when
    /// unset) take seeds from the env's episode seed s: core = s, disp = s rotated left by 17.
    pub seeds: Option<[u64; 2]>,
    /// Whether a question the game puts to the player (a frame where NetHack waits for an
    /// answer: "In what direction?", "What do you want to eat? [fg or ?*]", "Really attack
    /// the newt?"), and its echo with the answer, is part of the step's caption, which the
    /// judge is asked about and the intrinsic reward pays for. Off: the caption holds what
    /// happened, and the question's answer is judged by the message it brings. The observation's message shows the
    /// question either way. With it on, an LLM judge called the menus that follow a
    /// command key helpful, and the agent, met with them on tens of thousands of steps, was
    /// paid for opening menus (docs/results/oni-online.md).
    pub prompt_captions: bool,
}

impl Default for NetHackConfig {
    fn default() -> Self {
        NetHackConfig {
            nle_dir: None,
            grid: GridKind::Glyphs,
            view: View::Hero,
            crop_rows: 9,
            crop_cols: 9,
            cursor: false,
            actions: ActionSet::Oni,
            max_episode_steps: 5000,
            wizard: false,
            seeds: None,
            prompt_captions: false,
        }
    }
}

/// The actions a NetHack env offers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ActionSet {
    /// NLE's 23 task actions and CAST, QUAFF, PRAY, PICKUP, PAY (28), as ONI plays.
    #[default]
    Oni,
    /// NLE's 23 task actions.
    Task,
}

/// Which part of the grid an observation holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum View {
    /// A window centred on the hero.
    #[default]
    Hero,
    /// The whole grid as the screen shows it.
    Screen,
}

/// Glyph id used for cells of the crop outside the map.
pub const PAD_GLYPH: u16 = glyph::MAX as u16;
pub const NUM_GLYPHS: usize = glyph::MAX + 1;
pub const STATS_DIM: usize = ffi::BLSTATS;

/// One verified library per directory per process.
pub fn library(cfg: &NetHackConfig) -> Result<Arc<NleLibrary>, EnvError> {
    static CACHE: OnceLock<Mutex<HashMap<Option<PathBuf>, Arc<NleLibrary>>>> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap();
    let key = cfg.nle_dir.clone().or_else(|| std::env::var("ONI_NLE_DIR").ok().map(PathBuf::from));
    if let Some(l) = cache.get(&key) {
        return Ok(l.clone());
    }
    let lib = Arc::new(NleLibrary::locate(key.as_deref())?);
    cache.insert(key, lib.clone());
    Ok(lib)
}

/// Whether the env offers ONI's five extra actions.
fn oni_actions(cfg: &NetHackConfig) -> bool {
    cfg.actions == ActionSet::Oni
}

/// The observation shape of a NetHack task under `cfg`, without loading NetHack.
pub fn spec(cfg: &NetHackConfig) -> Result<ObsSpec, EnvError> {
    let (rows, cols) = match cfg.grid {
        GridKind::Glyphs => (ROWS, COLS),
        GridKind::Tty => (TTY_ROWS, TTY_COLS),
    };
    let (crop_rows, crop_cols) = match cfg.view {
        View::Hero => (cfg.crop_rows, cfg.crop_cols),
        View::Screen => (rows, cols),
    };
    if crop_rows == 0 || crop_cols == 0 || crop_rows > rows * 2 || crop_cols > cols * 2 {
        return Err(EnvError::BadSetting {
            key: "env.nethack.crop_rows/crop_cols".into(),
            reason: format!(
                "must be 1..={} / 1..={} (twice the {rows}×{cols} {:?} grid)",
                rows * 2,
                cols * 2,
                cfg.grid
            ),
        });
    }
    Ok(ObsSpec {
        crop_rows,
        crop_cols,
        num_glyphs: match cfg.grid {
            GridKind::Glyphs => NUM_GLYPHS,
            GridKind::Tty => TTY_CELLS,
        },
        grid: cfg.grid,
        stats_dim: STATS_DIM + if cfg.cursor { 2 } else { 0 },
        num_actions: tasks::action_keys(oni_actions(cfg)).len(),
    })
}

pub struct NetHackEnv {
    name: String,
    game: Game,
    task: TaskState,
    keys: Vec<i32>,
    spec: ObsSpec,
    max_steps: u32,
    steps: u32,
    last: Snapshot,
    skip_prompts: bool,
    /// The step's messages, as the observation shows them.
    caption: Vec<u8>,
    /// The step's messages without the questions to the player (`prompt_captions` off).
    outcome: Vec<u8>,
    /// The last question put to the player, until the frame after it.
    question: Vec<u8>,
    prompt_captions: bool,
    seeds: Option<[u64; 2]>,
    view: View,
}

impl NetHackEnv {
    pub fn new(name: &str, cfg: &NetHackConfig) -> Result<Self, EnvError> {
        let task = tasks::parse(name)?;
        let spec = spec(cfg)?;
        let lib = library(cfg)?;
        let mut options = match task {
            Task::Gold => DEFAULT_OPTIONS.replace("pickup_types:$?!/", "pickup_types:$"),
            _ => DEFAULT_OPTIONS.to_string(),
        };
        if cfg.wizard {
            options.push_str(",playmode:debug");
        }
        Ok(NetHackEnv {
            name: name.into(),
            game: Game::new(&lib, &options)?,
            task: TaskState::new(task),
            keys: tasks::action_keys(oni_actions(cfg)),
            spec,
            max_steps: cfg.max_episode_steps.max(1),
            steps: 0,
            last: Snapshot::default(),
            skip_prompts: task != Task::Challenge,
            caption: Vec::with_capacity(256),
            outcome: Vec::with_capacity(256),
            question: Vec::new(),
            prompt_captions: cfg.prompt_captions,
            seeds: cfg.seeds,
            view: cfg.view,
        })
    }

    /// Bottom-line stats of the current frame (tests and tools).
    pub fn blstats(&self) -> &[std::os::raw::c_long] {
        &self.game.buf.blstats
    }

    /// The full 21×79 glyph map of the current frame.
    pub fn glyph_map(&self) -> &[i16] {
        &self.game.buf.glyphs
    }

    /// The terminal cursor `(row, column)` of the current frame.
    pub fn tty_cursor(&self) -> (u8, u8) {
        (self.game.buf.tty_cursor[0], self.game.buf.tty_cursor[1])
    }

    /// Sends one raw key to the game, outside the action set (scripted tests and tools,
    /// e.g. wizard-mode commands); returns true when the game ended.
    pub fn send_key(&mut self, key: i32) -> Result<bool, EnvError> {
        let done = self.game.step_key(key)?;
        self.clear_messages();
        if !done {
            self.collect_message();
        }
        Ok(done)
    }

    /// The instance's private NetHack var directory (removed when the env is dropped).
    pub fn var_dir(&self) -> &std::path::Path {
        self.game.var_dir()
    }

    /// This frame's message line.
    pub fn message(&self) -> String {
        String::from_utf8_lossy(self.frame_message()).into_owned()
    }

    pub fn how_done(&self) -> i32 {
        self.game.how_done()
    }

    fn frame_message(&self) -> &[u8] {
        let m = &self.game.buf.message;
        let end = m.iter().position(|&b| b == 0).unwrap_or(m.len());
        let text = &m[..end];
        let text = text.strip_suffix(b"--More--").unwrap_or(text);
        text.trim_ascii_end()
    }

    /// Adds this frame's message to the step's caption (messages of one step joined by two
    /// spaces, as NetHack's own message line does). A frame's question to the player is left
    /// out of `outcome`, and so is its echo with the answer ("Still climb? [yn] (n) n"),
    /// which the next frame prints once the game no longer waits.
    fn collect_message(&mut self) {
        let m = self.frame_message().to_vec();
        if m.is_empty() || self.caption.ends_with(&m) {
            return;
        }
        append_message(&mut self.caption, &m);
        let st = &self.game.buf.internal;
        if st[internal::IN_YN_FUNCTION] != 0 || st[internal::IN_GETLIN] != 0 {
            self.question = m;
            return;
        }
        let question = std::mem::take(&mut self.question);
        let rest = match m.strip_prefix(question.as_slice()).filter(|_| !question.is_empty()) {
            // the echoed answer is the first word after the question
            Some(echo) => {
                let echo = echo.trim_ascii_start();
                echo[echo.iter().position(|b| b.is_ascii_whitespace()).unwrap_or(echo.len())..].trim_ascii()
            }
            None => &m[..],
        };
        if !rest.is_empty() && !self.outcome.ends_with(rest) {
            append_message(&mut self.outcome, rest);
        }
    }

    fn clear_messages(&mut self) {
        self.caption.clear();
        self.outcome.clear();
    }

    fn snapshot(&self, done: bool) -> Snapshot {
        tasks::snapshot(&self.game.buf.blstats, &self.game.buf.internal, !done && self.game.in_normal_game())
    }

    /// NLE's `_perform_known_steps`: dismiss --More--, leave text prompts, and refuse yes/no
    /// questions except those a policy should answer (eat, attack, direction, pray).
    fn skip_known_prompts(&mut self, mut done: bool) -> Result<bool, EnvError> {
        let mut guard = 0;
        while !done {
            guard += 1;
            if guard > 100 {
                break;
            }
            let st = &self.game.buf.internal;
            let k = if st[internal::WAITING_FOR_SPACE] != 0 {
                key::SPACE
            } else if st[internal::IN_GETLIN] != 0 {
                key::ESC
            } else if st[internal::IN_YN_FUNCTION] != 0 {
                let msg = self.game.buf.message;
                let keep = [&b"eat"[..], b"attack", b"direction?", b"pray"]
                    .iter()
                    .any(|w| msg.windows(w.len()).any(|x| x == *w));
                if keep {
                    break;
                }
                // NLE declines one question and stops there, whatever the game shows next
                done = self.game.step_key(key::ESC)?;
                if !done {
                    self.collect_message();
                }
                break;
            } else {
                break;
            };
            done = self.game.step_key(k)?;
            if !done {
                self.collect_message();
            }
        }
        Ok(done)
    }

    fn write_obs(&self, obs: ObsBuf<'_>) {
        let b = &self.game.buf;
        let (hx, hy) = (b.blstats[bl::X] as i64, b.blstats[bl::Y] as i64);
        let (cr, cc) = (self.spec.crop_rows as i64, self.spec.crop_cols as i64);
        // Both grids take rows y − R/2 … and columns x − C/2 … of their own array. On the
        // tty (a message line above the map) this is the window ONI's image encoder crops,
        // with the hero one row below the centre.
        let (r0, c0) = match self.view {
            View::Hero => (hy - cr / 2, hx - cc / 2),
            View::Screen => (0, 0),
        };
        let (rows, cols) = match self.spec.grid {
            GridKind::Glyphs => (ROWS as i64, COLS as i64),
            GridKind::Tty => (TTY_ROWS as i64, TTY_COLS as i64),
        };
        for r in 0..cr {
            for c in 0..cc {
                let (y, x) = (r0 + r, c0 + c);
                let inside = y >= 0 && x >= 0 && y < rows && x < cols;
                obs.glyphs[(r * cc + c) as usize] = match (self.spec.grid, inside) {
                    (GridKind::Glyphs, true) => b.glyphs[(y * cols + x) as usize].max(0) as u16,
                    (GridKind::Glyphs, false) => PAD_GLYPH,
                    (GridKind::Tty, true) => {
                        let i = (y * cols + x) as usize;
                        b.tty_chars[i] as u16 + 256 * (b.tty_colors[i] as u16 & 15)
                    }
                    (GridKind::Tty, false) => 0,
                };
            }
        }
        let (bottom_line, cursor) = obs.stats.split_at_mut(STATS_DIM);
        normalise_stats(&b.blstats, bottom_line);
        if let [row, col] = cursor {
            (*row, *col) = (b.tty_cursor[0] as f32 / 23.0, b.tty_cursor[1] as f32 / 79.0);
        }
        write_message(obs.message, &self.caption);
    }
}

fn append_message(to: &mut Vec<u8>, m: &[u8]) {
    if !to.is_empty() {
        to.extend_from_slice(b"  ");
    }
    to.extend_from_slice(m);
}

/// The 27 bottom-line stats scaled to roughly [−1, 1]: positions and attributes by their
/// ranges, hit points and energy as fractions, open-ended counters (score, gold,
/// experience, time) by log scale.
pub fn normalise_stats(bls: &[std::os::raw::c_long], out: &mut [f32]) {
    let v = |i: usize| bls[i] as f32;
    let log = |x: f32| (1.0 + x.max(0.0)).ln() / 10.0;
    let frac = |a: f32, b: f32| if b > 0.0 { a / b } else { 0.0 };
    let vals = [
        v(0) / 79.0,
        v(1) / 21.0,
        v(2) / 25.0,
        v(3) / 125.0,
        v(4) / 25.0,
        v(5) / 25.0,
        v(6) / 25.0,
        v(7) / 25.0,
        v(8) / 25.0,
        log(v(9)),
        frac(v(10), v(11)),
        v(11) / 100.0,
        v(12) / 50.0,
        log(v(13)),
        frac(v(14), v(15)),
        v(15) / 100.0,
        v(16) / 10.0,
        v(17) / 30.0,
        v(18) / 30.0,
        log(v(19)),
        log(v(20)),
        v(21) / 6.0,
        v(22) / 5.0,
        v(23) / 10.0,
        v(24) / 50.0,
        (bls[25] as u32).count_ones() as f32 / 13.0,
        v(26),
    ];
    out.copy_from_slice(&vals);
}

impl Env for NetHackEnv {
    fn spec(&self) -> &ObsSpec {
        &self.spec
    }

    /// NetHack's own 24×80 terminal.
    fn screen(&self) -> Option<crate::Screen> {
        let b = &self.game.buf;
        Some(crate::Screen {
            rows: ffi::TTY_ROWS,
            cols: ffi::TTY_COLS,
            chars: b.tty_chars.to_vec(),
            colors: b.tty_colors.iter().map(|&c| c as u8 & 15).collect(),
            cursor: Some((b.tty_cursor[0] as u16, b.tty_cursor[1] as u16)),
        })
    }

    fn caption(&self) -> Option<&[u8]> {
        (!self.prompt_captions).then_some(self.outcome.as_slice())
    }

    fn reset(&mut self, seed: u64, obs: ObsBuf<'_>) -> Result<(), EnvError> {
        let [core, disp] = self.seeds.take().unwrap_or([seed, seed.rotate_left(17)]);
        self.game.start(core, disp)?;
        self.task.reset();
        self.steps = 0;
        self.clear_messages();
        self.question.clear();
        self.collect_message();
        self.last = self.snapshot(false);
        self.write_obs(obs);
        Ok(())
    }

    fn step(&mut self, action: usize, obs: ObsBuf<'_>) -> Result<StepOutcome, EnvError> {
        let Some(&k) = self.keys.get(action) else {
            return Err(EnvError::ActionOutOfRange { env: self.name.clone(), action, num_actions: self.keys.len() });
        };
        self.clear_messages();
        let mut done = self.game.step_key(k)?;
        if !done {
            self.collect_message();
        }
        if self.skip_prompts || self.game.buf.program_state[0] != 0 {
            done = self.skip_known_prompts(done)?;
        }
        self.steps += 1;
        let new = self.snapshot(done);
        let hero = (self.game.buf.blstats[bl::X] as i64, self.game.buf.blstats[bl::Y] as i64);
        let on_stairs = !done && self.game.buf.internal[internal::ON_DOWN_STAIRS] != 0;
        let aborted = self.steps >= self.max_steps;
        let out = self.task.evaluate(&self.last, &new, &self.game.buf.glyphs, hero, on_stairs, done, aborted);
        if !done {
            self.last = new;
        }
        // the cap cuts the episode (NLE's ABORTED) unless the game itself ended
        let truncated = aborted && !done;
        self.write_obs(obs);
        // a finished game's bottom line is no longer valid: its score is the last one seen
        let score = Some(self.last.score as f32);
        Ok(StepOutcome { reward: out.reward, done: done || out.end || aborted, success: out.success, truncated, score })
    }
}
