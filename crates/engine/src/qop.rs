//! ONNX Runtime custom operator `ai.deposium:QMatMul8`: `Y = X · Wᵀ` with per-block int8 weights and activations
//! (deposium-kernels), run on ONNX Runtime's intra-op thread pool.
//!
//! Inputs: X f32 `[..., K]`, W u8 packed `[N/16, K/4, 64]`, S f32 `[N/16, K/32, 16]`. Output: f32 `[..., N]`.
use deposium_kernels::{matmul, Packed, QuantizedRows, TILE};
use ort::operator::{ComputeContext, Kernel, KernelContext, Operator, OperatorDomain, OperatorInput, OperatorOutput};
use ort::value::TensorElementType;

pub const DOMAIN: &str = deposium_convert::CUSTOM_DOMAIN;

struct QMatMul8;

struct QMatMul8Kernel {
    scratch: QuantizedRows,
}

fn err(msg: impl Into<String>) -> ort::Error {
    ort::Error::new(msg.into())
}

impl Kernel for QMatMul8Kernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let input = |i: usize| ctx.input(i)?.ok_or_else(|| err(format!("QMatMul8: input {i} missing")));
        let (x, w, s) = (input(0)?, input(1)?, input(2)?);
        let (x_shape, x) = x.try_extract_tensor::<f32>()?;
        let (w_shape, codes) = w.try_extract_tensor::<u8>()?;
        let (_, scales) = s.try_extract_tensor::<f32>()?;
        let k = *x_shape.last().ok_or_else(|| err("QMatMul8: X has no dimensions"))? as usize;
        let tiles = *w_shape.first().ok_or_else(|| err("QMatMul8: W has no dimensions"))? as usize;
        let n = tiles * TILE;
        let packed = Packed::new(n, k, codes, scales).map_err(err)?;
        let m = if k == 0 { 0 } else { x.len() / k };
        let mut out_shape = x_shape.to_vec();
        *out_shape.last_mut().unwrap() = n as i64;
        let mut y = ctx.output(0, out_shape)?.ok_or_else(|| err("QMatMul8: output missing"))?;
        let (_, out) = y.try_extract_tensor_mut::<f32>()?;
        let par = |total: usize, f: &(dyn Fn(usize) + Sync)| {
            if total <= 1 || ctx.par_for(total, 0, f).is_err() {
                (0..total).for_each(f);
            }
        };
        matmul(x, m, packed, out, &mut self.scratch, &par);
        Ok(())
    }
}

impl Operator for QMatMul8 {
    type Kernel<'attr> = QMatMul8Kernel;

    fn name(&self) -> &str {
        deposium_convert::QMATMUL8
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [
            OperatorInput::required(TensorElementType::Float32),
            OperatorInput::required(TensorElementType::Uint8),
            OperatorInput::required(TensorElementType::Float32),
        ]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn create_kernel<'attr>(&self, _: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        Ok(QMatMul8Kernel { scratch: QuantizedRows::default() })
    }
}

/// The operator domain every session registers.
pub fn domain() -> ort::Result<OperatorDomain> {
    OperatorDomain::new(DOMAIN)?.add(QMatMul8)
}
