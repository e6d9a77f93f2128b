//! `ai.deposium:GemmaAttention`: from a fused QKV projection `[B, S, (H + 2·KV)·D]`, the per-head q/k RMSNorm
//! (weights pre-scaled), rotate-half RoPE at positions 0..S, then the attention itself (`deposium_kernels::attention`),
//! in one node. Keys of padding and, with `window_reach > 0`, keys at distance ≥ `window_reach` are left out.
//!
//! Inputs: qkv `[B, S, (H + 2·KV)·D]`, q_scale `[D]`, k_scale `[D]`, cos `[P, D/2]`, sin `[P, D/2]`, mask f32 `[B, S]`
//! (1 = token). Attributes: num_heads, kv_heads, epsilon, window_reach. Output: `[B, S, H·D]`.
use ort::operator::{ComputeContext, Kernel, KernelContext, Operator, OperatorInput, OperatorOutput};
use ort::value::TensorElementType;

use super::norm::inv_rms;
use super::par::{err, par_for, par_rows};
use deposium_kernels::OutPtr as Out;

/// The head layout of the fused QKV input.
struct Heads {
    heads: usize,
    kv_heads: usize,
    eps: f32,
}

/// `out = rope(x / rms(x) · scale)` for one head at position `p`.
#[inline]
fn norm_rope(x: &[f32], scale: &[f32], eps: f32, cos: &[f32], sin: &[f32], out: &mut [f32]) {
    let d = x.len();
    let half = d / 2;
    let inv = inv_rms(x, eps);
    for i in 0..half {
        let a = x[i] * inv * scale[i];
        let b = x[i + half] * inv * scale[i + half];
        out[i] = a * cos[i] - b * sin[i];
        out[i + half] = b * cos[i] + a * sin[i];
    }
}

/// Inputs 0..5 (qkv, q_scale, k_scale, cos, sin), checked against the heads.
struct QkvInputs<'a> {
    qkv: &'a [f32],
    q_scale: &'a [f32],
    k_scale: &'a [f32],
    cos: &'a [f32],
    sin: &'a [f32],
    bsz: usize,
    s: usize,
    /// Head dimension.
    d: usize,
    /// Values per qkv row, `(H + 2·KV)·D`.
    width: usize,
}

impl QkvInputs<'_> {
    /// The RoPE cos and sin rows of position `p`.
    fn rope_at(&self, p: usize) -> (&[f32], &[f32]) {
        let half = self.d / 2;
        (&self.cos[p * half..(p + 1) * half], &self.sin[p * half..(p + 1) * half])
    }
}

impl Heads {
    /// Extracts and checks the qkv inputs of op `op` (head dimension a multiple of `d_multiple`), then runs `f`.
    fn with_inputs(
        &self,
        ctx: &ComputeContext,
        op: &str,
        d_multiple: usize,
        f: impl FnOnce(&QkvInputs) -> ort::Result<()>,
    ) -> ort::Result<()> {
        let input = |i: usize| ctx.input(i)?.ok_or_else(|| err(format!("{op}: input {i} missing")));
        let (qkv, qs, ks, cos, sin) = (input(0)?, input(1)?, input(2)?, input(3)?, input(4)?);
        let (shape, qkv) = qkv.try_extract_tensor::<f32>()?;
        let (_, q_scale) = qs.try_extract_tensor::<f32>()?;
        let (_, k_scale) = ks.try_extract_tensor::<f32>()?;
        let (cos_shape, cos) = cos.try_extract_tensor::<f32>()?;
        let (_, sin) = sin.try_extract_tensor::<f32>()?;
        let (h, kv, d) = (self.heads, self.kv_heads, q_scale.len());
        let width = (h + 2 * kv) * d;
        if shape.len() != 3
            || shape[2] as usize != width
            || k_scale.len() != d
            || d % d_multiple != 0
            || kv == 0
            || h % kv != 0
        {
            return Err(err(format!("{op}: qkv shape {shape:?} does not fit {h} heads, {kv} kv heads of {d}")));
        }
        let (bsz, s) = (shape[0] as usize, shape[1] as usize);
        if cos_shape.len() != 2
            || (cos_shape[0] as usize) < s
            || cos_shape[1] as usize != d / 2
            || sin.len() != cos.len()
        {
            return Err(err(format!("{op}: {s} positions, rope cache {cos_shape:?}")));
        }
        f(&QkvInputs { qkv, q_scale, k_scale, cos, sin, bsz, s, d, width })
    }
}

pub struct GemmaAttention;

pub struct GemmaAttentionKernel {
    heads: Heads,
    reach: usize,
}

/// Query rows per parallel task (a multiple of `attention::QR`).
const QUERY_ROWS_PER_TASK: usize = 16;

thread_local! {
    /// Per pool thread: one task's queries and scores.
    static QUERIES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Per calling thread: the packed keys and values of a run.
    static KEYS_VALUES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Kernel for GemmaAttentionKernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        self.heads.with_inputs(ctx, "GemmaAttention", deposium_kernels::attention::KEY_TILE, |x| self.attention(ctx, x))
    }
}

impl GemmaAttentionKernel {
    fn attention(&self, ctx: &ComputeContext, inp: &QkvInputs) -> ort::Result<()> {
        use deposium_kernels::attention::{
            attend, packed_key_index, packed_keys_len, packed_value_stride, KeyMask, QR,
        };
        let QkvInputs { qkv, q_scale: qs, k_scale: ks, bsz, s, d, width, .. } = *inp;
        let (h, kv, eps) = (self.heads.heads, self.heads.kv_heads, self.heads.eps);
        let mask = ctx.input(5)?.ok_or_else(|| err("GemmaAttention: input 5 missing"))?;
        let (mask_shape, mask) = mask.try_extract_tensor::<f32>()?;
        if mask_shape.iter().map(|&x| x as usize).product::<usize>() != bsz * s {
            return Err(err(format!("GemmaAttention: mask {mask_shape:?} for {bsz} texts of {s} tokens")));
        }
        let mut y = ctx
            .output(0, vec![bsz as i64, s as i64, (h * d) as i64])?
            .ok_or_else(|| err("GemmaAttention: output missing"))?;
        let out = Out(y.try_extract_tensor_mut::<f32>()?.1.as_mut_ptr());
        let s4 = s.div_ceil(QR) * QR;
        let (k_len, v_stride) = (packed_keys_len(s, d), packed_value_stride(d));
        let v_len = s * v_stride;
        KEYS_VALUES.with_borrow_mut(|kvbuf| -> ort::Result<()> {
            // Keys packed per (text, kv head), normed and rotated once for all the q heads they serve, then the values
            // copied at `v_stride`. The buffer is kept between runs (at most the batch token limit × kv heads ×
            // (2·head_dim + 16) floats).
            kvbuf.resize(bsz * kv * (k_len + v_len), 0.0);
            let (ko, vo) = (Out(kvbuf.as_mut_ptr()), Out(kvbuf[bsz * kv * k_len..].as_mut_ptr()));
            par_rows(ctx, bsz * s, &|rows| {
                let mut tmp = vec![0f32; d];
                for row in rows {
                    let (b, p) = (row / s, row % s);
                    let (cr, sr) = inp.rope_at(p);
                    let x = &qkv[row * width..(row + 1) * width];
                    for j in 0..kv {
                        norm_rope(&x[(h + j) * d..(h + j + 1) * d], ks, eps, cr, sr, &mut tmp);
                        let base = (b * kv + j) * k_len;
                        for (c, v) in tmp.iter().enumerate() {
                            // SAFETY: key p's slots of this packed block, written by this row only.
                            unsafe { *ko.get().add(base + packed_key_index(p, c, d)) = *v };
                        }
                        let value = &x[(h + kv + j) * d..(h + kv + j + 1) * d];
                        // SAFETY: value p's row of this block, written by this row only.
                        unsafe {
                            let dst = vo.get().add((b * kv + j) * v_len + p * v_stride);
                            std::ptr::copy_nonoverlapping(value.as_ptr(), dst, d);
                        }
                    }
                }
            });
            let keep: Vec<bool> = mask.iter().map(|&m| m > 0.5).collect();
            let chunks = s4.div_ceil(QUERY_ROWS_PER_TASK);
            let (group, reach) = (h / kv, self.reach);
            let (kbuf, vbuf) = kvbuf.split_at(bsz * kv * k_len);
            par_for(ctx, bsz * h * chunks, &|task| {
                let (bh, c) = (task / chunks, task % chunks);
                let (b, head) = (bh / h, bh % h);
                let j = head / group;
                let rows = c * QUERY_ROWS_PER_TASK..((c + 1) * QUERY_ROWS_PER_TASK).min(s4);
                let keys = &kbuf[(b * kv + j) * k_len..(b * kv + j + 1) * k_len];
                let v = &vbuf[(b * kv + j) * v_len..(b * kv + j + 1) * v_len];
                let mask = KeyMask { keep: &keep[b * s..(b + 1) * s], reach };
                QUERIES.with_borrow_mut(|q| {
                    // This task's queries, normed and rotated; rows past the text stay zero.
                    q.clear();
                    q.resize(rows.len() * d, 0.0);
                    for (r, qrow) in rows.clone().zip(q.chunks_exact_mut(d)).filter(|(r, _)| *r < s) {
                        let (cr, sr) = inp.rope_at(r);
                        norm_rope(&qkv[(b * s + r) * width + head * d..][..d], qs, eps, cr, sr, qrow);
                    }
                    let first = b * s * h * d + head * d;
                    // SAFETY: this task writes rows `rows` (those < s) of head `head` of text b only, inside the output.
                    SCORES.with_borrow_mut(|sc| unsafe {
                        attend(q, keys, v, v_stride, s, d, mask, rows, out.get().add(first), h * d, sc)
                    });
                });
            });
            Ok(())
        })?;
        Ok(())
    }
}

impl Operator for GemmaAttention {
    type Kernel<'attr> = GemmaAttentionKernel;

    fn name(&self) -> &str {
        deposium_convert::GEMMA_ATTENTION
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [TensorElementType::Float32; 6].map(OperatorInput::required)
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn create_kernel<'attr>(&self, kctx: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        let heads = kctx.get::<i64>("num_heads").ok_or_else(|| err("GemmaAttention: num_heads missing"))?;
        let kv_heads = kctx.get::<i64>("kv_heads").ok_or_else(|| err("GemmaAttention: kv_heads missing"))?;
        let eps = kctx.get::<f32>("epsilon").ok_or_else(|| err("GemmaAttention: epsilon missing"))?;
        let heads = Heads { heads: heads.max(1) as usize, kv_heads: kv_heads.max(1) as usize, eps };
        let reach = kctx.get::<i64>("window_reach").unwrap_or(0).max(0) as usize;
        Ok(GemmaAttentionKernel { heads, reach })
    }
}
