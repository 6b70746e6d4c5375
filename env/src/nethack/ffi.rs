//! The C interface of NLE 1.3.0's `libnethack.so` (`include/nletypes.h`, `include/nle.h`).
//! The layouts are pinned by size assertions; the loader refuses any other NLE version.

use std::os::raw::{c_char, c_int, c_long, c_ulong, c_void};

pub const ROWS: usize = 21;
pub const COLS: usize = 79;
pub const MAP: usize = ROWS * COLS;
pub const BLSTATS: usize = 27;
pub const MESSAGE: usize = 256;
pub const PROGRAM_STATE: usize = 6;
pub const INTERNAL: usize = 9;
pub const MISC: usize = 3;
pub const TTY_ROWS: usize = 24;
pub const TTY_COLS: usize = 80;

#[repr(C)]
pub struct NleObs {
    pub action: c_int,
    pub done: c_int,
    pub in_normal_game: c_char,
    pub how_done: c_int,
    pub glyphs: *mut i16,
    pub chars: *mut u8,
    pub colors: *mut u8,
    pub specials: *mut u8,
    pub blstats: *mut c_long,
    pub message: *mut u8,
    pub program_state: *mut c_int,
    pub internal: *mut c_int,
    pub inv_glyphs: *mut i16,
    pub inv_strs: *mut u8,
    pub inv_letters: *mut u8,
    pub inv_oclasses: *mut u8,
    pub screen_descriptions: *mut u8,
    pub tty_chars: *mut u8,
    pub tty_colors: *mut i8,
    pub tty_cursor: *mut u8,
    pub misc: *mut c_int,
}

#[repr(C)]
pub struct NleSeedsInit {
    pub seeds: [c_ulong; 2],
    pub reseed: c_char,
    pub use_init_seeds: bool,
    pub lgen_seed: c_ulong,
    pub use_lgen_seed: bool,
}

#[repr(C)]
pub struct NleSettings {
    pub hackdir: [c_char; 4096],
    pub scoreprefix: [c_char; 4096],
    pub options: [c_char; 32768],
    pub wizkit: [c_char; 4096],
    pub spawn_monsters: c_int,
    pub ttyrecname: [c_char; 4096],
    pub initial_seeds: NleSeedsInit,
    pub fix_moon_phase: bool,
    pub time_seed: c_ulong,
    pub time_seed_is_set: bool,
}

const _: () = assert!(std::mem::size_of::<NleObs>() == 152);
const _: () = assert!(std::mem::size_of::<NleSeedsInit>() == 40);
const _: () = assert!(std::mem::size_of::<NleSettings>() == 49224);

pub type StartFn = unsafe extern "C" fn(*mut NleObs, *mut c_void, *mut NleSettings) -> *mut c_void;
pub type StepFn = unsafe extern "C" fn(*mut c_void, *mut NleObs) -> *mut c_void;
pub type EndFn = unsafe extern "C" fn(*mut c_void);
/// NLE's window port's `exit_nhwindows` (a static C++ member, C calling convention).
pub type ExitWindowsFn = unsafe extern "C" fn(*const c_char);
pub type VersionFn = unsafe extern "C" fn(*mut c_char) -> *mut c_char;

/// blstats indices.
pub mod bl {
    pub const X: usize = 0;
    pub const Y: usize = 1;
    pub const SCORE: usize = 9;
    pub const HP: usize = 10;
    pub const HPMAX: usize = 11;
    pub const DEPTH: usize = 12;
    pub const GOLD: usize = 13;
    pub const TIME: usize = 20;
    pub const HUNGER: usize = 21;
    pub const DNUM: usize = 23;
    pub const DLEVEL: usize = 24;
}

/// `internal` indices.
pub mod internal {
    pub const IN_YN_FUNCTION: usize = 1;
    pub const IN_GETLIN: usize = 2;
    pub const WAITING_FOR_SPACE: usize = 3;
    pub const ON_DOWN_STAIRS: usize = 4;
    pub const HUNGER: usize = 7;
}

/// `program_state` index of "in the move loop".
pub const IN_MOVELOOP: usize = 3;

/// Glyph numbering of NetHack 3.6.7 as built into NLE 1.3.0.
pub mod glyph {
    pub const MAX: usize = 5976;
    pub const PET_OFF: i16 = 381;
    pub const INVIS_OFF: i16 = 762;
    pub const CMAP_OFF: i16 = 2359;
    /// Blank / unexplored.
    pub const STONE: i16 = CMAP_OFF;
    pub const ORACLE: i16 = 270;
    /// S_dnstair is cmap index 24.
    pub const DOWN_STAIRS: i16 = CMAP_OFF + 24;
}

pub mod key {
    pub const SPACE: i32 = 32;
    pub const ESC: i32 = 27;
    pub const QUIT: i32 = 0x80 | b'q' as i32;
    pub const YES: i32 = b'y' as i32;
}
