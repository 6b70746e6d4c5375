//! ONI's image encoder over the tty crop (Sample Factory's convnet as Motif and ONI set it
//! up): the crop drawn as an RGB image, 6×6 pixels per cell (see `font`), then
//! Conv(3→32, 8×8, stride 4), Conv(32→64, 4×4, stride 2), Conv(64→128, 3×3, stride 2), each
//! followed by ELU, flattened, Linear → `hidden`, ELU. A 12×12 crop is a 72×72 image and
//! gives 17×17, 7×7 and 3×3 feature maps, 1152 features.
//!
//! The image is never drawn. An 8×8 window at stride 4 over 6-pixel cells starts 0, 2 or 4
//! pixels into a cell and always covers exactly 2×2 cells, so the first convolution is a sum
//! of four lookups, each depending on one cell's id u:
//!   conv1(i, j) = b₁ + Σ_{a,b ∈ {0,1}} T[k(i, j, a, b)][u(r₀(i) + a, c₀(j) + b)]
//!   T[k][u] = Σ_{pixels p of tile(u) inside window part k} tile(u)_p · W₁[tap(p)]
//! where r₀(i) = ⌊4i/6⌋, k enumerates (row phase, column phase, a, b) (36 parts). T is built
//! for the cell ids present in the batch only (`Screen::prepare`), a few hundred, by one
//! matrix product of their tiles with the taps of W₁. This is exactly the convolution of the
//! rendered image, at a few percent of its cost, and gradients reach W₁ through T.
//! Later layers are strided convolutions as gathered patches and one matrix product each,
//! on channels-last maps.

use crate::backend::PolicyBackend;
use crate::font::{self, CELL_PX, TILE_VALUES};
use crate::init::orthogonal_linear;
use crate::patches::Patches;
use burn::module::Module;
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::TensorData;

pub(crate) const K1: usize = 8;
const S1: usize = 4;
/// Parts of a window: 3 row phases × 3 column phases × 2 × 2 cells.
const PARTS: usize = 36;
pub(crate) const CHANNELS: [usize; 3] = [32, 64, 128];

fn out_len(n: usize, k: usize, s: usize) -> usize {
    if n >= k {
        (n - k) / s + 1
    } else {
        0
    }
}

/// Feature-map sizes for a rows × cols crop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    pub rows: usize,
    pub cols: usize,
    /// After each convolution: (rows, cols).
    pub maps: [(usize, usize); 3],
}

impl Geometry {
    pub fn new(rows: usize, cols: usize) -> Self {
        let (h1, w1) = (out_len(rows * CELL_PX, K1, S1), out_len(cols * CELL_PX, K1, S1));
        let (h2, w2) = (out_len(h1, 4, 2), out_len(w1, 4, 2));
        let (h3, w3) = (out_len(h2, 3, 2), out_len(w2, 3, 2));
        Geometry { rows, cols, maps: [(h1, w1), (h2, w2), (h3, w3)] }
    }

    /// The smallest crop side is 6 cells (36 pixels: 8, 3, 1 positions).
    pub fn is_valid(&self) -> bool {
        self.maps[2].0 > 0 && self.maps[2].1 > 0
    }

    pub fn features(&self) -> usize {
        self.maps[2].0 * self.maps[2].1 * CHANNELS[2]
    }
}

/// The screen part of one batch, built on the host: the distinct cell ids' tiles and, for each
/// of the four cells under every first-layer window, the row of T to add.
#[derive(Debug, Clone)]
pub struct ScreenInput<B: Backend> {
    /// [U, TILE_VALUES]
    pub tiles: Tensor<B, 2>,
    /// Four [N · h₁ · w₁] indices into T ([U · 36, 32], row u·36 + k).
    pub lookups: [Tensor<B, 1, Int>; 4],
    pub n: usize,
}

/// Window start phase within a cell (0, 2 or 4 pixels → 0, 1, 2) and the first cell.
fn window(i: usize) -> (usize, usize) {
    let px = i * S1;
    ((px % CELL_PX) / 2, px / CELL_PX)
}

impl<B: Backend> ScreenInput<B> {
    /// From `n` crops of tty cell ids (`rows × cols` each, row-major).
    pub fn from_cells(cells: &[u16], geo: &Geometry, device: &B::Device) -> Self {
        let per = geo.rows * geo.cols;
        let n = cells.len() / per.max(1);
        // compact ids of the cells present
        let mut slot = vec![u32::MAX; oni_env::TTY_CELLS];
        let mut used: Vec<usize> = Vec::new();
        for &c in cells {
            let c = c as usize % oni_env::TTY_CELLS;
            if slot[c] == u32::MAX {
                slot[c] = used.len() as u32;
                used.push(c);
            }
        }
        if used.is_empty() {
            used.push(0);
        }
        let atlas = font::atlas();
        let mut tiles = Vec::with_capacity(used.len() * TILE_VALUES);
        for &u in &used {
            tiles.extend_from_slice(&atlas[u * TILE_VALUES..(u + 1) * TILE_VALUES]);
        }
        let (h1, w1) = geo.maps[0];
        let mut lookups: [Vec<i32>; 4] = Default::default();
        for l in lookups.iter_mut() {
            l.reserve(n * h1 * w1);
        }
        for obs in cells.chunks_exact(per) {
            for i in 0..h1 {
                let (pi, r0) = window(i);
                for j in 0..w1 {
                    let (pj, c0) = window(j);
                    for (q, l) in lookups.iter_mut().enumerate() {
                        let (a, b) = (q / 2, q % 2);
                        let cell = obs[(r0 + a) * geo.cols + c0 + b] as usize % oni_env::TTY_CELLS;
                        let k = (pi * 3 + pj) * 4 + q;
                        l.push((slot[cell] as usize * PARTS + k) as i32);
                    }
                }
            }
        }
        let u = used.len();
        let idx = |v: Vec<i32>| {
            let len = v.len();
            Tensor::<B, 1, Int>::from_data(TensorData::new(v, [len]), device)
        };
        let [l0, l1, l2, l3] = lookups;
        ScreenInput {
            tiles: Tensor::from_data(TensorData::new(tiles, [u, TILE_VALUES]), device),
            lookups: [idx(l0), idx(l1), idx(l2), idx(l3)],
            n,
        }
    }
}

/// For row j·36 + k of the [108·36, 32] matrix gathered from W₁ (taps c·64 + dy·8 + dx,
/// plus a zero row 192): which tap pixel j of a tile meets in window part k, if any.
fn tap_index() -> Vec<i32> {
    let zero = (3 * K1 * K1) as i32;
    let mut idx = Vec::with_capacity(TILE_VALUES * PARTS);
    for c in 0..3 {
        for sy in 0..CELL_PX {
            for sx in 0..CELL_PX {
                for k in 0..PARTS {
                    let (phases, q) = (k / 4, k % 4);
                    let (py, px) = (2 * (phases / 3), 2 * (phases % 3));
                    let (a, b) = (q / 2, q % 2);
                    let dy = (a * CELL_PX + sy) as i64 - py as i64;
                    let dx = (b * CELL_PX + sx) as i64 - px as i64;
                    let inside = (0..K1 as i64).contains(&dy) && (0..K1 as i64).contains(&dx);
                    idx.push(if inside { (c * K1 * K1) as i32 + (dy * K1 as i64 + dx) as i32 } else { zero });
                }
            }
        }
    }
    idx
}

#[derive(Module, Debug)]
pub struct ScreenEncoder<B: Backend> {
    /// W₁ as [3·8·8 taps (c, dy, dx), 32] and b₁.
    conv1: Linear<B>,
    conv2: Linear<B>,
    conv3: Linear<B>,
    out: Linear<B>,
    rows: usize,
    cols: usize,
}

impl<B: PolicyBackend> ScreenEncoder<B> {
    pub fn new(rows: usize, cols: usize, hidden: usize, device: &B::Device) -> Self {
        let geo = Geometry::new(rows, cols);
        let [c1, c2, c3] = CHANNELS;
        ScreenEncoder {
            conv1: orthogonal_linear(3 * K1 * K1, c1, 1.0, device),
            conv2: orthogonal_linear(16 * c1, c2, 1.0, device),
            conv3: orthogonal_linear(9 * c2, c3, 1.0, device),
            out: orthogonal_linear(geo.features(), hidden, 1.0, device),
            rows,
            cols,
        }
    }

    pub fn geometry(&self) -> Geometry {
        Geometry::new(self.rows, self.cols)
    }

    /// The first convolution's output, channels last: [N, h₁·w₁, 32].
    fn first_layer(&self, input: &ScreenInput<B>) -> Tensor<B, 3> {
        let dev = input.tiles.device();
        let c1 = CHANNELS[0];
        let w = Tensor::cat(vec![self.conv1.weight.val(), Tensor::zeros([1, c1], &dev)], 0);
        let idx = tap_index();
        let parts = w.select(0, Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [TILE_VALUES * PARTS]), &dev));
        debug_assert_eq!(parts.dims(), [TILE_VALUES * PARTS, c1]);
        let [u, _] = input.tiles.dims();
        // T: [U, 36·32] → [U·36, 32], row u·36 + k
        let table = input.tiles.clone().matmul(parts.reshape([TILE_VALUES, PARTS * c1])).reshape([u * PARTS, c1]);
        let bias = self.conv1.bias.as_ref().expect("conv1 bias").val();
        let (h1, w1) = self.geometry().maps[0];
        B::lookup_sum_elu(table, input.lookups.clone(), bias).reshape([input.n, h1 * w1, c1])
    }

    /// [N, hidden] features of the screen.
    pub fn forward(&self, input: &ScreenInput<B>) -> Tensor<B, 2> {
        let geo = self.geometry();
        let n = input.n;
        let x = self.first_layer(input);
        let [(h1, w1), (h2, w2), (h3, w3)] = geo.maps;
        let x = B::elu(Patches::strided2d(h1, w1, 4, 2).conv(&self.conv2, x)); // [N, h2·w2, 64]
        let x = B::elu(Patches::strided2d(h2, w2, 3, 2).conv(&self.conv3, x)); // [N, h3·w3, 128]
        B::elu(crate::backend::linear(&self.out, x.reshape([n, h3 * w3 * CHANNELS[2]])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CpuBackend;
    use burn::nn::conv::Conv2dConfig;

    type B = CpuBackend;

    #[test]
    fn onis_crop_gives_onis_feature_sizes() {
        let g = Geometry::new(12, 12);
        assert_eq!(g.maps, [(17, 17), (7, 7), (3, 3)]);
        assert_eq!(g.features(), 1152);
        assert!(Geometry::new(6, 6).is_valid() && !Geometry::new(5, 12).is_valid());
    }

    /// The table-and-lookup first layer equals burn's Conv2d over the rendered image with
    /// the same weights, also on a crop that is not square.
    #[test]
    fn first_layer_equals_a_convolution_of_the_rendered_image() {
        let dev = Default::default();
        let (rows, cols, n) = (7, 9, 2);
        let enc = ScreenEncoder::<B>::new(rows, cols, 16, &dev);
        // cells: a few characters in a few colours, and blanks
        let cells: Vec<u16> = (0..n * rows * cols)
            .map(|i| {
                let ch = [b' ', b'@', b'#', b'.', b'|', b'd'][(i * 7 + i / 5) % 6] as u16;
                ch + 256 * ((i % 5) as u16 * 3 % 16)
            })
            .collect();
        let input = ScreenInput::<B>::from_cells(&cells, &enc.geometry(), &dev);
        let got = enc.first_layer(&input); // [n, h1·w1, 32]

        // the image: [n, 3, rows·6, cols·6]
        let (hp, wp) = (rows * CELL_PX, cols * CELL_PX);
        let mut img = vec![0.0f32; n * 3 * hp * wp];
        for o in 0..n {
            for r in 0..rows {
                for c in 0..cols {
                    let t = font::tile(cells[o * rows * cols + r * cols + c] as usize);
                    for ch in 0..3 {
                        for y in 0..CELL_PX {
                            for x in 0..CELL_PX {
                                img[((o * 3 + ch) * hp + r * CELL_PX + y) * wp + c * CELL_PX + x] =
                                    t[(ch * CELL_PX + y) * CELL_PX + x];
                            }
                        }
                    }
                }
            }
        }
        let img = Tensor::<B, 4>::from_data(TensorData::new(img, [n, 3, hp, wp]), &dev);
        let mut conv = Conv2dConfig::new([3, 32], [K1, K1]).with_stride([S1, S1]).init::<B>(&dev);
        // our weight [(c, dy, dx), out] → conv's [out, c, dy, dx]
        conv.weight = burn::module::Param::from_tensor(enc.conv1.weight.val().transpose().reshape([32, 3, K1, K1]));
        conv.bias = enc.conv1.bias.clone();
        let want = <B as PolicyBackend>::elu(conv.forward(img)); // [n, 32, h1, w1]
        let [_, _, h1, w1] = want.dims();
        assert_eq!((h1, w1), enc.geometry().maps[0]);
        let want = want.permute([0, 2, 3, 1]).reshape([n, h1 * w1, 32]);
        let diff: f32 = (got - want).abs().max().into_scalar();
        assert!(diff < 1e-4, "max difference {diff}");
    }
}
