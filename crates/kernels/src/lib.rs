//! Our CPU kernels: a per-block int8 matrix multiply `y = x · Wᵀ` (weights and activations both quantized in blocks
//! of 32 along K with one scale per block on each side: llama.cpp Q8_0 numerics, the same as ONNX Runtime's
//! MatMulNBits with accuracy_level 4), attention for one text and head, GeGLU, and the Huffman codes of the token
//! tables. Hand-written because no crate offers per-block int8 GEMMs with VNNI and batch-invariant results.
//!
//! Where things are:
//! - `layout`: packed weight layouts, their offsets, packing (used at conversion), quantized activation rows;
//! - `gemm`: `matmul` (8-bit activations), `matmul_a16` (16-bit activations against 8-bit weights) and the activation
//!   quantizer; `activation`: GeGLU; `attention`: `attend`;
//! - `portable`: the plain-loop reference of every vector kernel; `arch::x86_64`: the AVX-512 and AVX2 kernels;
//! - `cpu`: capabilities detected once (each public kernel dispatches on them in one place);
//! - `par`: the parallel-for callback type and pool-size hint; `scalar`: `e^x`, GELU, sums of squares;
//! - `huffman`: canonical Huffman codes (the entropy-coded token table).

pub mod activation;
mod arch;
pub mod attention;
pub mod cpu;
pub mod gemm;
pub mod huffman;
pub mod layout;
pub mod par;
mod portable;
pub mod scalar;

pub use activation::geglu_rows;
pub use gemm::{matmul, matmul_a16};
pub use layout::{
    expand_scales4, f16_bits, f16_value, pack, pack4, pack4_stored, supports, ActivationBits, Packed, Packed4, Packed8,
    QuantizedRows, BLOCK, TILE,
};
pub use par::{sequential, set_pool_threads, OutPtr, ParFor};
pub use scalar::{gelu_tanh, sum_squares};
