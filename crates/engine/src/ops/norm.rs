//! ONNX Runtime custom operator `ai.deposium:GemmaNormAddNorm`: Gemma's post-norm, residual add and the next
//! pre-norm in one pass per row: `sum = x + rms_norm(branch)·post`, `normed = rms_norm(sum)·next`. Replaces a
//! SimplifiedLayerNormalization and a SkipSimplifiedLayerNormalization (two nodes, twice per layer).
//!
//! Inputs: branch, x (both `[..., H]`), post `[H]`, next `[H]` (scales, Gemma's `1 + w` applied). Attribute: epsilon.
//! Outputs: normed, sum (`[..., H]`).
use ort::operator::{ComputeContext, Kernel, KernelContext, Operator, OperatorInput, OperatorOutput};
use ort::value::TensorElementType;

use super::par::{err, par_rows};
use deposium_kernels::OutPtr as Out;

pub struct GemmaNormAddNorm;

pub struct GemmaNormAddNormKernel {
    eps: f32,
}

/// `1 / sqrt(mean(x²) + eps)`.
pub fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let ms = deposium_kernels::sum_squares(x) / x.len() as f32;
    1.0 / (ms + eps).sqrt()
}

/// One row: `sum = x + branch·inv_rms(branch)·post`, `normed = sum·inv_rms(sum)·next`.
pub fn norm_add_norm_row(
    branch: &[f32],
    x: &[f32],
    post: &[f32],
    next: &[f32],
    eps: f32,
    normed: &mut [f32],
    sum: &mut [f32],
) {
    let a = inv_rms(branch, eps);
    for (((s, &b), &xv), &p) in sum.iter_mut().zip(branch).zip(x).zip(post) {
        *s = xv + b * a * p;
    }
    let c = inv_rms(sum, eps);
    for ((o, &s), &n) in normed.iter_mut().zip(sum.iter()).zip(next) {
        *o = s * c * n;
    }
}

impl Kernel for GemmaNormAddNormKernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let input = |i: usize| ctx.input(i)?.ok_or_else(|| err(format!("GemmaNormAddNorm: input {i} missing")));
        let (branch, x, post, next) = (input(0)?, input(1)?, input(2)?, input(3)?);
        let (shape, branch) = branch.try_extract_tensor::<f32>()?;
        let (x_shape, x) = x.try_extract_tensor::<f32>()?;
        let (_, post) = post.try_extract_tensor::<f32>()?;
        let (_, next) = next.try_extract_tensor::<f32>()?;
        let h = post.len();
        if h == 0 || next.len() != h || shape != x_shape || shape.last().copied() != Some(h as i64) {
            return Err(err(format!(
                "GemmaNormAddNorm: shapes {shape:?} and {x_shape:?} with scales of {h} and {}",
                next.len()
            )));
        }
        let shape = shape.to_vec();
        let mut normed = ctx.output(0, shape.clone())?.ok_or_else(|| err("GemmaNormAddNorm: output missing"))?;
        let mut sum = ctx.output(1, shape)?.ok_or_else(|| err("GemmaNormAddNorm: output missing"))?;
        let no = Out(normed.try_extract_tensor_mut::<f32>()?.1.as_mut_ptr());
        let so = Out(sum.try_extract_tensor_mut::<f32>()?.1.as_mut_ptr());
        let eps = self.eps;
        let work = |rows: std::ops::Range<usize>| {
            for r in rows {
                // SAFETY: each row writes only its own `h` values of each output, allocated above with the inputs' shape.
                let (n, s) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(no.get().add(r * h), h),
                        std::slice::from_raw_parts_mut(so.get().add(r * h), h),
                    )
                };
                norm_add_norm_row(&branch[r * h..(r + 1) * h], &x[r * h..(r + 1) * h], post, next, eps, n, s);
            }
        };
        par_rows(ctx, branch.len() / h, &work);
        Ok(())
    }
}

impl Operator for GemmaNormAddNorm {
    type Kernel<'attr> = GemmaNormAddNormKernel;

    fn name(&self) -> &str {
        deposium_convert::GEMMA_NORM_ADD_NORM
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [TensorElementType::Float32; 4].map(OperatorInput::required)
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [TensorElementType::Float32; 2].map(OperatorOutput::required)
    }

    fn create_kernel<'attr>(&self, kctx: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        let eps = kctx.get::<f32>("epsilon").ok_or_else(|| err("GemmaNormAddNorm: epsilon missing"))?;
        Ok(GemmaNormAddNormKernel { eps })
    }
}
