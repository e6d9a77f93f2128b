//! Vector kernels per instruction set, one tree per architecture. Nothing here checks the CPU: the public
//! functions of `gemm`, `activation` and `attention` pick a path from `cpu::caps()` (the one dispatch point of each
//! kernel) and call in only when the features are there.
#[cfg(target_arch = "x86_64")]
pub mod x86_64;
