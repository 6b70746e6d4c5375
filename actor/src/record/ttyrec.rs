//! The ttyrec format that `ttyplay` (Debian's `ttyrec` package), `ipbt` and the NetHack
//! servers replay: a sequence of frames, each a 12-byte header (seconds, microseconds and
//! payload length, little-endian u32) followed by the bytes a terminal was sent. NLE's own
//! recordings add a channel byte to each header (its "ttyrec3"), which these players do not
//! read, so frames here are the plain format.
//!
//! Frames are drawn from env screens with ANSI/VT100 sequences: the first frame clears
//! and draws everything, later ones rewrite only the changed span of each changed row.
//! `Terminal` replays them, so a recording can be checked cell by cell.

use oni_env::screen::{Screen, NO_COLOR};
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const HEADER: usize = 12;
/// A frame longer than this is taken as corruption by the reader.
pub const MAX_FRAME: usize = 1 << 20;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TtyrecError {
    #[error("truncated frame header at byte {0}")]
    TruncatedHeader(usize),
    #[error("frame at byte {at} announces {len} bytes, {left} left")]
    TruncatedFrame { at: usize, len: usize, left: usize },
    #[error("frame at byte {at} announces {len} bytes, more than any frame written ({MAX_FRAME})")]
    Oversized { at: usize, len: usize },
}

/// One frame read back: when it was shown and what the terminal was sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub time: Duration,
    pub data: Vec<u8>,
}

/// Splits a recording into frames; any damage is an error naming where.
pub fn read_frames(bytes: &[u8]) -> Result<Vec<Frame>, TtyrecError> {
    match read_frames_until_damage(bytes) {
        (frames, None) => Ok(frames),
        (_, Some(e)) => Err(e),
    }
}

/// The whole frames before the first damage, and the damage if there is any (a reader that
/// shows what it can of a cut recording).
pub fn read_frames_until_damage(bytes: &[u8]) -> (Vec<Frame>, Option<TtyrecError>) {
    let mut frames = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let Some(h) = bytes.get(at..at + HEADER) else { return (frames, Some(TtyrecError::TruncatedHeader(at))) };
        let word = |k: usize| u32::from_le_bytes(h[4 * k..4 * k + 4].try_into().expect("4 bytes"));
        let len = word(2) as usize;
        if len > MAX_FRAME {
            return (frames, Some(TtyrecError::Oversized { at, len }));
        }
        let left = bytes.len() - at - HEADER;
        if len > left {
            return (frames, Some(TtyrecError::TruncatedFrame { at, len, left }));
        }
        let time = Duration::from_secs(word(0) as u64) + Duration::from_micros(word(1) as u64);
        frames.push(Frame { time, data: bytes[at + HEADER..at + HEADER + len].to_vec() });
        at += HEADER + len;
    }
    (frames, None)
}

/// Writes one frame (header and payload) shown at `time`.
pub fn write_frame(out: &mut impl Write, time: SystemTime, data: &[u8]) -> std::io::Result<()> {
    let t = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut header = [0u8; HEADER];
    header[0..4].copy_from_slice(&(t.as_secs() as u32).to_le_bytes());
    header[4..8].copy_from_slice(&t.subsec_micros().to_le_bytes());
    header[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
    out.write_all(&header)?;
    out.write_all(data)
}

/// The SGR sequence for a NetHack colour: 0–7 normal, 8 the default, 9–15 bright.
fn colour_code(colour: u8, out: &mut Vec<u8>) {
    match colour & 15 {
        NO_COLOR => out.extend_from_slice(b"\x1b[0m"),
        0 => out.extend_from_slice(b"\x1b[0;1;30m"), // black drawn dark grey, as NetHack's tty does
        c if c < 8 => out.extend_from_slice(format!("\x1b[0;3{c}m").as_bytes()),
        c => out.extend_from_slice(format!("\x1b[0;1;3{}m", c - 8).as_bytes()),
    }
}

/// Draws `cur` on a terminal that shows `prev` (`None`: anything), as few bytes as a simple
/// row diff allows.
pub fn draw(prev: Option<&Screen>, cur: &Screen) -> Vec<u8> {
    let mut out = Vec::new();
    let same_shape = prev.is_some_and(|p| p.rows == cur.rows && p.cols == cur.cols);
    if !same_shape {
        out.extend_from_slice(b"\x1b[0m\x1b[H\x1b[2J");
    }
    let mut colour: Option<u8> = None;
    for r in 0..cur.rows {
        let span = match prev.filter(|_| same_shape) {
            Some(p) => {
                let differs = |c: usize| p.cell(r, c) != cur.cell(r, c);
                let first = (0..cur.cols).find(|&c| differs(c));
                first.map(|f| (f, (f..cur.cols).rev().find(|&c| differs(c)).expect("one differs")))
            }
            // after a clear: up to the last non-blank cell
            None => (0..cur.cols).rev().find(|&c| cur.cell(r, c) != (b' ', NO_COLOR)).map(|last| (0, last)),
        };
        let Some((first, last)) = span else { continue };
        out.extend_from_slice(format!("\x1b[{};{}H", r + 1, first + 1).as_bytes());
        for c in first..=last {
            let (ch, col) = cur.cell(r, c);
            // a blank's colour does not show: keep the current one
            if ch != b' ' && colour != Some(col) {
                colour_code(col, &mut out);
                colour = Some(col);
            }
            out.push(if ch < 0x7f { ch } else { b'?' });
        }
    }
    if colour.is_some_and(|c| c != NO_COLOR) {
        out.extend_from_slice(b"\x1b[0m");
    }
    if let Some((r, c)) = cur.cursor {
        out.extend_from_slice(format!("\x1b[{};{}H", r + 1, c + 1).as_bytes());
    }
    out
}

/// Writes an episode's frames, one per step, `frame` apart in the recording's clock.
pub struct TtyrecWriter<W: Write> {
    out: W,
    start: SystemTime,
    frame: Duration,
    frames: u32,
    last: Option<Screen>,
    bytes: u64,
}

impl<W: Write> TtyrecWriter<W> {
    pub fn new(out: W, start: SystemTime, frame: Duration) -> Self {
        TtyrecWriter { out, start, frame, frames: 0, last: None, bytes: 0 }
    }

    /// Appends a frame drawing `screen`.
    pub fn push(&mut self, screen: &Screen) -> std::io::Result<()> {
        let data = draw(self.last.as_ref(), screen);
        let time = self.start + self.frame * self.frames;
        write_frame(&mut self.out, time, &data)?;
        self.frames += 1;
        self.bytes += (HEADER + data.len()) as u64;
        self.last = Some(screen.clone());
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Enough of a VT100 to replay what `draw` writes (cursor moves, clear, colours), so a
/// recording can be compared with the screens it was made from.
pub struct Terminal {
    pub screen: Screen,
    colour: u8,
    row: usize,
    col: usize,
}

impl Terminal {
    pub fn new(rows: usize, cols: usize) -> Self {
        Terminal { screen: Screen::blank(rows, cols), colour: NO_COLOR, row: 0, col: 0 }
    }

    /// Feeds bytes sent to the terminal; unknown sequences are ignored.
    pub fn feed(&mut self, data: &[u8]) {
        let mut i = 0;
        while i < data.len() {
            if data[i] == 0x1b && data.get(i + 1) == Some(&b'[') {
                let start = i + 2;
                let Some(end) = (start..data.len()).find(|&k| data[k].is_ascii_alphabetic()) else { return };
                let params: Vec<usize> = std::str::from_utf8(&data[start..end])
                    .unwrap_or("")
                    .split(';')
                    .map(|p| p.parse().unwrap_or(0))
                    .collect();
                self.control(data[end], &params);
                i = end + 1;
            } else {
                let (r, c) = (self.row, self.col);
                if r < self.screen.rows && c < self.screen.cols {
                    let k = r * self.screen.cols + c;
                    self.screen.chars[k] = data[i];
                    self.screen.colors[k] = self.colour;
                }
                self.col += 1;
                i += 1;
            }
        }
    }

    fn control(&mut self, op: u8, params: &[usize]) {
        match op {
            b'H' => {
                self.row = params.first().copied().unwrap_or(1).max(1) - 1;
                self.col = params.get(1).copied().unwrap_or(1).max(1) - 1;
                self.screen.cursor = Some((self.row as u16, self.col as u16));
            }
            b'J' if params.first() == Some(&2) => {
                let (rows, cols) = (self.screen.rows, self.screen.cols);
                let cursor = self.screen.cursor;
                self.screen = Screen { cursor, ..Screen::blank(rows, cols) };
            }
            b'm' => {
                let mut bright = false;
                for &p in params {
                    match p {
                        0 => (self.colour, bright) = (NO_COLOR, false),
                        1 => bright = true,
                        30..=37 => self.colour = (p - 30) as u8 + if bright { 8 } else { 0 },
                        _ => {}
                    }
                }
                // "bold black" is how colour 0 is drawn
                if self.colour == 8 && bright && params.contains(&30) {
                    self.colour = 0;
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screen(text: &str, colour_of: impl Fn(u8) -> u8) -> Screen {
        let mut s = Screen::from_text(text, 0);
        for k in 0..s.chars.len() {
            s.colors[k] = if s.chars[k] == b' ' { NO_COLOR } else { colour_of(s.chars[k]) };
        }
        s.cursor = Some((1, 2));
        s
    }

    #[test]
    fn frames_replay_to_the_screens_they_were_drawn_from() {
        // every colour, a blank row, then a frame where one cell and the cursor move
        let a = screen("-----\n|@.d|\n\n|$:{|\n-----", |c| match c {
            b'@' => 15,
            b'd' => 3,
            b'$' => 11,
            b':' => 0,
            b'{' => 4,
            _ => NO_COLOR,
        });
        let mut b = a.clone();
        let at = |r: usize, c: usize| r * b.cols + c;
        (b.chars[at(1, 1)], b.colors[at(1, 1)]) = (b'.', NO_COLOR);
        (b.chars[at(1, 2)], b.colors[at(1, 2)]) = (b'@', 15);
        b.cursor = Some((1, 2));
        let mut c = b.clone();
        (c.chars[at(3, 2)], c.colors[at(3, 2)]) = (b' ', NO_COLOR);

        let mut bytes = Vec::new();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut w = TtyrecWriter::new(&mut bytes, t0, Duration::from_millis(100));
        for s in [&a, &b, &c] {
            w.push(s).unwrap();
        }
        let written = w.bytes();
        w.finish().unwrap();
        assert_eq!(written, bytes.len() as u64);
        let frames = read_frames(&bytes).unwrap();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[2].time - frames[0].time, Duration::from_millis(200));
        assert!(frames[1].data.len() < frames[0].data.len() / 2, "a one-cell change is drawn as a diff");

        let mut term = Terminal::new(a.rows, a.cols);
        for (f, want) in frames.iter().zip([&a, &b, &c]) {
            term.feed(&f.data);
            for r in 0..want.rows {
                for col in 0..want.cols {
                    let (ch, colour) = want.cell(r, col);
                    let got = term.screen.cell(r, col);
                    assert_eq!(got.0, ch, "character at {r},{col}");
                    if ch != b' ' {
                        assert_eq!(got.1, colour, "colour of {:?} at {r},{col}", ch as char);
                    }
                }
            }
            assert_eq!(term.screen.cursor, want.cursor);
        }
    }

    #[test]
    fn damage_is_an_error_that_says_where() {
        let mut bytes = Vec::new();
        write_frame(&mut bytes, UNIX_EPOCH, b"hello").unwrap();
        write_frame(&mut bytes, UNIX_EPOCH, b"world").unwrap();
        assert_eq!(read_frames(&bytes).unwrap().len(), 2);
        assert_eq!(
            read_frames(&bytes[..bytes.len() - 2]),
            Err(TtyrecError::TruncatedFrame { at: 17, len: 5, left: 3 })
        );
        assert_eq!(read_frames(&bytes[..20]), Err(TtyrecError::TruncatedHeader(17)));
        let mut huge = bytes.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(read_frames(&huge), Err(TtyrecError::Oversized { at: 0, len: u32::MAX as usize }));
        assert_eq!(read_frames(&[]), Ok(vec![]));
    }
}
