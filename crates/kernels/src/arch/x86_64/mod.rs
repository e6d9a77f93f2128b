//! x86-64: AVX-512 (F for the fp32 kernels; F + BW + VNNI for the int8 GEMM), and `avx2`, every kernel for CPUs
//! without AVX-512.
pub mod activation;
pub mod attention;
pub mod avx2;
pub mod gemm;
