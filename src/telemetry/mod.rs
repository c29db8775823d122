//! Metrics catalogue, logging setup, and the HTTP endpoints (pending).
