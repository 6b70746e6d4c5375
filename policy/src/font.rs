//! The pixels of a tty cell. ONI's NetHack network sees the terminal as an RGB image in which
//! every (character, colour) cell is a 6×6 tile; ONI draws its tiles from a TrueType font and
//! shrinks them. Ours come from the public-domain 8×8 console font (`font8x8`), shrunk to
//! 6×6 by area averaging and tinted with the cell's colour.

use oni_env::TTY_CELLS;

/// A cell is CELL_PX × CELL_PX pixels.
pub const CELL_PX: usize = 6;
/// Values of one tile: 3 channels × 6 rows × 6 columns, in that order.
pub const TILE_VALUES: usize = 3 * CELL_PX * CELL_PX;

/// NetHack's 16 colours (curses numbering: black, red, green, brown, blue, magenta, cyan,
/// gray, no colour, orange, bright green, yellow, bright blue, bright magenta, bright cyan,
/// white) as terminal RGB.
const PALETTE: [[u8; 3]; 16] = [
    [0, 0, 0],
    [170, 0, 0],
    [0, 170, 0],
    [170, 85, 0],
    [0, 0, 170],
    [170, 0, 170],
    [0, 170, 170],
    [170, 170, 170],
    [85, 85, 85],
    [255, 85, 85],
    [85, 255, 85],
    [255, 255, 85],
    [85, 85, 255],
    [255, 85, 255],
    [85, 255, 255],
    [255, 255, 255],
];

/// Ink coverage (0–1) of a character's 6×6 tile: each target pixel averages the 8×8 source
/// pixels under it, weighted by overlap.
fn coverage(ch: u8) -> [[f32; CELL_PX]; CELL_PX] {
    let mut out = [[0.0; CELL_PX]; CELL_PX];
    let Some(rows) = font8x8::legacy::BASIC_LEGACY.get(ch as usize) else { return out };
    // overlap of source pixel s (covering [s, s+1)) with target pixel t (covering
    // [t·8/6, (t+1)·8/6)), as a fraction of the target's width
    let scale = 8.0 / CELL_PX as f32;
    let overlap = |t: usize, s: usize| {
        let (lo, hi) = (t as f32 * scale, (t + 1) as f32 * scale);
        ((hi.min(s as f32 + 1.0) - lo.max(s as f32)).max(0.0)) / scale
    };
    for (ty, row) in out.iter_mut().enumerate() {
        for (tx, px) in row.iter_mut().enumerate() {
            let mut ink = 0.0;
            for (sy, bits) in rows.iter().enumerate() {
                let wy = overlap(ty, sy);
                if wy == 0.0 {
                    continue;
                }
                for sx in 0..8 {
                    if bits >> sx & 1 == 1 {
                        ink += wy * overlap(tx, sx);
                    }
                }
            }
            *px = ink;
        }
    }
    out
}

/// The tile of tty cell `cell` (= character + 256 · colour), values in [0, 1].
pub fn tile(cell: usize) -> [f32; TILE_VALUES] {
    let (ch, colour) = ((cell % 256) as u8, (cell / 256) % 16);
    let cov = coverage(ch);
    let mut out = [0.0; TILE_VALUES];
    for c in 0..3 {
        let level = PALETTE[colour][c] as f32 / 255.0;
        for y in 0..CELL_PX {
            for x in 0..CELL_PX {
                out[(c * CELL_PX + y) * CELL_PX + x] = cov[y][x] * level;
            }
        }
    }
    out
}

/// Every tile, `TTY_CELLS × TILE_VALUES`, built once per process.
pub fn atlas() -> &'static [f32] {
    static ATLAS: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    ATLAS.get_or_init(|| (0..TTY_CELLS).flat_map(tile).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_carry_the_shape_and_the_colour() {
        // blanks and control characters draw nothing
        assert!(tile(b' ' as usize).iter().all(|&v| v == 0.0));
        assert!(tile(0).iter().all(|&v| v == 0.0));
        // '@' in white has ink in all three channels, equally
        let at = tile(b'@' as usize + 256 * 15);
        let ink: f32 = at.iter().sum();
        assert!(ink > 10.0, "ink {ink}");
        let plane = CELL_PX * CELL_PX;
        assert_eq!(at[..plane], at[plane..2 * plane]);
        // in red (colour 1) only the red channel is lit, at 170/255 of white's level
        let red = tile(b'@' as usize + 256);
        assert!(red[plane..].iter().all(|&v| v == 0.0));
        for (r, w) in red[..plane].iter().zip(&at[..plane]) {
            assert!((r - w * 170.0 / 255.0).abs() < 1e-6);
        }
        // area averaging keeps the total ink: 8×8 source pixels → 6×6 tile scaled by (6/8)²
        let bits: u32 = font8x8::legacy::BASIC_LEGACY[b'@' as usize].iter().map(|r| r.count_ones()).sum();
        let total: f32 = tile(b'@' as usize + 256 * 15)[..plane].iter().sum();
        assert!((total - bits as f32 * 36.0 / 64.0).abs() < 1e-3, "{total} vs {bits}");
        // distinct characters give distinct tiles
        assert_ne!(tile(b'.' as usize + 256 * 7), tile(b'#' as usize + 256 * 7));
        assert_eq!(atlas().len(), TTY_CELLS * TILE_VALUES);
    }
}
