//! Pure block quantizers: symmetric and asymmetric per-block codes of row-major matrices, their inverses and the
//! helpers the calibrated schemes (AWQ, GPTQ) share. No graph emission here (`quant` emits).

/// `(code − zero_point) · scale` back to a row-major `[rows, k]` matrix, from the 4-bit layout of
/// `quantize_blocks_asym4` (codes `[rows, kb·block]`, scales and zero points `[rows, kb]`).
pub fn dequantize_blocks4(codes: &[u8], scales: &[f32], zps: &[u8], rows: usize, k: usize, block: usize) -> Vec<f32> {
    let kb = k.div_ceil(block);
    (0..rows * k)
        .map(|i| {
            let (r, j) = (i / k, i % k);
            (codes[r * kb * block + j] as f32 - zps[r * kb + j / block] as f32) * scales[r * kb + j / block]
        })
        .collect()
}

/// `w[r][j] · s[j]` for a row-major `[n, k]` matrix.
pub fn scale_columns(w: &[f32], k: usize, s: &[f32]) -> Vec<f32> {
    w.chunks(k).flat_map(|row| row.iter().zip(s).map(|(x, s)| x * s)).collect()
}

/// Symmetric per-block quantization of a row-major `[rows, k]` matrix along k.
/// Returns (codes offset by 2^(bits-1) as u8, one per value; scales `[rows, k_blocks]`).
pub fn quantize_blocks(w: &[f32], rows: usize, k: usize, block: usize, bits: u8) -> (Vec<u8>, Vec<f32>) {
    let kb = k.div_ceil(block);
    let qmax = ((1i32 << (bits - 1)) - 1) as f32; // 127 or 7
    let qmin = -(1i32 << (bits - 1)) as f32; // -128 or -8
    let off = 1i32 << (bits - 1);
    let mut codes = vec![off as u8; rows * kb * block];
    let mut scales = vec![0f32; rows * kb];
    for r in 0..rows {
        for b in 0..kb {
            let s0 = b * block;
            let s1 = (s0 + block).min(k);
            let vals = &w[r * k + s0..r * k + s1];
            let scale = sym_block_scale(vals, bits);
            scales[r * kb + b] = scale;
            let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
            for (j, &x) in vals.iter().enumerate() {
                let q = (x * inv).round().clamp(qmin, qmax) as i32;
                codes[(r * kb + b) * block + j] = (q + off) as u8;
            }
        }
    }
    (codes, scales)
}

/// Scale of one symmetric block (`quantize_blocks`' codes are `round(x / scale)`): at 8 bits `absmax / 127`; at 4
/// bits the signed absmax mapped to −8 (Q4_0-style), which uses the full code range. 0 for a constant-zero block.
pub fn sym_block_scale(vals: &[f32], bits: u8) -> f32 {
    let (amax_abs, amax) = vals.iter().fold((0f32, 0f32), |(a, v), &x| if x.abs() > a { (x.abs(), x) } else { (a, v) });
    if amax_abs == 0.0 {
        0.0
    } else if bits == 4 {
        amax / -8.0
    } else {
        amax_abs / ((1i32 << (bits - 1)) - 1) as f32
    }
}

/// Scale and zero point of one asymmetric 4-bit block: the range is shrunk step by step (clipping outliers) and
/// the choice with the lowest squared error kept. A constant-zero block gets scale 0.
pub fn asym4_block_params(vals: &[f32]) -> (f32, u8) {
    asym_block_params(vals, 4)
}

/// `asym4_block_params` for codes of `bits` bits (0..2^bits − 1).
pub fn asym_block_params(vals: &[f32], bits: u8) -> (f32, u8) {
    let levels = ((1u32 << bits) - 1) as f32;
    let (mn, mx) = vals.iter().fold((0f32, 0f32), |(a, c), &x| (a.min(x), c.max(x)));
    if mx - mn == 0.0 {
        return (0.0, 1 << (bits - 1));
    }
    let mut best = (f32::INFINITY, 0f32, 8u8);
    for step in 0..16 {
        let shrink = 1.0 - 0.02 * step as f32;
        let (lo, hi) = (mn * shrink, mx * shrink);
        let scale = (hi - lo) / levels;
        let zp = (-lo / scale).round().clamp(0.0, levels);
        let inv = 1.0 / scale;
        let err: f32 = vals
            .iter()
            .map(|&x| {
                let c = ((x * inv).round() + zp).clamp(0.0, levels);
                let d = (c - zp) * scale - x;
                d * d
            })
            .sum();
        if err < best.0 {
            best = (err, scale, zp as u8);
        }
    }
    (best.1, best.2)
}

/// One row in asymmetric `bits`-bit blocks (`asym_block_params`), its output multiplied by `out_scale`: (codes,
/// scales in output units and already rounded to fp16, zero points). `(code − zp) · scale` is the stored value.
pub fn quantize_row_asym(row: &[f32], bits: u8, block: usize, out_scale: f32) -> (Vec<u8>, Vec<f32>, Vec<u8>) {
    let levels = ((1u32 << bits) - 1) as f32;
    let (mut codes, mut scales, mut zps) = (Vec::with_capacity(row.len()), Vec::new(), Vec::new());
    for vals in row.chunks(block) {
        let (s, zp) = asym_block_params(vals, bits);
        // The codes are rounded with the scale as stored (fp16).
        let stored = half::f16::from_f32(s * out_scale).to_f32();
        let inv = if stored > 0.0 { out_scale / stored } else { 0.0 };
        codes.extend(vals.iter().map(|&x| ((x * inv).round() + zp as f32).clamp(0.0, levels) as u8));
        scales.push(stored);
        zps.push(zp);
    }
    (codes, scales, zps)
}

/// Asymmetric 4-bit per-block quantization of `[rows, k]` along k (`asym4_block_params` per block). Returns (codes
/// 0..15, one per value, `[rows, kb·block]`; scales `[rows, kb]`; zero points `[rows, kb]`).
pub fn quantize_blocks_asym4(w: &[f32], rows: usize, k: usize, block: usize) -> (Vec<u8>, Vec<f32>, Vec<u8>) {
    let kb = k.div_ceil(block);
    let mut codes = vec![0u8; rows * kb * block];
    let mut scales = vec![0f32; rows * kb];
    let mut zps = vec![8u8; rows * kb];
    for r in 0..rows {
        for b in 0..kb {
            let s0 = b * block;
            let vals = &w[r * k + s0..r * k + (s0 + block).min(k)];
            let (scale, zp) = asym4_block_params(vals);
            scales[r * kb + b] = scale;
            zps[r * kb + b] = zp;
            if scale == 0.0 {
                continue;
            }
            let (inv, z) = (1.0 / scale, zp as f32);
            for (c, &x) in codes[(r * kb + b) * block..].iter_mut().zip(vals) {
                *c = ((x * inv).round() + z).clamp(0.0, 15.0) as u8;
            }
        }
    }
    (codes, scales, zps)
}

/// Pack 4-bit codes two per byte, low nibble first.
pub fn pack4(codes: &[u8]) -> Vec<u8> {
    codes.chunks(2).map(|c| (c[0] & 0xF) | ((c.get(1).copied().unwrap_or(0) & 0xF) << 4)).collect()
}
