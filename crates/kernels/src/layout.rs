//! The packed weight layouts the GEMM reads, the activation rows it quantizes into, and the offset formulas of
//! both (one place for each index).
//!
//! 8-bit: codes `[N/16][K/4][16][4]` (u8, value + 128), so that one 64-byte load feeds `vpdpbusd` with 4
//! consecutive k for 16 output columns; scales `[N/16][K/32][16]` (fp16 bits).
//! 4-bit: codes 0..15 two per byte, `[N/16][K/32][4][16][4]` (low nibble: k quad j, high nibble: quad j + 4 of the
//! block), and per tile and block 16 scales then 16 `scale · zero_point`.

/// Values per quantization block along K.
pub const BLOCK: usize = 32;
/// Output columns per packed tile (one AVX-512 vector of i32/f32).
pub const TILE: usize = 16;
/// Rows per GEMM micro-tile (the VNNI kernel's register block; row blocks are whole micro-tiles).
pub const GEMM_ROWS: usize = 6;

/// A packed weight matrix of `BITS` (8 or 4) bits, borrowed (from an ONNX Runtime initializer or a Vec).
/// Scales are fp16 bit patterns (half the bytes of fp32, converted exactly).
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
        let (want_codes, want_scales) =
            if BITS == 4 { (n * k / 2, 2 * n * (k / BLOCK)) } else { (n * k, n * (k / BLOCK)) };
        if !supports(n, k) {
            return Err(format!(
                "packed {BITS}-bit weights need N % {TILE} == 0 and K % {BLOCK} == 0 (got N={n}, K={k})"
            ));
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

    pub fn blocks(&self) -> usize {
        self.k / BLOCK
    }
}

/// Whether `shape` fits the packed layout.
pub fn supports(n: usize, k: usize) -> bool {
    n > 0 && n.is_multiple_of(TILE) && k > 0 && k.is_multiple_of(BLOCK)
}

/// Offset of the 8-bit code of column `c` of tile `t`, row `kk` (of `k`).
#[inline(always)]
pub fn code8_offset(t: usize, k: usize, kk: usize, c: usize) -> usize {
    ((t * (k / 4) + kk / 4) * TILE + c) * 4 + kk % 4
}

/// Offset of the 4-bit byte of column `c` of tile `t`, block `b` (of `nb`), quad `j` (0..4), position `i` (0..4):
/// its low nibble is k = 32·b + 4·j + i, its high nibble k + 16.
#[inline(always)]
pub fn code4_offset(t: usize, nb: usize, b: usize, j: usize, c: usize, i: usize) -> usize {
    (((t * nb + b) * 4 + j) * TILE + c) * 4 + i
}

/// Offset of the scale of column `c` of tile `t`, block `b` (of `nb`), in a `[N/16][K/32][16]` array.
#[inline(always)]
pub fn scale_offset(t: usize, nb: usize, b: usize, c: usize) -> usize {
    (t * nb + b) * TILE + c
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
            pc[code8_offset(t, k, kk, c)] = codes[col * k + kk];
        }
        for b in 0..nb {
            ps[scale_offset(t, nb, b, c)] = f16_bits(scales[col * nb + b]);
        }
    }
    (pc, ps)
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
pub fn pack4_stored(
    codes: &[u8],
    scales: &[f32],
    zero_points: &[u8],
    n: usize,
    k: usize,
) -> (Vec<u8>, Vec<u16>, Vec<u8>) {
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
                    pc[code4_offset(t, nb, b, j, c, i)] = lo | (hi << 4);
                }
            }
            ps[scale_offset(t, nb, b, c)] = f16_bits(scales[col * nb + b]);
            pz[scale_offset(t, nb, b, c) / 2] |= (zero_points[col * nb + b] & 0xF) << (4 * (c % 2));
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

/// Precision of the GEMM's activation codes: 8 bits (Q8_0 numerics, the default) or 16 bits against 8-bit weights
/// (W8A16: the activations' rounding, int8's main error, all but vanishes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ActivationBits {
    #[default]
    Int8,
    Int16,
}

impl ActivationBits {
    /// From a bit count (8 or 16).
    pub fn from_bits(bits: i64) -> Option<Self> {
        match bits {
            8 => Some(ActivationBits::Int8),
            16 => Some(ActivationBits::Int16),
            _ => None,
        }
    }

    /// The largest code magnitude: a block's codes are `round(x · max / amax)`.
    pub fn max_code(self) -> f32 {
        match self {
            ActivationBits::Int8 => 127.0,
            ActivationBits::Int16 => 32767.0,
        }
    }
}

/// Activations quantized per row and block: codes (8-bit in `q`, or 16-bit in `q16`), scales and the `-128 · Σq`
/// term that cancels the 8-bit weights' +128 offset (filled by `QuantizedRows::quantize`).
#[derive(Default)]
pub struct QuantizedRows {
    pub m: usize,
    pub k: usize,
    pub q: Vec<i8>,
    /// 16-bit codes (`ActivationBits::Int16`).
    pub q16: Vec<i16>,
    pub scale: Vec<f32>,
    pub corr: Vec<i32>,
    /// `scale · Σq` per row and block (the zero-point term of 4-bit weights).
    pub ssum: Vec<f32>,
}

/// Keys per packed attention tile (one AVX-512 vector of scores): keys are packed `[S/16][D][16]`.
pub const KEY_TILE: usize = 16;
/// Attention query rows per micro-block.
pub const QR: usize = 8;

/// Index of key `j`, component `c` in a packed key block of head dimension `d`.
#[inline(always)]
pub fn packed_key_index(j: usize, c: usize, d: usize) -> usize {
    ((j / KEY_TILE) * d + c) * KEY_TILE + j % KEY_TILE
}

/// Floats a packed key block of `s` keys needs.
pub fn packed_keys_len(s: usize, d: usize) -> usize {
    s.div_ceil(KEY_TILE) * KEY_TILE * d
}

/// Floats from one value row to the next in a packed value block: `d` and one cache line more. A weighted sum
/// reads one line per key; at a stride that is a multiple of 1 KiB (the fused QKV rows: 5 KiB) those lines fall
/// in 4 of L1's 64 sets and evict each other.
pub fn packed_value_stride(d: usize) -> usize {
    d + 16
}
