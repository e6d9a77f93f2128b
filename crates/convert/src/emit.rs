//! Graph emission of linear layers and embedding tables, in fp32 or block-quantized (our QMatMul8/4, GatherQ and
//! GatherCoded ops, or stock MatMulNBits / GatherBlockQuantized), as the scheme (`scheme::QuantConfig`) decides.

use crate::awq::{CalibMode, CALIB_PREFIX};
use crate::blocks::{pack4, quantize_blocks, quantize_blocks_asym4, quantize_row_asym};
use crate::builder::{fixed, Builder, CUSTOM_DOMAIN, GATHER_CODED, GATHER_Q, QMATMUL4, QMATMUL8};
use crate::coded_table::Columns;
use crate::proto::{attr_i, DType};
use crate::scheme::QuantConfig;

/// A bit-packed table for our `ai.deposium:GatherQ` op (any width from 5 to 7 bits, where GatherBlockQuantized
/// offers 4 or 8 only): each row's codes `(value / scale + zero_point)`, `bits` each, little-endian bit order, rows
/// padded to whole bytes (plus 3 trailing bytes, so that the op can read 4 bytes at any code); fp16 scales and u8
/// zero points per row and block. A 6-bit EmbeddingGemma table, block 64, takes 160 MB where 8 bits take 204.
#[allow(clippy::too_many_arguments)]
fn packed_table(
    b: &mut Builder,
    ids: &str,
    name: &str,
    table: &[f32],
    vocab: usize,
    dim: usize,
    bits: u8,
    block: usize,
    scale: f32,
) -> String {
    use rayon::prelude::*;
    let kb = dim.div_ceil(block);
    let row_bytes = (dim * bits as usize).div_ceil(8);
    let rows: Vec<(Vec<u8>, Vec<u16>, Vec<u8>)> = (0..vocab)
        .into_par_iter()
        .map(|r| {
            let (codes, scales, zps) = quantize_row_asym(&table[r * dim..(r + 1) * dim], bits, block, scale);
            let mut packed = vec![0u8; row_bytes];
            for (j, &code) in codes.iter().enumerate() {
                let bit = j * bits as usize;
                for (i, byte) in ((code as u32) << (bit % 8)).to_le_bytes().iter().enumerate().take(3) {
                    if let Some(p) = packed.get_mut(bit / 8 + i) {
                        *p |= byte;
                    }
                }
            }
            (packed, scales.iter().map(|s| half::f16::from_f32(*s).to_bits()).collect(), zps)
        })
        .collect();
    let mut data = Vec::with_capacity(vocab * row_bytes + 3);
    let (mut scales, mut zps) = (Vec::with_capacity(vocab * kb * 2), Vec::with_capacity(vocab * kb));
    for (p, s, z) in rows {
        data.extend(p);
        scales.extend(s.iter().flat_map(|x| x.to_le_bytes()));
        zps.extend(z);
    }
    data.extend([0u8; 3]);
    let len = data.len() as i64;
    let dn = b.init(&format!("{name}.q{bits}"), DType::U8, &[len], data);
    let sn = b.init(&format!("{name}.scales"), DType::U16, &[vocab as i64, kb as i64], scales);
    let zn = b.init(&format!("{name}.zp"), DType::U8, &[vocab as i64, kb as i64], zps);
    let attrs = vec![attr_i("bits", bits as i64), attr_i("block_size", block as i64), attr_i("dim", dim as i64)];
    b.node(CUSTOM_DOMAIN, GATHER_Q, &[&dn, ids, &sn, &zn], 1, attrs).remove(0)
}

fn u16_bytes(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// An entropy-coded table (`coded_table`) read by our `ai.deposium:GatherCoded` op. Inputs: coded rows, ids, row
/// offsets (u32), row steps (fp16 bits), column scales and means (f32), code lengths (u8); attributes dim, min_code.
#[allow(clippy::too_many_arguments)]
fn coded_table(
    b: &mut Builder,
    ids: &str,
    name: &str,
    table: &[f32],
    vocab: usize,
    dim: usize,
    step: f32,
    scale: f32,
    q: &QuantConfig,
) -> String {
    let fine = hot_ranges(&q.embed_fine_ids, vocab);
    let fine_step = q.embed_fine_step.unwrap_or(step);
    let row_step = |r: usize| if fine.iter().any(|f| f.contains(&r)) { fine_step } else { step };
    let columns = if q.embed_uniform_columns { Columns::Uniform } else { Columns::Standardized };
    let t = crate::coded_table::encode_steps(table, vocab, dim, &row_step, columns, scale, false);
    tracing::info!(step, fine_step, bits_per_value = t.bits_per_value(), "entropy-coded token table");
    let len = t.data.len() as i64;
    let dn = b.init(&format!("{name}.coded"), DType::U8, &[len], t.data);
    let on = b.init(
        &format!("{name}.offsets"),
        DType::U32,
        &[vocab as i64 + 1],
        t.offsets.iter().flat_map(|x| x.to_le_bytes()).collect(),
    );
    let sn = b.init(&format!("{name}.row_steps"), DType::U16, &[vocab as i64], u16_bytes(&t.row_steps));
    let cs = b.init_f32(&format!("{name}.col_scale"), &[dim as i64], &t.col_scale);
    let cm = b.init_f32(&format!("{name}.col_mean"), &[dim as i64], &t.col_mean);
    let nsym = t.lengths.len() as i64;
    let ln = b.init(&format!("{name}.code_lengths"), DType::U8, &[nsym], t.lengths);
    let attrs = vec![attr_i("dim", dim as i64), attr_i("min_code", t.min_code as i64)];
    b.node(CUSTOM_DOMAIN, GATHER_CODED, &[&dn, ids, &on, &sn, &cs, &cm, &ln], 1, attrs).remove(0)
}

/// A linear layer `x · Wᵀ (+ bias)`: PyTorch-layout weight `w` `[n, k]`.
#[derive(Clone, Copy)]
pub struct Linear<'a> {
    pub name: &'a str,
    pub w: &'a [f32],
    pub n: usize,
    pub k: usize,
    pub bias: Option<&'a [f32]>,
    /// Activation-aware input scales already multiplied into `w` (`awq`): GPTQ sees the input divided by them.
    pub input_scales: Option<&'a [f32]>,
}

impl<'a> Linear<'a> {
    /// A layer without bias or input scales.
    pub fn new(name: &'a str, w: &'a [f32], n: usize, k: usize) -> Self {
        Linear { name, w, n, k, bias: None, input_scales: None }
    }

    /// The layer's asymmetric 4-bit codes, scales and zero points.
    fn quantize_asym4(&self, q: &QuantConfig) -> (Vec<u8>, Vec<f32>, Vec<u8>) {
        q.quantize_asym4(self.name, self.w, self.n, self.k, self.input_scales)
    }

    /// The layer's symmetric 8-bit codes and scales.
    fn quantize_sym8(&self, q: &QuantConfig) -> (Vec<u8>, Vec<f32>) {
        q.quantize_sym8(self.name, self.w, self.n, self.k, self.input_scales)
    }
}

/// `x @ W^T (+ bias)`, quantized as `q` says for this layer.
pub fn linear(b: &mut Builder, x: &str, l: &Linear, q: &QuantConfig) -> String {
    let &Linear { name, w, n, k, bias, .. } = l;
    if q.calib == CalibMode::Record && name.contains("layers.") {
        // E[xᵀx] summed over this run's tokens: [B·S, k]ᵀ · [B·S, k].
        let shape = b.const_i64(&[-1, k as i64]);
        let rows = b.op("Reshape", &[x, &shape], vec![]);
        let cols = b.op("Transpose", &[&rows], vec![crate::proto::attr_ints("perm", &[1, 0])]);
        let xtx = b.op("MatMul", &[&cols, &rows], vec![]);
        b.output(&xtx, &format!("{CALIB_PREFIX}{name}"), DType::F32, vec![fixed(k as i64), fixed(k as i64)]);
    }
    match q.linear_bits_for(name) {
        None => float_linear(b, x, l, false),
        Some(bits) if custom_kernel_bits(q, Some(bits), n, k, bias.is_some()) => {
            custom_linear(b, x, l, bits, q, vec![])
        }
        Some(bits) => {
            let block = q.block;
            let kb = k.div_ceil(block);
            let asym = bits == 4 && q.asymmetric;
            let (codes, scales, zps) = if asym {
                let (c, s, z) = l.quantize_asym4(q);
                (c, s, Some(z))
            } else if bits == 8 {
                let (c, s) = l.quantize_sym8(q);
                (c, s, None)
            } else {
                let (c, s) = quantize_blocks(w, n, k, block, bits);
                (c, s, None)
            };
            let (raw, blob) = if bits == 4 { (pack4(&codes), block / 2) } else { (codes, block) };
            let wn = b.init(&format!("{name}.q"), DType::U8, &[n as i64, kb as i64, blob as i64], raw);
            let sn = b.init_f32(&format!("{name}.scales"), &[(n * kb) as i64], &scales);
            let mut inputs: Vec<String> = vec![x.into(), wn, sn];
            let zn = zps.map(|z| {
                // Two zero points per byte along each row, low nibble first.
                let packed: Vec<u8> = z.chunks(kb).flat_map(pack4).collect();
                let len = packed.len() as i64;
                b.init(&format!("{name}.zp"), DType::U8, &[len], packed)
            });
            inputs.push(zn.unwrap_or_default());
            if let Some(bv) = bias {
                let bn = b.init_f32(&format!("{name}.bias"), &[n as i64], bv);
                inputs.extend(["".into(), bn]);
            }
            while inputs.last().is_some_and(|s| s.is_empty()) {
                inputs.pop();
            }
            let refs: Vec<&str> = inputs.iter().map(|s| s.as_str()).collect();
            b.ms(
                "MatMulNBits",
                &refs,
                vec![
                    attr_i("K", k as i64),
                    attr_i("N", n as i64),
                    attr_i("bits", bits as i64),
                    attr_i("block_size", block as i64),
                    attr_i("accuracy_level", q.accuracy_level),
                ],
            )
        }
    }
}

/// `x @ W^T (+ bias)` in fp32; with `f16`, the weight is stored in fp16 and cast back to fp32 in the graph (ONNX
/// Runtime folds the cast at load).
pub fn float_linear(b: &mut Builder, x: &str, l: &Linear, f16: bool) -> String {
    let &Linear { name, w, n, k, bias, .. } = l;
    let wt = crate::weights::transpose(w, n, k);
    let wn = if f16 {
        let raw = wt.iter().flat_map(|v| deposium_kernels::f16_bits(*v).to_le_bytes()).collect();
        let half = b.init(&format!("{name}.f16"), DType::F16, &[k as i64, n as i64], raw);
        b.op("Cast", &[&half], vec![attr_i("to", DType::F32 as i64)])
    } else {
        b.init_f32(name, &[k as i64, n as i64], &wt)
    };
    let y = b.op("MatMul", &[x, &wn], vec![]);
    match bias {
        Some(bv) => {
            let bn = b.init_f32(&format!("{name}.bias"), &[n as i64], bv);
            b.op("Add", &[&y, &bn], vec![])
        }
        None => y,
    }
}

/// Whether a layer of `bits` runs on our QMatMul kernels.
fn custom_kernel_bits(q: &QuantConfig, bits: Option<u8>, n: usize, k: usize, has_bias: bool) -> bool {
    matches!(bits, Some(4 | 8))
        && q.custom_kernel
        && q.block == deposium_kernels::BLOCK
        && deposium_kernels::supports(n, k)
        && !has_bias
}

/// `ai.deposium:QMatMul8` / `QMatMul4` for `w` `[n, k]`.
fn custom_linear(
    b: &mut Builder,
    x: &str,
    l: &Linear,
    bits: u8,
    q: &QuantConfig,
    mut attrs: Vec<crate::proto::Attr>,
) -> String {
    let &Linear { name, w, n, k, .. } = l;
    let (tiles, kb) = ((n / deposium_kernels::TILE) as i64, (k / deposium_kernels::BLOCK) as i64);
    let scale_dims = [tiles, kb, deposium_kernels::TILE as i64];
    let (op, mut inputs) = if bits == 8 {
        let (codes, scales) = l.quantize_sym8(q);
        let (packed, packed_scales) = deposium_kernels::pack(&codes, &scales, n, k);
        let wn = b.init(&format!("{name}.q8"), DType::U8, &[tiles, (k / 4) as i64, 64], packed);
        let sn = b.init(&format!("{name}.q8scales"), DType::U16, &scale_dims, u16_bytes(&packed_scales));
        (QMATMUL8, vec![wn, sn])
    } else {
        let (codes, scales, zps) = if q.asymmetric {
            l.quantize_asym4(q)
        } else {
            let (c, s) = quantize_blocks(w, n, k, q.block, 4);
            (c, s, vec![8u8; n * kb as usize]) // symmetric: code = q + 8
        };
        let (packed, packed_scales, packed_zps) = deposium_kernels::pack4_stored(&codes, &scales, &zps, n, k);
        let wn = b.init(&format!("{name}.q4"), DType::U8, &[tiles, kb, 4, 64], packed);
        let sn = b.init(&format!("{name}.q4scales"), DType::U16, &scale_dims, u16_bytes(&packed_scales));
        let zn =
            b.init(&format!("{name}.q4zp"), DType::U8, &[tiles, kb, deposium_kernels::TILE as i64 / 2], packed_zps);
        (QMATMUL4, vec![wn, sn, zn])
    };
    inputs.insert(0, x.to_string());
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    if bits == 8 && q.activation_bits != 8 {
        attrs.push(attr_i("activation_bits", q.activation_bits as i64));
    }
    b.node(CUSTOM_DOMAIN, op, &refs, 1, attrs).remove(0)
}

/// `gelu_tanh(x · Wgᵀ) ⊙ (x · Wuᵀ)` for a stacked gate/up weight `[2·inter, k]` as one QMatMul node (attribute
/// `geglu`), where the layer runs on our kernels; None otherwise (the caller emits MatMul, Split, Gelu, Mul).
pub fn geglu_linear(b: &mut Builder, x: &str, l: &Linear, q: &QuantConfig) -> Option<String> {
    let bits = q.linear_bits_for(l.name);
    (custom_kernel_bits(q, bits, l.n, l.k, false) && (l.n / 2).is_multiple_of(deposium_kernels::TILE))
        .then(|| custom_linear(b, x, l, bits.unwrap(), q, vec![attr_i("geglu", 1)]))
}

/// Token embedding lookup `table[ids] * scale` (`table` is `[vocab, dim]`).
#[allow(clippy::too_many_arguments)]
pub fn embedding(
    b: &mut Builder,
    ids: &str,
    name: &str,
    table: &[f32],
    vocab: usize,
    dim: usize,
    scale: f32,
    q: &QuantConfig,
) -> String {
    let bits = if q.keeps(name) { None } else { q.embed_bits };
    let Some(bits) = bits else {
        let scaled: Vec<f32> = if scale != 1.0 { table.iter().map(|x| x * scale).collect() } else { table.to_vec() };
        let t = b.init_f32(name, &[vocab as i64, dim as i64], &scaled);
        return b.op("Gather", &[&t, ids], vec![attr_i("axis", 0)]);
    };
    if let (Some(step), true) = (q.embed_step, q.custom_kernel) {
        return coded_table(b, ids, name, table, vocab, dim, step, scale, q);
    }
    if (5..=7).contains(&bits) {
        if q.custom_kernel {
            return packed_table(b, ids, name, table, vocab, dim, bits, q.embed_block, scale);
        }
        // Stock ONNX Runtime has no such widths: portable graphs store the table at 8 bits.
        let s = TableSpec { bits: 8, block: q.embed_block, asym: false, f16: q.embed_scales_f16, scale };
        return block_table(b, ids, name, table, std::slice::from_ref(&(0..vocab)), dim, &s);
    }
    let hot = if bits == 4 { hot_ranges(&q.embed_int8_ids, vocab) } else { vec![] };
    let n_hot: usize = hot.iter().map(|r| r.len()).sum();
    let all: Vec<std::ops::Range<usize>> = std::iter::once(0..vocab).collect();
    let spec = |bits: u8, block: usize| TableSpec {
        bits,
        block,
        asym: bits == 4 && q.embed_asymmetric,
        f16: q.embed_scales_f16,
        scale,
    };
    if n_hot == 0 || n_hot == vocab {
        let s = if n_hot == vocab { spec(8, HOT_BLOCK) } else { spec(bits, q.embed_block) };
        return block_table(b, ids, name, table, &all, dim, &s);
    }
    // Mixed: hot ids from an 8-bit table, the rest from a 4-bit one. With cum(i) = Σ clip(i - start, 0, len) over the
    // hot ranges (the number of hot ids below i), a hot id is row cum(i) of the 8-bit table and a cold id row
    // i - cum(i) of the 4-bit one; i is hot when cum(i + 1) > cum(i).
    let cold = cold_ranges(&hot, vocab);
    let cum = |b: &mut Builder, x: &str| -> String {
        let mut acc: Option<String> = None;
        for r in &hot {
            let start = b.scalar_i64(r.start as i64);
            let d = b.op("Sub", &[x, &start], vec![]);
            let (lo, hi) = (b.scalar_i64(0), b.scalar_i64(r.len() as i64));
            let c = b.op("Clip", &[&d, &lo, &hi], vec![]);
            acc = Some(match acc {
                Some(a) => b.op("Add", &[&a, &c], vec![]),
                None => c,
            });
        }
        acc.expect("at least one hot range")
    };
    let below = cum(b, ids);
    let one = b.scalar_i64(1);
    let next = b.op("Add", &[ids, &one], vec![]);
    let upto = cum(b, &next);
    let is_hot = b.op("Greater", &[&upto, &below], vec![]);
    let zero = b.scalar_i64(0);
    let hot_row = b.op("Where", &[&is_hot, &below, &zero], vec![]);
    let cold_idx = b.op("Sub", &[ids, &below], vec![]);
    let cold_row = b.op("Where", &[&is_hot, &zero, &cold_idx], vec![]);
    let e8 = block_table(b, &hot_row, &format!("{name}.hot"), table, &hot, dim, &spec(8, HOT_BLOCK));
    let e4 = block_table(b, &cold_row, &format!("{name}.cold"), table, &cold, dim, &spec(bits, q.embed_block));
    let hot3 = b.unsqueeze(&is_hot, &[-1]);
    b.op("Where", &[&hot3, &e8, &e4], vec![])
}

/// Block of the 8-bit rows of a mixed table.
const HOT_BLOCK: usize = 128;

/// Sorted, merged hot ranges clipped to the vocabulary.
fn hot_ranges(ids: &[[u32; 2]], vocab: usize) -> Vec<std::ops::Range<usize>> {
    let mut r: Vec<std::ops::Range<usize>> =
        ids.iter().map(|&[a, z]| (a as usize).min(vocab)..(z as usize).min(vocab)).filter(|r| !r.is_empty()).collect();
    r.sort_by_key(|r| r.start);
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    for x in r {
        match out.last_mut() {
            Some(l) if x.start <= l.end => l.end = l.end.max(x.end),
            _ => out.push(x),
        }
    }
    out
}

fn cold_ranges(hot: &[std::ops::Range<usize>], vocab: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut at = 0;
    for r in hot {
        if r.start > at {
            out.push(at..r.start);
        }
        at = r.end;
    }
    if at < vocab {
        out.push(at..vocab);
    }
    out
}

struct TableSpec {
    bits: u8,
    block: usize,
    asym: bool,
    f16: bool,
    scale: f32,
}

/// One GatherBlockQuantized table holding `rows` of `table` (in order), looked up with `idx` (row numbers in it).
fn block_table(
    b: &mut Builder,
    idx: &str,
    name: &str,
    table: &[f32],
    rows: &[std::ops::Range<usize>],
    dim: usize,
    s: &TableSpec,
) -> String {
    use rayon::prelude::*;
    let n: usize = rows.iter().map(|r| r.len()).sum();
    let (bits, block) = (s.bits, s.block);
    let kb = dim.div_ceil(block);
    // Quantize in chunks of rows, in parallel.
    let row_ids: Vec<usize> = rows.iter().flat_map(|r| r.clone()).collect();
    let parts: Vec<(Vec<u8>, Vec<f32>, Vec<u8>)> = row_ids
        .par_chunks(1024)
        .map(|chunk| {
            let mut w = Vec::with_capacity(chunk.len() * dim);
            for &r in chunk {
                w.extend_from_slice(&table[r * dim..(r + 1) * dim]);
            }
            let (c, sc, z) = if s.asym {
                quantize_blocks_asym4(&w, chunk.len(), dim, block)
            } else {
                let (c, sc) = quantize_blocks(&w, chunk.len(), dim, block, bits);
                (c, sc, vec![])
            };
            // The quantizers pad each row to whole blocks; the table holds `dim` codes per row.
            let c = if kb * block == dim { c } else { c.chunks(kb * block).flat_map(|r| r[..dim].to_vec()).collect() };
            (c, sc, z)
        })
        .collect();
    let (mut codes, mut scales, mut zps) = (Vec::with_capacity(n * dim), Vec::with_capacity(n * kb), Vec::new());
    for (c, sc, z) in parts {
        codes.extend(c);
        scales.extend(sc);
        zps.extend(z);
    }
    scales.iter_mut().for_each(|x| *x *= s.scale);
    // GatherBlockQuantized takes uint8 data (4-bit: two codes per byte, low nibble first) with zero points packed the
    // same way (default 2^(bits-1), our symmetric offset) and scales shaped like the data with the quantized axis
    // divided by block; the output has the scales' type.
    let (data, data_dims) =
        if bits == 4 { (pack4(&codes), vec![n as i64, (dim / 2) as i64]) } else { (codes, vec![n as i64, dim as i64]) };
    let dn = b.init(&format!("{name}.q"), DType::U8, &data_dims, data);
    let sn = if s.f16 {
        let raw: Vec<u8> = scales.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect();
        b.init(&format!("{name}.scales"), DType::F16, &[n as i64, kb as i64], raw)
    } else {
        b.init_f32(&format!("{name}.scales"), &[n as i64, kb as i64], &scales)
    };
    let mut inputs = vec![dn, idx.to_string(), sn];
    if s.asym {
        let packed: Vec<u8> = zps.chunks(kb).flat_map(pack4).collect();
        inputs.push(b.init(&format!("{name}.zp"), DType::U8, &[n as i64, kb.div_ceil(2) as i64], packed));
    }
    let refs: Vec<&str> = inputs.iter().map(|x| x.as_str()).collect();
    let out = b.ms(
        "GatherBlockQuantized",
        &refs,
        vec![
            attr_i("gather_axis", 0),
            attr_i("quantize_axis", 1),
            attr_i("block_size", block as i64),
            attr_i("bits", bits as i64),
        ],
    );
    if s.f16 {
        b.cast(&out, DType::F32)
    } else {
        out
    }
}
