//! Every metric in the catalogue has a production caller (issue 17, item 6: two counters and
//! their dashboard panels stayed at 0 for months because nothing but a test moved them). Each
//! catalogue name maps to the `Metrics` method(s) that move it; each such method must be called
//! somewhere in `src/` outside the catalogue itself and outside test code. A metric added
//! without an entry here fails too.

use std::collections::BTreeSet;
use std::path::Path;

use mediacms_worker::telemetry::Metrics;

/// Catalogue name (without the `mediacms_worker_` prefix) → the methods that move it. `new`:
/// set once when the catalogue is built.
const MOVED_BY: [(&str, &[&str]); 17] = [
    ("tasks_received_total", &["task_received"]),
    ("tasks_started_total", &["task_started"]),
    ("tasks_finished_total", &["task_finished"]),
    ("task_duration_seconds", &["task_finished"]),
    ("task_retries_total", &["task_retried"]),
    ("jobs_in_flight", &["set_jobs_in_flight"]),
    ("encode_speed_ratio", &["encode_observed"]),
    ("encode_fps", &["encode_observed"]),
    ("hw_fallbacks_total", &["hw_fallback"]),
    ("ffmpeg_exits_total", &["ffmpeg_exited"]),
    ("queue_depth", &["set_queue_depth"]),
    ("restores_total", &["restored"]),
    ("leases_lost_total", &["lease_lost"]),
    ("dead_letters_total", &["dead_lettered"]),
    ("broker_reconnects_total", &["broker_reconnects_seen"]),
    ("db_reconnects_total", &["db_reconnected"]),
    ("build_info", &["new"]),
];

/// Production source: every `src/**/*.rs` but the catalogue, `*_tests.rs` files, and each
/// file's `#[cfg(test)]` tail (tests sit at the bottom by convention).
fn production_sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            production_sources(&p, out);
            continue;
        }
        let name = p.display().to_string();
        if !name.ends_with(".rs") || name.ends_with("_tests.rs") {
            continue;
        }
        if name.ends_with("telemetry/metrics.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let code = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default()
            .to_owned();
        out.push((name, code));
    }
}

#[test]
fn every_catalogue_metric_has_a_production_caller() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let catalogue: BTreeSet<String> = Metrics::new()
        .catalogue()
        .iter()
        .map(|d| d.name.trim_start_matches("mediacms_worker_").to_owned())
        .collect();
    let mapped: BTreeSet<String> = MOVED_BY.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(
        catalogue, mapped,
        "a metric was added or removed: say here which Metrics method moves it"
    );
    let metrics_rs = std::fs::read_to_string(root.join("src/telemetry/metrics.rs")).unwrap();
    let mut sources = vec![];
    production_sources(&root.join("src"), &mut sources);
    let mut orphans = vec![];
    for (metric, methods) in MOVED_BY {
        for method in methods.iter().filter(|m| **m != "new") {
            assert!(
                metrics_rs.contains(&format!("pub fn {method}(")),
                "{metric}: no method Metrics::{method}"
            );
            let call = format!(".{method}(");
            let callers: Vec<&str> = sources
                .iter()
                .filter(|(_, code)| code.contains(&call))
                .map(|(f, _)| f.as_str())
                .collect();
            if callers.is_empty() {
                orphans.push(format!("{metric} ({method})"));
            }
        }
    }
    assert!(
        orphans.is_empty(),
        "metrics nothing in production moves: {orphans:?}"
    );
}
