//! ONNX Runtime custom operator `ai.deposium:GemmaAttnPrep`: from a fused QKV projection `[B, S, (H + 2·KV)·D]`, the
//! per-head q/k RMSNorm (weights pre-scaled), rotate-half RoPE at positions 0..S and the kv heads repeated for
//! MultiHeadAttention, in one pass. Replaces Split, 2 SimplifiedLayerNormalization, 2 RotaryEmbedding, Tile and the
//! Reshapes between them (8 nodes per layer).
//!
//! Inputs: qkv, q_scale `[D]`, k_scale `[D]`, cos `[P, D/2]`, sin `[P, D/2]`. Attributes: num_heads, kv_heads,
//! epsilon. Outputs: Q, K, V, each `[B, S, H·D]`.
use ort::operator::{ComputeContext, Kernel, KernelContext, Operator, OperatorInput, OperatorOutput};
use ort::value::TensorElementType;

use crate::qop::{err, par_rows};
use deposium_kernels::OutPtr as Out;

pub struct GemmaAttnPrep;

pub struct GemmaAttnPrepKernel {
    heads: usize,
    kv_heads: usize,
    eps: f32,
}

/// `out = rope(x / rms(x) · scale)` for one head at position `p`.
#[inline]
fn norm_rope(x: &[f32], scale: &[f32], eps: f32, cos: &[f32], sin: &[f32], out: &mut [f32]) {
    let d = x.len();
    let half = d / 2;
    let inv = crate::norm_add_norm::inv_rms(x, eps);
    for i in 0..half {
        let a = x[i] * inv * scale[i];
        let b = x[i + half] * inv * scale[i + half];
        out[i] = a * cos[i] - b * sin[i];
        out[i + half] = b * cos[i] + a * sin[i];
    }
}

impl Kernel for GemmaAttnPrepKernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let input = |i: usize| ctx.input(i)?.ok_or_else(|| err(format!("GemmaAttnPrep: input {i} missing")));
        let (qkv, qs, ks, cos, sin) = (input(0)?, input(1)?, input(2)?, input(3)?, input(4)?);
        let (shape, qkv) = qkv.try_extract_tensor::<f32>()?;
        let (_, qs) = qs.try_extract_tensor::<f32>()?;
        let (_, ks) = ks.try_extract_tensor::<f32>()?;
        let (cos_shape, cos) = cos.try_extract_tensor::<f32>()?;
        let (_, sin) = sin.try_extract_tensor::<f32>()?;
        let (h, kv, d) = (self.heads, self.kv_heads, qs.len());
        let width = (h + 2 * kv) * d;
        if shape.len() != 3 || shape[2] as usize != width || ks.len() != d || d % 2 != 0 || kv == 0 || h % kv != 0 {
            return Err(err(format!("GemmaAttnPrep: qkv shape {shape:?} does not fit {h} heads, {kv} kv heads of {d}")));
        }
        let (bsz, s) = (shape[0] as usize, shape[1] as usize);
        let half = d / 2;
        if cos_shape.len() != 2 || (cos_shape[0] as usize) < s || cos_shape[1] as usize != half || sin.len() != cos.len() {
            return Err(err(format!("GemmaAttnPrep: {s} positions, rope cache {cos_shape:?}")));
        }
        let out_shape = vec![bsz as i64, s as i64, (h * d) as i64];
        let mut outs = Vec::with_capacity(3);
        for i in 0..3 {
            let mut o = ctx.output(i, out_shape.clone())?.ok_or_else(|| err("GemmaAttnPrep: output missing"))?;
            outs.push(Out(o.try_extract_tensor_mut::<f32>()?.1.as_mut_ptr()));
        }
        let (qo, ko, vo) = (outs[0], outs[1], outs[2]);
        let (eps, group) = (self.eps, h / kv);
        let work = |rows: std::ops::Range<usize>| {
            let mut kbuf = vec![0f32; d];
            for row in rows {
                let p = row % s;
                let (cr, sr) = (&cos[p * half..(p + 1) * half], &sin[p * half..(p + 1) * half]);
                let x = &qkv[row * width..(row + 1) * width];
                // SAFETY: each row writes only its own `h·d` values of each output, allocated above.
                let (q, k, v) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(qo.get().add(row * h * d), h * d),
                        std::slice::from_raw_parts_mut(ko.get().add(row * h * d), h * d),
                        std::slice::from_raw_parts_mut(vo.get().add(row * h * d), h * d),
                    )
                };
                for head in 0..h {
                    norm_rope(&x[head * d..(head + 1) * d], qs, eps, cr, sr, &mut q[head * d..(head + 1) * d]);
                }
                for j in 0..kv {
                    let kx = &x[(h + j) * d..(h + j + 1) * d];
                    norm_rope(kx, ks, eps, cr, sr, &mut kbuf);
                    let vx = &x[(h + kv + j) * d..(h + kv + j + 1) * d];
                    for g in 0..group {
                        let head = j * group + g;
                        k[head * d..(head + 1) * d].copy_from_slice(&kbuf);
                        v[head * d..(head + 1) * d].copy_from_slice(vx);
                    }
                }
            }
        };
        par_rows(ctx, bsz * s, &work);
        Ok(())
    }
}

impl Operator for GemmaAttnPrep {
    type Kernel<'attr> = GemmaAttnPrepKernel;

    fn name(&self) -> &str {
        deposium_convert::GEMMA_ATTN_PREP
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [TensorElementType::Float32; 5].map(OperatorInput::required)
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [TensorElementType::Float32; 3].map(OperatorOutput::required)
    }

    fn create_kernel<'attr>(&self, kctx: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        let heads = kctx.get::<i64>("num_heads").ok_or_else(|| err("GemmaAttnPrep: num_heads missing"))?;
        let kv_heads = kctx.get::<i64>("kv_heads").ok_or_else(|| err("GemmaAttnPrep: kv_heads missing"))?;
        let eps = kctx.get::<f32>("epsilon").ok_or_else(|| err("GemmaAttnPrep: epsilon missing"))?;
        Ok(GemmaAttnPrepKernel { heads: heads.max(1) as usize, kv_heads: kv_heads.max(1) as usize, eps })
    }
}
