//! x86-64: AVX-512 (F for the fp32 kernels; F + BW + VNNI for the int8 GEMM).
pub mod activation;
pub mod attention;
pub mod gemm;
