//! The wall clock as Celery and kombu count it: float seconds since the Unix epoch (the
//! `unacked_index` score, a worker event's `timestamp`, a job's start time). One definition,
//! so every score the worker writes and compares is read the same way.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in float seconds (0.0 on a clock set before 1970).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
