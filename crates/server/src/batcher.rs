//! One batcher per model.
//!
//! Requests arrive already tokenized and join a queue. Worker threads (dedicated OS threads, not the async runtime)
//! cut the queue into backend steps bounded by a token budget (`max_batch_tokens`, counted padded: sequences ×
//! longest) and a sequence count (`max_batch_size`), call [`Model::embed_tokenized`] on each step, and route every
//! vector back to its request. A request's inputs are scheduled longest first so a step holds similar lengths;
//! a request larger than one step is split over several, and a request that was only partly scheduled goes to
//! the back of the queue, so small requests are not stuck behind a 10k-input one. A request whose client went
//! away is dropped from the queue before its next step. A failing step is retried request by request, so one
//! bad request cannot fail the others. Vectors do not depend on the batch (a [`Backend`] contract), so results
//! equal unbatched ones.
//!
//! [`Backend`]: deposium_engine::Backend
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use deposium_engine::{EngineError, Model, Result, Tokenized};
use tokio::sync::oneshot;

use crate::metrics::ModelMetrics;

#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// Padded tokens per backend step (sequences × longest sequence).
    pub max_batch_tokens: usize,
    /// Sequences per backend step.
    pub max_batch_size: usize,
    /// Worker threads for this model.
    pub workers: usize,
}

pub struct Batcher {
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

struct Shared {
    model: Arc<Model>,
    config: BatchConfig,
    metrics: Arc<ModelMetrics>,
    queue: Mutex<Queue>,
    wake: Condvar,
}

#[derive(Default)]
struct Queue {
    pending: VecDeque<Pending>,
    closed: bool,
}

/// A request's inputs not yet handed to the backend.
struct Pending {
    job: Arc<Job>,
    /// Taken out (left empty) as they are scheduled.
    items: Vec<Tokenized>,
    /// Indices into `items`, longest first.
    order: Vec<usize>,
    /// How many of `order` are scheduled.
    next: usize,
}

impl Pending {
    fn left(&self) -> usize {
        self.order.len() - self.next
    }
}

/// A request in progress: where its vectors land and who waits for them.
struct Job {
    state: Mutex<JobState>,
}

struct JobState {
    vectors: Vec<Option<Vec<f32>>>,
    missing: usize,
    /// `None` once answered.
    reply: Option<oneshot::Sender<Result<Vec<Vec<f32>>>>>,
}

impl Job {
    fn lock(&self) -> MutexGuard<'_, JobState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answered already, or nobody waits any more (the client went away).
    fn is_over(&self) -> bool {
        self.lock().reply.as_ref().is_none_or(|tx| tx.is_closed())
    }

    fn deliver(&self, index: usize, vector: Vec<f32>) {
        let mut s = self.lock();
        if s.reply.is_none() || s.vectors[index].is_some() {
            return;
        }
        s.vectors[index] = Some(vector);
        s.missing -= 1;
        if s.missing == 0 {
            let vectors = std::mem::take(&mut s.vectors)
                .into_iter()
                .map(|v| v.unwrap_or_default())
                .collect();
            if let Some(tx) = s.reply.take() {
                let _ = tx.send(Ok(vectors));
            }
        }
    }

    fn fail(&self, error: EngineError) {
        if let Some(tx) = self.lock().reply.take() {
            let _ = tx.send(Err(error));
        }
    }
}

/// One input scheduled into a step.
struct StepItem {
    job: Arc<Job>,
    index: usize,
    tokens: Tokenized,
}

impl Batcher {
    pub fn new(model: Arc<Model>, config: BatchConfig, metrics: Arc<ModelMetrics>) -> Self {
        let config = BatchConfig {
            max_batch_tokens: config.max_batch_tokens.max(1),
            max_batch_size: config.max_batch_size.max(1),
            workers: config.workers.max(1),
        };
        let shared = Arc::new(Shared {
            model,
            config,
            metrics,
            queue: Mutex::default(),
            wake: Condvar::new(),
        });
        let workers = (0..config.workers)
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("batch-{}-{i}", shared.metrics.model))
                    .spawn(move || worker(&shared))
                    .expect("spawning a batcher thread")
            })
            .collect();
        Batcher {
            shared,
            workers: Mutex::new(workers),
        }
    }

    /// Embed tokenized inputs; raw backend vectors (not finished) in input order.
    pub async fn embed(&self, items: Vec<Tokenized>) -> Result<Vec<Vec<f32>>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let n = items.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(items[i].ids.len()));
        let (tx, rx) = oneshot::channel();
        let job = Arc::new(Job {
            state: Mutex::new(JobState {
                vectors: vec![None; n],
                missing: n,
                reply: Some(tx),
            }),
        });
        {
            let mut q = self.shared.lock_queue();
            if q.closed {
                return Err(EngineError::Internal("the server is shutting down".into()));
            }
            q.pending.push_back(Pending {
                job,
                items,
                order,
                next: 0,
            });
            self.shared
                .metrics
                .queue_depth
                .fetch_add(n as i64, Ordering::Relaxed);
        }
        self.shared.wake.notify_one();
        // Dropping this future (client gone) closes `rx`; the workers then skip the rest of the request.
        rx.await
            .map_err(|_| EngineError::Internal("the batcher stopped before answering".into()))?
    }

    /// Inputs waiting for a step.
    pub fn queue_depth(&self) -> i64 {
        self.shared.metrics.queue_depth.load(Ordering::Relaxed)
    }

    /// Stop taking requests, let the workers finish what is queued, and wait for them.
    pub fn shutdown(&self) {
        self.shared.lock_queue().closed = true;
        self.shared.wake.notify_all();
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|p| p.into_inner()));
        for w in workers {
            let _ = w.join();
        }
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        // Workers exit once the queue is drained; no join here (drop may run on the async runtime).
        self.shared.lock_queue().closed = true;
        self.shared.wake.notify_all();
    }
}

impl Shared {
    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take the next step from the queue (empty when nothing is runnable).
    fn next_step(&self, q: &mut Queue) -> Vec<StepItem> {
        // Forget requests whose client went away.
        q.pending.retain(|p| {
            let keep = !p.job.is_over();
            if !keep {
                self.metrics
                    .queue_depth
                    .fetch_sub(p.left() as i64, Ordering::Relaxed);
                self.metrics
                    .cancelled_inputs
                    .fetch_add(p.left() as u64, Ordering::Relaxed);
            }
            keep
        });
        let BatchConfig {
            max_batch_tokens,
            max_batch_size,
            ..
        } = self.config;
        let mut step: Vec<StepItem> = Vec::new();
        let mut longest = 0;
        let mut partly_taken = None;
        'fill: for (pos, p) in q.pending.iter_mut().enumerate() {
            let before = p.next;
            while p.next < p.order.len() {
                let index = p.order[p.next];
                let len = p.items[index].ids.len().max(1);
                let padded_len = longest.max(len);
                let full = step.len() >= max_batch_size
                    || (step.len() + 1) * padded_len > max_batch_tokens;
                if full && !step.is_empty() {
                    if p.next > before {
                        partly_taken = Some(pos);
                    }
                    break 'fill;
                }
                longest = padded_len;
                let tokens = std::mem::replace(&mut p.items[index], Tokenized { ids: Vec::new() });
                step.push(StepItem {
                    job: p.job.clone(),
                    index,
                    tokens,
                });
                p.next += 1;
            }
        }
        // A request cut in the middle goes to the back; fully scheduled ones leave the queue.
        if let Some(pos) = partly_taken {
            if let Some(p) = q.pending.remove(pos) {
                q.pending.push_back(p);
            }
        }
        q.pending.retain(|p| p.left() > 0);
        self.metrics
            .queue_depth
            .fetch_sub(step.len() as i64, Ordering::Relaxed);
        step
    }

    fn run_step(&self, step: Vec<StepItem>) {
        let tokens: Vec<Tokenized> = step.iter().map(|s| s.tokens.clone()).collect();
        let t0 = Instant::now();
        let result = self.embed_guarded(&tokens);
        self.metrics
            .inference_seconds
            .observe(t0.elapsed().as_secs_f64());
        self.metrics.batch_size.observe(tokens.len() as f64);
        self.metrics
            .backend_inputs
            .fetch_add(tokens.len() as u64, Ordering::Relaxed);
        self.metrics
            .batch_tokens
            .observe(tokens.iter().map(|t| t.ids.len()).sum::<usize>() as f64);
        match result {
            Ok(vectors) => {
                for (item, v) in step.iter().zip(vectors) {
                    item.job.deliver(item.index, v);
                }
            }
            Err(e) => {
                let mut jobs: Vec<Arc<Job>> = Vec::new();
                for item in &step {
                    if !jobs.iter().any(|j| Arc::ptr_eq(j, &item.job)) {
                        jobs.push(item.job.clone());
                    }
                }
                if jobs.len() == 1 {
                    jobs[0].fail(e);
                    return;
                }
                // Several requests shared the step: run each alone so only the faulty one fails.
                tracing::warn!(model = %self.metrics.model, "batched step failed ({e}); retrying request by request");
                for job in jobs {
                    let (mine, tokens): (Vec<&StepItem>, Vec<Tokenized>) = step
                        .iter()
                        .filter(|s| Arc::ptr_eq(&s.job, &job))
                        .map(|s| (s, s.tokens.clone()))
                        .unzip();
                    match self.embed_guarded(&tokens) {
                        Ok(vectors) => mine
                            .iter()
                            .zip(vectors)
                            .for_each(|(s, v)| job.deliver(s.index, v)),
                        Err(e) => job.fail(e),
                    }
                }
            }
        }
    }

    /// The backend call, with a panic turned into an error (the worker thread must survive).
    fn embed_guarded(&self, tokens: &[Tokenized]) -> Result<Vec<Vec<f32>>> {
        let vectors = catch_unwind(AssertUnwindSafe(|| self.model.embed_tokenized(tokens)))
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(model = %self.metrics.model, "backend panicked: {what}");
                Err(EngineError::Internal(format!(
                    "the backend failed on this input ({what})"
                )))
            })?;
        if vectors.len() != tokens.len() {
            return Err(EngineError::Internal(format!(
                "backend returned {} vectors for {} inputs",
                vectors.len(),
                tokens.len()
            )));
        }
        Ok(vectors)
    }
}

fn worker(shared: &Shared) {
    loop {
        let step = {
            let mut q = shared.lock_queue();
            loop {
                let step = shared.next_step(&mut q);
                if !step.is_empty() {
                    break step;
                }
                if q.closed {
                    return;
                }
                q = shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        // More work queued: let another worker start on it while this one runs.
        if !shared.lock_queue().pending.is_empty() {
            shared.wake.notify_one();
        }
        shared.run_step(step);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(job_len: &[usize]) -> Pending {
        let (tx, _rx) = oneshot::channel();
        std::mem::forget(_rx);
        let items: Vec<Tokenized> = job_len
            .iter()
            .map(|&n| Tokenized { ids: vec![1; n] })
            .collect();
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(items[i].ids.len()));
        let n = items.len();
        Pending {
            job: Arc::new(Job {
                state: Mutex::new(JobState {
                    vectors: vec![None; n],
                    missing: n,
                    reply: Some(tx),
                }),
            }),
            items,
            order,
            next: 0,
        }
    }

    fn shared(max_batch_tokens: usize, max_batch_size: usize) -> Shared {
        struct Never;
        impl deposium_engine::Backend for Never {
            fn info(&self) -> &deposium_engine::ModelInfo {
                unreachable!()
            }
            fn tokenize(&self, _: &str) -> Result<Vec<u32>> {
                unreachable!()
            }
            fn embed_tokens(&self, _: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
                unreachable!()
            }
        }
        Shared {
            model: Arc::new(Model::new(Arc::new(Never))),
            config: BatchConfig {
                max_batch_tokens,
                max_batch_size,
                workers: 1,
            },
            metrics: crate::metrics::Metrics::default().model("m"),
            queue: Mutex::default(),
            wake: Condvar::new(),
        }
    }

    #[test]
    fn steps_respect_budgets_and_rotate_big_requests() {
        let s = shared(100, 4);
        let mut q = Queue::default();
        q.pending.push_back(pending(&[10; 10]));
        q.pending.push_back(pending(&[5]));
        // 4 sequences max: the big request gives 4, goes to the back.
        let step = s.next_step(&mut q);
        assert_eq!(step.len(), 4);
        assert_eq!(q.pending.len(), 2);
        assert_eq!(
            q.pending[0].order.len(),
            1,
            "the small request is served next"
        );
        let step = s.next_step(&mut q);
        assert_eq!(
            step.iter().map(|s| s.tokens.ids.len()).collect::<Vec<_>>(),
            vec![5, 10, 10, 10]
        );
        let step = s.next_step(&mut q);
        assert_eq!(step.len(), 3);
        assert!(q.pending.is_empty());
    }

    #[test]
    fn token_budget_counts_padding_and_always_takes_one() {
        let s = shared(64, 100);
        let mut q = Queue::default();
        q.pending.push_back(pending(&[200, 30, 30, 4]));
        assert_eq!(
            s.next_step(&mut q).len(),
            1,
            "an input over the budget still runs, alone"
        );
        assert_eq!(
            s.next_step(&mut q).len(),
            2,
            "30 + 30 padded fits 64, a third would not"
        );
        assert_eq!(s.next_step(&mut q).len(), 1);
        assert!(q.pending.is_empty());
    }
}
