//! keyroom: a small NetHack-flavoured gridworld written in pure Rust.
//!
//! Every episode builds a dungeon from its seed: a row of rooms (joined by corridors, or in
//! the small variant sharing a wall), the last room (the one holding the down staircase)
//! closed by the only locked door, and a brass key somewhere on the hero's side of it. The goal is to fetch the key, unlock the door, walk to
//! the stairs and descend. Gold, a fountain and a harmless newt are distractors.
//!
//! The env is stepped in the actor's hot loop, so a step never allocates: the map lives in
//! reused buffers, the glyph layer is kept pre-rendered (with a stone border wide enough that
//! the egocentric crop is a plain copy of 9 row slices), and messages are assembled in a
//! fixed stack buffer.

use crate::spec::{write_message, ObsBuf, ObsSpec, StepOutcome};
use crate::{Env, EnvError};
use std::time::Instant;

/// Glyph ids written into the observation crop (`num_glyphs` = 16, ids 12..16 unused).
pub mod glyph {
    pub const STONE: u16 = 0;
    pub const WALL: u16 = 1;
    pub const FLOOR: u16 = 2;
    pub const CORRIDOR: u16 = 3;
    pub const LOCKED_DOOR: u16 = 4;
    pub const OPEN_DOOR: u16 = 5;
    pub const KEY: u16 = 6;
    pub const STAIRS_DOWN: u16 = 7;
    pub const GOLD: u16 = 8;
    pub const NEWT: u16 = 9;
    pub const FOUNTAIN: u16 = 10;
    pub const HERO: u16 = 11;
    pub const NUM_GLYPHS: usize = 16;
}

/// Action ids (`num_actions` = 8).
pub mod action {
    pub const NORTH: usize = 0;
    pub const EAST: usize = 1;
    pub const SOUTH: usize = 2;
    pub const WEST: usize = 3;
    /// `,`
    pub const PICK_UP: usize = 4;
    /// `>`
    pub const DESCEND: usize = 5;
    /// `s`: search / wait a turn.
    pub const WAIT: usize = 6;
    /// `:`: describe what is here.
    pub const LOOK: usize = 7;
    pub const NUM_ACTIONS: usize = 8;
}

const CROP: usize = 9;
/// Cells of stone around the glyph layer, so a crop centred on any map cell stays in bounds.
const PAD: usize = CROP / 2;
const CENTRE: usize = PAD * CROP + PAD;
const STATS_DIM: usize = 6;
const MAX_HP: i32 = 12;
const NEWT_HP: u8 = 2;
const MAX_ROOMS: usize = 3;
const MAX_GOLD_PILES: usize = 4;
/// Gold carried is reported as `gold / GOLD_SCALE`, clamped to 1.
const GOLD_SCALE: f32 = 100.0;

/// North, east, south, west, matching action ids 0..4.
const DIRS: [(i32, i32); 4] = [(0, -1), (1, 0), (0, 1), (-1, 0)];

const MSG_KEY_HERE: &str = "You see here a brass key.";
const MSG_KEY_TAKEN: &str = "k - a brass key.";
const MSG_NOTHING_TO_PICK: &str = "There is nothing here to pick up.";
const MSG_LOCKED: &str = "This door is locked.";
const MSG_UNLOCK: &str = "You unlock the door.";
const MSG_HIT_NEWT: &str = "You hit the newt.";
const MSG_KILL_NEWT: &str = "You kill the newt!";
const MSG_NEWT_BITES: &str = "The newt bites!";
const MSG_FOUNTAIN: &str = "There is a fountain here.";
const MSG_STAIRS: &str = "There is a staircase down here.";
const MSG_DESCEND: &str = "You descend the stairs.";
const MSG_CANT_DESCEND: &str = "You can't go down here.";
const MSG_NO_OBJECTS: &str = "You see no objects here.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyroomVariant {
    /// Two tiny rooms sharing the wall with the locked door, key picked up on contact,
    /// 100 steps: learnable from the reward alone.
    Small,
    /// Two rooms joined by a corridor, more distractors, key needs `,`, 300 steps: a
    /// random policy wins ~0.4% of episodes.
    Sparse,
}

/// Inclusive ranges of a room's interior (floor) size.
#[derive(Debug, Clone, Copy)]
struct RoomSize {
    w: (usize, usize),
    h: (usize, usize),
}

/// How neighbouring rooms are joined.
#[derive(Debug, Clone, Copy)]
enum Link {
    /// The rooms share a wall and the door sits in it.
    SharedWall,
    /// A doorway in each facing wall and an L-shaped corridor of `len` cells between them.
    Corridor { len: (usize, usize) },
}

/// The knobs that differ between variants.
struct VariantConfig {
    name: &'static str,
    width: usize,
    height: usize,
    /// One entry per room, left to right before the random mirroring; the last room holds
    /// the stairs behind the locked door.
    rooms: &'static [RoomSize],
    link: Link,
    gold_piles: usize,
    /// Inclusive range of the amount in one gold pile (≥ 2, so messages are always plural).
    gold_amount: (u32, u32),
    fountain: bool,
    newt: bool,
    auto_pickup_key: bool,
    step_cap: u32,
}

/// Small has to be solved by a uniformly random policy now and then (~9% of episodes), so
/// that PPO sees rewards from the start. Such a policy moves only half the time and drifts
/// ~5 cells in 100 steps, so the rooms are tiny and share the wall with the locked door:
/// with 3×3 rooms and a one-cell corridor it won only ~1% of episodes.
const SMALL: VariantConfig = VariantConfig {
    name: "keyroom-small",
    width: 12,
    height: 7,
    rooms: &[RoomSize { w: (2, 3), h: (2, 3) }, RoomSize { w: (2, 3), h: (2, 3) }],
    link: Link::SharedWall,
    gold_piles: 1,
    gold_amount: (2, 40),
    fountain: false,
    newt: false,
    auto_pickup_key: true,
    step_cap: 100,
};

/// Sparse is a chain of actions a random policy rarely completes (pick the key up, walk the
/// corridor, unlock, find the stairs, descend), each step announced by a message. It used
/// to be three rooms with corridors of 3–8 cells; then most of the difficulty was the long
/// walk between messages, which no message-based reward can shape, and ONI's runs
/// plateaued near 0.25 (two rooms with 8–16-cell corridors did no better).
const SPARSE: VariantConfig = VariantConfig {
    name: "keyroom-sparse",
    width: 48,
    height: 14,
    rooms: &[RoomSize { w: (4, 7), h: (3, 5) }, RoomSize { w: (4, 7), h: (3, 5) }],
    link: Link::Corridor { len: (2, 5) },
    gold_piles: MAX_GOLD_PILES,
    gold_amount: (2, 60),
    fountain: true,
    newt: true,
    auto_pickup_key: false,
    step_cap: 300,
};

impl VariantConfig {
    /// Width of the widest row of rooms the generator can draw.
    const fn widest_layout(&self) -> usize {
        let mut total = 0;
        let mut i = 0;
        while i < self.rooms.len() {
            total += self.rooms[i].w.1 + 2;
            if i > 0 {
                total = match self.link {
                    Link::SharedWall => total - 1,
                    Link::Corridor { len } => total + len.1,
                };
            }
            i += 1;
        }
        total
    }

    const fn tallest_room(&self) -> usize {
        let mut h = 0;
        let mut i = 0;
        while i < self.rooms.len() {
            if self.rooms[i].h.1 + 2 > h {
                h = self.rooms[i].h.1 + 2;
            }
            i += 1;
        }
        h
    }

    /// Sanity of a config, checked at compile time below.
    const fn valid(&self) -> bool {
        let mut i = 0;
        let mut ok = self.widest_layout() <= self.width
            && self.tallest_room() <= self.height
            && self.rooms.len() >= 2
            && self.rooms.len() <= MAX_ROOMS
            && self.gold_piles <= MAX_GOLD_PILES
            && self.gold_amount.0 >= 2;
        // Every room must fit all the things that may be placed in it (hero and key, or the
        // stairs; plus the distractors), or `free_cell` would never return.
        let most_things = 2 + self.fountain as usize + self.gold_piles + self.newt as usize;
        while i < self.rooms.len() {
            ok &= self.rooms[i].w.0 * self.rooms[i].h.0 >= most_things;
            i += 1;
        }
        ok
    }
}

const _: () = assert!(SMALL.valid() && SPARSE.valid());

impl KeyroomVariant {
    fn config(self) -> &'static VariantConfig {
        match self {
            KeyroomVariant::Small => &SMALL,
            KeyroomVariant::Sparse => &SPARSE,
        }
    }

    /// The registry name of this variant.
    pub fn name(self) -> &'static str {
        self.config().name
    }

    pub fn step_cap(self) -> u32 {
        self.config().step_cap
    }
}

/// splitmix64: tiny, fast and statistically fine for dungeon generation and newt moves.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (multiply-shift; the bias is ~n/2^64, irrelevant here).
    fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, (lo, hi): (usize, usize)) -> usize {
        lo + self.below(hi - lo + 1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Tile {
    Stone,
    Wall,
    Floor,
    Corridor,
    LockedDoor,
    OpenDoor,
    Stairs,
    Fountain,
}

impl Tile {
    fn glyph(self) -> u16 {
        match self {
            Tile::Stone => glyph::STONE,
            Tile::Wall => glyph::WALL,
            Tile::Floor => glyph::FLOOR,
            Tile::Corridor => glyph::CORRIDOR,
            Tile::LockedDoor => glyph::LOCKED_DOOR,
            Tile::OpenDoor => glyph::OPEN_DOOR,
            Tile::Stairs => glyph::STAIRS_DOWN,
            Tile::Fountain => glyph::FOUNTAIN,
        }
    }

    fn walkable(self) -> bool {
        matches!(self, Tile::Floor | Tile::Corridor | Tile::OpenDoor | Tile::Stairs | Tile::Fountain)
    }
}

/// An object lying on a cell. Gold piles index `Keyroom::gold_amounts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    None,
    Key,
    Gold(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Pos {
    x: i32,
    y: i32,
}

impl Pos {
    fn step(self, dir: usize) -> Pos {
        let (dx, dy) = DIRS[dir];
        Pos { x: self.x + dx, y: self.y + dy }
    }
}

#[derive(Debug, Clone, Copy)]
struct Newt {
    pos: Pos,
    hp: u8,
}

/// A rectangular room, walls included (`x0..=x1`, `y0..=y1`).
#[derive(Debug, Clone, Copy, Default)]
struct Room {
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
}

/// One step's message, built on the stack. Two events in one turn (the hero hits the newt,
/// the newt bites back) are joined with two spaces, as NetHack's message line does.
struct MsgBuf {
    bytes: [u8; 96],
    len: usize,
}

impl MsgBuf {
    fn new() -> Self {
        MsgBuf { bytes: [0; 96], len: 0 }
    }

    fn push_bytes(&mut self, b: &[u8]) {
        let n = b.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
    }

    fn push_u32(&mut self, mut v: u32) {
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push_bytes(&digits[i..]);
    }

    /// Starts a new sentence (separated from any earlier one).
    fn sentence(&mut self) -> &mut Self {
        if self.len > 0 {
            self.push_bytes(b"  ");
        }
        self
    }

    fn say(&mut self, text: &str) {
        self.sentence().push_bytes(text.as_bytes());
    }

    fn say_gold(&mut self, prefix: &str, amount: u32) {
        self.sentence().push_bytes(prefix.as_bytes());
        self.push_u32(amount);
        self.push_bytes(b" gold pieces.");
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The keyroom environment. See the module docs.
pub struct Keyroom {
    variant: KeyroomVariant,
    cfg: &'static VariantConfig,
    spec: ObsSpec,
    rng: SplitMix64,
    /// Terrain, row-major `width × height`.
    tiles: Vec<Tile>,
    /// Objects on the floor, same layout as `tiles`.
    items: Vec<Item>,
    /// Pre-rendered glyphs of terrain and objects (not hero or newt), with `PAD` cells of
    /// stone on every side; row stride `width + 2 * PAD`.
    glyph_map: Vec<u16>,
    gold_amounts: [u32; MAX_GOLD_PILES],
    hero: Pos,
    hp: i32,
    has_key: bool,
    gold: u32,
    newt: Option<Newt>,
    steps: u32,
    done: bool,
}

impl Keyroom {
    pub fn new(variant: KeyroomVariant) -> Self {
        let cfg = variant.config();
        let cells = cfg.width * cfg.height;
        let mut env = Keyroom {
            variant,
            cfg,
            spec: ObsSpec {
                crop_rows: CROP,
                crop_cols: CROP,
                num_glyphs: glyph::NUM_GLYPHS,
                stats_dim: STATS_DIM,
                num_actions: action::NUM_ACTIONS,
                grid: crate::GridKind::Glyphs,
            },
            rng: SplitMix64(0),
            tiles: vec![Tile::Stone; cells],
            items: vec![Item::None; cells],
            glyph_map: vec![glyph::STONE; (cfg.width + 2 * PAD) * (cfg.height + 2 * PAD)],
            gold_amounts: [0; MAX_GOLD_PILES],
            hero: Pos::default(),
            hp: MAX_HP,
            has_key: false,
            gold: 0,
            newt: None,
            steps: 0,
            done: false,
        };
        // A fresh env already holds a valid episode, so it is safe even before `reset`.
        env.generate(0);
        env
    }

    pub fn variant(&self) -> KeyroomVariant {
        self.variant
    }

    pub fn width(&self) -> usize {
        self.cfg.width
    }

    pub fn height(&self) -> usize {
        self.cfg.height
    }

    /// The whole current map as text, NetHack symbols, one line per row: `@` hero, `:` newt,
    /// `(` key, `$` gold, `>` stairs, `{` fountain, `+` locked door, `'` open door,
    /// `#` corridor, `.` floor, `-`/`|` walls, space for stone.
    pub fn map_text(&self) -> String {
        let (w, h) = (self.cfg.width, self.cfg.height);
        let mut s = String::with_capacity((w + 1) * h);
        for y in 0..h as i32 {
            for x in 0..w as i32 {
                let p = Pos { x, y };
                let c = if p == self.hero {
                    '@'
                } else if self.newt.is_some_and(|n| n.pos == p) {
                    ':'
                } else {
                    match self.items[self.idx(p)] {
                        Item::Key => '(',
                        Item::Gold(_) => '$',
                        Item::None => match self.tile(p) {
                            Tile::Stone => ' ',
                            Tile::Wall => {
                                let horizontal_neighbour =
                                    |dx: i32| matches!(self.tile(Pos { x: x + dx, y }), Tile::Wall);
                                if horizontal_neighbour(-1) || horizontal_neighbour(1) {
                                    '-'
                                } else {
                                    '|'
                                }
                            }
                            Tile::Floor => '.',
                            Tile::Corridor => '#',
                            Tile::LockedDoor => '+',
                            Tile::OpenDoor => '\'',
                            Tile::Stairs => '>',
                            Tile::Fountain => '{',
                        },
                    }
                };
                s.push(c);
            }
            s.push('\n');
        }
        s
    }

    fn idx(&self, p: Pos) -> usize {
        p.y as usize * self.cfg.width + p.x as usize
    }

    fn in_map(&self, p: Pos) -> bool {
        p.x >= 0 && p.y >= 0 && (p.x as usize) < self.cfg.width && (p.y as usize) < self.cfg.height
    }

    /// Terrain at `p`; everything outside the map is stone.
    fn tile(&self, p: Pos) -> Tile {
        if self.in_map(p) {
            self.tiles[self.idx(p)]
        } else {
            Tile::Stone
        }
    }

    fn glyph_idx(&self, p: Pos) -> usize {
        (p.y as usize + PAD) * (self.cfg.width + 2 * PAD) + p.x as usize + PAD
    }

    /// Re-renders one cell of the glyph layer after its terrain or object changed.
    fn refresh_glyph(&mut self, p: Pos) {
        let g = match self.items[self.idx(p)] {
            Item::Key => glyph::KEY,
            Item::Gold(_) => glyph::GOLD,
            Item::None => self.tile(p).glyph(),
        };
        let gi = self.glyph_idx(p);
        self.glyph_map[gi] = g;
    }

    // ---------------------------------------------------------------- dungeon generation

    /// Builds a fresh episode from `seed`. Everything random in the episode (layout and the
    /// newt's behaviour) comes from the one generator seeded here, so a seed fixes the game.
    fn generate(&mut self, seed: u64) {
        let cfg = self.cfg;
        self.rng = SplitMix64(seed);
        self.tiles.fill(Tile::Stone);
        self.items.fill(Item::None);
        self.gold_amounts = [0; MAX_GOLD_PILES];
        self.hp = MAX_HP;
        self.has_key = false;
        self.gold = 0;
        self.newt = None;
        // Off the map until placed, so the last episode's hero can't block a cell here.
        self.hero = Pos { x: -1, y: -1 };
        self.steps = 0;
        self.done = false;

        // Rooms left to right; the last one holds the stairs. Sizes first, so the leftover
        // width can shift the whole row by a random margin.
        let n = cfg.rooms.len();
        let mut sizes = [(0usize, 0usize); MAX_ROOMS];
        let mut gaps = [0usize; MAX_ROOMS];
        let mut total = 0;
        for (i, room) in cfg.rooms.iter().enumerate() {
            sizes[i] = (self.rng.range(room.w), self.rng.range(room.h));
            total += sizes[i].0 + 2;
            if i > 0 {
                match cfg.link {
                    Link::SharedWall => total -= 1,
                    Link::Corridor { len } => {
                        gaps[i] = self.rng.range(len);
                        total += gaps[i];
                    }
                }
            }
        }
        let mut rooms = [Room::default(); MAX_ROOMS];
        let mut x = self.rng.below(cfg.width - total + 1);
        for i in 0..n {
            let (w, h) = sizes[i];
            let mut y_range = (0, cfg.height - (h + 2));
            if i > 0 {
                let prev = rooms[i - 1];
                match cfg.link {
                    Link::SharedWall => {
                        // Overlap the previous room's east wall, and share at least one
                        // interior row with it so the door has somewhere to go.
                        x = prev.x1;
                        y_range.0 = (prev.y0 + 1).saturating_sub(h);
                        y_range.1 = y_range.1.min(prev.y1 - 2);
                    }
                    Link::Corridor { .. } => x = prev.x1 + 1 + gaps[i],
                }
            }
            let y0 = self.rng.range(y_range);
            rooms[i] = Room { x0: x, y0, x1: x + w + 1, y1: y0 + h + 1 };
        }
        for room in &rooms[..n] {
            self.carve_room(room);
        }
        for i in 0..n - 1 {
            // Only the entrance of the stairs room is locked.
            let locked = i + 1 == n - 1;
            self.carve_link(&rooms[i], &rooms[i + 1], locked);
        }

        let stairs_room = rooms[n - 1];
        let hero_side = &rooms[..n - 1];
        let p = self.free_cell(&stairs_room);
        self.set_tile(p, Tile::Stairs);
        self.hero = self.free_cell_in_any(hero_side);
        let p = self.free_cell_in_any(hero_side);
        self.set_item(p, Item::Key);
        if cfg.fountain {
            let p = self.free_cell_in_any(&rooms[..n]);
            self.set_tile(p, Tile::Fountain);
        }
        for pile in 0..cfg.gold_piles {
            self.gold_amounts[pile] = self.rng.range((cfg.gold_amount.0 as usize, cfg.gold_amount.1 as usize)) as u32;
            let p = self.free_cell_in_any(&rooms[..n]);
            self.set_item(p, Item::Gold(pile as u8));
        }
        if cfg.newt {
            let pos = self.free_cell_in_any(&rooms[..n]);
            self.newt = Some(Newt { pos, hp: NEWT_HP });
        }

        // The stairs room is equally likely on either side.
        if self.rng.below(2) == 1 {
            self.mirror();
        }
        self.render_glyph_map();
    }

    fn set_tile(&mut self, p: Pos, t: Tile) {
        let i = self.idx(p);
        self.tiles[i] = t;
    }

    fn set_item(&mut self, p: Pos, item: Item) {
        let i = self.idx(p);
        self.items[i] = item;
    }

    fn carve_room(&mut self, r: &Room) {
        for y in r.y0..=r.y1 {
            for x in r.x0..=r.x1 {
                let border = x == r.x0 || x == r.x1 || y == r.y0 || y == r.y1;
                let p = Pos { x: x as i32, y: y as i32 };
                self.set_tile(p, if border { Tile::Wall } else { Tile::Floor });
            }
        }
    }

    /// Joins `left` to `right`: through a door in their shared wall, or through a doorway in
    /// each facing wall and an L-shaped corridor that bends at a random column between them.
    fn carve_link(&mut self, left: &Room, right: &Room, lock: bool) {
        let door = if lock { Tile::LockedDoor } else { Tile::OpenDoor };
        let at = |x: usize, y: usize| Pos { x: x as i32, y: y as i32 };
        if left.x1 == right.x0 {
            let y = self.rng.range((left.y0.max(right.y0) + 1, left.y1.min(right.y1) - 1));
            self.set_tile(at(left.x1, y), door);
            return;
        }
        let y_from = self.rng.range((left.y0 + 1, left.y1 - 1));
        let y_to = self.rng.range((right.y0 + 1, right.y1 - 1));
        let (first, last) = (left.x1 + 1, right.x0 - 1);
        let bend = self.rng.range((first, last));
        for x in first..=bend {
            self.set_tile(at(x, y_from), Tile::Corridor);
        }
        for y in y_from.min(y_to)..=y_from.max(y_to) {
            self.set_tile(at(bend, y), Tile::Corridor);
        }
        for x in bend..=last {
            self.set_tile(at(x, y_to), Tile::Corridor);
        }
        self.set_tile(at(left.x1, y_from), Tile::OpenDoor);
        self.set_tile(at(right.x0, y_to), door);
    }

    /// A random interior cell of `room` that is bare floor and holds nothing and no one.
    /// `VariantConfig::valid` guarantees every room has room to spare, so rejection sampling
    /// ends quickly.
    fn free_cell(&mut self, room: &Room) -> Pos {
        loop {
            let p = Pos {
                x: self.rng.range((room.x0 + 1, room.x1 - 1)) as i32,
                y: self.rng.range((room.y0 + 1, room.y1 - 1)) as i32,
            };
            let i = self.idx(p);
            let occupied = p == self.hero || self.newt.is_some_and(|n| n.pos == p);
            if self.tiles[i] == Tile::Floor && self.items[i] == Item::None && !occupied {
                return p;
            }
        }
    }

    /// A free cell in a room picked uniformly from `rooms`.
    fn free_cell_in_any(&mut self, rooms: &[Room]) -> Pos {
        let room = rooms[self.rng.below(rooms.len())];
        self.free_cell(&room)
    }

    /// Flips the map left to right.
    fn mirror(&mut self) {
        let w = self.cfg.width;
        for row in self.tiles.chunks_exact_mut(w) {
            row.reverse();
        }
        for row in self.items.chunks_exact_mut(w) {
            row.reverse();
        }
        let flip = |p: Pos| Pos { x: w as i32 - 1 - p.x, y: p.y };
        self.hero = flip(self.hero);
        if let Some(newt) = &mut self.newt {
            newt.pos = flip(newt.pos);
        }
    }

    fn render_glyph_map(&mut self) {
        self.glyph_map.fill(glyph::STONE);
        for y in 0..self.cfg.height as i32 {
            for x in 0..self.cfg.width as i32 {
                self.refresh_glyph(Pos { x, y });
            }
        }
    }

    // ---------------------------------------------------------------- game logic

    fn try_move(&mut self, dir: usize, msg: &mut MsgBuf) {
        let target = self.hero.step(dir);
        if let Some(newt) = &mut self.newt {
            if newt.pos == target {
                newt.hp -= 1;
                if newt.hp == 0 {
                    self.newt = None;
                    msg.say(MSG_KILL_NEWT);
                } else {
                    msg.say(MSG_HIT_NEWT);
                }
                return;
            }
        }
        match self.tile(target) {
            Tile::LockedDoor => {
                if self.has_key {
                    // Unlocking takes the turn; the hero walks through on the next move.
                    self.set_tile(target, Tile::OpenDoor);
                    self.refresh_glyph(target);
                    msg.say(MSG_UNLOCK);
                } else {
                    msg.say(MSG_LOCKED);
                }
            }
            t if t.walkable() => {
                self.hero = target;
                self.describe_arrival(msg);
            }
            // Walls and solid rock: the hero just doesn't move, silently.
            _ => {}
        }
    }

    fn describe_arrival(&mut self, msg: &mut MsgBuf) {
        let here = self.hero;
        match self.items[self.idx(here)] {
            Item::Key if self.cfg.auto_pickup_key => self.pick_up_key(msg),
            Item::Key => msg.say(MSG_KEY_HERE),
            Item::Gold(pile) => msg.say_gold("You see here ", self.gold_amounts[pile as usize]),
            Item::None => match self.tile(here) {
                Tile::Stairs => msg.say(MSG_STAIRS),
                Tile::Fountain => msg.say(MSG_FOUNTAIN),
                _ => {}
            },
        }
    }

    fn pick_up_key(&mut self, msg: &mut MsgBuf) {
        let here = self.hero;
        self.set_item(here, Item::None);
        self.refresh_glyph(here);
        self.has_key = true;
        msg.say(MSG_KEY_TAKEN);
    }

    fn pick_up(&mut self, msg: &mut MsgBuf) {
        let here = self.hero;
        match self.items[self.idx(here)] {
            Item::Key => self.pick_up_key(msg),
            Item::Gold(pile) => {
                let amount = self.gold_amounts[pile as usize];
                self.gold += amount;
                self.set_item(here, Item::None);
                self.refresh_glyph(here);
                msg.say_gold("$ - ", amount);
            }
            Item::None => msg.say(MSG_NOTHING_TO_PICK),
        }
    }

    fn look(&self, msg: &mut MsgBuf) {
        let here = self.hero;
        match self.items[self.idx(here)] {
            Item::Key => msg.say(MSG_KEY_HERE),
            Item::Gold(pile) => msg.say_gold("You see here ", self.gold_amounts[pile as usize]),
            Item::None => match self.tile(here) {
                Tile::Stairs => msg.say(MSG_STAIRS),
                Tile::Fountain => msg.say(MSG_FOUNTAIN),
                _ => msg.say(MSG_NO_OBJECTS),
            },
        }
    }

    /// The newt's turn: next to the hero it sometimes bites (never fatally); otherwise it
    /// stays put half the time and else tries a random step across bare room floor, so it
    /// never wanders into corridors, doorways, or onto the stairs.
    fn newt_turn(&mut self, msg: &mut MsgBuf) {
        let Some(mut newt) = self.newt else { return };
        let adjacent = (newt.pos.x - self.hero.x).abs() + (newt.pos.y - self.hero.y).abs() == 1;
        if adjacent {
            if self.rng.below(3) == 0 {
                self.hp = (self.hp - 1).max(1);
                msg.say(MSG_NEWT_BITES);
            }
            return;
        }
        if self.rng.below(2) == 0 {
            return;
        }
        let target = newt.pos.step(self.rng.below(4));
        if self.tile(target) == Tile::Floor && target != self.hero {
            newt.pos = target;
            self.newt = Some(newt);
        }
    }

    fn write_obs(&self, obs: ObsBuf<'_>, msg: &MsgBuf) {
        let stride = self.cfg.width + 2 * PAD;
        // With the padding, padded row `hero.y + r` is map row `hero.y - PAD + r`.
        let top_left = self.hero.y as usize * stride + self.hero.x as usize;
        for (r, out) in obs.glyphs.chunks_exact_mut(CROP).enumerate() {
            let start = top_left + r * stride;
            out.copy_from_slice(&self.glyph_map[start..start + CROP]);
        }
        obs.glyphs[CENTRE] = glyph::HERO;
        if let Some(newt) = self.newt {
            let (dx, dy) = (newt.pos.x - self.hero.x, newt.pos.y - self.hero.y);
            let half = PAD as i32;
            if dx.abs() <= half && dy.abs() <= half {
                obs.glyphs[((dy + half) as usize) * CROP + (dx + half) as usize] = glyph::NEWT;
            }
        }
        obs.stats[0] = if self.has_key { 1.0 } else { 0.0 };
        obs.stats[1] = (self.gold as f32 / GOLD_SCALE).min(1.0);
        obs.stats[2] = self.hp as f32 / MAX_HP as f32;
        obs.stats[3] = self.hero.x as f32 / self.cfg.width as f32;
        obs.stats[4] = self.hero.y as f32 / self.cfg.height as f32;
        obs.stats[5] = self.steps as f32 / self.cfg.step_cap as f32;
        write_message(obs.message, msg.as_bytes());
    }

    fn check_buffers(&self, obs: &ObsBuf<'_>) -> Result<(), EnvError> {
        if obs.glyphs.len() != CROP * CROP || obs.stats.len() != STATS_DIM {
            return Err(EnvError::Failed {
                env: self.cfg.name.into(),
                reason: format!(
                    "observation buffers have {} glyphs and {} stats, expected {} and {}",
                    obs.glyphs.len(),
                    obs.stats.len(),
                    CROP * CROP,
                    STATS_DIM
                ),
            });
        }
        Ok(())
    }
}

impl Env for Keyroom {
    fn spec(&self) -> &ObsSpec {
        &self.spec
    }

    fn reset(&mut self, seed: u64, obs: ObsBuf<'_>) -> Result<(), EnvError> {
        self.check_buffers(&obs)?;
        self.generate(seed);
        self.write_obs(obs, &MsgBuf::new());
        Ok(())
    }

    fn step(&mut self, action: usize, obs: ObsBuf<'_>) -> Result<StepOutcome, EnvError> {
        if action >= action::NUM_ACTIONS {
            return Err(EnvError::ActionOutOfRange {
                env: self.cfg.name.into(),
                action,
                num_actions: action::NUM_ACTIONS,
            });
        }
        if self.done {
            return Err(EnvError::Failed {
                env: self.cfg.name.into(),
                reason: "step after the episode ended; reset first".into(),
            });
        }
        self.check_buffers(&obs)?;
        self.steps += 1;
        let mut msg = MsgBuf::new();
        let mut out = StepOutcome::default();
        match action {
            action::NORTH | action::EAST | action::SOUTH | action::WEST => self.try_move(action, &mut msg),
            action::PICK_UP => self.pick_up(&mut msg),
            action::DESCEND => {
                if self.tile(self.hero) == Tile::Stairs {
                    msg.say(MSG_DESCEND);
                    out.reward = 1.0;
                    out.success = true;
                } else {
                    msg.say(MSG_CANT_DESCEND);
                }
            }
            action::LOOK => self.look(&mut msg),
            _ => {} // WAIT
        }
        if !out.success {
            self.newt_turn(&mut msg);
        }
        out.truncated = !out.success && self.steps >= self.cfg.step_cap;
        out.done = out.success || out.truncated;
        self.done = out.done;
        self.write_obs(obs, &msg);
        Ok(out)
    }

    /// The map as NetHack would draw it, with a bottom line (the message is in the caption).
    fn screen(&self) -> Option<crate::Screen> {
        let key = if self.has_key { "  key" } else { "" };
        let status = format!("HP:{}({MAX_HP}) $:{} T:{}{key}", self.hp, self.gold, self.steps);
        Some(crate::Screen::from_text(&format!("{}{status}", self.map_text()), 80))
    }
}

/// Steps one env with uniformly random actions for `steps` steps (resetting on episode end,
/// each episode with its own seed derived from `seed`) and returns steps per second,
/// observation writing included.
pub fn bench_env_steps(variant: KeyroomVariant, steps: u64, seed: u64) -> f64 {
    let mut env = Keyroom::new(variant);
    let mut glyphs = [0u16; CROP * CROP];
    let mut stats = [0f32; STATS_DIM];
    let mut message = [0u8; crate::spec::MESSAGE_LEN];
    let mut episode_seeds = SplitMix64(seed);
    // xorshift64: the cheapest decent generator, so the bench measures the env, not the policy.
    let mut x = seed | 1;
    let mut successes = 0u64;
    let start = Instant::now();
    env.reset(episode_seeds.next_u64(), ObsBuf { glyphs: &mut glyphs, stats: &mut stats, message: &mut message })
        .expect("reset");
    for _ in 0..steps {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let a = (x >> 61) as usize; // top 3 bits: 0..8
        let out = env.step(a, ObsBuf { glyphs: &mut glyphs, stats: &mut stats, message: &mut message }).expect("step");
        if out.done {
            successes += out.success as u64;
            env.reset(
                episode_seeds.next_u64(),
                ObsBuf { glyphs: &mut glyphs, stats: &mut stats, message: &mut message },
            )
            .expect("reset");
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // Keep the optimiser from discarding the work.
    std::hint::black_box((successes, &glyphs, &stats, &message));
    steps as f64 / secs.max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{message_text, MESSAGE_LEN};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::collections::VecDeque;

    /// Owned observation buffers for one env.
    struct Obs {
        glyphs: Vec<u16>,
        stats: Vec<f32>,
        message: Vec<u8>,
    }

    impl Obs {
        fn new() -> Self {
            Obs { glyphs: vec![0; CROP * CROP], stats: vec![0.0; STATS_DIM], message: vec![0; MESSAGE_LEN] }
        }

        fn buf(&mut self) -> ObsBuf<'_> {
            ObsBuf { glyphs: &mut self.glyphs, stats: &mut self.stats, message: &mut self.message }
        }

        fn text(&self) -> String {
            message_text(&self.message)
        }
    }

    fn started(variant: KeyroomVariant, seed: u64) -> (Keyroom, Obs) {
        let mut env = Keyroom::new(variant);
        let mut obs = Obs::new();
        env.reset(seed, obs.buf()).unwrap();
        (env, obs)
    }

    fn find_tile(env: &Keyroom, t: Tile) -> Vec<Pos> {
        all_cells(env).filter(|&p| env.tile(p) == t).collect()
    }

    fn find_item(env: &Keyroom, pred: impl Fn(Item) -> bool) -> Vec<Pos> {
        all_cells(env).filter(|&p| pred(env.items[env.idx(p)])).collect()
    }

    fn all_cells(env: &Keyroom) -> impl Iterator<Item = Pos> + '_ {
        (0..env.height() as i32).flat_map(move |y| (0..env.width() as i32).map(move |x| Pos { x, y }))
    }

    /// Shortest list of move actions from the hero to `goal` over walkable terrain, also
    /// crossing the locked door when `through_locked` and never entering `avoid`. The newt is
    /// ignored (the plans here run on variants or cells where it doesn't matter).
    fn plan(env: &Keyroom, goal: Pos, through_locked: bool, avoid: &[Pos]) -> Option<Vec<usize>> {
        let mut prev: Vec<Option<(Pos, usize)>> = vec![None; env.tiles.len()];
        let mut seen = vec![false; env.tiles.len()];
        let mut queue = VecDeque::from([env.hero]);
        seen[env.idx(env.hero)] = true;
        while let Some(p) = queue.pop_front() {
            if p == goal {
                let mut actions = Vec::new();
                let mut cur = p;
                while let Some((from, dir)) = prev[env.idx(cur)] {
                    actions.push(dir);
                    cur = from;
                }
                actions.reverse();
                return Some(actions);
            }
            for dir in 0..4 {
                let q = p.step(dir);
                if !env.in_map(q) || seen[env.idx(q)] || avoid.contains(&q) {
                    continue;
                }
                let t = env.tile(q);
                if t.walkable() || (through_locked && t == Tile::LockedDoor) {
                    seen[env.idx(q)] = true;
                    prev[env.idx(q)] = Some((p, dir));
                    queue.push_back(q);
                }
            }
        }
        None
    }

    /// Runs `actions`, returning each step's (message, outcome).
    fn run(env: &mut Keyroom, obs: &mut Obs, actions: &[usize]) -> Vec<(String, StepOutcome)> {
        actions
            .iter()
            .map(|&a| {
                let out = env.step(a, obs.buf()).unwrap();
                (obs.text(), out)
            })
            .collect()
    }

    /// Walks to the key, the door, through it to the stairs and descends; checks the
    /// messages on the way. Returns the full message log.
    fn solve(variant: KeyroomVariant, seed: u64) -> Vec<String> {
        let (mut env, mut obs) = started(variant, seed);
        // A wandering newt could stand in the planned path.
        env.newt = None;
        let key = find_item(&env, |i| i == Item::Key)[0];
        let door = find_tile(&env, Tile::LockedDoor)[0];
        let stairs = find_tile(&env, Tile::Stairs)[0];
        let mut log = Vec::new();

        let to_key = plan(&env, key, false, &[]).expect("key reachable");
        let steps = run(&mut env, &mut obs, &to_key);
        let last = &steps.last().unwrap().0;
        if variant == KeyroomVariant::Small {
            assert_eq!(last, MSG_KEY_TAKEN, "seed {seed}");
        } else {
            assert_eq!(last, MSG_KEY_HERE, "seed {seed}");
            let picked = run(&mut env, &mut obs, &[action::PICK_UP]);
            assert_eq!(picked[0].0, MSG_KEY_TAKEN);
            log.extend(steps.iter().map(|s| s.0.clone()));
            log.push(picked[0].0.clone());
        }
        if variant == KeyroomVariant::Small {
            log.extend(steps.iter().map(|s| s.0.clone()));
        }
        assert!(env.has_key);
        assert_eq!(obs.stats[0], 1.0);

        // Walk to the door; the last planned move bumps it and unlocks it, leaving the hero
        // in front of it.
        let to_door = plan(&env, door, true, &[]).expect("door reachable");
        let steps = run(&mut env, &mut obs, &to_door);
        assert_eq!(steps.last().unwrap().0, MSG_UNLOCK, "seed {seed}");
        assert_eq!(env.hero.step(*to_door.last().unwrap()), door, "unlocking does not move the hero");
        assert_eq!(env.tile(door), Tile::OpenDoor);
        log.extend(steps.iter().map(|s| s.0.clone()));

        let to_stairs = plan(&env, stairs, false, &[]).expect("stairs reachable once unlocked");
        let steps = run(&mut env, &mut obs, &to_stairs);
        assert_eq!(steps.last().unwrap().0, MSG_STAIRS, "seed {seed}");
        assert!(steps.iter().all(|s| !s.1.done && s.1.reward == 0.0));
        log.extend(steps.iter().map(|s| s.0.clone()));
        assert_eq!(run(&mut env, &mut obs, &[action::LOOK])[0].0, MSG_STAIRS);

        let out = env.step(action::DESCEND, obs.buf()).unwrap();
        assert_eq!(obs.text(), MSG_DESCEND);
        assert_eq!(out, StepOutcome { reward: 1.0, done: true, success: true, truncated: false, score: None });
        log.push(obs.text());
        log
    }

    #[test]
    fn spec_matches_the_observation_layout() {
        for v in [KeyroomVariant::Small, KeyroomVariant::Sparse] {
            let env = Keyroom::new(v);
            let s = env.spec();
            assert_eq!((s.crop_rows, s.crop_cols, s.num_glyphs, s.stats_dim, s.num_actions), (9, 9, 16, 6, 8));
        }
    }

    #[test]
    fn same_seed_same_actions_give_identical_observations() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for v in [KeyroomVariant::Small, KeyroomVariant::Sparse] {
            for seed in [0u64, 1, 42, 0xDEAD_BEEF] {
                let (mut a, mut oa) = started(v, seed);
                let (mut b, mut ob) = started(v, seed);
                assert_eq!((&oa.glyphs, &oa.stats, &oa.message), (&ob.glyphs, &ob.stats, &ob.message));
                assert_eq!(a.map_text(), b.map_text());
                for _ in 0..v.step_cap() {
                    let act = rng.random_range(0..action::NUM_ACTIONS);
                    let ra = a.step(act, oa.buf()).unwrap();
                    let rb = b.step(act, ob.buf()).unwrap();
                    assert_eq!(ra, rb);
                    assert_eq!((&oa.glyphs, &oa.stats, &oa.message), (&ob.glyphs, &ob.stats, &ob.message));
                    if ra.done {
                        break;
                    }
                }
            }
        }
    }

    #[test]
    fn reset_reproduces_an_episode_on_a_reused_env() {
        let (mut env, mut obs) = started(KeyroomVariant::Sparse, 9);
        let first = (obs.glyphs.clone(), env.map_text());
        run(&mut env, &mut obs, &[1, 1, 2, 4, 7, 0, 3]);
        env.reset(123, obs.buf()).unwrap();
        env.reset(9, obs.buf()).unwrap();
        assert_eq!((obs.glyphs.clone(), env.map_text()), first);
    }

    #[test]
    fn different_seeds_give_different_layouts() {
        for v in [KeyroomVariant::Small, KeyroomVariant::Sparse] {
            let maps: std::collections::HashSet<String> = (0..100).map(|seed| started(v, seed).0.map_text()).collect();
            assert!(maps.len() >= 95, "{v:?}: only {} distinct maps out of 100", maps.len());
        }
    }

    #[test]
    fn every_layout_has_the_required_features() {
        for v in [KeyroomVariant::Small, KeyroomVariant::Sparse] {
            let cfg = v.config();
            for seed in 0..500 {
                let (env, _) = started(v, seed);
                assert_eq!(find_tile(&env, Tile::LockedDoor).len(), 1);
                assert_eq!(find_tile(&env, Tile::Stairs).len(), 1);
                assert_eq!(find_item(&env, |i| i == Item::Key).len(), 1);
                assert_eq!(find_item(&env, |i| matches!(i, Item::Gold(_))).len(), cfg.gold_piles);
                assert_eq!(find_tile(&env, Tile::Fountain).len(), cfg.fountain as usize);
                assert_eq!(env.newt.is_some(), cfg.newt);
                // The key is on the hero's side; the stairs are only behind the locked door.
                let key = find_item(&env, |i| i == Item::Key)[0];
                let stairs = find_tile(&env, Tile::Stairs)[0];
                assert!(plan(&env, key, false, &[]).is_some(), "{v:?} seed {seed}\n{}", env.map_text());
                assert!(plan(&env, stairs, false, &[]).is_none(), "{v:?} seed {seed}\n{}", env.map_text());
                assert!(plan(&env, stairs, true, &[]).is_some(), "{v:?} seed {seed}\n{}", env.map_text());
                assert_eq!(env.tile(env.hero), Tile::Floor);
            }
        }
    }

    #[test]
    fn first_observation_centres_the_hero() {
        let (env, obs) = started(KeyroomVariant::Sparse, 5);
        assert_eq!(obs.glyphs[CENTRE], glyph::HERO);
        assert!(obs.glyphs.iter().all(|&g| (g as usize) < glyph::NUM_GLYPHS));
        assert_eq!(obs.text(), "");
        assert_eq!(obs.stats[0], 0.0);
        assert_eq!(obs.stats[2], 1.0);
        assert_eq!(obs.stats[5], 0.0);
        assert_eq!(obs.stats[3], env.hero.x as f32 / env.width() as f32);
        // The crop matches the map around the hero, stone outside it.
        for r in 0..CROP as i32 {
            for c in 0..CROP as i32 {
                let p = Pos { x: env.hero.x + c - PAD as i32, y: env.hero.y + r - PAD as i32 };
                let g = obs.glyphs[(r as usize) * CROP + c as usize];
                let expected = if p == env.hero {
                    glyph::HERO
                } else if env.newt.is_some_and(|n| n.pos == p) {
                    glyph::NEWT
                } else if !env.in_map(p) {
                    glyph::STONE
                } else {
                    match env.items[env.idx(p)] {
                        Item::Key => glyph::KEY,
                        Item::Gold(_) => glyph::GOLD,
                        Item::None => env.tile(p).glyph(),
                    }
                };
                assert_eq!(g, expected, "cell {p:?}");
            }
        }
    }

    #[test]
    fn scripted_solution_small() {
        for seed in 0..50 {
            let log = solve(KeyroomVariant::Small, seed);
            let pos = |m: &str| log.iter().position(|l| l == m).unwrap_or_else(|| panic!("{m:?} missing: {log:?}"));
            assert!(pos(MSG_KEY_TAKEN) < pos(MSG_UNLOCK));
            assert!(pos(MSG_UNLOCK) < pos(MSG_STAIRS));
            assert!(pos(MSG_STAIRS) < pos(MSG_DESCEND));
        }
    }

    #[test]
    fn scripted_solution_sparse() {
        for seed in 0..50 {
            let log = solve(KeyroomVariant::Sparse, seed);
            let pos = |m: &str| log.iter().position(|l| l == m).unwrap_or_else(|| panic!("{m:?} missing: {log:?}"));
            assert!(pos(MSG_KEY_HERE) < pos(MSG_KEY_TAKEN));
            assert!(pos(MSG_KEY_TAKEN) < pos(MSG_UNLOCK));
            assert!(pos(MSG_UNLOCK) < pos(MSG_DESCEND));
        }
    }

    #[test]
    fn locked_door_without_key() {
        let mut checked = 0;
        for seed in 0..50 {
            for v in [KeyroomVariant::Small, KeyroomVariant::Sparse] {
                let (mut env, mut obs) = started(v, seed);
                env.newt = None;
                let key = find_item(&env, |i| i == Item::Key)[0];
                let door = find_tile(&env, Tile::LockedDoor)[0];
                // In Small the key is picked up on contact; skip layouts where it can't be
                // avoided on the way to the door.
                let Some(path) = plan(&env, door, true, &[key]) else { continue };
                let steps = run(&mut env, &mut obs, &path);
                assert_eq!(steps.last().unwrap().0, MSG_LOCKED, "{v:?} seed {seed}");
                let in_front = env.hero;
                // Bumping again changes nothing.
                let again = run(&mut env, &mut obs, &[*path.last().unwrap()]);
                assert_eq!(again[0].0, MSG_LOCKED);
                assert_eq!(env.hero, in_front);
                assert_eq!(env.tile(door), Tile::LockedDoor);
                assert!(!env.has_key);
                checked += 1;
            }
        }
        assert!(checked >= 80, "only {checked} layouts checked");
    }

    #[test]
    fn walking_into_a_wall_is_silent_and_stays_put() {
        let (mut env, mut obs) = started(KeyroomVariant::Small, 11);
        // Keep walking north: eventually the hero stands against the room's top wall.
        run(&mut env, &mut obs, &[action::NORTH; 6]);
        let here = env.hero;
        assert_eq!(env.tile(here.step(action::NORTH)), Tile::Wall);
        let steps = run(&mut env, &mut obs, &[action::NORTH]);
        assert_eq!(steps[0].0, "");
        assert_eq!(env.hero, here);
    }

    #[test]
    fn gold_pickup_look_and_descend_elsewhere() {
        let (mut env, mut obs) = started(KeyroomVariant::Sparse, 4);
        // Leave the newt out of the way of the plan.
        env.newt = None;
        let reachable: Vec<Pos> = find_item(&env, |i| matches!(i, Item::Gold(_)))
            .into_iter()
            .filter(|&p| plan(&env, p, false, &[]).is_some())
            .collect();
        let gold_at = reachable[0];
        let Item::Gold(pile) = env.items[env.idx(gold_at)] else { unreachable!() };
        let amount = env.gold_amounts[pile as usize];
        let path = plan(&env, gold_at, false, &[]).unwrap();
        let steps = run(&mut env, &mut obs, &path);
        assert_eq!(steps.last().unwrap().0, format!("You see here {amount} gold pieces."));
        let look = run(&mut env, &mut obs, &[action::LOOK]);
        assert_eq!(look[0].0, format!("You see here {amount} gold pieces."));
        let pick = run(&mut env, &mut obs, &[action::PICK_UP]);
        assert_eq!(pick[0].0, format!("$ - {amount} gold pieces."));
        assert_eq!(env.gold, amount);
        assert_eq!(obs.stats[1], (amount as f32 / 100.0).min(1.0));
        assert_eq!(obs.glyphs[CENTRE], glyph::HERO);
        let again = run(&mut env, &mut obs, &[action::PICK_UP, action::LOOK, action::DESCEND, action::WAIT]);
        assert_eq!(again[0].0, MSG_NOTHING_TO_PICK);
        assert_eq!(again[1].0, MSG_NO_OBJECTS);
        assert_eq!(again[2].0, MSG_CANT_DESCEND);
        assert_eq!(again[2].1, StepOutcome::default());
        assert_eq!(again[3].0, "");
        // The pile is gone from the glyph layer: step off and look back at it.
        let back = (0..4).find(|&d| env.tile(env.hero.step(d)).walkable()).unwrap();
        run(&mut env, &mut obs, &[back]);
        let (dx, dy) = (gold_at.x - env.hero.x, gold_at.y - env.hero.y);
        let cell = obs.glyphs[((dy + 4) as usize) * CROP + (dx + 4) as usize];
        assert_eq!(cell, env.tile(gold_at).glyph());
    }

    #[test]
    fn fountain_describes_itself() {
        for seed in 0..20 {
            let (mut env, mut obs) = started(KeyroomVariant::Sparse, seed);
            env.newt = None;
            let fountain = find_tile(&env, Tile::Fountain)[0];
            let Some(path) = plan(&env, fountain, false, &[]) else { continue };
            let steps = run(&mut env, &mut obs, &path);
            assert_eq!(steps.last().unwrap().0, MSG_FOUNTAIN);
            assert_eq!(run(&mut env, &mut obs, &[action::LOOK])[0].0, MSG_FOUNTAIN);
            assert_eq!(run(&mut env, &mut obs, &[action::PICK_UP])[0].0, MSG_NOTHING_TO_PICK);
            return;
        }
        panic!("no reachable fountain in 20 seeds");
    }

    /// Moves the hero to a bare floor cell with bare floor east of it and puts a fresh newt
    /// there, so the hero can attack east and the newt can bite.
    fn newt_east_of_hero(env: &mut Keyroom) {
        let bare = |env: &Keyroom, p: Pos| env.tile(p) == Tile::Floor && env.items[env.idx(p)] == Item::None;
        let spot = all_cells(env).find(|&p| bare(env, p) && bare(env, p.step(action::EAST))).unwrap();
        env.hero = spot;
        env.newt = Some(Newt { pos: spot.step(action::EAST), hp: NEWT_HP });
    }

    #[test]
    fn newt_can_be_hit_and_killed() {
        let (mut env, mut obs) = started(KeyroomVariant::Sparse, 2);
        newt_east_of_hero(&mut env);
        let hit = run(&mut env, &mut obs, &[action::EAST]);
        assert!(hit[0].0 == MSG_HIT_NEWT || hit[0].0 == format!("{MSG_HIT_NEWT}  {MSG_NEWT_BITES}"), "{:?}", hit[0].0);
        // The newt may have bitten but not moved (it stays next to the hero); hit it again.
        let newt = env.newt.expect("newt survives one hit");
        assert_eq!(newt.hp, NEWT_HP - 1);
        let hero_before = env.hero;
        let kill = run(&mut env, &mut obs, &[action::EAST]);
        assert_eq!(kill[0].0, MSG_KILL_NEWT);
        assert!(env.newt.is_none());
        assert_eq!(env.hero, hero_before, "attacking does not move the hero");
        assert!(!obs.glyphs.contains(&glyph::NEWT));
    }

    #[test]
    fn newt_bites_are_harmless() {
        let (mut env, mut obs) = started(KeyroomVariant::Sparse, 8);
        newt_east_of_hero(&mut env);
        let mut bites = 0;
        for _ in 0..200 {
            if env.done {
                break;
            }
            let out = env.step(action::WAIT, obs.buf()).unwrap();
            let text = obs.text();
            assert!(text.is_empty() || text == MSG_NEWT_BITES, "{text:?}");
            bites += (text == MSG_NEWT_BITES) as u32;
            assert!(env.hp >= 1);
            assert!(!out.success && out.reward == 0.0);
            assert!(obs.stats[2] > 0.0 && obs.stats[2] <= 1.0);
        }
        assert!(bites > 20, "the newt bit only {bites} times");
        assert_eq!(env.hp, 1, "hp bottoms out at 1");
        let newt = env.newt.unwrap();
        let (dx, dy) = (newt.pos.x - env.hero.x, newt.pos.y - env.hero.y);
        assert_eq!(obs.glyphs[((dy + 4) as usize) * CROP + (dx + 4) as usize], glyph::NEWT);
    }

    #[test]
    fn newt_wanders_only_over_room_floor() {
        let mut moved = 0;
        for seed in 0..20 {
            let (mut env, mut obs) = started(KeyroomVariant::Sparse, seed);
            let start = env.newt.unwrap().pos;
            for _ in 0..100 {
                env.step(action::WAIT, obs.buf()).unwrap();
                let Some(newt) = env.newt else { break };
                assert_eq!(env.tile(newt.pos), Tile::Floor);
                assert_ne!(newt.pos, env.hero);
            }
            moved += (env.newt.unwrap().pos != start) as u32;
        }
        assert!(moved >= 10, "the newt moved in only {moved} of 20 episodes");
    }

    #[test]
    fn step_cap_ends_the_episode_without_success() {
        for v in [KeyroomVariant::Small, KeyroomVariant::Sparse] {
            let (mut env, mut obs) = started(v, 17);
            let cap = v.step_cap();
            for step in 1..=cap {
                let out = env.step(action::WAIT, obs.buf()).unwrap();
                assert_eq!(out.reward, 0.0);
                assert!(!out.success);
                assert_eq!(out.done, step == cap, "step {step}");
                assert_eq!(out.truncated, step == cap, "a step cap is a time limit (step {step})");
            }
            assert_eq!(obs.stats[5], 1.0);
            assert!(env.step(action::WAIT, obs.buf()).is_err(), "stepping a finished episode is an error");
            env.reset(18, obs.buf()).unwrap();
            assert!(env.step(action::WAIT, obs.buf()).is_ok());
        }
    }

    #[test]
    fn bad_action_and_bad_buffers_are_errors() {
        let (mut env, mut obs) = started(KeyroomVariant::Small, 1);
        assert!(matches!(env.step(8, obs.buf()), Err(EnvError::ActionOutOfRange { action: 8, num_actions: 8, .. })));
        let mut glyphs = vec![0u16; 10];
        let mut stats = vec![0f32; STATS_DIM];
        let mut message = vec![0u8; MESSAGE_LEN];
        let short = ObsBuf { glyphs: &mut glyphs, stats: &mut stats, message: &mut message };
        assert!(env.step(0, short).is_err());
    }

    /// Fraction of `episodes` won by a uniformly random policy.
    fn random_success_rate(variant: KeyroomVariant, episodes: u64) -> f64 {
        let mut env = Keyroom::new(variant);
        let mut obs = Obs::new();
        let mut rng = ChaCha8Rng::seed_from_u64(0x5EED);
        let mut wins = 0;
        for ep in 0..episodes {
            env.reset(crate::vec_env::episode_seed(7, 0, ep), obs.buf()).unwrap();
            loop {
                let out = env.step(rng.random_range(0..action::NUM_ACTIONS), obs.buf()).unwrap();
                if out.done {
                    wins += out.success as u64;
                    break;
                }
            }
        }
        wins as f64 / episodes as f64
    }

    #[test]
    fn random_policy_success_small_is_learnable() {
        let rate = random_success_rate(KeyroomVariant::Small, 4000);
        println!("keyroom-small random success rate: {rate:.4}");
        assert!((0.03..0.4).contains(&rate), "rate {rate}");
    }

    #[test]
    fn random_policy_success_sparse_is_rare() {
        let rate = random_success_rate(KeyroomVariant::Sparse, 4000);
        println!("keyroom-sparse random success rate: {rate:.4}");
        assert!(rate < 0.02, "rate {rate}");
    }

    /// How far a random policy gets, stage by stage: what to look at when tuning layouts.
    /// `cargo test --release -p oni-env print_random_policy_stages -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn print_random_policy_stages() {
        for v in [KeyroomVariant::Small, KeyroomVariant::Sparse] {
            let mut env = Keyroom::new(v);
            let mut obs = Obs::new();
            let mut rng = ChaCha8Rng::seed_from_u64(0x5EED);
            let (mut key, mut unlocked, mut stairs, mut wins) = (0, 0, 0, 0);
            let n = 20000;
            for ep in 0..n {
                env.reset(crate::vec_env::episode_seed(7, 0, ep), obs.buf()).unwrap();
                let (mut k, mut u, mut s) = (false, false, false);
                loop {
                    let out = env.step(rng.random_range(0..action::NUM_ACTIONS), obs.buf()).unwrap();
                    k |= env.has_key;
                    u |= find_tile(&env, Tile::LockedDoor).is_empty();
                    s |= env.tile(env.hero) == Tile::Stairs;
                    if out.done {
                        wins += out.success as u32;
                        break;
                    }
                }
                key += k as u32;
                unlocked += u as u32;
                stairs += s as u32;
            }
            let f = |c: u32| c as f64 / n as f64;
            println!("{v:?}: key {:.3} unlocked {:.3} stairs {:.3} win {:.4}", f(key), f(unlocked), f(stairs), f(wins));
        }
    }

    #[test]
    #[ignore]
    fn print_sample_maps() {
        for v in [KeyroomVariant::Small, KeyroomVariant::Sparse] {
            for seed in 0..3 {
                println!("{} seed {seed}:\n{}", v.name(), started(v, seed).0.map_text());
            }
        }
    }

    #[test]
    fn bench_runs_and_reports_a_rate() {
        assert!(bench_env_steps(KeyroomVariant::Small, 10_000, 1) > 0.0);
    }

    /// `cargo test --release -p oni-env keyroom::tests::print_bench -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn print_bench() {
        for v in [KeyroomVariant::Small, KeyroomVariant::Sparse] {
            let rate = bench_env_steps(v, 20_000_000, 1);
            println!("{}: {:.2} M steps/s", v.name(), rate / 1e6);
        }
    }
}
