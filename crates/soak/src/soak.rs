//! The soak run: N keep-alive clients drive every embedding route of a loopback server with mixed lengths, batch
//! sizes, prompts and models for a bounded time and request count, check every answer against single-request
//! reference vectors, sample the server's RSS every second, and write a JSON + Markdown report.
//!
//! Checks (each must pass for exit 0):
//! - nothing lost: every request sent got an HTTP answer (2xx, or the 4xx/429 it was meant to get); transport
//!   errors and client-side timeouts count as lost and must be 0; no unexpected status (no 5xx at all);
//! - every vector equals the single-request reference for its text, model, prompt and dimensions (cosine ≥
//!   `min_cosine`), every rerank score equals the cosine of the references, in order;
//! - RSS growth over the last (1 - warmup) of the run below `max_rss_growth_pct`;
//! - afterwards: queues drained, `/health` 200, no 5xx in `/metrics`, and (for a server it started) SIGTERM
//!   exits 0 without a panic in the log.
mod check;
mod drive;
mod plan;
mod report;
mod workload;

pub use drive::run;
pub use report::markdown;
pub use workload::Config;
