//! Fused kernels for burn's CPU backend (burn-flex), behind `PolicyBackend`'s methods.
//!
//! burn-flex builds every new tensor as a zeroed byte vector that it then copies into an
//! aligned one, and runs each element-wise operation as its own pass with its own output.
//! On ONI's network that was a fifth of an update (profiled on an Intel Xeon with AVX-512):
//! the outputs of the matrix products were zeroed and copied, and an ELU took four passes and
//! four new tensors. Here a linear layer writes its product straight into a fresh buffer
//! that starts as the broadcast bias, and an ELU (and its gradient) is one pass, in place
//! when nothing else holds the tensor. The matrix products are the `gemm` crate's, as in
//! burn-flex, which picks its AVX-512 or AVX2 kernels from what the CPU reports at run time;
//! the ELU's loop is compiled for AVX-512 and AVX2 as well and chosen the same way, so the
//! binary never executes an instruction the CPU lacks.

use burn::backend::Flex;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Bytes, DType, Shape};
use burn_flex::{FlexTensor, Layout};

/// The f32 data of `t` in row-major order (copied only when `t` is a strided view).
fn contiguous(t: FlexTensor) -> FlexTensor {
    assert_eq!(t.dtype(), DType::F32, "the policy's CPU kernels take f32 tensors");
    if t.as_slice::<f32>().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

fn data(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32 tensor")
}

fn tensor(values: Vec<f32>, shape: &[usize]) -> FlexTensor {
    debug_assert_eq!(values.len(), shape.iter().product::<usize>());
    FlexTensor::new(Bytes::from_elems(values), Layout::contiguous(Shape::from(shape.to_vec())), DType::F32)
}

fn dims2(t: &FlexTensor) -> [usize; 2] {
    let s = t.layout().shape();
    assert_eq!(s.num_dims(), 2, "a matrix");
    [s[0], s[1]]
}

/// A row-major matrix operand: data, rows, columns, and its strides (row, column), so a
/// transpose is the same data read the other way.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: isize,
    cs: isize,
}

impl<'a> Mat<'a> {
    fn new(data: &'a [f32], [rows, cols]: [usize; 2]) -> Self {
        Mat { data, rows, cols, rs: cols as isize, cs: 1 }
    }

    fn t(self) -> Self {
        Mat { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }
}

/// burn-flex's rule: products of at least 192³ multiply-adds use every thread of the
/// current rayon pool, smaller ones stay on the calling thread.
fn parallelism(m: usize, n: usize, k: usize) -> gemm::Parallelism {
    if m.saturating_mul(n).saturating_mul(k) >= 192 * 192 * 192 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    }
}

/// a · b as a new [a.rows, b.cols] buffer; `init` (one row, repeated) is added when given.
fn product(a: Mat, b: Mat, init: Option<&[f32]>) -> Vec<f32> {
    assert_eq!(a.cols, b.rows, "inner dimensions");
    let (m, n, k) = (a.rows, b.cols, a.cols);
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    if let Some(row) = init {
        assert_eq!(row.len(), n);
        for _ in 0..m {
            out.extend_from_slice(row);
        }
    }
    if k == 0 {
        out.resize(m * n, 0.0);
        return out;
    }
    let read_dst = init.is_some();
    // SAFETY: `out` has room for m·n values, row stride n; the operands' strides stay
    // inside their slices (checked by the asserts on their sizes); without `read_dst` gemm
    // writes every element of the destination before anything reads it.
    unsafe {
        assert!(a.data.len() >= m * k && b.data.len() >= k * n);
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            read_dst,
            a.data.as_ptr(),
            a.cs,
            a.rs,
            b.data.as_ptr(),
            b.cs,
            b.rs,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism(m, n, k),
        );
        out.set_len(m * n);
    }
    out
}

/// x [m, k] · w [k, n] + b [n].
pub(crate) fn linear(x: FloatTensor<Flex>, w: FloatTensor<Flex>, b: Option<FloatTensor<Flex>>) -> FloatTensor<Flex> {
    let (x, w) = (contiguous(x), contiguous(w));
    let ([m, k], [k2, n]) = (dims2(&x), dims2(&w));
    assert_eq!(k, k2, "linear: input width {k} against a weight of {k2} rows");
    let b = b.map(contiguous);
    let out = product(Mat::new(data(&x), [m, k]), Mat::new(data(&w), [k, n]), b.as_ref().map(data));
    tensor(out, &[m, n])
}

/// The gradients of `linear` from dy [m, n]: dx = dy · wᵀ, dw = xᵀ · dy, db = Σ_rows dy;
/// each only where asked.
pub(crate) fn linear_backward(
    x: FloatTensor<Flex>,
    w: FloatTensor<Flex>,
    dy: FloatTensor<Flex>,
    [want_dx, want_dw, want_db]: [bool; 3],
) -> [Option<FloatTensor<Flex>>; 3] {
    let (x, w, dy) = (contiguous(x), contiguous(w), contiguous(dy));
    let ([m, k], [_, n]) = (dims2(&x), dims2(&w));
    let (xm, wm, dym) = (Mat::new(data(&x), [m, k]), Mat::new(data(&w), [k, n]), Mat::new(data(&dy), [m, n]));
    let dx = want_dx.then(|| tensor(product(dym, wm.t(), None), &[m, k]));
    let dw = want_dw.then(|| tensor(product(xm.t(), dym, None), &[k, n]));
    let db = want_db.then(|| {
        let mut sums = vec![0.0f32; n];
        for row in data(&dy).chunks_exact(n) {
            for (s, v) in sums.iter_mut().zip(row) {
                *s += v;
            }
        }
        tensor(sums, &[n])
    });
    [dx, dw, db]
}

/// The integer tensor's values as row numbers.
fn row_indices(index: &FlexTensor) -> Vec<usize> {
    let index = if index.as_slice::<i32>().is_some() || index.as_slice::<i64>().is_some() {
        index.clone()
    } else {
        index.to_contiguous()
    };
    match index.dtype() {
        DType::I32 => index.as_slice::<i32>().expect("contiguous").iter().map(|&i| i as usize).collect(),
        DType::I64 => index.as_slice::<i64>().expect("contiguous").iter().map(|&i| i as usize).collect(),
        other => panic!("row indices of type {other:?}"),
    }
}

/// The gradient of a row gather: dx [rows, c] with dx[index[j]] += dy[j]. burn-flex runs
/// this scatter-add on one thread; here each thread owns a range of destination rows and
/// picks, from the whole index list, the entries that land there, so no two threads write
/// the same row and no partial sums need merging.
pub(crate) fn select_rows_backward(dy: FloatTensor<Flex>, index: &FlexTensor, rows: usize) -> FloatTensor<Flex> {
    use rayon::prelude::*;
    let dy = contiguous(dy);
    let [m, c] = dims2(&dy);
    let idx = row_indices(index);
    assert_eq!(idx.len(), m, "one index per gathered row");
    assert!(idx.iter().all(|&i| i < rows), "row index out of range");
    let dyd = data(&dy);
    let mut out = vec![0.0f32; rows * c];
    if c == 0 || rows == 0 {
        return tensor(out, &[rows, c]);
    }
    let add = |part: &mut [f32], lo: usize| {
        let hi = lo + part.len() / c;
        for (j, &i) in idx.iter().enumerate() {
            if (lo..hi).contains(&i) {
                let dst = &mut part[(i - lo) * c..(i - lo + 1) * c];
                for (d, s) in dst.iter_mut().zip(&dyd[j * c..(j + 1) * c]) {
                    *d += s;
                }
            }
        }
    };
    let threads = rayon::current_num_threads();
    if threads < 2 || m * c < 1 << 16 {
        add(&mut out, 0);
    } else {
        let per = rows.div_ceil(threads);
        out.par_chunks_mut(per * c).enumerate().for_each(|(k, part)| add(part, k * per));
    }
    tensor(out, &[rows, c])
}

/// Row p of the result: ELU(bias + Σ_q table[lookups[q][p]]), one pass over the output
/// (burn's ops would write four gathered copies and three sums first), split across threads.
pub(crate) fn lookup_sum_elu(
    table: FloatTensor<Flex>,
    lookups: &[FlexTensor; 4],
    bias: FloatTensor<Flex>,
) -> FloatTensor<Flex> {
    use rayon::prelude::*;
    let (table, bias) = (contiguous(table), contiguous(bias));
    let [rows, c] = dims2(&table);
    let (t, b) = (data(&table), data(&bias));
    assert_eq!(b.len(), c, "one bias per column");
    let idx: Vec<Vec<usize>> = lookups.iter().map(row_indices).collect();
    let len = idx[0].len();
    assert!(idx.iter().all(|l| l.len() == len && l.iter().all(|&i| i < rows)), "lookups out of range");
    let mut out = vec![0.0f32; len * c];
    if c > 0 {
        let per = len.div_ceil(4 * rayon::current_num_threads()).max(256);
        out.par_chunks_mut(per * c).enumerate().for_each(|(k, part)| {
            for (j, o) in part.chunks_exact_mut(c).enumerate() {
                let p = k * per + j;
                o.copy_from_slice(b);
                for l in &idx {
                    for (o, v) in o.iter_mut().zip(&t[l[p] * c..(l[p] + 1) * c]) {
                        *o += v;
                    }
                }
            }
            elu_slice(part);
        });
    }
    tensor(out, &[len, c])
}

/// `lookup_sum_elu`'s gradients from its output y and dy: g = dy ⊙ ELU'(y), the table's
/// gradient Σ_q g scattered to lookups[q], the bias's Σ_p g. Threads take ranges of rows
/// and sum into their own copy of the (small) table gradient; the copies are added at the end.
pub(crate) fn lookup_sum_elu_backward(
    y: FloatTensor<Flex>,
    dy: FloatTensor<Flex>,
    lookups: &[FlexTensor; 4],
    table_rows: usize,
) -> (FloatTensor<Flex>, FloatTensor<Flex>) {
    use rayon::prelude::*;
    let (y, dy) = (contiguous(y), contiguous(dy));
    let [len, c] = dims2(&y);
    let (yd, dyd) = (data(&y), data(&dy));
    let idx: Vec<Vec<usize>> = lookups.iter().map(row_indices).collect();
    assert!(idx.iter().all(|l| l.len() == len && l.iter().all(|&i| i < table_rows)), "lookups out of range");
    let per = len.div_ceil(rayon::current_num_threads()).max(1);
    let partial = |k: usize| {
        let (lo, hi) = (k * per, ((k + 1) * per).min(len));
        let mut dt = vec![0.0f32; table_rows * c];
        let mut db = vec![0.0f32; c];
        let mut g = vec![0.0f32; c];
        for p in lo..hi {
            g.copy_from_slice(&dyd[p * c..(p + 1) * c]);
            elu_grad_slice(&mut g, &yd[p * c..(p + 1) * c]);
            for (d, v) in db.iter_mut().zip(&g) {
                *d += v;
            }
            for l in &idx {
                for (d, v) in dt[l[p] * c..(l[p] + 1) * c].iter_mut().zip(&g) {
                    *d += v;
                }
            }
        }
        (dt, db)
    };
    let parts: Vec<(Vec<f32>, Vec<f32>)> = (0..len.div_ceil(per)).into_par_iter().map(partial).collect();
    let mut parts = parts.into_iter();
    let (mut dt, mut db) = parts.next().unwrap_or_else(|| (vec![0.0; table_rows * c], vec![0.0; c]));
    for (t, b) in parts {
        dt.iter_mut().zip(&t).for_each(|(a, v)| *a += v);
        db.iter_mut().zip(&b).for_each(|(a, v)| *a += v);
    }
    (tensor(dt, &[table_rows, c]), tensor(db, &[c]))
}

/// eˣ for x ≤ 0 within 2 ulp, branch-free so that the loops around it vectorise: x = n ln2
/// + r with |r| ≤ ln2/2, eʳ by its degree-7 Taylor polynomial, 2ⁿ put into the exponent bits.
/// Below −87 the result is 0 (eˣ is then under f32's smallest normal number).
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2²³: adding and subtracting it rounds to the nearest integer
    const ROUND: f32 = 12_582_912.0;
    let small = x < -87.0;
    let x = x.max(-87.0);
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if small {
        0.0
    } else {
        p * scale
    }
}

/// ELU, α = 1, in place: x for x > 0, eˣ − 1 otherwise.
#[inline(always)]
fn elu_loop(v: &mut [f32]) {
    for x in v {
        let e = exp_nonpositive(x.min(0.0)) - 1.0;
        *x = if *x > 0.0 { *x } else { e };
    }
}

/// The ELU's gradient from its output y, into `g`: g for y > 0, g (y + 1) otherwise.
#[inline(always)]
fn elu_grad_loop(g: &mut [f32], y: &[f32]) {
    for (g, &y) in g.iter_mut().zip(y) {
        *g = if y > 0.0 { *g } else { *g * (y + 1.0) };
    }
}

/// The same loops compiled for the wider instruction sets, chosen at run time.
#[cfg(target_arch = "x86_64")]
mod wide {
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn elu_avx512(v: &mut [f32]) {
        super::elu_loop(v)
    }
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn elu_avx2(v: &mut [f32]) {
        super::elu_loop(v)
    }
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn elu_grad_avx512(g: &mut [f32], y: &[f32]) {
        super::elu_grad_loop(g, y)
    }
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn elu_grad_avx2(g: &mut [f32], y: &[f32]) {
        super::elu_grad_loop(g, y)
    }
}

/// The instruction set the element-wise loops run with on this CPU.
pub fn simd_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "avx512f";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return "avx2+fma";
        }
    }
    "baseline"
}

fn elu_slice(v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: each variant runs only where the CPU reports its features.
        match simd_level() {
            "avx512f" => return unsafe { wide::elu_avx512(v) },
            "avx2+fma" => return unsafe { wide::elu_avx2(v) },
            _ => {}
        }
    }
    elu_loop(v)
}

fn elu_grad_slice(g: &mut [f32], y: &[f32]) {
    assert_eq!(g.len(), y.len());
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: as in `elu_slice`.
        match simd_level() {
            "avx512f" => return unsafe { wide::elu_grad_avx512(g, y) },
            "avx2+fma" => return unsafe { wide::elu_grad_avx2(g, y) },
            _ => {}
        }
    }
    elu_grad_loop(g, y)
}

/// A tensor whose buffer this call may overwrite: `t` itself when nothing else holds it
/// (an element-wise map over its whole buffer is then right for any layout), else a
/// contiguous copy.
fn owned(t: FlexTensor) -> FlexTensor {
    assert_eq!(t.dtype(), DType::F32, "the policy's CPU kernels take f32 tensors");
    if t.is_unique() {
        t
    } else {
        let shape: Vec<usize> = t.layout().shape().to_vec();
        let t = contiguous(t);
        tensor(data(&t).to_vec(), &shape)
    }
}

pub(crate) fn elu(x: FloatTensor<Flex>) -> FloatTensor<Flex> {
    let mut x = owned(x);
    elu_slice(x.try_storage_mut::<f32>().expect("a tensor held once"));
    x
}

/// d loss/d x from the output `y` and d loss/d y.
pub(crate) fn elu_backward(y: FloatTensor<Flex>, dy: FloatTensor<Flex>) -> FloatTensor<Flex> {
    let y = contiguous(y);
    let mut g = contiguous(owned(dy));
    let (start, end) = g.layout().contiguous_offsets().expect("contiguous");
    let gd = g.try_storage_mut::<f32>().map(|s| &mut s[start..end]);
    elu_grad_slice(gd.expect("a tensor held once"), data(&y));
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exponential_is_within_two_ulp_of_the_library_one() {
        let mut x = -87.0f32;
        while x <= 0.0 {
            let (got, want) = (exp_nonpositive(x), x.exp());
            let ulp = f32::from_bits(want.to_bits() + 1) - want;
            assert!((got - want).abs() <= 2.0 * ulp, "exp({x}) = {got}, library {want}");
            x += 0.0137;
        }
        assert_eq!(exp_nonpositive(-200.0), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
    }

    /// Every dispatch level gives the same values as the plain loop.
    #[test]
    fn the_wide_loops_equal_the_plain_one() {
        let xs: Vec<f32> = (0..1037).map(|i| ((i * 7919) % 2001) as f32 / 100.0 - 10.0).collect();
        let mut plain = xs.clone();
        elu_loop(&mut plain);
        let mut dispatched = xs.clone();
        elu_slice(&mut dispatched);
        assert_eq!(plain, dispatched, "ELU at {}", simd_level());
        let mut g1 = vec![0.5f32; xs.len()];
        let mut g2 = g1.clone();
        elu_grad_loop(&mut g1, &plain);
        elu_grad_slice(&mut g2, &plain);
        assert_eq!(g1, g2, "ELU gradient at {}", simd_level());
    }
}
