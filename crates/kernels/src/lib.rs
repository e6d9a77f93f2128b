//! Per-block int8 matrix multiply `y = x · Wᵀ`: weights and activations are both quantized in blocks of 32 along
//! K with one scale per block on each side (llama.cpp Q8_0 numerics, the same as ONNX Runtime's MatMulNBits with
//! accuracy_level 4), run with AVX-512 VNNI where the CPU has it and by a portable loop elsewhere.
//!
//! Weights are packed once (at conversion) so that one 64-byte load feeds `vpdpbusd` with 4 consecutive k for 16
//! output columns: codes `[N/16][K/4][16][4]` (u8, value + 128) and scales `[N/16][K/32][16]` (fp16 bits).

pub mod attention;
pub mod huffman;
#[cfg(target_arch = "x86_64")]
mod avx512;

pub const BLOCK: usize = 32;
pub const TILE: usize = 16;
/// Output tiles per unit of parallel work.
const TILES_PER_TASK: usize = 2;

/// A packed weight matrix of `BITS` (8 or 4) bits, borrowed (from an ONNX Runtime initializer or a Vec).
/// 8-bit: codes `[N/16][K/4][16][4]`, scales `[N/16][K/32][16]`. 4-bit: codes 0..15 two per byte,
/// `[N/16][K/32][4][16][4]` (low nibble: k quad j, high nibble: quad j + 4 of the block), and per tile and block 16
/// scales then 16 `scale · zero_point`. Scales are fp16 bit patterns (half the bytes of fp32, converted exactly).
#[derive(Clone, Copy)]
pub struct Packed<'a, const BITS: u8> {
    pub n: usize,
    pub k: usize,
    pub codes: &'a [u8],
    pub scales: &'a [u16],
}

pub type Packed8<'a> = Packed<'a, 8>;
pub type Packed4<'a> = Packed<'a, 4>;

impl<'a, const BITS: u8> Packed<'a, BITS> {
    /// Checks the lengths against `n` and `k`.
    pub fn new(n: usize, k: usize, codes: &'a [u8], scales: &'a [u16]) -> Result<Self, String> {
        let (want_codes, want_scales) = if BITS == 4 { (n * k / 2, 2 * n * (k / BLOCK)) } else { (n * k, n * (k / BLOCK)) };
        if !supports(n, k) {
            return Err(format!("packed {BITS}-bit weights need N % {TILE} == 0 and K % {BLOCK} == 0 (got N={n}, K={k})"));
        }
        if codes.len() != want_codes || scales.len() != want_scales {
            return Err(format!(
                "packed {BITS}-bit weights: {} codes and {} scales do not fit N={n}, K={k}",
                codes.len(),
                scales.len()
            ));
        }
        Ok(Packed { n, k, codes, scales })
    }

    fn blocks(&self) -> usize {
        self.k / BLOCK
    }
}

/// fp32 → fp16 bits (round to nearest), the packed scales' storage.
pub fn f16_bits(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// fp16 bits → fp32 (exact).
#[inline(always)]
pub fn f16_value(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// Whether `shape` fits the packed layout.
pub fn supports(n: usize, k: usize) -> bool {
    n > 0 && n.is_multiple_of(TILE) && k > 0 && k.is_multiple_of(BLOCK)
}

/// Re-lays block-quantized codes `[n][k]` (u8 = q + 128, blocks of 32 along k) and scales `[n][k/32]` into the
/// packed layout.
pub fn pack(codes: &[u8], scales: &[f32], n: usize, k: usize) -> (Vec<u8>, Vec<u16>) {
    assert!(supports(n, k) && codes.len() == n * k && scales.len() == n * (k / BLOCK));
    let nb = k / BLOCK;
    let mut pc = vec![0u8; n * k];
    let mut ps = vec![0u16; n * nb];
    for col in 0..n {
        let (t, c) = (col / TILE, col % TILE);
        for kk in 0..k {
            pc[((t * (k / 4) + kk / 4) * TILE + c) * 4 + kk % 4] = codes[col * k + kk];
        }
        for b in 0..nb {
            ps[(t * nb + b) * TILE + c] = f16_bits(scales[col * nb + b]);
        }
    }
    (pc, ps)
}

/// Activations quantized per row and block: codes, scales and the `-128 · Σq` term that cancels the weights'
/// +128 offset.
#[derive(Default)]
pub struct QuantizedRows {
    pub m: usize,
    pub k: usize,
    pub q: Vec<i8>,
    pub scale: Vec<f32>,
    pub corr: Vec<i32>,
    /// `scale · Σq` per row and block (the zero-point term of 4-bit weights).
    pub ssum: Vec<f32>,
}

impl QuantizedRows {
    pub fn quantize(&mut self, x: &[f32], m: usize, k: usize) {
        assert!(k.is_multiple_of(BLOCK) && x.len() == m * k);
        let nb = k / BLOCK;
        self.m = m;
        self.k = k;
        self.q.resize(m * k, 0);
        self.scale.resize(m * nb, 0.0);
        self.corr.resize(m * nb, 0);
        self.ssum.resize(m * nb, 0.0);
        #[cfg(target_arch = "x86_64")]
        if avx512::available() {
            // SAFETY: the CPU has the features (checked above) and the buffers have the sizes asserted here.
            unsafe { avx512::quantize_rows(x, m, k, &mut self.q, &mut self.scale, &mut self.corr) };
        } else {
            quantize_rows_portable(x, m, k, &mut self.q, &mut self.scale, &mut self.corr);
        }
        #[cfg(not(target_arch = "x86_64"))]
        quantize_rows_portable(x, m, k, &mut self.q, &mut self.scale, &mut self.corr);
        for ((ss, &s), &c) in self.ssum.iter_mut().zip(&self.scale).zip(&self.corr) {
            *ss = s * (c / -128) as f32;
        }
    }
}

fn quantize_rows_portable(x: &[f32], m: usize, k: usize, q: &mut [i8], scale: &mut [f32], corr: &mut [i32]) {
    let nb = k / BLOCK;
    for r in 0..m {
        for b in 0..nb {
            let vals = &x[r * k + b * BLOCK..r * k + (b + 1) * BLOCK];
            let amax = vals.iter().fold(0f32, |a, v| a.max(v.abs()));
            let (s, inv) = if amax > 0.0 { (amax / 127.0, 127.0 / amax) } else { (0.0, 0.0) };
            let mut sum = 0i32;
            for (j, v) in vals.iter().enumerate() {
                let c = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i32;
                q[r * k + b * BLOCK + j] = c as i8;
                sum += c;
            }
            scale[r * nb + b] = s;
            corr[r * nb + b] = -128 * sum;
        }
    }
}

/// Raw output pointer shared by parallel tasks that each write their own part of the output.
#[derive(Clone, Copy)]
pub struct OutPtr(pub *mut f32);
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so that closures capture the Sync wrapper rather than its raw field).
    pub fn get(self) -> *mut f32 {
        self.0
    }
}

/// Runs `f(i)` for `i in 0..total`, possibly in parallel.
pub type ParFor<'p> = &'p dyn Fn(usize, &(dyn Fn(usize) + Sync));

/// Sequential `ParFor`.
pub fn sequential(total: usize, f: &(dyn Fn(usize) + Sync)) {
    (0..total).for_each(f)
}

/// `out[m, n] = x[m, k] · Wᵀ` with `x` quantized into `scratch`.
pub fn matmul<const BITS: u8>(x: &[f32], m: usize, w: Packed<'_, BITS>, out: &mut [f32], scratch: &mut QuantizedRows, par: ParFor<'_>) {
    run_tiles(x, m, w.n, w.k, out, scratch, par, &|qa, out, t0, t1| {
        #[cfg(target_arch = "x86_64")]
        if avx512::available() {
            // SAFETY: features checked; each task writes its own columns of `out`.
            return unsafe { avx512::gemm_tiles(qa, w, out, t0, t1) };
        }
        // SAFETY: as above.
        unsafe {
            if BITS == 4 {
                gemm4_tiles_portable(qa, w, out, t0, t1)
            } else {
                gemm_tiles_portable(qa, w, out, t0, t1)
            }
        }
    });
}

static POOL_THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(2);

/// Threads that run the `ParFor` tasks (a hint for task sizes; results do not depend on it).
pub fn set_pool_threads(n: usize) {
    POOL_THREADS.store(n.max(1), std::sync::atomic::Ordering::Relaxed);
}

fn pool_threads() -> usize {
    POOL_THREADS.load(std::sync::atomic::Ordering::Relaxed)
}

type TileFn<'a> = &'a (dyn Fn(&QuantizedRows, *mut f32, usize, usize) + Sync);

/// Quantizes `x`, then runs `tiles(t0, t1)` over groups of output tiles, in parallel.
#[allow(clippy::too_many_arguments)]
fn run_tiles(x: &[f32], m: usize, n: usize, k: usize, out: &mut [f32], scratch: &mut QuantizedRows, par: ParFor<'_>, tiles_fn: TileFn<'_>) {
    assert!(x.len() == m * k && out.len() == m * n);
    if m == 0 {
        return;
    }
    scratch.quantize(x, m, k);
    let qa: &QuantizedRows = scratch;
    let tiles = n / TILE;
    // Few rows: tasks of up to 8 tiles (at least 4 per thread), so that the pair of tiles a task prefetches next is
    // mostly its own.
    let per_task = if m <= 64 { (tiles / (4 * pool_threads())).clamp(TILES_PER_TASK, 8) & !1 } else { TILES_PER_TASK };
    let tasks = tiles.div_ceil(per_task);
    let outp = OutPtr(out.as_mut_ptr());
    par(tasks, &|task| {
        let t0 = task * per_task;
        let t1 = (t0 + per_task).min(tiles);
        tiles_fn(qa, outp.get(), t0, t1);
    });
}

unsafe fn gemm_tiles_portable<const B: u8>(qa: &QuantizedRows, w: Packed<'_, B>, out: *mut f32, t0: usize, t1: usize) {
    let (k, n, nb) = (w.k, w.n, w.blocks());
    for t in t0..t1 {
        for c in 0..TILE {
            let col = t * TILE + c;
            for r in 0..qa.m {
                let mut f = 0f32;
                for b in 0..nb {
                    let mut acc = qa.corr[r * nb + b];
                    for kk in b * BLOCK..(b + 1) * BLOCK {
                        let code = w.codes[((t * (k / 4) + kk / 4) * TILE + c) * 4 + kk % 4] as i32;
                        acc += code * qa.q[r * k + kk] as i32;
                    }
                    let sc = f16_value(w.scales[(t * nb + b) * TILE + c]) * qa.scale[r * nb + b];
                    f = (acc as f32).mul_add(sc, f);
                }
                *out.add(r * n + col) = f;
            }
        }
    }
}

/// Re-lays 4-bit codes `[n][k]` (one per byte, 0..15), scales and zero points `[n][k/32]` (w = (code − zp) · scale)
/// into the packed 4-bit layout the kernel reads (see `pack4_stored` and `expand_scales4`).
pub fn pack4(codes: &[u8], scales: &[f32], zero_points: &[u8], n: usize, k: usize) -> (Vec<u8>, Vec<u16>) {
    let (pc, ps, pz) = pack4_stored(codes, scales, zero_points, n, k);
    (pc, expand_scales4(&ps, &pz))
}

/// The stored form of packed 4-bit weights: codes as the kernel reads them, fp16 scales `[N/16][K/32][16]` and zero
/// points `[N/16][K/32][8]` (two per byte, even column in the low nibble): 4.625 bits per weight instead of the
/// kernel's 5 (`expand_scales4` rebuilds its scale · zero_point terms at load).
pub fn pack4_stored(codes: &[u8], scales: &[f32], zero_points: &[u8], n: usize, k: usize) -> (Vec<u8>, Vec<u16>, Vec<u8>) {
    let nb = k / BLOCK;
    assert!(supports(n, k) && codes.len() == n * k && scales.len() == n * nb && zero_points.len() == n * nb);
    let mut pc = vec![0u8; n * k / 2];
    let mut ps = vec![0u16; n * nb];
    let mut pz = vec![0u8; n * nb / 2];
    for col in 0..n {
        let (t, c) = (col / TILE, col % TILE);
        for b in 0..nb {
            for j in 0..4 {
                for i in 0..4 {
                    let lo = codes[col * k + b * BLOCK + j * 4 + i] & 0xF;
                    let hi = codes[col * k + b * BLOCK + 16 + j * 4 + i] & 0xF;
                    pc[(((t * nb + b) * 4 + j) * TILE + c) * 4 + i] = lo | (hi << 4);
                }
            }
            ps[(t * nb + b) * TILE + c] = f16_bits(scales[col * nb + b]);
            pz[((t * nb + b) * TILE + c) / 2] |= (zero_points[col * nb + b] & 0xF) << (4 * (c % 2));
        }
    }
    (pc, ps, pz)
}

/// The kernel's 4-bit scale layout from the stored one: per tile and block, 16 scales then 16 `scale · zero_point`
/// (fp16 bits).
pub fn expand_scales4(scales: &[u16], zero_points: &[u8]) -> Vec<u16> {
    let mut out = Vec::with_capacity(2 * scales.len());
    for (tb, group) in scales.chunks(TILE).enumerate() {
        out.extend_from_slice(group);
        out.extend(group.iter().enumerate().map(|(c, &s)| {
            let zp = (zero_points[(tb * TILE + c) / 2] >> (4 * (c % 2))) & 0xF;
            f16_bits(f16_value(s) * zp as f32)
        }));
    }
    out
}

unsafe fn gemm4_tiles_portable<const B: u8>(qa: &QuantizedRows, w: Packed<'_, B>, out: *mut f32, t0: usize, t1: usize) {
    let (k, n, nb) = (w.k, w.n, w.k / BLOCK);
    for t in t0..t1 {
        for c in 0..TILE {
            let col = t * TILE + c;
            for r in 0..qa.m {
                let mut f = 0f32;
                for b in 0..nb {
                    let mut acc = 0i32;
                    for j in 0..4 {
                        for i in 0..4 {
                            let byte = w.codes[(((t * nb + b) * 4 + j) * TILE + c) * 4 + i] as i32;
                            acc += (byte & 0xF) * qa.q[r * k + b * BLOCK + j * 4 + i] as i32;
                            acc += (byte >> 4) * qa.q[r * k + b * BLOCK + 16 + j * 4 + i] as i32;
                        }
                    }
                    let base = (t * nb + b) * 2 * TILE;
                    let sc = f16_value(w.scales[base + c]) * qa.scale[r * nb + b];
                    f = (acc as f32).mul_add(sc, f);
                    f = (-f16_value(w.scales[base + TILE + c])).mul_add(qa.ssum[r * nb + b], f);
                }
                *out.add(r * n + col) = f;
            }
        }
    }
}

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// Taylor coefficients of `2^f = e^(f·ln 2)`.
const EXP2_C: [f32; 8] = [1.0, std::f32::consts::LN_2, 0.240_226_5, 0.055_504_11, 0.009_618_129, 0.001_333_356, 1.540_353e-4, 1.525_273e-5];
/// √(2/π), GELU's tanh-approximation constant.
const GELU_K: f32 = 0.797_884_6;

/// `e^x` to ~1e-7 relative, in plain arithmetic that the compiler vectorizes (range-reduced to `2^n · 2^f`,
/// `|f| ≤ 0.5`, degree-7 Taylor polynomial of `2^f`). Saturates outside [-87, 88].
#[inline(always)]
fn exp_fast(x: f32) -> f32 {
    let t = x.clamp(-87.0, 88.0) * LOG2E;
    // Round to nearest with the 1.5·2^23 trick (vectorizes, unlike f32::round).
    let n = (t + 12_582_912.0) - 12_582_912.0;
    let f = t - n;
    // Plain multiply-adds: `mul_add` is a libm call where the build has no FMA.
    let c = EXP2_C;
    let p = ((((((c[7] * f + c[6]) * f + c[5]) * f + c[4]) * f + c[3]) * f + c[2]) * f + c[1]) * f + c[0];
    f32::from_bits(((n as i32 + 127) << 23) as u32) * p
}

/// GELU, tanh approximation (`0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`), written as `x / (1 + e^(−2u))`.
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    let u = GELU_K * (0.044_715 * x * x * x + x);
    x / (1.0 + exp_fast(-2.0 * u))
}

/// `out[r][j] = gelu_tanh(y[r][j]) · y[r][half + j]` for rows of `y` `[.., 2·half]`.
pub fn geglu_rows(y: &[f32], half: usize, out: &mut [f32]) {
    assert!(y.len() == 2 * out.len() && half > 0 && out.len().is_multiple_of(half));
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: features checked; lengths asserted.
        return unsafe { avx512::geglu_rows(y, half, out) };
    }
    geglu_rows_portable(y, half, out)
}

fn geglu_rows_portable(y: &[f32], half: usize, out: &mut [f32]) {
    for (row, o) in y.chunks_exact(2 * half).zip(out.chunks_exact_mut(half)) {
        let (g, u) = row.split_at(half);
        for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
            *o = gelu_tanh(g) * u;
        }
    }
}

/// `Σ x²`, summed in 16 lanes (the compiler vectorizes it; a single running sum is a serial dependency chain, slower
/// and less accurate).
pub fn sum_squares(x: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for c in chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += v * v;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Whether the fast path runs on this CPU.
pub fn accelerated() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx512::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    }

    fn quantize_weights(w: &[f32], n: usize, k: usize) -> (Vec<u8>, Vec<f32>) {
        let nb = k / BLOCK;
        let mut codes = vec![0u8; n * k];
        let mut scales = vec![0f32; n * nb];
        for col in 0..n {
            for b in 0..nb {
                let v = &w[col * k + b * BLOCK..col * k + (b + 1) * BLOCK];
                let amax = v.iter().fold(0f32, |a, x| a.max(x.abs()));
                let s = amax / 127.0;
                scales[col * nb + b] = s;
                for (j, x) in v.iter().enumerate() {
                    codes[col * k + b * BLOCK + j] = ((x / s).round() as i32 + 128) as u8;
                }
            }
        }
        (codes, scales)
    }

    pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
        let (dot, na, nb) = a.iter().zip(b).fold((0f64, 0f64, 0f64), |(d, p, q), (&x, &y)| {
            (d + x as f64 * y as f64, p + (x as f64).powi(2), q + (y as f64).powi(2))
        });
        dot / (na.sqrt() * nb.sqrt())
    }

    pub fn reference(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for r in 0..m {
            for c in 0..n {
                y[r * n + c] = (0..k).map(|i| x[r * k + i] as f64 * w[c * k + i] as f64).sum::<f64>() as f32;
            }
        }
        y
    }

    #[test]
    fn fast_and_portable_agree_and_track_fp32() {
        let mut seed = 7;
        for (m, n, k) in [(1, 16, 32), (3, 48, 64), (7, 96, 768), (16, 256, 1152), (9, 32, 96)] {
            let mut x: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed)).collect();
            x[0] = 0.0;
            if m > 1 {
                x[k..2 * k].iter_mut().for_each(|v| *v = 0.0); // an all-zero row
            }
            let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed) * 0.1).collect();
            let (codes, scales) = quantize_weights(&w, n, k);
            let (pc, ps) = pack(&codes, &scales, n, k);
            let packed = Packed8::new(n, k, &pc, &ps).unwrap();
            let mut y = vec![0f32; m * n];
            let mut scratch = QuantizedRows::default();
            matmul(&x, m, packed, &mut y, &mut scratch, &sequential);

            let mut yp = vec![0f32; m * n];
            let mut qp = QuantizedRows { m, k, q: vec![0; m * k], scale: vec![0.0; m * k / BLOCK], corr: vec![0; m * k / BLOCK], ssum: vec![] };
            quantize_rows_portable(&x, m, k, &mut qp.q, &mut qp.scale, &mut qp.corr);
            assert_eq!(qp.q, scratch.q, "activation codes");
            unsafe { gemm_tiles_portable(&qp, packed, yp.as_mut_ptr(), 0, n / TILE) };
            assert_eq!(y, yp, "fast path == portable path (m={m} n={n} k={k})");

            let cos = cosine(&reference(&x, &w, m, n, k), &y);
            assert!(cos > 0.9998, "cosine to fp32 {cos} (m={m} n={n} k={k})");
        }
    }
}

#[cfg(test)]
mod four_bit {
    use super::*;

    #[test]
    fn fast_and_portable_agree_and_track_the_dequantized_weights() {
        let mut seed = 11u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        };
        for (m, n, k) in [(1, 16, 32), (5, 48, 96), (13, 64, 768), (4, 32, 1152)] {
            let nb = k / BLOCK;
            let codes: Vec<u8> = (0..n * k).map(|_| (rnd() % 16) as u8).collect();
            let scales: Vec<f32> = (0..n * nb).map(|_| 0.001 + (rnd() % 100) as f32 * 1e-4).collect();
            let zps: Vec<u8> = (0..n * nb).map(|_| (rnd() % 16) as u8).collect();
            let x: Vec<f32> = (0..m * k).map(|_| (rnd() % 2001) as f32 / 1000.0 - 1.0).collect();
            let (pc, ps) = pack4(&codes, &scales, &zps, n, k);
            let w = Packed4::new(n, k, &pc, &ps).unwrap();
            let mut scratch = QuantizedRows::default();
            let mut y = vec![0f32; m * n];
            matmul(&x, m, w, &mut y, &mut scratch, &sequential);
            let mut yp = vec![0f32; m * n];
            unsafe { gemm4_tiles_portable(&scratch, w, yp.as_mut_ptr(), 0, n / TILE) };
            assert_eq!(y, yp, "fast == portable (m={m} n={n} k={k})");
            // Against x · dequantized W: only activation rounding remains.
            let w_deq: Vec<f32> =
                (0..n * k).map(|i| (codes[i] as f32 - zps[i / BLOCK] as f32) * f16_value(f16_bits(scales[i / BLOCK]))).collect();
            let cos = super::tests::cosine(&super::tests::reference(&x, &w_deq, m, n, k), &y);
            assert!(cos > 0.9999, "cosine {cos} (m={m} n={n} k={k})");
        }
    }
}

#[cfg(test)]
mod activation {
    use super::*;

    #[test]
    fn gelu_tanh_matches_the_formula() {
        let mut worst = 0f64;
        for i in -20_000..=20_000 {
            let x = i as f32 * 0.001;
            let xd = x as f64;
            let want = 0.5 * xd * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd.powi(3))).tanh());
            let err = (gelu_tanh(x) as f64 - want).abs() / want.abs().max(1e-3);
            worst = worst.max(err);
        }
        assert!(worst < 2e-6, "worst relative error {worst}");
        assert_eq!(gelu_tanh(0.0), 0.0);
        assert!(gelu_tanh(-200.0).abs() < 1e-30);
        assert_eq!(gelu_tanh(200.0), 200.0);
        let mut out = [0f32; 2];
        geglu_rows(&[1.0, -1.0, 3.0, 5.0], 2, &mut out);
        assert_eq!(out, [gelu_tanh(1.0) * 3.0, gelu_tanh(-1.0) * 5.0]);
    }
}

#[cfg(test)]
mod invariance {
    use super::*;

    /// A row's result must not depend on the other rows (batch invariance).
    #[test]
    fn rows_are_independent() {
        let (n, k) = (64, 768);
        let w: Vec<u8> = (0..n * k).map(|i| ((i * 37) % 255) as u8).collect();
        let s: Vec<f32> = (0..n * k / BLOCK).map(|i| 0.001 + (i % 7) as f32 * 1e-4).collect();
        let (pc, ps) = pack(&w, &s, n, k);
        let p = Packed8::new(n, k, &pc, &ps).unwrap();
        let x: Vec<f32> = (0..130 * k).map(|i| ((i * 7919) % 1013) as f32 / 500.0 - 1.0).collect();
        let mut scratch = QuantizedRows::default();
        let mut small = vec![0f32; 4 * n];
        matmul(&x[..4 * k], 4, p, &mut small, &mut scratch, &sequential);
        let mut big = vec![0f32; 130 * n];
        matmul(&x, 130, p, &mut big, &mut scratch, &sequential);
        assert_eq!(small[..], big[..4 * n]);
        let mut one = vec![0f32; n];
        matmul(&x[129 * k..], 1, p, &mut one, &mut scratch, &sequential);
        assert_eq!(one[..], big[129 * n..]);
    }
}

#[cfg(test)]
mod geglu_paths {
    use super::*;

    #[test]
    fn fast_and_portable_geglu_agree() {
        let half = 1152 + 8; // a tail past the last full vector
        let y: Vec<f32> = (0..3 * 2 * half).map(|i| ((i * 7919) % 2001) as f32 / 200.0 - 5.0).collect();
        let (mut a, mut b) = (vec![0f32; 3 * half], vec![0f32; 3 * half]);
        geglu_rows(&y, half, &mut a);
        geglu_rows_portable(&y, half, &mut b);
        for (x, z) in a.iter().zip(&b) {
            assert!((x - z).abs() <= 2e-6 * z.abs().max(1e-3), "{x} vs {z}");
        }
    }
}
