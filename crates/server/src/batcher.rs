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
//! Models share the cores through one process-wide [`Scheduler`]: a worker takes its model's turn before it cuts
//! a step and gives it back after the step, and the next turn goes to the waiting model that has used the least
//! compute (step seconds ÷ weight), so a flood on one model cannot starve another: a model that was idle gets
//! the next turn at the next step boundary. The gate waits up to [`ANTICIPATION`] for a model that is owed compute
//! and between turns before handing it to another. While another model is active (waiting, or served within the
//! last second), a step holds a quarter of `max_batch_tokens`, so turns stay short.
//!
//! [`Backend`]: deposium_engine::Backend
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    scheduler: Arc<Scheduler>,
    /// This batcher's entry in `scheduler`.
    share: usize,
}

/// The compute gate shared by every model's batcher: one backend step at a time in the process (an ONNX Runtime
/// step uses every core), and when a step ends the next turn goes to the waiting model with the least compute
/// used (its step seconds ÷ its weight): start-time fair queuing over models. A model that had nothing queued
/// starts at the current virtual time (it cannot bank credit while idle) and wins the tie against models served
/// more recently: a single text arriving during a flood on another model runs after the current step.
pub struct Scheduler {
    shares: Mutex<Shares>,
    released: Condvar,
    /// See [`ANTICIPATION`].
    anticipation: Duration,
}

/// Anticipation: before the gate goes to a model, it waits after the last turn of another model that has used
/// less compute and is between turns (a static model's requests spend most of their CPU outside the gate,
/// parsing and serializing, and its clients' next requests come a few ms later): this long at most, and only for
/// a model whose recent gaps between turns are shorter (a model with long gaps is a trickle, not a flood). The
/// idle wait is charged to the model waited for, so the other still gets its share of the time. Without it the
/// gate is work-conserving and a transformer step (up to seconds) takes every gap of the static model's.
pub const ANTICIPATION: Duration = Duration::from_millis(100);

/// While another model waits for the gate (or had a turn within [`CONTENDED_WINDOW`]), a step holds this
/// fraction of `max_batch_tokens` (a shorter turn).
const CONTENDED_SHARE: usize = 4;
const CONTENDED_WINDOW: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Shares {
    models: Vec<Share>,
    /// The share holding the turn.
    running: Option<usize>,
    /// Turns granted so far.
    turns: u64,
    /// `used` of the share given the latest turn when it got it (start-time fair queuing's virtual time).
    now: f64,
    /// The share the gate idles for (anticipation) and since when: charged to it when the next turn starts.
    idle_for: Option<(usize, Instant)>,
}

#[derive(Debug, Clone)]
struct Share {
    weight: f64,
    /// Compute used: step seconds ÷ weight.
    used: f64,
    /// Workers waiting for a turn.
    waiting: usize,
    /// `turns` when this share last got one (ties go to the one served longest ago).
    last_turn: u64,
    /// When this share last asked for or gave back a turn.
    last_seen: Option<Instant>,
    /// Longest recent time from giving back a turn with nothing waiting to asking again (seconds; halves every
    /// second): between two requests of a flood, not the µs between the steps of one request.
    gap: f64,
    /// When `gap` was last updated.
    gap_at: Option<Instant>,
}

impl Shares {
    fn add(&mut self, weight: f64) -> usize {
        self.models.push(Share {
            weight: if weight.is_finite() && weight > 0.0 { weight } else { 1.0 },
            used: 0.0,
            waiting: 0,
            last_turn: 0,
            last_seen: None,
            gap: 0.0,
            gap_at: None,
        });
        self.models.len() - 1
    }

    fn busy(&self, id: usize) -> bool {
        self.models[id].waiting > 0 || self.running == Some(id)
    }

    /// A worker of share `id` asks for a turn. A share that was idle starts at the virtual time (no credit for
    /// having had nothing to do); one that asks again right after its step keeps what it has.
    fn arrive(&mut self, id: usize, at: Instant) {
        if !self.busy(id) {
            let m = &mut self.models[id];
            m.used = m.used.max(self.now);
            if let Some(t) = m.last_seen {
                // An idle spell counts as twice the window at most: a flood that starts after one is waited for
                // within a second.
                let gap = at.saturating_duration_since(t).min(2 * ANTICIPATION).as_secs_f64();
                let age = m.gap_at.map_or(0.0, |g| at.saturating_duration_since(g).as_secs_f64());
                m.gap = gap.max(m.gap * 0.5f64.powf(age));
                m.gap_at = Some(at);
            }
        }
        self.models[id].waiting += 1;
        self.models[id].last_seen = Some(at);
    }

    /// The share that the turn [`Shares::next`] gives `id` should wait for, and until when: one that used less (at
    /// the virtual time it would restart from), is between turns, whose recent gaps are within `window`, and that
    /// gave back its turn less than `window` before `now`.
    fn anticipate(&self, id: usize, now: Instant, window: Duration) -> Option<(usize, Instant)> {
        let mine = self.models[id].used;
        self.models
            .iter()
            .enumerate()
            .filter(|&(i, m)| i != id && !self.busy(i) && m.used.max(self.now) < mine)
            .filter(|(_, m)| m.gap <= window.as_secs_f64())
            .filter_map(|(i, m)| m.last_seen.map(|t| (i, t + window)))
            .filter(|&(_, until)| until > now)
            .max_by_key(|&(_, until)| until)
    }

    /// The gate starts idling for share `id` at `at` (unless it already idles).
    fn idle(&mut self, id: usize, at: Instant) {
        self.idle_for.get_or_insert((id, at));
    }

    /// Who gets the turn now (`None` while one is held or nobody waits).
    fn next(&self) -> Option<usize> {
        if self.running.is_some() {
            return None;
        }
        (0..self.models.len()).filter(|&i| self.models[i].waiting > 0).min_by(|&a, &b| {
            let (a, b) = (&self.models[a], &self.models[b]);
            a.used.total_cmp(&b.used).then(a.last_turn.cmp(&b.last_turn))
        })
    }

    fn start(&mut self, id: usize, at: Instant) {
        if let Some((owed, since)) = self.idle_for.take() {
            let m = &mut self.models[owed];
            m.used += at.saturating_duration_since(since).as_secs_f64() / m.weight;
        }
        self.turns += 1;
        let m = &mut self.models[id];
        m.waiting -= 1;
        m.last_turn = self.turns;
        let used = m.used;
        self.now = self.now.max(used);
        self.running = Some(id);
    }

    fn finish(&mut self, id: usize, seconds: f64, at: Instant) {
        let m = &mut self.models[id];
        m.used += seconds.max(0.0) / m.weight;
        m.last_seen = Some(at);
        if self.running == Some(id) {
            self.running = None;
        }
    }
}

/// A model's turn on the compute gate; given back (and charged) when dropped.
pub struct Turn<'a> {
    scheduler: &'a Scheduler,
    share: usize,
    started: Instant,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.scheduler.lock().finish(self.share, self.started.elapsed().as_secs_f64(), Instant::now());
        self.scheduler.released.notify_all();
    }
}

impl Scheduler {
    pub fn new() -> Arc<Self> {
        Self::with_anticipation(ANTICIPATION)
    }

    /// A gate with another anticipation window (zero: work-conserving).
    pub fn with_anticipation(window: Duration) -> Arc<Self> {
        Arc::new(Scheduler { shares: Mutex::default(), released: Condvar::new(), anticipation: window })
    }

    /// The gate every batcher uses unless given another ([`Batcher::with_scheduler`]).
    pub fn global() -> Arc<Self> {
        static GLOBAL: OnceLock<Arc<Scheduler>> = OnceLock::new();
        GLOBAL.get_or_init(Scheduler::new).clone()
    }

    fn lock(&self) -> MutexGuard<'_, Shares> {
        self.shares.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new share with this weight (compute is split in proportion to weights among busy shares).
    pub fn register(&self, weight: f64) -> usize {
        self.lock().add(weight)
    }

    /// Wait for share `share`'s turn.
    pub fn acquire(&self, share: usize) -> Turn<'_> {
        let mut s = self.lock();
        s.arrive(share, Instant::now());
        loop {
            if s.next() != Some(share) {
                s = self.released.wait(s).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            let now = Instant::now();
            match s.anticipate(share, now, self.anticipation) {
                None => break,
                Some((owed, until)) => {
                    s.idle(owed, now);
                    s = self.released.wait_timeout(s, until - now).unwrap_or_else(|p| p.into_inner()).0;
                }
            }
        }
        s.start(share, Instant::now());
        Turn { scheduler: self, share, started: Instant::now() }
    }

    /// Whether a share other than `share` waits for a turn.
    pub fn others_waiting(&self, share: usize) -> bool {
        let s = self.lock();
        (0..s.models.len()).any(|i| i != share && s.models[i].waiting > 0)
    }

    /// Whether a share other than `share` waits for a turn or had one within `window`. A model whose requests
    /// spend most of their time outside the gate (parsing, serializing) counts as contending between its turns.
    pub fn others_active(&self, share: usize, window: Duration) -> bool {
        let s = self.lock();
        (0..s.models.len()).any(|i| {
            i != share
                && (s.models[i].waiting > 0
                    || s.running == Some(i)
                    || s.models[i].last_seen.is_some_and(|t| t.elapsed() < window))
        })
    }

    /// Compute used by each share so far (step seconds ÷ weight), in registration order.
    pub fn used(&self) -> Vec<f64> {
        self.lock().models.iter().map(|m| m.used).collect()
    }
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
    enqueued: Instant,
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
            let vectors = std::mem::take(&mut s.vectors).into_iter().map(|v| v.unwrap_or_default()).collect();
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
    /// A batcher on the process-wide [`Scheduler::global`], with weight 1.
    pub fn new(model: Arc<Model>, config: BatchConfig, metrics: Arc<ModelMetrics>) -> Self {
        Self::with_scheduler(model, config, metrics, Scheduler::global(), 1.0)
    }

    pub fn with_scheduler(
        model: Arc<Model>,
        config: BatchConfig,
        metrics: Arc<ModelMetrics>,
        scheduler: Arc<Scheduler>,
        weight: f64,
    ) -> Self {
        let share = scheduler.register(weight);
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
            scheduler,
            share,
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
        Batcher { shared, workers: Mutex::new(workers) }
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
        let job = Arc::new(Job { state: Mutex::new(JobState { vectors: vec![None; n], missing: n, reply: Some(tx) }) });
        {
            let mut q = self.shared.lock_queue();
            if q.closed {
                return Err(EngineError::Internal("the server is shutting down".into()));
            }
            q.pending.push_back(Pending { job, items, order, next: 0, enqueued: Instant::now() });
            self.shared.metrics.queue_depth.fetch_add(n as i64, Ordering::Relaxed);
        }
        self.shared.wake.notify_one();
        // Dropping this future (client gone) closes `rx`; the workers then skip the rest of the request.
        rx.await.map_err(|_| EngineError::Internal("the batcher stopped before answering".into()))?
    }

    /// This model's turn on the compute gate, for its other CPU work (tokenizing a request); blocking.
    pub fn turn(&self) -> Turn<'_> {
        self.shared.scheduler.acquire(self.shared.share)
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
    #[cfg(test)]
    fn next_step(&self, q: &mut Queue) -> Vec<StepItem> {
        self.next_step_within(q, self.config.max_batch_tokens)
    }

    /// [`Shared::next_step`] with another padded-token budget.
    fn next_step_within(&self, q: &mut Queue, max_batch_tokens: usize) -> Vec<StepItem> {
        // Forget requests whose client went away.
        q.pending.retain(|p| {
            let keep = !p.job.is_over();
            if !keep {
                self.metrics.queue_depth.fetch_sub(p.left() as i64, Ordering::Relaxed);
                self.metrics.cancelled_inputs.fetch_add(p.left() as u64, Ordering::Relaxed);
            }
            keep
        });
        let max_batch_size = self.config.max_batch_size;
        let mut step: Vec<StepItem> = Vec::new();
        let mut longest = 0;
        let mut partly_taken = None;
        'fill: for (pos, p) in q.pending.iter_mut().enumerate() {
            let before = p.next;
            while p.next < p.order.len() {
                let index = p.order[p.next];
                let len = p.items[index].ids.len().max(1);
                let padded_len = longest.max(len);
                let full = step.len() >= max_batch_size || (step.len() + 1) * padded_len > max_batch_tokens;
                if full && !step.is_empty() {
                    if p.next > before {
                        partly_taken = Some(pos);
                    }
                    break 'fill;
                }
                if p.next == 0 {
                    self.metrics.queue_wait_seconds.observe(p.enqueued.elapsed().as_secs_f64());
                }
                longest = padded_len;
                let tokens = std::mem::replace(&mut p.items[index], Tokenized { ids: Vec::new() });
                step.push(StepItem { job: p.job.clone(), index, tokens });
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
        self.metrics.queue_depth.fetch_sub(step.len() as i64, Ordering::Relaxed);
        step
    }

    fn run_step(&self, mut step: Vec<StepItem>) {
        // Moved out, not copied (a copy per input was measurable for static models); kept for a retry.
        let tokens: Vec<Tokenized> =
            step.iter_mut().map(|s| std::mem::replace(&mut s.tokens, Tokenized { ids: Vec::new() })).collect();
        let t0 = Instant::now();
        let result = self.embed_guarded(&tokens);
        self.metrics.inference_seconds.observe(t0.elapsed().as_secs_f64());
        self.metrics.batch_size.observe(tokens.len() as f64);
        self.metrics.backend_inputs.fetch_add(tokens.len() as u64, Ordering::Relaxed);
        self.metrics.batch_tokens.observe(tokens.iter().map(|t| t.ids.len()).sum::<usize>() as f64);
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
                        .zip(&tokens)
                        .filter(|(s, _)| Arc::ptr_eq(&s.job, &job))
                        .map(|(s, t)| (s, t.clone()))
                        .unzip();
                    match self.embed_guarded(&tokens) {
                        Ok(vectors) => mine.iter().zip(vectors).for_each(|(s, v)| job.deliver(s.index, v)),
                        Err(e) => job.fail(e),
                    }
                }
            }
        }
    }

    /// The backend call, with a panic turned into an error (the worker thread must survive).
    fn embed_guarded(&self, tokens: &[Tokenized]) -> Result<Vec<Vec<f32>>> {
        let vectors =
            catch_unwind(AssertUnwindSafe(|| self.model.embed_tokenized(tokens))).unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(model = %self.metrics.model, "backend panicked: {what}");
                Err(EngineError::Internal(format!("the backend failed on this input ({what})")))
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
        {
            let mut q = shared.lock_queue();
            while q.pending.is_empty() {
                if q.closed {
                    return;
                }
                q = shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        }
        // The step is cut once this model has its turn, so it holds what arrived meanwhile; a quarter of the
        // token budget while another model is active, so that its next turn comes sooner.
        let turn = shared.scheduler.acquire(shared.share);
        let mut budget = shared.config.max_batch_tokens;
        if shared.scheduler.others_active(shared.share, CONTENDED_WINDOW) {
            budget = (budget / CONTENDED_SHARE).max(1);
        }
        let step = shared.next_step_within(&mut shared.lock_queue(), budget);
        if step.is_empty() {
            continue; // cancelled requests only, or another worker of this model took the work
        }
        // More work queued: let another worker start on it while this one runs.
        if !shared.lock_queue().pending.is_empty() {
            shared.wake.notify_one();
        }
        let t0 = Instant::now();
        shared.run_step(step);
        shared.metrics.add_compute_seconds(t0.elapsed().as_secs_f64());
        drop(turn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(job_len: &[usize]) -> Pending {
        let (tx, _rx) = oneshot::channel();
        std::mem::forget(_rx);
        let items: Vec<Tokenized> = job_len.iter().map(|&n| Tokenized { ids: vec![1; n] }).collect();
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(items[i].ids.len()));
        let n = items.len();
        Pending {
            job: Arc::new(Job { state: Mutex::new(JobState { vectors: vec![None; n], missing: n, reply: Some(tx) }) }),
            items,
            order,
            next: 0,
            enqueued: Instant::now(),
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
            config: BatchConfig { max_batch_tokens, max_batch_size, workers: 1 },
            metrics: crate::metrics::Metrics::default().model("m"),
            queue: Mutex::default(),
            wake: Condvar::new(),
            scheduler: Scheduler::new(),
            share: 0,
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
        assert_eq!(q.pending[0].order.len(), 1, "the small request is served next");
        let step = s.next_step(&mut q);
        assert_eq!(step.iter().map(|s| s.tokens.ids.len()).collect::<Vec<_>>(), vec![5, 10, 10, 10]);
        let step = s.next_step(&mut q);
        assert_eq!(step.len(), 3);
        assert!(q.pending.is_empty());
    }

    /// Grant turns one after another; `cost[i]` is what a turn of share `i` uses, `waiting[i]` whether it always
    /// has work. Returns the share of each turn.
    fn run_turns(shares: &mut Shares, cost: &[f64], turns: usize) -> Vec<usize> {
        let mut order = Vec::new();
        for _ in 0..turns {
            let Some(id) = shares.next() else { break };
            shares.start(id, Instant::now());
            shares.finish(id, cost[id], Instant::now());
            shares.arrive(id, Instant::now()); // still busy: asks again
            order.push(id);
        }
        order
    }

    #[test]
    fn busy_models_split_compute_by_weight_not_by_step_count() {
        // Model 0: short steps (a static model), model 1: steps 20x longer (a transformer); both always busy.
        let mut s = Shares::default();
        let (a, b) = (s.add(1.0), s.add(1.0));
        s.arrive(a, Instant::now());
        s.arrive(b, Instant::now());
        let order = run_turns(&mut s, &[0.001, 0.020], 2100);
        let time = |id: usize, c: f64| order.iter().filter(|&&i| i == id).count() as f64 * c;
        let (ta, tb) = (time(a, 0.001), time(b, 0.020));
        assert!((ta / (ta + tb) - 0.5).abs() < 0.01, "{ta} vs {tb}");
        // Never more than one long step ahead of the other.
        assert!((s.models[a].used - s.models[b].used).abs() <= 0.020 + 1e-9);

        // Weights 3:1 give 75 % / 25 % of the time.
        let mut s = Shares::default();
        let (a, b) = (s.add(3.0), s.add(1.0));
        s.arrive(a, Instant::now());
        s.arrive(b, Instant::now());
        let order = run_turns(&mut s, &[0.001, 0.001], 4000);
        let na = order.iter().filter(|&&i| i == a).count();
        assert!((na as f64 / 4000.0 - 0.75).abs() < 0.01, "{na}");
    }

    #[test]
    fn an_idle_model_gets_the_next_turn_but_banks_no_credit() {
        let mut s = Shares::default();
        let (flood, single) = (s.add(1.0), s.add(1.0));
        s.arrive(flood, Instant::now());
        // The flood runs alone for 1,000 steps.
        assert!(run_turns(&mut s, &[0.001, 0.0], 1000).iter().all(|&i| i == flood));
        // A single text arrives while a flood step runs: it gets the very next turn.
        let id = s.next().unwrap();
        s.start(id, Instant::now());
        s.arrive(single, Instant::now());
        assert_eq!(s.next(), None, "one turn at a time");
        s.finish(id, 0.001, Instant::now());
        s.arrive(flood, Instant::now());
        assert_eq!(s.next(), Some(single));
        // Having been idle for 1 s of the flood's compute gives it no credit: it starts level with the flood,
        // so the two alternate by compute from here instead of the newcomer holding the gate for 1 s.
        assert!(s.models[single].used >= 1.0);
        s.start(single, Instant::now());
        s.finish(single, 0.005, Instant::now());
        s.arrive(single, Instant::now());
        let order = run_turns(&mut s, &[0.001, 0.005], 12);
        assert!(order.contains(&single) && order.contains(&flood), "{order:?}");
        assert_eq!(&order[..4], &[flood; 4], "the flood catches up the single text's 5 ms first");
    }

    #[test]
    fn the_gate_waits_briefly_for_a_model_owed_compute() {
        let (t, w, ms) = (Instant::now(), ANTICIPATION, Duration::from_millis(1));
        let mut s = Shares::default();
        let (flood, docs) = (s.add(1.0), s.add(1.0));
        s.arrive(docs, t);
        s.start(docs, t);
        s.finish(docs, 0.5, t);
        s.arrive(flood, t);
        s.start(flood, t);
        s.finish(flood, 0.001, t); // the flood is now serializing its answer, outside the gate
        s.arrive(docs, t);
        assert_eq!(s.next(), Some(docs), "the only one waiting");
        s.models[flood].gap = 0.008; // as measured: up to 8 ms between its requests
        assert_eq!(s.anticipate(docs, t + ms, w), Some((flood, t + w)), "the flood used less and was just here");
        assert_eq!(s.anticipate(docs, t + w, w), None, "the wait is over");
        s.models[flood].gap = 0.15;
        assert_eq!(s.anticipate(docs, t + ms, w), None, "a model with gaps longer than the window is not waited for");
        s.models[flood].gap = 0.008;
        // The gate idles for the flood from 1 ms; it comes back at 3 ms, gets the turn and is charged the 2 ms.
        s.idle(flood, t + ms);
        s.arrive(flood, t + 3 * ms);
        assert_eq!(s.models[flood].gap, 0.008, "a shorter gap leaves the longest (set just now)");
        assert_eq!(s.next(), Some(flood));
        assert_eq!(s.anticipate(flood, t + 3 * ms, w), None, "a waiting model is not anticipated");
        s.start(flood, t + 3 * ms);
        assert!((s.models[flood].used - 0.003).abs() < 1e-9, "{}", s.models[flood].used);
        s.finish(flood, 0.6, t + 4 * ms);
        // Now the flood has used more: no waiting for it, and it waits for the other one instead.
        assert_eq!(s.anticipate(docs, t + 4 * ms, w), None);
        s.start(docs, t + 4 * ms);
        s.finish(docs, 0.05, t + 5 * ms);
        s.arrive(flood, t + 5 * ms);
        assert_eq!(s.anticipate(flood, t + 5 * ms, w), Some((docs, t + 5 * ms + w)));
        // A longer gap takes over at once; an idle spell counts as twice the window; the longest halves every second.
        s.start(flood, t + 6 * ms);
        s.finish(flood, 0.001, t + 7 * ms);
        s.arrive(flood, t + 27 * ms);
        assert!((s.models[flood].gap - 0.020).abs() < 1e-9);
        s.start(flood, t + 27 * ms);
        s.finish(flood, 0.001, t + 28 * ms);
        s.arrive(flood, t + 5028 * ms);
        assert!((s.models[flood].gap - 0.2).abs() < 1e-9, "{}", s.models[flood].gap);
        s.start(flood, t + 5028 * ms);
        s.finish(flood, 0.001, t + 7027 * ms);
        s.arrive(flood, t + 7028 * ms);
        assert!((s.models[flood].gap - 0.05).abs() < 1e-9, "2 s later: a quarter, {}", s.models[flood].gap);
    }

    /// Event simulation on a virtual clock: a flood whose turns take 1 ms with `gap` outside the gate between them
    /// (parsing, serializing, its clients), against a model that always waits with 50 ms steps. Returns the
    /// flood's and the other model's compute as shares of the wall time.
    fn simulate(window: Duration, gap: Duration) -> (f64, f64) {
        let (t0, turn, step) = (Instant::now(), Duration::from_millis(1), Duration::from_millis(50));
        let mut s = Shares::default();
        let (flood, docs) = (s.add(1.0), s.add(1.0));
        let (mut clock, mut flood_back, mut compute) = (Duration::ZERO, Some(Duration::ZERO), [0.0f64; 2]);
        s.arrive(docs, t0);
        while clock < Duration::from_secs(60) {
            if flood_back.is_some_and(|b| b <= clock) {
                s.arrive(flood, t0 + clock);
                flood_back = None;
            }
            let id = s.next().expect("the docs model always waits");
            if let Some((owed, until)) = s.anticipate(id, t0 + clock, window) {
                assert_eq!(owed, flood);
                s.idle(owed, t0 + clock);
                clock = (until - t0).min(flood_back.expect("the flood is between turns"));
                continue;
            }
            s.start(id, t0 + clock);
            let cost = if id == flood { turn } else { step };
            clock += cost;
            compute[id] += cost.as_secs_f64();
            s.finish(id, cost.as_secs_f64(), t0 + clock);
            if id == flood {
                flood_back = Some(clock + gap);
            } else {
                s.arrive(docs, t0 + clock);
            }
        }
        let wall = clock.as_secs_f64();
        (compute[flood] / wall, compute[docs] / wall)
    }

    #[test]
    fn anticipation_gives_a_flood_between_turns_its_share_of_the_time() {
        let gap = Duration::from_millis(3);
        let (flood, docs) = simulate(Duration::ZERO, gap);
        assert!(flood < 0.03 && docs > 0.95, "work-conserving: one 1 ms turn per 50 ms step: {flood} {docs}");
        // Anticipated, the flood runs 1 ms in every 4 (turn + gap) for half the time; the idle gaps are charged to
        // it, so the other model keeps half of the time.
        let (flood, docs) = simulate(ANTICIPATION, gap);
        assert!((flood - 0.125).abs() < 0.01 && (docs - 0.5).abs() < 0.02, "{flood} {docs}");
        // Gaps longer than the window are not waited for.
        let (flood, docs) = simulate(ANTICIPATION, ANTICIPATION + 30 * Duration::from_millis(1));
        assert!(flood < 0.03 && docs > 0.95, "{flood} {docs}");
    }

    #[test]
    fn a_contended_step_takes_a_quarter_of_the_token_budget() {
        let gate = Scheduler::new();
        let (a, b) = (gate.register(1.0), gate.register(1.0));
        assert!(!gate.others_waiting(a));
        let turn = gate.acquire(b);
        let waiter = {
            let gate = gate.clone();
            std::thread::spawn(move || drop(gate.acquire(a)))
        };
        while !gate.others_waiting(b) {
            std::thread::yield_now();
        }
        assert!(!gate.others_waiting(a), "a share's own waiting worker does not count");
        drop(turn);
        waiter.join().unwrap();
        assert!(!gate.others_waiting(b), "a had its turn");
        assert!(gate.others_active(b, Duration::from_secs(3600)), "a was served within the window");
        assert!(!gate.others_active(b, Duration::ZERO));
        assert!(!gate.others_active(a, Duration::ZERO), "b holds no turn and waits for none");

        let s = shared(8192, 64);
        let mut q = Queue::default();
        q.pending.push_back(pending(&[2048; 4]));
        assert_eq!(s.next_step_within(&mut q, 8192 / CONTENDED_SHARE).len(), 1);
        assert_eq!(s.next_step(&mut q).len(), 3);
    }

    #[test]
    fn the_gate_hands_turns_across_threads() {
        // Real threads on the real gate: every acquire returns, and no two turns overlap.
        let gate = Scheduler::new();
        let shares: Vec<usize> = (0..3).map(|_| gate.register(1.0)).collect();
        let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        std::thread::scope(|scope| {
            for &share in &shares {
                for _ in 0..2 {
                    let (gate, inside) = (gate.clone(), inside.clone());
                    scope.spawn(move || {
                        for _ in 0..200 {
                            let _turn = gate.acquire(share);
                            assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                            inside.fetch_sub(1, Ordering::SeqCst);
                        }
                    });
                }
            }
        });
        assert_eq!(gate.used().len(), 3);
        assert!(gate.lock().running.is_none());
        assert!(gate.lock().models.iter().all(|m| m.waiting == 0));
    }

    #[test]
    fn token_budget_counts_padding_and_always_takes_one() {
        let s = shared(64, 100);
        let mut q = Queue::default();
        q.pending.push_back(pending(&[200, 30, 30, 4]));
        assert_eq!(s.next_step(&mut q).len(), 1, "an input over the budget still runs, alone");
        assert_eq!(s.next_step(&mut q).len(), 2, "30 + 30 padded fits 64, a third would not");
        assert_eq!(s.next_step(&mut q).len(), 1);
        assert!(q.pending.is_empty());
    }
}
