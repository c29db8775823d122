//! Telemetry adapter: the metrics catalogue, logging setup, and the HTTP endpoints
//! (`/metrics`, `/healthz`, `/readyz`) with the [`Health`] handle the app updates.

pub mod health;
pub mod http;
pub mod labels;
pub mod logging;
pub mod metrics;

pub use health::{Health, Readiness};
pub use http::{serve, serve_on, HttpError, HttpState};
pub use metrics::{FfmpegExit, MetricDesc, Metrics, OutcomeLabel};
