//! ONNX Runtime itself: the library (found and loaded once per process), our operator domain, thread counts, and
//! sessions and tokenizers built the one way every ONNX model of the engine uses them.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::session::{builder::GraphOptimizationLevel, Session};

use crate::error::load_err;
use crate::{paths, EngineError, Result};

static ORT: OnceLock<std::result::Result<ort::environment::Environment, String>> = OnceLock::new();

/// Where libonnxruntime is looked for, in order.
pub fn ort_library_candidates() -> Vec<PathBuf> {
    let mut c = Vec::new();
    for var in ["DEPOSIUM_ORT_LIB", "ORT_DYLIB_PATH"] {
        if let Some(p) = std::env::var_os(var) {
            c.push(PathBuf::from(p));
        }
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(d) = exe.parent() {
            c.push(d.join("libonnxruntime.so.1"));
            c.push(d.join("lib").join("libonnxruntime.so.1"));
        }
    }
    c.push(paths::home().join("onnxruntime").join("libonnxruntime.so.1"));
    c
}

/// Load ONNX Runtime once per process.
pub fn init_ort() -> Result<&'static ort::environment::Environment> {
    ORT.get_or_init(|| {
        let cands = ort_library_candidates();
        let Some(lib) = cands.iter().find(|p| p.exists()) else {
            return Err(format!(
                "ONNX Runtime library not found (looked at: {}); run `make fetch` (scripts/fetch.sh ort) or set DEPOSIUM_ORT_LIB",
                cands.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            ));
        };
        let env = ort::init_from(lib)
            .map_err(|e| format!("cannot load {}: {e}", lib.display()))?
            .with_name("deposium")
            .with_telemetry(false)
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime: {e}"))?;
        tracing::debug!(lib = %lib.display(), "onnxruntime loaded");
        Ok(env)
    })
    .as_ref()
    .map_err(|e| EngineError::Load(e.clone()))
}

/// Our ONNX Runtime custom operators (`ai.deposium`), which every session of the engine registers.
pub fn operator_domain() -> ort::Result<ort::operator::OperatorDomain> {
    crate::ops::domain()
}

/// Intra-op threads: `DEPOSIUM_THREADS` or the number of cores.
pub fn thread_count() -> usize {
    std::env::var("DEPOSIUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

/// ONNX Runtime's CPU arena keeps the largest batch's buffers for good (2.6 GB measured); off unless
/// `DEPOSIUM_ORT_ARENA=1`. Buffers then come from malloc, which the binary tunes to reuse them within a run.
fn arena_enabled() -> bool {
    std::env::var("DEPOSIUM_ORT_ARENA").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// A session of the graph at `path`, with our operators, `thread_count()` intra-op threads and no arena.
pub fn session(path: &Path) -> Result<Session> {
    // ONNX Runtime registers a custom op domain's version in a process-wide map without a lock: two sessions
    // built at once can both try to add `ai.deposium` and one fails ("domain is already exist").
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let env = init_ort()?;
    let threads = thread_count();
    deposium_kernels::set_pool_threads(threads);
    let mut b = Session::builder(env)
        .map_err(load_err)?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(load_err)?
        .with_intra_threads(threads)
        .map_err(load_err)?
        .with_inter_threads(1)
        .map_err(load_err)?
        // Idle intra-op threads sleep instead of spinning: spinning took the CPU from other models' turns.
        .with_intra_op_spinning(false)
        .map_err(load_err)?
        // Arena off by default (see `arena_enabled`): RSS follows the current batch.
        .with_execution_providers([ort::ep::CPU::default().with_arena_allocator(arena_enabled()).build()])
        .map_err(load_err)?
        .with_operators(operator_domain().map_err(load_err)?)
        .map_err(load_err)?;
    if let Ok(p) = std::env::var("DEPOSIUM_ORT_PROFILE") {
        b = b.with_profiling(p).map_err(load_err)?;
    }
    b.commit_from_file(path).map_err(|e| EngineError::Load(format!("{}: {e}", path.display())))
}

/// The tokenizer of a model directory (`tokenizer.json`, or the `.zst` of converted directories), without
/// truncation or padding (the engine does both).
pub fn tokenizer(dir: &Path) -> Result<tokenizers::Tokenizer> {
    // Converted directories hold it zstd-compressed (tokenizer.json.zst).
    let p = dir.join("tokenizer.json");
    let bytes =
        deposium_convert::read_tokenizer_json(dir).map_err(|e| EngineError::Load(format!("{e:#}")))?.ok_or_else(
            || EngineError::Load(format!("{}: no such file (nor {})", p.display(), deposium_convert::TOKENIZER_ZST)),
        )?;
    let mut t =
        crate::tokenizer_load::from_json(&bytes).map_err(|e| EngineError::Load(format!("{}: {e}", p.display())))?;
    t.with_truncation(None).map_err(load_err)?;
    t.with_padding(None);
    Ok(t)
}
