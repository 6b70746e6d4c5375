//! NLE's task definitions (nle/env/tasks.py, 1.3.0) in Rust: rewards, ends, action sets.

use super::ffi::{bl, glyph, internal, COLS, ROWS};
use crate::EnvError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Score,
    Staircase,
    /// On the down staircase with the pet in the 3×3 window (NLE's StaircasePet).
    StaircasePet,
    /// Reach this dungeon level (ONI's Staircase-lvl3 / lvl4).
    StaircaseLevel(i64),
    Oracle,
    Gold,
    Eat,
    Scout,
    Challenge,
}

pub const TASKS: &[(&str, Task)] = &[
    ("nethack-score", Task::Score),
    ("nethack-staircase", Task::Staircase),
    ("nethack-staircase-pet", Task::StaircasePet),
    ("nethack-staircase-lvl3", Task::StaircaseLevel(3)),
    ("nethack-staircase-lvl4", Task::StaircaseLevel(4)),
    ("nethack-oracle", Task::Oracle),
    ("nethack-gold", Task::Gold),
    ("nethack-eat", Task::Eat),
    ("nethack-scout", Task::Scout),
    ("nethack-challenge", Task::Challenge),
];

pub fn parse(name: &str) -> Result<Task, EnvError> {
    TASKS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .ok_or_else(|| EnvError::UnknownEnv(name.into(), TASKS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")))
}

/// NLE's 23 task actions (key codes), in its order.
pub const TASK_ACTIONS: [i32; 23] =
    [13, 107, 108, 106, 104, 117, 110, 98, 121, 75, 76, 74, 72, 85, 78, 66, 89, 60, 62, 46, 4, 101, 115];
/// ONI's additions: CAST, QUAFF, PRAY (M-p), PICKUP, PAY.
pub const ONI_EXTRA_ACTIONS: [i32; 5] = [90, 113, 240, 44, 112];

pub fn action_keys(extended: bool) -> Vec<i32> {
    let mut v = TASK_ACTIONS.to_vec();
    if extended {
        v.extend(ONI_EXTRA_ACTIONS);
    }
    v
}

/// The state a reward compares across one step.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub in_normal_game: bool,
    pub score: i64,
    pub gold: i64,
    pub time: i64,
    pub hunger: i64,
    pub depth: i64,
    pub dnum: i64,
    pub dlevel: i64,
}

pub struct TaskState {
    pub task: Task,
    /// Steps on which game time did not advance, in a row.
    frozen_steps: u32,
    /// Scout: explored cells per (dungeon, level).
    explored: std::collections::HashMap<(i64, i64), i64>,
    /// Challenge: steps without game time moving.
    no_progress: u32,
}

/// NetHackScore's per-step penalty when game time does not advance.
pub const PENALTY_STEP: f32 = -0.01;
pub const CHALLENGE_NO_PROGRESS_LIMIT: u32 = 5000;

pub struct Outcome {
    pub reward: f32,
    pub success: bool,
    /// The task ends the episode (success or an abort), besides the game ending.
    pub end: bool,
}

impl TaskState {
    pub fn new(task: Task) -> Self {
        TaskState { task, frozen_steps: 0, explored: Default::default(), no_progress: 0 }
    }

    pub fn reset(&mut self) {
        self.explored.clear();
        self.no_progress = 0;
    }

    /// NetHackScore._get_time_penalty in "constant" mode.
    fn time_penalty(&mut self, old: &Snapshot, new: &Snapshot) -> f32 {
        if old.time == new.time {
            self.frozen_steps += 1;
        } else {
            self.frozen_steps = 0;
        }
        if self.frozen_steps > 0 {
            PENALTY_STEP
        } else {
            0.0
        }
    }

    /// The reward of one step and whether the task ends the episode. `glyphs` is the full
    /// 21×79 map; `on_down_stairs` comes from the library's internal state. `aborted`: the
    /// step cap is reached with this step; as in NLE, that check comes before the task's, so a
    /// goal reached on the capped step is not a success and earns no goal reward.
    #[allow(clippy::too_many_arguments)]
    pub fn evaluate(
        &mut self,
        old: &Snapshot,
        new: &Snapshot,
        glyphs: &[i16],
        hero: (i64, i64),
        on_down_stairs: bool,
        game_over: bool,
        aborted: bool,
    ) -> Outcome {
        let mut end = false;
        let mut success = false;
        let reward = match self.task {
            Task::Score => {
                let d = if new.in_normal_game { (new.score - old.score) as f32 } else { 0.0 };
                d + self.time_penalty(old, new)
            }
            Task::Challenge => {
                if old.time == new.time {
                    self.no_progress += 1;
                } else {
                    self.no_progress = 0;
                }
                end = self.no_progress >= CHALLENGE_NO_PROGRESS_LIMIT;
                if new.in_normal_game {
                    (new.score - old.score) as f32
                } else {
                    0.0
                }
            }
            Task::Staircase | Task::StaircasePet | Task::StaircaseLevel(_) | Task::Oracle => {
                success = !game_over
                    && !aborted
                    && match self.task {
                        Task::Staircase => on_down_stairs,
                        Task::StaircasePet => on_down_stairs && near_pet(glyphs, hero),
                        Task::StaircaseLevel(level) => new.in_normal_game && new.depth >= level,
                        _ => near_oracle(glyphs, hero),
                    };
                end = success;
                (if success { 1.0 } else { 0.0 }) + self.time_penalty(old, new)
            }
            Task::Gold => {
                if !new.in_normal_game {
                    0.0
                } else {
                    (new.gold - old.gold) as f32 + self.time_penalty(old, new)
                }
            }
            Task::Eat => {
                if !new.in_normal_game {
                    0.0
                } else {
                    (new.hunger - old.hunger).max(0) as f32 + self.time_penalty(old, new)
                }
            }
            Task::Scout => {
                if !new.in_normal_game {
                    0.0
                } else {
                    // cells seen on this level minus those seen before (all of them on a new level)
                    let seen = glyphs.iter().filter(|&&g| g != glyph::STONE).count() as i64;
                    let before = self.explored.insert((new.dnum, new.dlevel), seen).unwrap_or(0);
                    (seen - before) as f32 + self.time_penalty(old, new)
                }
            }
        };
        Outcome { reward, success, end }
    }
}

/// NetHackOracle: the Oracle's glyph in the 3×3 window around the hero (own cell
/// included; NLE's slicing leaves the window empty at row or column 0).
/// Whether any glyph of the 3×3 window around the hero is `wanted` (NLE slices that window
/// the same way; a hero on the map's first row or column sees none).
fn near(glyphs: &[i16], (x, y): (i64, i64), wanted: impl Fn(i16) -> bool) -> bool {
    if x <= 0 || y <= 0 {
        return false;
    }
    for r in (y - 1)..=(y + 1) {
        for c in (x - 1)..=(x + 1) {
            if r < ROWS as i64 && c < COLS as i64 && wanted(glyphs[(r as usize) * COLS + c as usize]) {
                return true;
            }
        }
    }
    false
}

fn near_oracle(glyphs: &[i16], hero: (i64, i64)) -> bool {
    near(glyphs, hero, |g| g == glyph::ORACLE)
}

fn near_pet(glyphs: &[i16], hero: (i64, i64)) -> bool {
    near(glyphs, hero, |g| (glyph::PET_OFF..glyph::INVIS_OFF).contains(&g))
}

pub fn snapshot(blstats: &[std::os::raw::c_long], internal_state: &[i32], in_normal_game: bool) -> Snapshot {
    Snapshot {
        in_normal_game,
        score: blstats[bl::SCORE] as i64,
        gold: blstats[bl::GOLD] as i64,
        time: blstats[bl::TIME] as i64,
        hunger: internal_state[internal::HUNGER] as i64,
        depth: blstats[bl::DEPTH] as i64,
        dnum: blstats[bl::DNUM] as i64,
        dlevel: blstats[bl::DLEVEL] as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pet_counts_only_inside_the_window_around_the_hero() {
        let mut g = vec![glyph::STONE; ROWS * COLS];
        let hero = (10, 5);
        assert!(!near_pet(&g, hero));
        g[6 * COLS + 12] = glyph::PET_OFF + 3; // two columns right: outside
        assert!(!near_pet(&g, hero));
        g[4 * COLS + 11] = glyph::PET_OFF + 3; // up-right diagonal
        assert!(near_pet(&g, hero));
        g[4 * COLS + 11] = glyph::PET_OFF - 1; // a hostile monster
        assert!(!near_pet(&g, hero));
    }
}
