//! Our ONNX Runtime custom operators, domain `ai.deposium` (names in `deposium_convert::builder`, which emits them):
//! - `QMatMul8` / `QMatMul4` (`qmatmul`): per-block int8 linear layers on `deposium_kernels::matmul`;
//! - `GemmaAttention` (`attention`): q/k norms, RoPE and attention in one node;
//! - `GemmaNormAddNorm` (`norm`): post-norm, residual add and the next pre-norm in one pass;
//! - `GatherQ` / `GatherCoded` (`gather`): token-table lookups from bit-packed and entropy-coded tables;
//! - `MeanPool` (`pool`): masked mean pooling, token by token (batch-invariant).
//!
//! Each file documents its op's inputs, attributes and outputs beside the kernel; `par` splits work over ONNX
//! Runtime's intra-op pool.
mod attention;
mod gather;
mod norm;
mod par;
mod pool;
mod qmatmul;

use ort::operator::OperatorDomain;

/// The operator domain every session registers.
pub fn domain() -> ort::Result<OperatorDomain> {
    OperatorDomain::new(deposium_convert::CUSTOM_DOMAIN)?
        .add(qmatmul::QMatMul::INT8)?
        .add(qmatmul::QMatMul::INT4)?
        .add(norm::GemmaNormAddNorm)?
        .add(attention::GemmaAttention)?
        .add(gather::GatherQ)?
        .add(gather::GatherCoded)?
        .add(pool::MeanPool)
}
