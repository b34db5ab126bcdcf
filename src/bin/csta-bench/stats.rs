//! Measurements: latency histograms (HDR, microseconds), the shared counters behind the
//! progress display, and the one-line JSON summary.

use super::window::Window;
use hdrhistogram::Histogram;
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The largest latency recorded, in microseconds (larger values are clamped): 10 minutes.
const MAX_MICROS: u64 = 600_000_000;

/// A latency histogram in microseconds (1 µs to 10 min, 3 significant digits).
#[derive(Debug, Clone)]
pub struct Latency(Option<Histogram<u64>>);

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Latency {
        // These bounds are valid, so creation cannot fail; were it to, nothing is recorded.
        Latency(Histogram::new_with_bounds(1, MAX_MICROS, 3).ok())
    }

    /// Record one latency.
    pub fn record(&mut self, latency: Duration) {
        if let Some(h) = &mut self.0 {
            let us = u64::try_from(latency.as_micros())
                .unwrap_or(MAX_MICROS)
                .clamp(1, MAX_MICROS);
            h.saturating_record(us);
        }
    }

    /// Add another histogram's values.
    pub fn merge(&mut self, other: &Latency) {
        if let (Some(h), Some(o)) = (&mut self.0, &other.0) {
            // Both have the same bounds, so adding cannot fail.
            let _ = h.add(o);
        }
    }

    /// How many latencies were recorded.
    pub fn len(&self) -> u64 {
        self.0.as_ref().map_or(0, Histogram::len)
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn value(&self, f: impl Fn(&Histogram<u64>) -> f64) -> f64 {
        match &self.0 {
            Some(h) if !h.is_empty() => f(h) / 1000.0,
            _ => 0.0,
        }
    }

    /// The latency at quantile `q` (0 to 1), in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.value(|h| h.value_at_quantile(q) as f64)
    }

    /// The largest latency recorded, in milliseconds.
    pub fn max_ms(&self) -> f64 {
        self.value(|h| h.max() as f64)
    }

    /// The mean latency, in milliseconds.
    pub fn mean_ms(&self) -> f64 {
        self.value(Histogram::mean)
    }
}

/// Counters shared by the workers of a run and read by the progress display.
#[derive(Debug, Default)]
pub struct Progress {
    /// Operations completed (replies checked, or events delivered for fanout).
    pub ops: AtomicU64,
    /// Errors so far.
    pub errors: AtomicU64,
    /// Setup steps done (registrations, monitors started).
    pub setup: AtomicU64,
    phase: AtomicU8,
    window: OnceLock<Arc<Window>>,
}

/// What a run is doing, for the progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Registering DNs or starting monitors.
    Setup = 0,
    /// The measured part.
    Run = 1,
    /// Waiting for the last events.
    Drain = 2,
}

impl Progress {
    /// Shared counters, starting in the setup phase.
    pub fn new() -> Arc<Progress> {
        Arc::new(Progress::default())
    }

    /// Enter a phase.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    fn phase_name(&self) -> &'static str {
        match self.phase.load(Ordering::Relaxed) {
            0 => "setup",
            1 => "run",
            _ => "drain",
        }
    }

    /// Count one error.
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Measure the run's cost in `window` (opened when the workers start, closed by
    /// [`Progress::end_window`]).
    pub fn watch(&self, window: Arc<Window>) {
        let _ = self.window.set(window);
    }

    /// Open the measured window, just before the first measured request is due.
    pub async fn start_window(&self) {
        if let Some(w) = self.window.get() {
            w.mark_start().await;
        }
    }

    /// Close the measured window, after the last reply and the last expected event (only
    /// the first call counts).
    pub async fn end_window(&self) {
        if let Some(w) = self.window.get() {
            w.mark_end().await;
        }
    }
}

/// A scenario's shared counters (measuring the run's cost in `window`), and their display on stderr (see [`start_display`]) until
/// the guard is dropped.
pub fn progress(scenario: &'static str, window: &Arc<Window>) -> (Arc<Progress>, DisplayGuard) {
    let progress = Progress::new();
    progress.watch(window.clone());
    let display = start_display(scenario, progress.clone());
    (progress, display)
}

/// Draw a one-line progress display on stderr about once a second, only when stderr is a
/// terminal and only once the run has lasted a couple of seconds. Returns a guard that erases
/// the line when dropped.
pub fn start_display(scenario: &'static str, progress: Arc<Progress>) -> DisplayGuard {
    if !std::io::stderr().is_terminal() {
        return DisplayGuard { task: None };
    }
    let task = tokio::spawn(async move {
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // The first tick is immediate: it only takes the baseline of the per-second rates.
        tick.tick().await;
        let mut last_ops = progress.ops.load(Ordering::Relaxed);
        let mut last_setup = progress.setup.load(Ordering::Relaxed);
        loop {
            tick.tick().await;
            let ops = progress.ops.load(Ordering::Relaxed);
            let setup = progress.setup.load(Ordering::Relaxed);
            let errors = progress.errors.load(Ordering::Relaxed);
            let phase = progress.phase_name();
            let line = if phase == "setup" {
                format!(
                    "{scenario} {:>5.0}s  setup {setup} ({}/s)  errors {errors}",
                    started.elapsed().as_secs_f64(),
                    setup.saturating_sub(last_setup)
                )
            } else {
                format!(
                    "{scenario} {:>5.0}s  {phase} ops {ops} ({}/s)  errors {errors}",
                    started.elapsed().as_secs_f64(),
                    ops.saturating_sub(last_ops)
                )
            };
            last_ops = ops;
            last_setup = setup;
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{line}");
            let _ = err.flush();
        }
    });
    DisplayGuard { task: Some(task) }
}

/// Stops the progress display and erases its line.
#[derive(Debug)]
pub struct DisplayGuard {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for DisplayGuard {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

/// The one-line JSON summary, keys in the order they were added.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    fields: Vec<(String, Value)>,
    /// Errors counted (checked replies that were wrong, lost connections, ...).
    pub errors: u64,
    /// Events that never arrived.
    pub losses: u64,
    /// A few errors, for a person, printed on stderr.
    pub samples: Vec<String>,
}

impl Summary {
    /// Set a key (replacing an earlier value of the same key, keeping its place).
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        match self.fields.iter_mut().find(|(k, _)| k == key) {
            Some(f) => f.1 = value,
            None => self.fields.push((key.to_owned(), value)),
        }
    }

    /// Set a float rounded to 3 decimals.
    pub fn set_f(&mut self, key: &str, value: f64) {
        let rounded = (value * 1000.0).round() / 1000.0;
        self.set(key, rounded);
    }

    /// The value of a key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value of a numeric key (0 when absent).
    pub fn get_f(&self, key: &str) -> f64 {
        self.get(key).and_then(Value::as_f64).unwrap_or(0.0)
    }

    /// Add the throughput and latency keys common to every scenario.
    pub fn set_measure(&mut self, ops: u64, elapsed: Duration, latency: &Latency) {
        let secs = elapsed.as_secs_f64();
        self.set("ops", ops);
        self.set("errors", self.errors);
        self.set_f("duration_s", secs);
        self.set_f(
            "ops_per_s",
            if secs > 0.0 { ops as f64 / secs } else { 0.0 },
        );
        self.set_f("p50_ms", latency.quantile_ms(0.5));
        self.set_f("p99_ms", latency.quantile_ms(0.99));
        self.set_f("p999_ms", latency.quantile_ms(0.999));
        self.set_f("max_ms", latency.max_ms());
        self.set_f("mean_ms", latency.mean_ms());
    }

    /// The common keys of a run whose measured part started at `start`: the workers' errors
    /// (and a few of them for stderr), operations, throughput up to the last completion, and
    /// latencies.
    pub fn set_workers(&mut self, total: &WorkerResult, start: Instant) {
        let elapsed = total
            .finished
            .map_or(Duration::ZERO, |f| f.saturating_duration_since(start));
        self.errors = total.errors;
        self.samples = total.samples.clone();
        self.set_measure(total.ops, elapsed, &total.latency);
    }

    /// `setup_s`: how long the setup took (from `setup_started` to the measured part's
    /// `start`).
    pub fn set_setup_time(&mut self, setup_started: Instant, start: Instant) {
        self.set_f(
            "setup_s",
            start.saturating_duration_since(setup_started).as_secs_f64(),
        );
    }

    /// Keep an error description (only the first few are kept).
    pub fn sample(&mut self, what: String) {
        if self.samples.len() < 5 {
            self.samples.push(what);
        }
    }

    /// The summary as one line of JSON.
    pub fn to_line(&self) -> String {
        let parts: Vec<String> = self
            .fields
            .iter()
            .map(|(k, v)| format!("{}:{v}", Value::from(k.as_str())))
            .collect();
        format!("{{{}}}", parts.join(","))
    }

    /// Whether the run failed (errors or losses).
    pub fn failed(&self) -> bool {
        self.errors > 0 || self.losses > 0
    }
}

/// What one worker (client) measured.
#[derive(Debug, Default)]
pub struct WorkerResult {
    /// Latencies of the operations.
    pub latency: Latency,
    /// Operations that succeeded and were checked.
    pub ops: u64,
    /// Errors.
    pub errors: u64,
    /// Unsolicited events received.
    pub events: u64,
    /// Operations sent (login-storm: each makes one event for its client).
    pub offered: u64,
    /// When the worker's last operation completed.
    pub finished: Option<Instant>,
    /// A few error descriptions.
    pub samples: Vec<String>,
}

impl WorkerResult {
    /// Count an error and keep its description if it is among the first few.
    pub fn error(&mut self, progress: &Progress, what: impl FnOnce() -> String) {
        self.errors += 1;
        progress.error();
        self.sample(what);
    }

    /// Keep a description if it is among the first few (made only then).
    pub fn sample(&mut self, what: impl FnOnce() -> String) {
        if self.samples.len() < 5 {
            self.samples.push(what());
        }
    }

    /// Count an operation that succeeded, due (or sent) at `due`, completed now.
    pub fn succeeded(&mut self, progress: &Progress, due: Instant) {
        self.latency.record(due.elapsed());
        self.ops += 1;
        self.finished = Some(Instant::now());
        progress.ops.fetch_add(1, Ordering::Relaxed);
    }

    /// Add another worker's results (the sum of every worker's is the run's).
    pub fn merge(&mut self, w: WorkerResult) {
        self.latency.merge(&w.latency);
        self.ops += w.ops;
        self.errors += w.errors;
        self.events += w.events;
        self.offered += w.offered;
        self.finished = later(self.finished, w.finished);
        for s in w.samples {
            if self.samples.len() < 5 {
                self.samples.push(s);
            }
        }
    }
}

impl FromIterator<WorkerResult> for WorkerResult {
    fn from_iter<I: IntoIterator<Item = WorkerResult>>(workers: I) -> WorkerResult {
        let mut total = WorkerResult::default();
        for w in workers {
            total.merge(w);
        }
        total
    }
}

/// The later of two moments, either of which may be unknown.
pub fn later(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The middle value (the lower of the two middle ones), 0 when there is none.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
        .get(sorted.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn summary_keeps_order_and_rounds() {
        let mut s = Summary::default();
        s.set("scenario", "fanout");
        s.set_f("p50_ms", 1.23456);
        s.set("scenario", "login-storm");
        assert_eq!(s.to_line(), r#"{"scenario":"login-storm","p50_ms":1.235}"#);
    }

    #[test]
    fn latency_quantiles() {
        let mut l = Latency::new();
        for ms in 1..=100 {
            l.record(Duration::from_millis(ms));
        }
        assert!((l.quantile_ms(0.5) - 50.0).abs() < 0.1);
        assert!((l.max_ms() - 100.0).abs() < 0.1);
    }
}
