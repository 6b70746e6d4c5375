//! One NetHack game in a private library copy: buffers the library writes into, a private
//! var directory, start/step/end.

use super::ffi::{self, NleObs, NleSettings};
use super::library::{Loaded, NleLibrary, PrivateCopy};
use crate::EnvError;
use std::os::raw::{c_char, c_long, c_void};
use std::path::Path;

/// NLE's default options (its task environments use exactly these).
pub const DEFAULT_OPTIONS: &str = "autopickup,color,disclose:+i +a +v +g +c +o,mention_walls,nobones,nocmdassist,\
nolegacy,nosparkle,pickup_burden:unencumbered,pickup_types:$?!/,runmode:teleport,showexp,showscore,time";

/// What the library writes; boxed so the pointers handed to C never move.
pub struct Buffers {
    pub glyphs: [i16; ffi::MAP],
    pub blstats: [c_long; ffi::BLSTATS],
    pub message: [u8; ffi::MESSAGE],
    pub program_state: [i32; ffi::PROGRAM_STATE],
    pub internal: [i32; ffi::INTERNAL],
    pub misc: [i32; ffi::MISC],
    pub tty_chars: [u8; ffi::TTY_ROWS * ffi::TTY_COLS],
    pub tty_colors: [i8; ffi::TTY_ROWS * ffi::TTY_COLS],
    pub tty_cursor: [u8; 2],
}

pub struct Game {
    // drop order matters: the loaded copy goes before the memfd it came from
    loaded: Option<Loaded>,
    copy: PrivateCopy,
    ctx: *mut c_void,
    finished: bool,
    obs: Box<NleObs>,
    pub buf: Box<Buffers>,
    hackdir: tempfile::TempDir,
    options: String,
}

// A game is owned by one env and stepped by one thread at a time.
unsafe impl Send for Game {}

fn var_dir(lib: &NleLibrary) -> Result<tempfile::TempDir, EnvError> {
    let base = if Path::new("/dev/shm").is_dir() { Path::new("/dev/shm").to_path_buf() } else { std::env::temp_dir() };
    let io = |e: std::io::Error| EnvError::Failed { env: "nethack".into(), reason: format!("var dir: {e}") };
    let dir = tempfile::Builder::new().prefix("oni-nle-").tempdir_in(base).map_err(io)?;
    std::os::unix::fs::symlink(&lib.nhdat, dir.path().join("nhdat")).map_err(io)?;
    for f in ["perm", "record", "logfile", "xlogfile"] {
        std::fs::File::create(dir.path().join(f)).map_err(io)?;
    }
    std::fs::create_dir(dir.path().join("save")).map_err(io)?;
    Ok(dir)
}

fn copy_cstr(dst: &mut [c_char], s: &str) -> Result<(), EnvError> {
    if s.len() + 1 > dst.len() {
        return Err(EnvError::Failed { env: "nethack".into(), reason: format!("setting too long: {s}") });
    }
    for (d, b) in dst.iter_mut().zip(s.bytes()) {
        *d = b as c_char;
    }
    dst[s.len()] = 0;
    Ok(())
}

impl Game {
    /// The library also fills the terminal's cells and cursor on every step: a copy of
    /// 4 KB, read by the crop of `grid = "tty"`, the cursor stats and recordings.
    pub fn new(lib: &NleLibrary, options: &str) -> Result<Game, EnvError> {
        // SAFETY: every field of Buffers and NleObs is valid when zeroed (numbers, null pointers).
        let mut buf: Box<Buffers> = unsafe { Box::new_zeroed().assume_init() };
        let mut obs: Box<NleObs> = unsafe { Box::new_zeroed().assume_init() };
        obs.glyphs = buf.glyphs.as_mut_ptr();
        obs.blstats = buf.blstats.as_mut_ptr();
        obs.message = buf.message.as_mut_ptr();
        obs.program_state = buf.program_state.as_mut_ptr();
        obs.internal = buf.internal.as_mut_ptr();
        obs.misc = buf.misc.as_mut_ptr();
        obs.tty_chars = buf.tty_chars.as_mut_ptr();
        obs.tty_colors = buf.tty_colors.as_mut_ptr();
        obs.tty_cursor = buf.tty_cursor.as_mut_ptr();
        Ok(Game {
            loaded: None,
            copy: PrivateCopy::new(lib)?,
            ctx: std::ptr::null_mut(),
            finished: true,
            obs,
            buf,
            hackdir: var_dir(lib)?,
            options: options.to_string(),
        })
    }

    /// Ends any running game, puts the library's globals back as loaded (loading it the first
    /// time) and starts a game from NLE's seeds.
    pub fn start(&mut self, core: u64, disp: u64) -> Result<(), EnvError> {
        self.close();
        self.clean_level_files();
        let loaded = match self.loaded.take() {
            Some(mut l) => {
                l.restore();
                l
            }
            None => self.copy.load()?,
        };
        // SAFETY: all-zero is a valid NleSettings (byte arrays, integers, bools).
        let mut s: Box<NleSettings> = unsafe { Box::new_zeroed().assume_init() };
        copy_cstr(&mut s.hackdir, &self.hackdir.path().display().to_string())?;
        copy_cstr(&mut s.options, &format!("{},name:Agent-mon-hum-neu-mal", self.options))?;
        s.spawn_monsters = 1;
        // Fixed seeds and a moon phase derived from them: the same seeds are the same game.
        s.initial_seeds.seeds = [core as _, disp as _];
        s.initial_seeds.reseed = 0;
        s.initial_seeds.use_init_seeds = true;
        s.fix_moon_phase = true;
        s.time_seed = core.wrapping_add(1) as _;
        s.time_seed_is_set = true;
        self.obs.done = 0;
        // SAFETY: obs points at our boxed buffers, which outlive the game (see `close`).
        let ctx = unsafe { (loaded.start)(&mut *self.obs, std::ptr::null_mut(), &mut *s) };
        self.loaded = Some(loaded);
        self.ctx = ctx;
        self.finished = self.obs.done != 0;
        if self.finished || ctx.is_null() {
            // whatever state the failed start left is not restored: the next start reloads
            self.close();
            self.loaded = None;
            return Err(EnvError::Failed {
                env: "nethack".into(),
                reason: format!("NetHack ended during start-up (how_done {}); is nhdat intact?", self.obs.how_done),
            });
        }
        let mut n = 0;
        while self.buf.program_state[ffi::IN_MOVELOOP] == 0 {
            n += 1;
            // Some games ask a question before the first move (naming a scroll of scare
            // monster the hero starts on, say): decline it, as SPACE would never answer it.
            let st = &self.buf.internal;
            let asking = st[ffi::internal::IN_GETLIN] != 0 || st[ffi::internal::IN_YN_FUNCTION] != 0;
            let k = if asking { ffi::key::ESC } else { ffi::key::SPACE };
            if n > 1000 || self.step_key(k)? {
                return Err(EnvError::Failed {
                    env: "nethack".into(),
                    reason: "game did not reach the move loop".into(),
                });
            }
        }
        Ok(())
    }

    /// Sends one key; true when the game is over (then it must not be stepped again).
    pub fn step_key(&mut self, key: i32) -> Result<bool, EnvError> {
        let Some(l) = &self.loaded else {
            return Err(EnvError::Failed { env: "nethack".into(), reason: "stepped without a running game".into() });
        };
        if self.finished {
            return Err(EnvError::Failed { env: "nethack".into(), reason: "stepped a finished game".into() });
        }
        self.obs.action = key;
        // SAFETY: ctx came from this copy's nle_start and the game is not finished.
        unsafe { (l.step)(self.ctx, &mut *self.obs) };
        self.finished = self.obs.done != 0;
        Ok(self.finished)
    }

    pub fn var_dir(&self) -> &Path {
        self.hackdir.path()
    }

    pub fn in_normal_game(&self) -> bool {
        self.obs.in_normal_game != 0
    }

    pub fn how_done(&self) -> i32 {
        self.obs.how_done
    }

    /// Ends the game (while the buffers are still alive) so that its heap is freed; the copy
    /// stays loaded for the next game.
    fn close(&mut self) {
        if let Some(l) = &self.loaded {
            if !self.ctx.is_null() {
                // SAFETY: ctx is this copy's and obs is still alive. A game cut short has not
                // closed its windows: NetHack's own end would have (freeing the window port's
                // state, which the restore would otherwise lose track of) before the
                // `freedynamicdata` that nle_end runs. NULL: no farewell line to print.
                unsafe {
                    if !self.finished {
                        (l.exit_windows)(std::ptr::null());
                    }
                    (l.end)(self.ctx)
                };
            }
        }
        self.ctx = std::ptr::null_mut();
        self.finished = true;
    }

    /// Level files of an unfinished game, and score files that grow with every game.
    fn clean_level_files(&self) {
        if let Ok(entries) = std::fs::read_dir(self.hackdir.path()) {
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.contains("lock") && name != "perm" {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        for f in ["record", "logfile", "xlogfile"] {
            let _ = std::fs::File::create(self.hackdir.path().join(f));
        }
    }
}

impl Drop for Game {
    fn drop(&mut self) {
        self.close();
    }
}
