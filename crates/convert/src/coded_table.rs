//! The entropy-coded token table of our `ai.deposium:GatherCoded` op.
//!
//! Each column is centred on its mean over the vocabulary and scaled (`Columns`: by its own standard deviation, or
//! every column by the table's); each row of those values `v` is rounded on a uniform grid whose step is
//! `step · rms(v)` (one fp16 step per row), and the integers are Huffman-coded with one code for the whole table, each
//! row starting on a byte. A row comes back as `(q · row_step) · col_scale + col_mean`.
//!
//! Why: at a given error a uniform grid whose codes are entropy-coded needs about one bit per value less than
//! fixed-width codes with per-block ranges, which must spend levels on each block's extremes. On EmbeddingGemma's
//! table, step 0.125 (int8's) costs 5.16 bits per value, everything included (129.7 MB), where the 6-bit table costs
//! 6.375 (160.4 MB), at a similar fidelity (see docs/quantization.md).
use rayon::prelude::*;

use deposium_kernels::huffman::{canonical_codes, code_lengths, BitWriter, READ_PADDING};

/// Largest |code|; a step far below the table's spread saturates here instead of growing the alphabet.
const MAX_CODE: i32 = 4095;

pub struct CodedTable {
    /// Concatenated row bit streams, then `READ_PADDING` zero bytes.
    pub data: Vec<u8>,
    /// Byte offset of each row in `data`, then the end of the last row: `vocab + 1` values.
    pub offsets: Vec<u32>,
    /// Per row, the grid step in fp16 bits.
    pub row_steps: Vec<u16>,
    pub col_scale: Vec<f32>,
    pub col_mean: Vec<f32>,
    /// Huffman code length of each symbol; symbol `s` is the integer `s + min_code`.
    pub lengths: Vec<u8>,
    pub min_code: i32,
    /// Integer codes of every row, kept only when asked for (tests).
    pub codes: Option<Vec<i32>>,
}

/// How the columns are scaled before rounding, which sets how the error spreads over them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Columns {
    /// Each column by its own standard deviation: a column's error is proportional to its spread.
    Standardized,
    /// Every column by the table's standard deviation (the RMS of the columns'): the same absolute error in every
    /// column (w8a16's choice; int8 and int4 measured better standardized: docs/long-inputs.md, "Session 13").
    Uniform,
}

/// Column means and scales of a `[vocab, dim]` table (a zero deviation becomes 1).
fn column_stats(table: &[f32], dim: usize, columns: Columns) -> (Vec<f32>, Vec<f32>) {
    let rows = table.len() / dim;
    let (sum, sq) = table
        .par_chunks(dim * 1024)
        .map(|chunk| {
            let (mut s, mut q) = (vec![0f64; dim], vec![0f64; dim]);
            for row in chunk.chunks(dim) {
                for (j, &x) in row.iter().enumerate() {
                    s[j] += x as f64;
                    q[j] += x as f64 * x as f64;
                }
            }
            (s, q)
        })
        .reduce(
            || (vec![0f64; dim], vec![0f64; dim]),
            |(mut s, mut q), (s2, q2)| {
                s.iter_mut().zip(&s2).for_each(|(a, b)| *a += b);
                q.iter_mut().zip(&q2).for_each(|(a, b)| *a += b);
                (s, q)
            },
        );
    let n = rows.max(1) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let var: Vec<f64> = sq.iter().zip(&mean).map(|(q, m)| (q / n - m * m).max(0.0)).collect();
    let scale: Vec<f32> = match columns {
        Columns::Standardized => var.iter().map(|v| v.sqrt() as f32).collect(),
        Columns::Uniform => vec![(var.iter().sum::<f64>() / dim.max(1) as f64).sqrt() as f32; dim],
    };
    let scale = scale.into_iter().map(|s| if s > 0.0 { s } else { 1.0 }).collect();
    (mean.iter().map(|&m| m as f32).collect(), scale)
}

/// The integer codes of one row and its stored (fp16) step.
fn row_codes(row: &[f32], mean: &[f32], std: &[f32], step: f32) -> (Vec<i32>, u16) {
    let v: Vec<f32> = row.iter().zip(mean).zip(std).map(|((x, m), s)| (x - m) / s).collect();
    let rms = (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
    let stored = half::f16::from_f32(rms * step);
    let s = stored.to_f32();
    let codes = if s > 0.0 && s.is_finite() {
        v.iter().map(|x| ((x / s).round() as i32).clamp(-MAX_CODE, MAX_CODE)).collect()
    } else {
        vec![0; v.len()]
    };
    (codes, stored.to_bits())
}

/// Encode a `[vocab, dim]` table with standardized columns and grid step `step` (relative to each row's RMS after
/// the columns are scaled); the values that come back are multiplied by `out_scale`.
pub fn encode(table: &[f32], vocab: usize, dim: usize, step: f32, out_scale: f32, keep_codes: bool) -> CodedTable {
    encode_steps(table, vocab, dim, &|_| step, Columns::Standardized, out_scale, keep_codes)
}

/// `encode` with row `r`'s grid step `step(r)` and the columns scaled as `columns` says.
pub fn encode_steps(
    table: &[f32],
    vocab: usize,
    dim: usize,
    step: &(dyn Fn(usize) -> f32 + Sync),
    columns: Columns,
    out_scale: f32,
    keep_codes: bool,
) -> CodedTable {
    assert_eq!(table.len(), vocab * dim);
    let (mean, std) = column_stats(table, dim, columns);
    let rows = |r: usize| &table[r * dim..(r + 1) * dim];
    let alphabet = (2 * MAX_CODE + 1) as usize;
    let counts = (0..vocab)
        .into_par_iter()
        .fold(
            || vec![0u64; alphabet],
            |mut c, r| {
                for q in row_codes(rows(r), &mean, &std, step(r)).0 {
                    c[(q + MAX_CODE) as usize] += 1;
                }
                c
            },
        )
        .reduce(
            || vec![0u64; alphabet],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        );
    let lo = counts.iter().position(|&c| c > 0).unwrap_or(MAX_CODE as usize);
    let hi = counts.iter().rposition(|&c| c > 0).unwrap_or(MAX_CODE as usize);
    let min_code = lo as i32 - MAX_CODE;
    let lengths = code_lengths(&counts[lo..=hi]);
    let codes = canonical_codes(&lengths);
    // The codes are computed again rather than kept from the counting pass (cheap next to the 0.8 GB they would take
    // as i32 for EmbeddingGemma).
    let encoded: Vec<(Vec<u8>, u16, Option<Vec<i32>>)> = (0..vocab)
        .into_par_iter()
        .map(|r| {
            let (q, row_step) = row_codes(rows(r), &mean, &std, step(r));
            let mut w = BitWriter::default();
            for &c in &q {
                let s = (c - min_code) as usize;
                w.put(codes[s], lengths[s]);
            }
            (w.finish(), row_step, keep_codes.then_some(q))
        })
        .collect();
    let total: usize = encoded.iter().map(|e| e.0.len()).sum();
    assert!(total < u32::MAX as usize, "coded table over 4 GB");
    let mut t = CodedTable {
        data: Vec::with_capacity(total + READ_PADDING),
        offsets: Vec::with_capacity(vocab + 1),
        row_steps: Vec::with_capacity(vocab),
        col_scale: std.iter().map(|s| s * out_scale).collect(),
        col_mean: mean.iter().map(|m| m * out_scale).collect(),
        lengths,
        min_code,
        codes: keep_codes.then(|| Vec::with_capacity(vocab * dim)),
    };
    for (bytes, row_step, q) in encoded {
        t.offsets.push(t.data.len() as u32);
        t.data.extend(bytes);
        t.row_steps.push(row_step);
        if let (Some(all), Some(q)) = (t.codes.as_mut(), q) {
            all.extend(q);
        }
    }
    t.offsets.push(t.data.len() as u32);
    t.data.extend([0u8; READ_PADDING]);
    t
}

impl CodedTable {
    /// Row `r` as the lookup returns it, from the integer codes (needs `keep_codes`): the reference for the op.
    pub fn dequantized_row(&self, r: usize) -> Vec<f32> {
        let dim = self.col_scale.len();
        let codes = &self.codes.as_ref().expect("encoded with keep_codes")[r * dim..(r + 1) * dim];
        let s = half::f16::from_bits(self.row_steps[r]).to_f32();
        codes.iter().enumerate().map(|(j, &q)| (q as f32 * s) * self.col_scale[j] + self.col_mean[j]).collect()
    }

    /// Mean bits per value on disk, everything included.
    pub fn bits_per_value(&self) -> f64 {
        let bytes = self.data.len()
            + 4 * self.offsets.len()
            + 2 * self.row_steps.len()
            + 8 * self.col_scale.len()
            + self.lengths.len();
        bytes as f64 * 8.0 / (self.row_steps.len() * self.col_scale.len()).max(1) as f64
    }
}
