//! Fused kernels for burn's CPU backend (burn-flex), behind `PolicyBackend`'s methods.
//!
//! burn-flex builds every new tensor as a zeroed byte vector that it then copies into an
//! aligned one, and runs each element-wise operation as its own pass with its own output.
//! On ONI's network that was a fifth of an update (profiled on an Intel Xeon with AVX-512):
//! the outputs of the matrix products were zeroed and copied, and an ELU took four passes and
//! four new tensors. Here a linear layer writes its product straight into a fresh buffer
//! that starts as the broadcast bias, and an ELU (and its gradient) is one pass, in place
//! when nothing else holds the tensor; the gathers, the image encoder's first layer and the
//! GRU's time loop likewise. The matrix products are the `gemm` crate's, as in burn-flex,
//! which picks its AVX-512 or AVX2 kernels from what the CPU reports at run time; the
//! element-wise loops are compiled for AVX-512, AVX2 and the baseline and chosen the same
//! way, so the binary never executes an instruction the CPU lacks.

use burn::backend::Flex;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Bytes, DType, Shape};
use burn_flex::{FlexTensor, Layout};

/// The instruction set the fused loops run with: the widest this CPU has, or a narrower one
/// named by `ONI_SIMD` (`avx2` or `baseline`; to measure the variants on one machine). gemm's
/// matrix kernels (built with `x86-v4`) choose by the CPU's features themselves.
pub fn simd_level() -> &'static str {
    static LEVEL: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    LEVEL.get_or_init(|| {
        let cpu = cpu_level();
        match std::env::var("ONI_SIMD").as_deref() {
            Ok("baseline") => "baseline",
            Ok("avx2") if cpu != "baseline" => "avx2+fma",
            _ => cpu,
        }
    })
}

/// The widest instruction set of this CPU that the kernels use (gemm's choice too).
pub fn cpu_level() -> &'static str {
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

/// `fn name(args) { body }` compiled three times, for AVX-512, for AVX2 with FMA and for
/// the baseline, as a module: `name::run(args)` takes the variant this CPU has,
/// `name::at(level, args)` a given one (the tests compare them).
macro_rules! multiversion {
    ($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[inline(always)]
            fn body($($arg: $ty),*) $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512($($arg: $ty),*) {
                body($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) {
                body($($arg),*)
            }

            /// The variant for `level` (a value of `simd_level`), which this CPU must have.
            pub(crate) fn at(level: &str, $($arg: $ty),*) {
                #[cfg(target_arch = "x86_64")]
                {
                    assert!(level == "baseline" || super::cpu_level() == "avx512f" || level == super::cpu_level());
                    // SAFETY: the CPU has the variant's features (asserted above)
                    match level {
                        "avx512f" => return unsafe { avx512($($arg),*) },
                        "avx2+fma" => return unsafe { avx2($($arg),*) },
                        _ => {}
                    }
                }
                body($($arg),*)
            }

            pub(crate) fn run($($arg: $ty),*) {
                at(super::simd_level(), $($arg),*)
            }
        }
    };
}

multiversion! {
    /// ELU, α = 1, in place: x for x > 0, eˣ − 1 otherwise.
    fn elu_slice(v: &mut [f32]) {
        for x in v {
            let e = exp_nonpositive(x.min(0.0)) - 1.0;
            *x = if *x > 0.0 { *x } else { e };
        }
    }
}

multiversion! {
    /// The ELU's gradient from its output y, into `g`: g for y > 0, g (y + 1) otherwise.
    fn elu_grad_slice(g: &mut [f32], y: &[f32]) {
        assert_eq!(g.len(), y.len());
        for (g, &y) in g.iter_mut().zip(y) {
            *g = if y > 0.0 { *g } else { *g * (y + 1.0) };
        }
    }
}

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
    let (m, n) = (a.rows, b.cols);
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    match init {
        Some(row) => {
            assert_eq!(row.len(), n);
            for _ in 0..m {
                out.extend_from_slice(row);
            }
            product_into(&mut out, true, a, b);
        }
        None => {
            // SAFETY: gemm writes every element before anything reads it (no `accumulate`)
            unsafe {
                gemm_raw(out.as_mut_ptr(), false, a, b);
                out.set_len(m * n);
            }
        }
    }
    out
}

/// dst [a.rows, b.cols] = a · b, or += with `accumulate`.
fn product_into(dst: &mut [f32], accumulate: bool, a: Mat, b: Mat) {
    assert_eq!(dst.len(), a.rows * b.cols, "destination size");
    // SAFETY: dst holds the whole initialised destination
    unsafe { gemm_raw(dst.as_mut_ptr(), accumulate, a, b) }
}

/// SAFETY: `dst` must have room for a.rows · b.cols values (row-major), initialised when
/// `accumulate`.
unsafe fn gemm_raw(dst: *mut f32, accumulate: bool, a: Mat, b: Mat) {
    assert_eq!(a.cols, b.rows, "inner dimensions");
    let (m, n, k) = (a.rows, b.cols, a.cols);
    assert!(a.data.len() >= m * k && b.data.len() >= k * n, "operands smaller than their shapes");
    if k == 0 {
        if !accumulate {
            // SAFETY: room for m·n values (the caller's contract)
            unsafe { std::ptr::write_bytes(dst, 0, m * n) };
        }
        return;
    }
    // SAFETY: the destination's row stride is n and it has m rows; the operands' strides stay
    // inside their slices (asserted above).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            n as isize,
            accumulate,
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
    }
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
    let db = want_db.then(|| tensor(column_sums(data(&dy), n), &[n]));
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
            elu_slice::run(part);
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
            elu_grad_slice::run(&mut g, &yd[p * c..(p + 1) * c]);
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

/// The GRU's time loop (see `gru` for the formulas): projected inputs xi [T·B, 3H], h0
/// [B, H], keep [T, B], hidden weights [H, 3H] and bias [3H]. Returns the states after each
/// step [T·B, H] and, with `save`, what the backward pass needs: (h_in, r, z, n, hn), each
/// [T·B, H]. One matrix product per step into a buffer that starts as the bias, and the
/// gates of a step in one pass, written straight into the stacked outputs.
pub(crate) fn gru_forward(
    xi: FloatTensor<Flex>,
    h0: FloatTensor<Flex>,
    keep: FloatTensor<Flex>,
    w: FloatTensor<Flex>,
    bias: FloatTensor<Flex>,
    save: bool,
) -> (FlexTensor, Option<[FlexTensor; 5]>) {
    let (xi, h0, keep, w, bias) = (contiguous(xi), contiguous(h0), contiguous(keep), contiguous(w), contiguous(bias));
    let ([steps, b], [_, s]) = (dims2(&keep), dims2(&h0));
    assert_eq!(dims2(&xi), [steps * b, 3 * s], "projected inputs");
    assert_eq!(dims2(&w), [s, 3 * s], "hidden weights");
    let (x, wd, kd) = (data(&xi), data(&w), data(&keep));
    let size = steps * b * s;
    let mut hs = vec![0.0f32; size];
    let [mut h_in, mut r, mut z, mut n, mut hn] = std::array::from_fn(|_| vec![0.0f32; if save { size } else { 0 }]);
    let (mut rs, mut zs, mut ns) = (vec![0.0f32; b * s], vec![0.0f32; b * s], vec![0.0f32; b * s]);
    let mut h = data(&h0).to_vec();
    for t in 0..steps {
        scale_rows(&mut h, &kd[t * b..(t + 1) * b]);
        let hh = product(Mat::new(&h, [b, s]), Mat::new(wd, [s, 3 * s]), Some(data(&bias)));
        let (lo, hi) = (t * b * s, (t + 1) * b * s);
        let xt = &x[t * b * 3 * s..(t + 1) * b * 3 * s];
        let (rt, zt, nt) = if save {
            (&mut r[lo..hi], &mut z[lo..hi], &mut n[lo..hi])
        } else {
            (&mut rs[..], &mut zs[..], &mut ns[..])
        };
        gru_gates::run(xt, &hh, &h, rt, zt, nt, &mut hs[lo..hi], s);
        if save {
            h_in[lo..hi].copy_from_slice(&h);
            for (dst, src) in hn[lo..hi].chunks_exact_mut(s).zip(hh.chunks_exact(3 * s)) {
                dst.copy_from_slice(&src[2 * s..]);
            }
        }
        h.copy_from_slice(&hs[lo..hi]);
    }
    let shape = [steps * b, s];
    let saved = save.then(|| [h_in, r, z, n, hn].map(|v| tensor(v, &shape)));
    (tensor(hs, &shape), saved)
}

/// Gradients of `gru_forward` from dhs [T·B, H]: (d xi, d h0, d W_hh, d b_hh), as
/// `gru::backward` computes them, one pass per step for the gates' derivatives.
pub(crate) fn gru_backward(
    [h_in, r, z, n, hn]: [FlexTensor; 5],
    keep: FloatTensor<Flex>,
    dhs: FloatTensor<Flex>,
    w: FloatTensor<Flex>,
) -> [FlexTensor; 4] {
    let [h_in, r, z, n, hn] = [h_in, r, z, n, hn].map(contiguous);
    let (keep, dhs, w) = (contiguous(keep), contiguous(dhs), contiguous(w));
    let ([steps, b], [_, s]) = (dims2(&keep), dims2(&h_in));
    let (kd, dd, wd) = (data(&keep), data(&dhs), data(&w));
    let mut dxi = vec![0.0f32; steps * b * 3 * s];
    let mut dhh = vec![0.0f32; steps * b * 3 * s];
    let mut dh = vec![0.0f32; b * s];
    for t in (0..steps).rev() {
        let (lo, hi) = (t * b * s, (t + 1) * b * s);
        let (glo, ghi) = (t * b * 3 * s, (t + 1) * b * 3 * s);
        dh.iter_mut().zip(&dd[lo..hi]).for_each(|(a, v)| *a += v);
        let parts = [&data(&r)[lo..hi], &data(&z)[lo..hi], &data(&n)[lo..hi], &data(&hn)[lo..hi], &data(&h_in)[lo..hi]];
        gru_gates_backward::run(&mut dh, parts, &mut dxi[glo..ghi], &mut dhh[glo..ghi], s);
        // dh now holds the direct term dh ⊙ z; add the path through the hidden projection
        product_into(&mut dh, true, Mat::new(&dhh[glo..ghi], [b, 3 * s]), Mat::new(wd, [s, 3 * s]).t());
        scale_rows(&mut dh, &kd[t * b..(t + 1) * b]);
    }
    let dw = product(Mat::new(data(&h_in), [steps * b, s]).t(), Mat::new(&dhh, [steps * b, 3 * s]), None);
    let db = column_sums(&dhh, 3 * s);
    [tensor(dxi, &[steps * b, 3 * s]), tensor(dh, &[b, s]), tensor(dw, &[s, 3 * s]), tensor(db, &[3 * s])]
}

/// Row j of the [rows, width] matrix `m` times `factors[j]` (the GRU's episode masks).
fn scale_rows(m: &mut [f32], factors: &[f32]) {
    let width = m.len() / factors.len().max(1);
    for (row, &k) in m.chunks_exact_mut(width.max(1)).zip(factors) {
        if k != 1.0 {
            row.iter_mut().for_each(|v| *v *= k);
        }
    }
}

/// The sums of the columns of a row-major matrix `width` wide.
fn column_sums(m: &[f32], width: usize) -> Vec<f32> {
    let mut sums = vec![0.0f32; width];
    for row in m.chunks_exact(width.max(1)) {
        sums.iter_mut().zip(row).for_each(|(a, v)| *a += v);
    }
    sums
}

/// σ(a) from one exponential of a non-positive number.
#[inline(always)]
fn sigmoid(a: f32) -> f32 {
    let e = exp_nonpositive(-a.abs());
    let p = 1.0 / (1.0 + e);
    if a >= 0.0 {
        p
    } else {
        e * p
    }
}

/// tanh(a) = sign(a) (1 − e^{−2|a|}) / (1 + e^{−2|a|}).
#[inline(always)]
fn tanh(a: f32) -> f32 {
    let e = exp_nonpositive(-2.0 * a.abs());
    let t = (1.0 - e) / (1.0 + e);
    if a >= 0.0 {
        t
    } else {
        -t
    }
}

multiversion! {
    /// One step's gates for every row: r = σ(x_r + hh_r), z = σ(x_z + hh_z),
    /// n = tanh(x_n + r hh_n), next = n + z (h − n).
    #[allow(clippy::too_many_arguments)]
    fn gru_gates(x: &[f32], hh: &[f32], h: &[f32], r: &mut [f32], z: &mut [f32], n: &mut [f32], next: &mut [f32], s: usize) {
        let rows = h.len() / s;
        for j in 0..rows {
            let (g, o) = (j * 3 * s, j * s);
            for i in 0..s {
                let rv = sigmoid(x[g + i] + hh[g + i]);
                let zv = sigmoid(x[g + s + i] + hh[g + s + i]);
                let nv = tanh(x[g + 2 * s + i] + rv * hh[g + 2 * s + i]);
                r[o + i] = rv;
                z[o + i] = zv;
                n[o + i] = nv;
                next[o + i] = nv + zv * (h[o + i] - nv);
            }
        }
    }
}

multiversion! {
    /// One step of the gates' backward pass for every row, from dh (replaced by its direct
    /// part dh ⊙ z): d xi = [da_r, da_z, da_n] and the hidden projection's gradient
    /// [da_r, da_z, da_n ⊙ r].
    fn gru_gates_backward(dh: &mut [f32], saved: [&[f32]; 5], dxi: &mut [f32], dhh: &mut [f32], s: usize) {
        let [r, z, n, hn, h] = saved;
        let rows = dh.len() / s;
        for j in 0..rows {
            let (g, o) = (j * 3 * s, j * s);
            for i in 0..s {
                let (d, rv, zv, nv) = (dh[o + i], r[o + i], z[o + i], n[o + i]);
                let da_n = d * (1.0 - zv) * (1.0 - nv * nv);
                let da_r = da_n * hn[o + i] * rv * (1.0 - rv);
                let da_z = d * (h[o + i] - nv) * zv * (1.0 - zv);
                dxi[g + i] = da_r;
                dxi[g + s + i] = da_z;
                dxi[g + 2 * s + i] = da_n;
                dhh[g + i] = da_r;
                dhh[g + s + i] = da_z;
                dhh[g + 2 * s + i] = da_n * rv;
                dh[o + i] = d * zv;
            }
        }
    }
}

/// eˣ for x ≤ 0 within 2 ulp, branch-free so that the loops around it vectorise: with
/// x = n ln2 + r and |r| ≤ ln2/2, eʳ by its degree-7 Taylor polynomial, 2ⁿ put into the
/// exponent bits.
/// Below −87 the result is 0 (eˣ is then under f32's smallest normal number).
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2²³: adding and subtracting it rounds to the nearest integer
    const ROUND: f32 = 12_582_912.0;
    let small = x < -87.0;
    let x = x.max(-87.0);
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    // n as an integer, read from t's mantissa (a float-to-int cast would not vectorise)
    let ni = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    let scale = f32::from_bits(((ni + 127) as u32) << 23);
    if small {
        0.0
    } else {
        p * scale
    }
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
    elu_slice::run(x.try_storage_mut::<f32>().expect("a tensor held once"));
    x
}

/// d loss/d x from the output `y` and d loss/d y.
pub(crate) fn elu_backward(y: FloatTensor<Flex>, dy: FloatTensor<Flex>) -> FloatTensor<Flex> {
    let y = contiguous(y);
    let mut g = contiguous(owned(dy));
    let (start, end) = g.layout().contiguous_offsets().expect("contiguous");
    let gd = g.try_storage_mut::<f32>().map(|s| &mut s[start..end]);
    elu_grad_slice::run(gd.expect("a tensor held once"), data(&y));
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

    /// Every instruction set this CPU has gives the same values as the baseline loop (so an
    /// AVX-512 machine checks its AVX2 variant too).
    #[test]
    fn the_wide_loops_equal_the_baseline_one() {
        let xs: Vec<f32> = (0..1037).map(|i| ((i * 7919) % 2001) as f32 / 100.0 - 10.0).collect();
        let mut y = xs.clone();
        elu_slice::at("baseline", &mut y);
        let mut want_g = vec![0.5f32; xs.len()];
        elu_grad_slice::at("baseline", &mut want_g, &y);
        for level in levels() {
            let (mut v, mut g) = (xs.clone(), vec![0.5f32; xs.len()]);
            elu_slice::at(level, &mut v);
            elu_grad_slice::at(level, &mut g, &y);
            assert_eq!(v, y, "ELU with {level}");
            assert_eq!(g, want_g, "ELU gradient with {level}");
        }
        // the GRU's gates, forward and backward, on 3 rows of 5
        let (rows, s) = (3, 5);
        let val = |k: usize, i: usize| ((i * 37 + k * 11) % 23) as f32 / 4.0 - 2.9;
        let (x, hh) = (
            (0..rows * 3 * s).map(|i| val(1, i)).collect::<Vec<_>>(),
            (0..rows * 3 * s).map(|i| val(2, i)).collect::<Vec<_>>(),
        );
        let h: Vec<f32> = (0..rows * s).map(|i| val(3, i)).collect();
        let run = |level: &str| {
            let mut out = vec![vec![0.0f32; rows * s]; 4];
            let [r, z, n, next] = &mut out[..] else { unreachable!() };
            gru_gates::at(level, &x, &hh, &h, r, z, n, next, s);
            let mut dh: Vec<f32> = (0..rows * s).map(|i| val(4, i)).collect();
            let (mut dxi, mut dhh) = (vec![0.0f32; rows * 3 * s], vec![0.0f32; rows * 3 * s]);
            gru_gates_backward::at(level, &mut dh, [r, z, n, &hh[..rows * s], &h], &mut dxi, &mut dhh, s);
            (out, dh, dxi, dhh)
        };
        let want = run("baseline");
        for level in levels() {
            assert!(run(level) == want, "GRU gates with {level}");
        }
    }

    /// The instruction sets this CPU can run.
    fn levels() -> Vec<&'static str> {
        match cpu_level() {
            "avx512f" => vec!["avx512f", "avx2+fma", "baseline"],
            "avx2+fma" => vec!["avx2+fma", "baseline"],
            _ => vec!["baseline"],
        }
    }
}
