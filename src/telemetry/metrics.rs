//! The one metrics catalogue: every metric the worker exposes is declared and registered here,
//! with typed helpers whose label values are bounded (see [`super::labels`]).

use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use super::labels::{self, CappedLabel};
pub use super::labels::{FfmpegExit, OutcomeLabel};

/// Every metric name starts with this.
pub const PREFIX: &str = "mediacms_worker_";

/// One catalogue entry, read from the registered collectors' descriptors (docs, dashboard test).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricDesc {
    pub name: String,
    pub kind: &'static str,
    pub help: String,
    pub labels: Vec<String>,
}

// Task durations run from sub-second housekeeping to multi-hour encodes (soft limit 7200 s).
const DURATION_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
    14400.0,
];
// Speed as a multiple of realtime: slow x265 ladders sit below 1, GPU renditions far above.
const SPEED_BUCKETS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];
const FPS_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0,
];
// Queue names come from config, profile names from the DB: both small in practice.
const QUEUE_CAP: usize = 16;
const PROFILE_CAP: usize = 64;

/// The registry and every metric in it. Build once, share as `Arc<Metrics>`.
pub struct Metrics {
    registry: Registry,
    catalogue: Vec<MetricDesc>,
    tasks: TaskMetrics,
    encode: EncodeMetrics,
    ops: OpsMetrics,
    queues: CappedLabel,
    profiles: CappedLabel,
}

struct TaskMetrics {
    received: IntCounterVec,
    started: IntCounterVec,
    finished: IntCounterVec,
    duration: HistogramVec,
    retries: IntCounterVec,
    in_flight: IntGauge,
}

struct EncodeMetrics {
    speed: HistogramVec,
    fps: HistogramVec,
    hw_fallbacks: IntCounterVec,
    ffmpeg_exits: IntCounterVec,
}

struct OpsMetrics {
    queue_depth: IntGaugeVec,
    restores: IntCounter,
    leases_lost: IntCounter,
    dead_letters: IntCounterVec,
    broker_reconnects: IntCounter,
    db_reconnects: IntCounter,
}

/// Registers collectors and records their descriptors, so the catalogue is the registry.
struct Builder {
    registry: Registry,
    catalogue: Vec<MetricDesc>,
}

impl Builder {
    fn add<C: Collector + Clone + 'static>(&mut self, kind: &'static str, c: C) -> C {
        for d in c.desc() {
            self.catalogue.push(MetricDesc {
                name: d.fq_name.clone(),
                kind,
                help: d.help.clone(),
                labels: d.variable_labels.clone(),
            });
        }
        self.registry
            .register(Box::new(c.clone()))
            .expect("catalogue names are unique");
        c
    }

    fn counter(&mut self, name: &str, help: &str) -> IntCounter {
        let c = IntCounter::with_opts(Opts::new(full(name), help)).expect("valid counter");
        self.add("counter", c)
    }

    fn counter_vec(&mut self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let c = IntCounterVec::new(Opts::new(full(name), help), labels).expect("valid counter");
        self.add("counter", c)
    }

    fn gauge_vec(&mut self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        let g = IntGaugeVec::new(Opts::new(full(name), help), labels).expect("valid gauge");
        self.add("gauge", g)
    }

    fn histogram(&mut self, name: &str, help: &str, b: &[f64], l: &[&str]) -> HistogramVec {
        let opts = HistogramOpts::new(full(name), help).buckets(b.to_vec());
        let h = HistogramVec::new(opts, l).expect("valid histogram");
        self.add("histogram", h)
    }
}

fn full(name: &str) -> String {
    format!("{PREFIX}{name}")
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with the whole catalogue registered (one per process; tests make many).
    pub fn new() -> Self {
        let mut b = Builder {
            registry: Registry::new(),
            catalogue: Vec::new(),
        };
        let tasks = TaskMetrics::register(&mut b);
        let encode = EncodeMetrics::register(&mut b);
        let ops = OpsMetrics::register(&mut b);
        let help = "Always 1; the version label says which build runs.";
        let build = b.gauge_vec("build_info", help, &["version"]);
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        Metrics {
            registry: b.registry,
            catalogue: b.catalogue,
            tasks,
            encode,
            ops,
            queues: CappedLabel::new(QUEUE_CAP),
            profiles: CappedLabel::new(PROFILE_CAP),
        }
    }

    /// The registry, for callers that add process collectors or scrape in tests.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every registered metric's name, kind, help and label names, in registration order.
    pub fn catalogue(&self) -> &[MetricDesc] {
        &self.catalogue
    }

    /// The Prometheus text exposition of everything registered.
    pub fn encode_text(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(buf).expect("exposition is UTF-8")
    }

    pub fn task_received(&self, task: &str) {
        self.tasks
            .received
            .with_label_values(&[labels::task(task)])
            .inc();
    }

    pub fn task_started(&self, task: &str) {
        self.tasks
            .started
            .with_label_values(&[labels::task(task)])
            .inc();
    }

    /// One task done: counts it and records its duration under the same labels.
    pub fn task_finished(&self, task: &str, outcome: OutcomeLabel, duration: Duration) {
        let l = [labels::task(task), outcome.as_str()];
        self.tasks.finished.with_label_values(&l).inc();
        self.tasks
            .duration
            .with_label_values(&l)
            .observe(duration.as_secs_f64());
    }

    pub fn task_retried(&self, task: &str) {
        self.tasks
            .retries
            .with_label_values(&[labels::task(task)])
            .inc();
    }

    /// One rendition encoded: `speed` in × realtime, `fps` frames per second. Non-finite or
    /// negative values (a zero-length clip) are dropped rather than poisoning the histograms.
    pub fn encode_observed(&self, profile: &str, backend: &str, speed: f64, fps: f64) {
        let l = [
            self.profiles.get(profile),
            labels::backend(backend).to_owned(),
        ];
        if speed.is_finite() && speed >= 0.0 {
            self.encode.speed.with_label_values(&l).observe(speed);
        }
        if fps.is_finite() && fps >= 0.0 {
            self.encode.fps.with_label_values(&l).observe(fps);
        }
    }

    pub fn set_queue_depth(&self, queue: &str, priority: u8, depth: u64) {
        let l = [
            self.queues.get(queue),
            labels::priority(priority).to_owned(),
        ];
        let depth = i64::try_from(depth).unwrap_or(i64::MAX);
        self.ops.queue_depth.with_label_values(&l).set(depth);
    }

    pub fn set_jobs_in_flight(&self, n: usize) {
        self.tasks
            .in_flight
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn hw_fallback(&self, backend: &str, reason_class: &str) {
        let l = [
            labels::backend(backend),
            labels::fallback_reason(reason_class),
        ];
        self.encode.hw_fallbacks.with_label_values(&l).inc();
    }

    pub fn restored(&self, n: u64) {
        self.ops.restores.inc_by(n);
    }

    /// A delivery moved to the dead-letter list; `reason` is reduced to a bounded class.
    pub fn dead_lettered(&self, reason: &str) {
        let class = labels::dead_letter_reason(reason);
        self.ops.dead_letters.with_label_values(&[class]).inc();
    }

    /// A job found its lease taken by another worker (it stalled or was cut off past it).
    pub fn lease_lost(&self) {
        self.ops.leases_lost.inc();
    }

    /// The broker transports count their reconnections; the sampler brings the counter up to
    /// their `total` (a counter only goes up).
    pub fn broker_reconnects_seen(&self, total: u64) {
        let c = &self.ops.broker_reconnects;
        c.inc_by(total.saturating_sub(c.get()));
    }

    /// Postgres answered again after the readiness probe saw it down.
    pub fn db_reconnected(&self) {
        self.ops.db_reconnects.inc();
    }

    pub fn ffmpeg_exited(&self, status: FfmpegExit) {
        self.encode
            .ffmpeg_exits
            .with_label_values(&[status.as_str()])
            .inc();
    }
}

impl TaskMetrics {
    fn register(b: &mut Builder) -> Self {
        let (task, task_outcome) = (&["task"][..], &["task", "outcome"][..]);
        let in_flight = IntGauge::new(full("jobs_in_flight"), "Tasks running now on this worker.");
        TaskMetrics {
            received: b.counter_vec("tasks_received_total", "Task messages received.", task),
            started: b.counter_vec("tasks_started_total", "Tasks whose handler started.", task),
            finished: b.counter_vec("tasks_finished_total", "Tasks finished.", task_outcome),
            duration: b.histogram(
                "task_duration_seconds",
                "Task run time, start to finalisation.",
                DURATION_BUCKETS,
                task_outcome,
            ),
            retries: b.counter_vec("task_retries_total", "Celery retries published.", task),
            in_flight: b.add("gauge", in_flight.expect("valid gauge")),
        }
    }
}

impl EncodeMetrics {
    fn register(b: &mut Builder) -> Self {
        let pb = &["profile", "backend"][..];
        EncodeMetrics {
            speed: b.histogram(
                "encode_speed_ratio",
                "Encode speed per rendition, as a multiple of realtime.",
                SPEED_BUCKETS,
                pb,
            ),
            fps: b.histogram(
                "encode_fps",
                "Encode throughput per rendition, frames per second.",
                FPS_BUCKETS,
                pb,
            ),
            hw_fallbacks: b.counter_vec(
                "hw_fallbacks_total",
                "Hardware jobs that fell back to software.",
                &["backend", "reason_class"],
            ),
            ffmpeg_exits: b.counter_vec(
                "ffmpeg_exits_total",
                "ffmpeg children reaped, by how they ended.",
                &["status_class"],
            ),
        }
    }
}

impl OpsMetrics {
    fn register(b: &mut Builder) -> Self {
        OpsMetrics {
            queue_depth: b.gauge_vec(
                "queue_depth",
                "Messages waiting in a broker queue, per priority.",
                &["queue", "priority"],
            ),
            restores: b.counter(
                "restores_total",
                "Dead workers' unacked deliveries restored.",
            ),
            dead_letters: b.counter_vec(
                "dead_letters_total",
                "Undecodable deliveries moved to the dead-letter list, by reason class.",
                &["reason"],
            ),
            leases_lost: b.counter(
                "leases_lost_total",
                "Jobs stopped because another worker took their delivery (stall past the lease).",
            ),
            broker_reconnects: b.counter("broker_reconnects_total", "Broker reconnections."),
            db_reconnects: b.counter("db_reconnects_total", "Database reconnections."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_prefixed_and_unique() {
        let m = Metrics::new();
        let names: Vec<&str> = m.catalogue().iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names.len(), 17);
        assert!(names.iter().all(|n| n.starts_with(PREFIX)));
        let mut dedup = names.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(dedup.len(), names.len());
    }

    #[test]
    fn bad_encode_values_are_dropped() {
        let m = Metrics::new();
        m.encode_observed("h264-720", "software", f64::NAN, -1.0);
        assert!(!m.encode_text().contains("encode_speed_ratio_count"));
        m.encode_observed("h264-720", "software", 2.0, 60.0);
        assert!(m
            .encode_text()
            .contains(r#"encode_speed_ratio_count{backend="software",profile="h264-720"} 1"#));
    }
}
