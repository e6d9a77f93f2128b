//! Work splitting on ONNX Runtime's intra-op thread pool, and the error type of the ops.
use ort::operator::ComputeContext;

/// `f(i)` for `i in 0..total` on ONNX Runtime's intra-op thread pool (in the calling thread when there is one task
/// or the pool refuses).
pub fn par_for(ctx: &ComputeContext, total: usize, f: &(dyn Fn(usize) + Sync)) {
    if total <= 1 || ctx.par_for(total, 0, f).is_err() {
        (0..total).for_each(f);
    }
}

/// Rows per parallel task of the row-wise ops (norms, attention keys, the GeGLU epilogue).
const ROWS_PER_TASK: usize = 16;

/// `f(r0..r1)` over `0..rows` in groups of `ROWS_PER_TASK` rows, on ONNX Runtime's intra-op thread pool.
pub fn par_rows(ctx: &ComputeContext, rows: usize, f: &(dyn Fn(std::ops::Range<usize>) + Sync)) {
    par_for(ctx, rows.div_ceil(ROWS_PER_TASK), &|c| f(c * ROWS_PER_TASK..((c + 1) * ROWS_PER_TASK).min(rows)));
}

pub fn err(msg: impl Into<String>) -> ort::Error {
    ort::Error::new(msg.into())
}
