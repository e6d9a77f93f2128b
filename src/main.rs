mod convert_cmd;
mod embed_cmd;
mod pull_cmd;

use clap::{Parser, Subcommand};

/// deposium-embed: fast, faithful text embeddings on CPU (EmbeddingGemma on ONNX Runtime, Model2Vec static models).
#[derive(Parser)]
#[command(name = "deposium-embed", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Embed texts (arguments, stdin, or a JSONL/text file) and print or write the vectors.
    Embed(embed_cmd::EmbedArgs),
    /// Serve the Ollama, OpenAI and TEI-style HTTP APIs.
    Serve(deposium_server::ServeArgs),
    /// Build an ONNX model directory from safetensors (fp32, int8, w8a16 or int4).
    Convert(convert_cmd::ConvertArgs),
    /// MTEB-style STS evaluation (BIOSSES, STSBenchmark, STS17).
    Eval(deposium_eval::EvalArgs),
    /// Latency benchmark.
    Bench(deposium_eval::BenchArgs),
    /// Comparison report (Markdown + plots) from eval and bench results.
    Report(deposium_eval::ReportArgs),
    /// List the known models and whether they are on disk.
    Models,
    /// Download a model repository from the Hugging Face Hub (HF_ENDPOINT, HF_TOKEN) into $DEPOSIUM_HOME/models.
    Pull(pull_cmd::PullArgs),
}

/// Release builds target x86-64-v3 (AVX2, FMA...) or x86-64-v4 (AVX-512): on a CPU without what this binary was
/// compiled for, say so and exit instead of dying of SIGILL somewhere later. Raw CPUID rather than
/// `is_x86_feature_detected!`, which folds to `true` for the features enabled at compile time; plain integer code
/// and libc calls with static bytes only (no aggregates the compiler could move with AVX registers).
#[cfg(target_arch = "x86_64")]
#[inline(never)]
fn check_cpu_features() {
    extern "C" {
        fn write(fd: i32, buf: *const u8, n: usize) -> isize;
        fn exit(code: i32) -> !;
    }
    #[inline(always)]
    fn cpuid(leaf: u32, sub: u32) -> (u32, u32, u32) {
        let (ebx, ecx, edx): (u32, u32, u32);
        // rbx is reserved by LLVM: save it around CPUID.
        unsafe {
            std::arch::asm!("mov {t:r}, rbx", "cpuid", "xchg {t:r}, rbx", t = out(reg) ebx,
                inout("eax") leaf => _, inout("ecx") sub => ecx, out("edx") edx, options(nostack, preserves_flags))
        };
        (ebx, ecx, edx)
    }
    #[inline(always)]
    fn max_leaf(leaf: u32) -> u32 {
        let eax: u32;
        unsafe {
            std::arch::asm!("mov {t:r}, rbx", "cpuid", "xchg {t:r}, rbx", t = out(reg) _,
                inout("eax") leaf => eax, inout("ecx") 0u32 => _, out("edx") _, options(nostack, preserves_flags))
        };
        eax
    }
    let want_v4 = cfg!(target_feature = "avx512f");
    if !cfg!(target_feature = "avx2") && !want_v4 {
        return;
    }
    let (_, c1, _) = cpuid(1, 0);
    let (b7, _, _) = if max_leaf(0) >= 7 { cpuid(7, 0) } else { (0, 0, 0) };
    let (_, ce, _) = if max_leaf(0x8000_0000) >= 0x8000_0001 { cpuid(0x8000_0001, 0) } else { (0, 0, 0) };
    // Register state the OS saves (XCR0): SSE+AVX (bits 1, 2), opmask and ZMM (bits 5-7) for AVX-512.
    let mut xcr0: u32 = 0;
    if c1 & (1 << 27) != 0 {
        unsafe { std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") xcr0, out("edx") _, options(nomem, nostack)) };
    }
    let bit = |r: u32, i: u32| (r >> i) & 1 == 1;
    let mut missing: u32 = 0;
    let mut need = |i: u32, ok: bool| {
        if !ok {
            missing |= 1 << i;
        }
    };
    need(0, bit(c1, 28) && xcr0 & 0b110 == 0b110); // AVX, with the OS saving YMM state
    need(1, bit(b7, 5)); // AVX2
    need(2, bit(c1, 12)); // FMA
    need(3, bit(c1, 29)); // F16C
    need(4, bit(b7, 3)); // BMI1
    need(5, bit(b7, 8)); // BMI2
    need(6, bit(ce, 5)); // LZCNT
    need(7, bit(c1, 22)); // MOVBE
    need(8, bit(c1, 20)); // SSE4.2
    need(9, bit(c1, 23)); // POPCNT
    if want_v4 {
        need(10, bit(b7, 16) && xcr0 & 0xe6 == 0xe6); // AVX512F, with the OS saving opmask/ZMM state
        need(11, bit(b7, 17)); // AVX512DQ
        need(12, bit(b7, 28)); // AVX512CD
        need(13, bit(b7, 30)); // AVX512BW
        need(14, bit(b7, 31)); // AVX512VL
    }
    if missing == 0 {
        return;
    }
    let say = |b: &'static [u8]| unsafe {
        write(2, b.as_ptr(), b.len());
    };
    if want_v4 {
        say(b"error: this deposium-embed binary is built for x86-64-v4 (AVX-512) and this CPU lacks:");
    } else {
        say(b"error: this deposium-embed binary is built for x86-64-v3 (AVX2, FMA) and this CPU lacks:");
    }
    if missing & (1 << 0) != 0 {
        say(b" AVX")
    }
    if missing & (1 << 1) != 0 {
        say(b" AVX2")
    }
    if missing & (1 << 2) != 0 {
        say(b" FMA")
    }
    if missing & (1 << 3) != 0 {
        say(b" F16C")
    }
    if missing & (1 << 4) != 0 {
        say(b" BMI1")
    }
    if missing & (1 << 5) != 0 {
        say(b" BMI2")
    }
    if missing & (1 << 6) != 0 {
        say(b" LZCNT")
    }
    if missing & (1 << 7) != 0 {
        say(b" MOVBE")
    }
    if missing & (1 << 8) != 0 {
        say(b" SSE4.2")
    }
    if missing & (1 << 9) != 0 {
        say(b" POPCNT")
    }
    if missing & (1 << 10) != 0 {
        say(b" AVX512F")
    }
    if missing & (1 << 11) != 0 {
        say(b" AVX512DQ")
    }
    if missing & (1 << 12) != 0 {
        say(b" AVX512CD")
    }
    if missing & (1 << 13) != 0 {
        say(b" AVX512BW")
    }
    if missing & (1 << 14) != 0 {
        say(b" AVX512VL")
    }
    if want_v4 {
        say(b".\nUse the x86-64-v3 binary instead (the release tarball's `deposium-embed` launcher picks it by itself).\n");
    } else {
        say(b".\nThis CPU predates Haswell (2013), or a VM hides AVX2: build from source for it (`cargo build --release`).\n");
    }
    unsafe { exit(3) }
}

#[cfg(not(target_arch = "x86_64"))]
fn check_cpu_features() {}

/// ONNX Runtime activations (up to 32 MB each) come from the heap, so that the buffer an op frees is reused by the
/// next op instead of being unmapped and faulted in again (page faults cost more than the matmuls on large batches
/// in a VM). The engine hands the heap back to the system after large batches (`malloc_trim`), so RSS follows the
/// current load instead of the largest batch ever seen.
fn keep_large_allocations_returnable() {
    // SAFETY: mallopt only changes allocator tunables; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

fn main() {
    check_cpu_features();
    keep_large_allocations_returnable();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("DEPOSIUM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ort=warn"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match &cli.cmd {
        Cmd::Serve(a) if a.json_logs => logs.json().init(),
        _ => logs.init(),
    }
    let res = match cli.cmd {
        Cmd::Embed(a) => embed_cmd::run(a),
        Cmd::Serve(a) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(deposium_server::run(a))),
        Cmd::Convert(a) => convert_cmd::run(a),
        Cmd::Eval(a) => deposium_eval::run_eval(a),
        Cmd::Bench(a) => deposium_eval::run_bench(a),
        Cmd::Report(a) => deposium_eval::run_report(a),
        Cmd::Pull(a) => pull_cmd::run(a),
        Cmd::Models => {
            for (name, dir, scheme, aliases) in deposium_engine::registry::KNOWN {
                let path = deposium_engine::paths::models_dir().join(dir);
                let state = if path.is_dir() { "on disk" } else { "missing (make fetch)" };
                println!("{name:<20} {scheme:<5} {state:<22} aliases: {}", aliases.join(", "));
            }
            Ok(())
        }
    };
    if let Err(e) = res {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
