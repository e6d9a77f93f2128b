//! ONNX Runtime custom operator `ai.deposium:MeanPool`: the masked mean of each text's token vectors, summed token
//! by token in order, so a text's result is the same whatever the padded length of its batch (the stock MatMul
//! pooling sums in blocks that depend on that length).
//!
//! Inputs: x f32 `[B, S, H]`, mask f32 `[B, S]` (1 = token). Output: `[B, H]`, `Σ_s mask·x / max(Σ_s mask, 1e-9)`.
use ort::operator::{ComputeContext, Kernel, KernelContext, Operator, OperatorInput, OperatorOutput};
use ort::value::TensorElementType;

use super::par::{err, par_for};
use deposium_kernels::OutPtr as Out;

/// Components per parallel task.
const COLUMNS_PER_TASK: usize = 128;

pub struct MeanPool;

pub struct MeanPoolKernel;

/// The mean of the rows `x[s]` (`h` values each) where `mask[s] > 0`, columns `cols`, into `out` (one per column).
pub fn mean_pool_columns(x: &[f32], mask: &[f32], h: usize, cols: std::ops::Range<usize>, out: &mut [f32]) {
    out.fill(0.0);
    let mut count = 0f32;
    for (s, &m) in mask.iter().enumerate() {
        if m == 0.0 {
            continue;
        }
        count += m;
        for (o, &v) in out.iter_mut().zip(&x[s * h + cols.start..s * h + cols.end]) {
            *o += m * v;
        }
    }
    let count = count.max(1e-9);
    out.iter_mut().for_each(|o| *o /= count);
}

impl Kernel for MeanPoolKernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let input = |i: usize| ctx.input(i)?.ok_or_else(|| err(format!("MeanPool: input {i} missing")));
        let (x, mask) = (input(0)?, input(1)?);
        let (shape, x) = x.try_extract_tensor::<f32>()?;
        let (mask_shape, mask) = mask.try_extract_tensor::<f32>()?;
        if shape.len() != 3 || mask_shape.len() != 2 || shape[..2] != mask_shape[..] {
            return Err(err(format!("MeanPool: x {shape:?} and mask {mask_shape:?} do not fit [B, S, H] and [B, S]")));
        }
        let (bsz, s, h) = (shape[0] as usize, shape[1] as usize, shape[2] as usize);
        let mut y = ctx.output(0, vec![bsz as i64, h as i64])?.ok_or_else(|| err("MeanPool: output missing"))?;
        let out = Out(y.try_extract_tensor_mut::<f32>()?.1.as_mut_ptr());
        let parts = h.div_ceil(COLUMNS_PER_TASK).max(1);
        par_for(ctx, bsz * parts, &|task| {
            let (b, part) = (task / parts, task % parts);
            let cols = part * COLUMNS_PER_TASK..((part + 1) * COLUMNS_PER_TASK).min(h);
            // SAFETY: each task writes only columns `cols` of row b of the `[B, H]` output allocated above.
            let o = unsafe { std::slice::from_raw_parts_mut(out.get().add(b * h + cols.start), cols.len()) };
            mean_pool_columns(&x[b * s * h..(b + 1) * s * h], &mask[b * s..(b + 1) * s], h, cols, o);
        });
        Ok(())
    }
}

impl Operator for MeanPool {
    type Kernel<'attr> = MeanPoolKernel;

    fn name(&self) -> &str {
        deposium_convert::MEAN_POOL
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [TensorElementType::Float32; 2].map(OperatorInput::required)
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn create_kernel<'attr>(&self, _: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        Ok(MeanPoolKernel)
    }
}

#[cfg(test)]
mod tests {
    use super::mean_pool_columns;

    #[test]
    fn padding_changes_nothing_and_the_mean_is_right() {
        let h = 5;
        let x: Vec<f32> = (0..7 * h).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut alone = vec![0f32; h];
        mean_pool_columns(&x[..3 * h], &[1.0; 3], h, 0..h, &mut alone);
        let mut padded = vec![0f32; h];
        mean_pool_columns(&x, &[1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0], h, 0..h, &mut padded);
        assert_eq!(alone, padded);
        for c in 0..h {
            let want = (x[c] + x[h + c] + x[2 * h + c]) / 3.0;
            assert!((alone[c] - want).abs() < 1e-6);
        }
        let mut none = vec![1f32; h];
        mean_pool_columns(&x, &[0.0; 7], h, 0..h, &mut none);
        assert_eq!(none, vec![0.0; h]);
    }
}
