//! ONNX Runtime custom operators `ai.deposium:QMatMul8` and `ai.deposium:QMatMul4`: `Y = X · Wᵀ` with per-block
//! (32) int8 activations and 8- or 4-bit weights (deposium-kernels), run on ONNX Runtime's intra-op thread pool.
//!
//! Inputs: X f32 `[..., K]`, W u8 packed (first dimension N/16), S packed scales (u16 holding fp16 bits), and for
//! 4-bit weights optionally ZP, packed zero points (then S holds scales only and the kernel's `scale · zero_point`
//! terms are built once, when the node is created; see `deposium_kernels::pack4_stored`). Output: f32
//! `[..., N]`; with attribute `geglu = 1`, `gelu_tanh(Y[.., :N/2]) ⊙ Y[.., N/2:]` `[..., N/2]` (a gate/up projection
//! and its activation in one node). Attribute `activation_bits = 16` (8-bit weights only) quantizes the
//! activations to 16 bits per block instead of 8 (W8A16).
use deposium_kernels::{geglu_rows, matmul, matmul_a16, ActivationBits, OutPtr, Packed4, Packed8, QuantizedRows, TILE};
use ort::operator::{ComputeContext, Kernel, KernelContext, Operator, OperatorInput, OperatorOutput};
use ort::value::TensorElementType;

use super::par::{err, par_for, par_rows};

pub struct QMatMul {
    bits: u8,
}

pub struct QMatMulKernel {
    bits: u8,
    activations: ActivationBits,
    geglu: bool,
    /// 4-bit scales in the kernel's layout, expanded from stored scales and zero points.
    scales: Option<Vec<u16>>,
}

/// Rows per gate/up chunk (EmbeddingGemma: 256 × 2304 floats, a 2.4 MB buffer per thread).
const GEGLU_CHUNK_ROWS: usize = 256;

thread_local! {
    /// Quantized activations, shared by every QMatMul node run on this thread (one buffer, not one per layer).
    static SCRATCH: std::cell::RefCell<QuantizedRows> = std::cell::RefCell::new(QuantizedRows::default());
    /// The gate/up product before its GeGLU epilogue.
    static GATE_UP: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Kernel for QMatMulKernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let input = |i: usize| ctx.input(i)?.ok_or_else(|| err(format!("QMatMul: input {i} missing")));
        let (x, w, s) = (input(0)?, input(1)?, input(2)?);
        let (x_shape, x) = x.try_extract_tensor::<f32>()?;
        let (w_shape, codes) = w.try_extract_tensor::<u8>()?;
        let (_, stored_scales) = s.try_extract_tensor::<u16>()?;
        let scales = self.scales.as_deref().unwrap_or(stored_scales);
        let k = *x_shape.last().ok_or_else(|| err("QMatMul: X has no dimensions"))? as usize;
        let n = *w_shape.first().ok_or_else(|| err("QMatMul: W has no dimensions"))? as usize * TILE;
        let m = x.len().checked_div(k).unwrap_or(0);
        let out_n = if self.geglu { n / 2 } else { n };
        let mut out_shape = x_shape.to_vec();
        *out_shape.last_mut().unwrap() = out_n as i64;
        let mut y = ctx.output(0, out_shape)?.ok_or_else(|| err("QMatMul: output missing"))?;
        let (_, out) = y.try_extract_tensor_mut::<f32>()?;
        let par = |total: usize, f: &(dyn Fn(usize) + Sync)| par_for(ctx, total, f);
        let run = |x: &[f32], m: usize, out: &mut [f32]| -> ort::Result<()> {
            if self.bits == 4 {
                let w = Packed4::new(n, k, codes, scales).map_err(err)?;
                SCRATCH.with_borrow_mut(|scratch| matmul(x, m, w, out, scratch, &par));
            } else {
                let w = Packed8::new(n, k, codes, scales).map_err(err)?;
                SCRATCH.with_borrow_mut(|scratch| match self.activations {
                    ActivationBits::Int8 => matmul(x, m, w, out, scratch, &par),
                    ActivationBits::Int16 => matmul_a16(x, m, w, out, scratch, &par),
                });
            }
            Ok(())
        };
        if !self.geglu {
            return run(x, m, out);
        }
        if !n.is_multiple_of(2) {
            return Err(err(format!("QMatMul: geglu needs an even N (got {n})")));
        }
        // Rows in chunks, so that the gate/up product lives in one small buffer per thread, kept between calls,
        // instead of a fresh `[m, N]` one (74 MB for a batch of 8k tokens, page-faulted in at every layer).
        GATE_UP.with_borrow_mut(|gu| -> ort::Result<()> {
            let chunk = GEGLU_CHUNK_ROWS.min(m);
            if gu.len() < chunk * n {
                gu.resize(chunk * n, 0.0);
            }
            let dst = OutPtr(out.as_mut_ptr());
            for r0 in (0..m).step_by(chunk.max(1)) {
                let rows = chunk.min(m - r0);
                let y = &mut gu[..rows * n];
                run(&x[r0 * k..(r0 + rows) * k], rows, y)?;
                let y = &*y;
                par_rows(ctx, rows, &|r| {
                    // SAFETY: each task writes only its own rows of the output, which holds m · out_n values.
                    let o = unsafe {
                        std::slice::from_raw_parts_mut(dst.get().add((r0 + r.start) * out_n), r.len() * out_n)
                    };
                    geglu_rows(&y[r.start * n..r.end * n], out_n, o);
                });
            }
            Ok(())
        })
    }
}

impl QMatMul {
    pub const INT8: QMatMul = QMatMul { bits: 8 };
    pub const INT4: QMatMul = QMatMul { bits: 4 };
}

impl Operator for QMatMul {
    type Kernel<'attr> = QMatMulKernel;

    fn name(&self) -> &str {
        if self.bits == 4 {
            deposium_convert::QMATMUL4
        } else {
            deposium_convert::QMATMUL8
        }
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [
            OperatorInput::required(TensorElementType::Float32),
            OperatorInput::required(TensorElementType::Uint8),
            OperatorInput::required(TensorElementType::Uint16),
            OperatorInput::optional(TensorElementType::Uint8),
        ]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn create_kernel<'attr>(&self, kctx: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        let geglu = kctx.get::<i64>("geglu").unwrap_or(0) == 1;
        let bits = kctx.get::<i64>("activation_bits").unwrap_or(8);
        let activations =
            ActivationBits::from_bits(bits).filter(|&a| self.bits == 8 || a == ActivationBits::Int8).ok_or_else(
                || err(format!("QMatMul{}: activation_bits {bits} (8, or 16 with 8-bit weights)", self.bits)),
            )?;
        let scales = match (self.bits, kctx.inputs()?.len()) {
            (4, 4) => {
                let s = kctx.constant_input::<ort::value::DynTensorValueType>(2)?;
                let z = kctx.constant_input::<ort::value::DynTensorValueType>(3)?;
                let (_, s) = s.try_extract_tensor::<u16>()?;
                let (_, z) = z.try_extract_tensor::<u8>()?;
                if z.len() * 2 != s.len() {
                    return Err(err(format!("QMatMul4: {} zero-point bytes for {} scales", z.len(), s.len())));
                }
                Some(deposium_kernels::expand_scales4(s, z))
            }
            _ => None,
        };
        Ok(QMatMulKernel { bits: self.bits, activations, geglu, scales })
    }
}
