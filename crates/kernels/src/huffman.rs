//! Canonical Huffman codes (MSB-first) for the entropy-coded token table: code lengths from symbol counts, an
//! encoder, and a decoder with a one-lookup fast path for short codes.

/// Longest code the encoder emits (the decoder reads 64-bit windows, so codes up to 57 bits would still fit).
pub const MAX_CODE_LEN: u8 = 30;
/// Codes up to this length decode with one table lookup.
const FAST_BITS: u32 = 11;

/// Huffman code lengths for `counts` (0 for symbols that never occur), at most `MAX_CODE_LEN` bits. A lone symbol
/// gets a 1-bit code.
pub fn code_lengths(counts: &[u64]) -> Vec<u8> {
    let total: u64 = counts.iter().sum();
    // Raising the rarest counts to a floor bounds the depth; the floor doubles until the longest code fits.
    let mut floor = 0u64;
    loop {
        let lens = unbounded_lengths(counts, floor);
        if lens.iter().all(|&l| l <= MAX_CODE_LEN) {
            return lens;
        }
        floor = (floor * 2).max(total >> 24).max(1);
    }
}

fn unbounded_lengths(counts: &[u64], floor: u64) -> Vec<u8> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut lens = vec![0u8; counts.len()];
    let used: Vec<usize> = (0..counts.len()).filter(|&s| counts[s] > 0).collect();
    if used.len() == 1 {
        lens[used[0]] = 1;
        return lens;
    }
    // Tree nodes: leaves first, then merged nodes; parent links give each leaf's depth.
    let mut parent = vec![usize::MAX; used.len()];
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> =
        used.iter().enumerate().map(|(i, &s)| Reverse((counts[s].max(floor), i))).collect();
    while heap.len() > 1 {
        let Reverse((a, ia)) = heap.pop().unwrap();
        let Reverse((b, ib)) = heap.pop().unwrap();
        let node = parent.len();
        parent.push(usize::MAX);
        parent[ia] = node;
        parent[ib] = node;
        heap.push(Reverse((a + b, node)));
    }
    for (i, &s) in used.iter().enumerate() {
        let (mut depth, mut n) = (0u32, i);
        while parent[n] != usize::MAX {
            n = parent[n];
            depth += 1;
        }
        lens[s] = depth.min(u8::MAX as u32) as u8;
    }
    lens
}

/// The symbols that have a code, sorted by (length, symbol): the canonical order.
fn canonical_order(lengths: &[u8]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..lengths.len()).filter(|&s| lengths[s] > 0).collect();
    order.sort_by_key(|&s| (lengths[s], s));
    order
}

/// Canonical codes for `lengths`: symbols in canonical order take consecutive codes.
pub fn canonical_codes(lengths: &[u8]) -> Vec<u32> {
    let mut codes = vec![0u32; lengths.len()];
    let (mut code, mut len) = (0u32, 0u8);
    for s in canonical_order(lengths) {
        code <<= lengths[s] - len;
        len = lengths[s];
        codes[s] = code;
        code += 1;
    }
    codes
}

/// Appends codes MSB-first to a byte vector.
#[derive(Default)]
pub struct BitWriter {
    pub bytes: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    pub fn put(&mut self, code: u32, len: u8) {
        self.acc = (self.acc << len) | code as u64;
        self.n += len as u32;
        while self.n >= 8 {
            self.n -= 8;
            self.bytes.push((self.acc >> self.n) as u8);
        }
        self.acc &= (1u64 << self.n) - 1;
    }

    /// Pads the last byte with zero bits.
    pub fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.bytes.push((self.acc << (8 - self.n)) as u8);
        }
        self.bytes
    }
}

/// Bytes a coded stream needs after its last code so that `Decoder::next` may read a whole 64-bit window.
pub const READ_PADDING: usize = 8;

pub struct Decoder {
    /// For each `FAST_BITS`-bit prefix: `symbol << 8 | length`, or 0 when the code is longer.
    fast: Vec<u32>,
    /// Per length: first canonical code, number of codes, index of its first symbol in `sorted`.
    first: [u32; 64],
    count: [u32; 64],
    index: [u32; 64],
    sorted: Vec<u16>,
    max_len: u32,
}

impl Decoder {
    pub fn new(lengths: &[u8]) -> Result<Self, String> {
        if lengths.len() > u16::MAX as usize {
            return Err(format!("{} symbols (at most {})", lengths.len(), u16::MAX));
        }
        if let Some(l) = lengths.iter().find(|&&l| l > MAX_CODE_LEN) {
            return Err(format!("a {l}-bit code (at most {MAX_CODE_LEN})"));
        }
        // Kraft: a complete prefix code (or a lone 1-bit code).
        let kraft: u64 = lengths.iter().filter(|&&l| l > 0).map(|&l| 1u64 << (MAX_CODE_LEN - l)).sum();
        let used = lengths.iter().filter(|&&l| l > 0).count();
        if used == 0 || kraft > 1u64 << MAX_CODE_LEN || (used > 1 && kraft != 1u64 << MAX_CODE_LEN) {
            return Err("code lengths do not form a complete prefix code".into());
        }
        let codes = canonical_codes(lengths);
        let order = canonical_order(lengths);
        let (mut first, mut count, mut index) = ([0u32; 64], [0u32; 64], [0u32; 64]);
        let mut fast = vec![0u32; 1 << FAST_BITS];
        for (i, &s) in order.iter().enumerate() {
            let l = lengths[s] as usize;
            if count[l] == 0 {
                first[l] = codes[s];
                index[l] = i as u32;
            }
            count[l] += 1;
            if l as u32 <= FAST_BITS {
                let start = (codes[s] << (FAST_BITS - l as u32)) as usize;
                fast[start..start + (1 << (FAST_BITS - l as u32))].fill((s as u32) << 8 | l as u32);
            }
        }
        let max_len = lengths.iter().copied().max().unwrap_or(0) as u32;
        Ok(Decoder { fast, first, count, index, sorted: order.iter().map(|&s| s as u16).collect(), max_len })
    }

    /// The symbol whose code starts at bit `*bit` of `data` (MSB-first); advances `*bit`. `data` must extend
    /// `READ_PADDING` bytes past the byte holding the code's last bit. Data that is not a code of this decoder
    /// yields some symbol, never a panic beyond the slice bounds check.
    #[inline]
    pub fn next(&self, data: &[u8], bit: &mut usize) -> u16 {
        let p = *bit / 8;
        let window = u64::from_be_bytes(data[p..p + 8].try_into().unwrap()) << (*bit % 8);
        self.symbol(window, bit)
    }
}

impl Decoder {
    /// Decodes `out.len()` symbols from byte `start` of `data` into `out[j] = ((s + min_code) · step) · col_scale[j]
    /// + col_mean[j]`. Never reads out of bounds: symbols past the end of `data` (corrupt offsets or codes) decode
    /// as `min_code`.
    #[allow(clippy::too_many_arguments)]
    pub fn decode_scaled(
        &self,
        data: &[u8],
        start: usize,
        min_code: i32,
        step: f32,
        col_scale: &[f32],
        col_mean: &[f32],
        out: &mut [f32],
    ) {
        let n = out.len().min(col_scale.len()).min(col_mean.len());
        let mut bit = start * 8;
        // Whatever the codes, `n` symbols span at most n · max_len bits: check once, then read without bounds checks.
        let worst_end = start + (n * self.max_len.max(1) as usize).div_ceil(8) + READ_PADDING;
        if worst_end <= data.len() {
            for j in 0..n {
                // SAFETY: bit / 8 + 8 <= worst_end <= data.len() for every symbol (each consumes at most max_len bits).
                let window =
                    unsafe { u64::from_be_bytes(data.as_ptr().add(bit / 8).cast::<[u8; 8]>().read_unaligned()) }
                        << (bit % 8);
                let q = self.symbol(window, &mut bit) as i32 + min_code;
                out[j] = (q as f32 * step) * col_scale[j] + col_mean[j];
            }
        } else {
            for j in 0..n {
                let q = if bit / 8 + 8 <= data.len() { self.next(data, &mut bit) as i32 + min_code } else { min_code };
                out[j] = (q as f32 * step) * col_scale[j] + col_mean[j];
            }
        }
    }

    #[inline(always)]
    fn symbol(&self, window: u64, bit: &mut usize) -> u16 {
        let e = self.fast[(window >> (64 - FAST_BITS)) as usize];
        if e != 0 {
            *bit += (e & 0xFF) as usize;
            return (e >> 8) as u16;
        }
        self.slow_symbol(window, bit)
    }

    #[cold]
    fn slow_symbol(&self, window: u64, bit: &mut usize) -> u16 {
        for l in FAST_BITS + 1..=self.max_len {
            let code = (window >> (64 - l)) as u32;
            let k = code.wrapping_sub(self.first[l as usize]);
            if k < self.count[l as usize] {
                *bit += l as usize;
                return self.sorted[(self.index[l as usize] + k) as usize];
            }
        }
        // Not a code (corrupt data): consume the longest length so that decoding still terminates.
        *bit += self.max_len.max(1) as usize;
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xorshift(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    #[test]
    fn lengths_are_optimal_for_dyadic_counts() {
        assert_eq!(code_lengths(&[8, 4, 2, 1, 1]), vec![1, 2, 3, 4, 4]);
        assert_eq!(code_lengths(&[0, 5, 0]), vec![0, 1, 0]);
    }

    #[test]
    fn skewed_counts_stay_within_the_length_limit() {
        // Fibonacci counts give the deepest Huffman trees.
        let mut counts = vec![1u64, 1];
        while counts.len() < 60 {
            let n = counts.len();
            counts.push(counts[n - 1] + counts[n - 2]);
        }
        let lens = code_lengths(&counts);
        assert!(lens.iter().all(|&l| (1..=MAX_CODE_LEN).contains(&l)), "{lens:?}");
        assert!(Decoder::new(&lens).is_ok());
    }

    #[test]
    fn random_streams_round_trip() {
        let mut s = 0x1234_5678_9ABC_DEF1u64;
        // A two-sided geometric distribution over 151 symbols, plus a few symbols that never occur.
        let mut counts = vec![0u64; 160];
        let symbols: Vec<usize> = (0..50_000)
            .map(|_| {
                let mut v = 75i64;
                while !xorshift(&mut s).is_multiple_of(3) && (1..150).contains(&v) {
                    v += if xorshift(&mut s).is_multiple_of(2) { 1 } else { -1 };
                }
                counts[v as usize] += 1;
                v as usize
            })
            .collect();
        let lens = code_lengths(&counts);
        let codes = canonical_codes(&lens);
        let mut w = BitWriter::default();
        for &sym in &symbols {
            w.put(codes[sym], lens[sym]);
        }
        let mut data = w.finish();
        data.extend([0u8; READ_PADDING]);
        let dec = Decoder::new(&lens).unwrap();
        let mut bit = 0;
        for (i, &sym) in symbols.iter().enumerate() {
            assert_eq!(dec.next(&data, &mut bit) as usize, sym, "symbol {i}");
        }
        let bits: u64 = symbols.iter().map(|&s| lens[s] as u64).sum();
        assert_eq!(bit as u64, bits);
    }

    #[test]
    fn scaled_rows_decode_like_single_symbols_even_at_the_end_of_the_data() {
        let lens = code_lengths(&[40, 30, 20, 5, 3, 1, 1]);
        let codes = canonical_codes(&lens);
        let mut s = 7u64;
        let syms: Vec<usize> = (0..300).map(|_| (xorshift(&mut s) % 7) as usize).collect();
        let mut w = BitWriter::default();
        syms.iter().for_each(|&x| w.put(codes[x], lens[x]));
        let mut data = w.finish();
        data.extend([0u8; READ_PADDING]);
        let dec = Decoder::new(&lens).unwrap();
        let (scale, mean) = (vec![2.0f32; 300], vec![0.5f32; 300]);
        let mut out = vec![0f32; 300];
        dec.decode_scaled(&data, 0, -3, 0.25, &scale, &mean, &mut out);
        for (j, &x) in syms.iter().enumerate() {
            assert_eq!(out[j], ((x as i32 - 3) as f32 * 0.25) * 2.0 + 0.5, "symbol {j}");
        }
        // Past the end: no panic, and what is there still decodes.
        let tail = data.len() - READ_PADDING - 2;
        dec.decode_scaled(&data, tail, -3, 0.25, &scale, &mean, &mut out);
        dec.decode_scaled(&data, data.len(), -3, 0.25, &scale, &mean, &mut out);
        assert_eq!(out[0], -3.0 * 0.25 * 2.0 + 0.5);
    }

    #[test]
    fn incomplete_or_overfull_lengths_are_refused() {
        assert!(Decoder::new(&[1, 2]).is_err());
        assert!(Decoder::new(&[1, 1, 1]).is_err());
        assert!(Decoder::new(&[0, 0]).is_err());
        assert!(Decoder::new(&[0, 1]).is_ok());
    }
}
