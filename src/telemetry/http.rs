//! The operations HTTP endpoint: `/metrics` (Prometheus text), `/healthz` (main loop alive),
//! `/readyz` (broker + db + intake), plus a tiny std-only client for the container healthcheck.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{Health, Metrics};

/// What the handlers read; cheap to clone.
#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub health: Health,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot bind the metrics/health endpoint on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("metrics/health endpoint failed")]
    Serve(#[source] std::io::Error),
    #[error("health probe of {addr} failed")]
    Probe {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("health probe got a malformed response: {0:?}")]
    BadResponse(String),
}

/// The router, separate from `serve` so tests can drive it on any listener.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Bind `addr` and serve until `shutdown` is cancelled (in-flight scrapes finish first).
pub async fn serve(
    addr: SocketAddr,
    state: HttpState,
    shutdown: CancellationToken,
) -> Result<(), HttpError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })?;
    serve_on(listener, state, shutdown).await
}

/// Serve on an already bound listener (tests bind `127.0.0.1:0` and read the port first).
pub async fn serve_on(
    listener: TcpListener,
    state: HttpState,
    shutdown: CancellationToken,
) -> Result<(), HttpError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics /healthz /readyz");
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled_owned().await })
        .await
        .map_err(HttpError::Serve)
}

async fn metrics(State(s): State<HttpState>) -> Response {
    let body = s.metrics.encode_text();
    let ctype = "text/plain; version=0.0.4; charset=utf-8";
    ([(header::CONTENT_TYPE, ctype)], body).into_response()
}

async fn healthz(State(s): State<HttpState>) -> Response {
    let alive = s.health.is_alive();
    let body = serde_json::json!({
        "alive": alive,
        "since_last_beat_secs": s.health.since_last_beat().as_secs_f64(),
    });
    (status(alive), Json(body)).into_response()
}

async fn readyz(State(s): State<HttpState>) -> Response {
    let r = s.health.readiness();
    let body = serde_json::json!({
        "ready": r.ready(),
        "broker": r.broker,
        "db": r.db,
        "intake": r.intake,
    });
    (status(r.ready()), Json(body)).into_response()
}

fn status(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// The address a local probe should dial for a server bound on `bind`: a wildcard bind
/// (`0.0.0.0`, `::`) is reached through loopback.
pub fn probe_addr(bind: SocketAddr) -> SocketAddr {
    let ip = match bind.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bind.port())
}

/// Blocking `GET path` returning (status, body). Std-only on purpose: the container's
/// HEALTHCHECK runs `mediacms-worker healthcheck`, so the image needs no curl and no runtime.
pub fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String), HttpError> {
    let io = |source| HttpError::Probe { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(io)?;
    parse_response(&String::from_utf8_lossy(&raw))
}

fn parse_response(raw: &str) -> Result<(u16, String), HttpError> {
    let bad = || HttpError::BadResponse(raw.chars().take(80).collect());
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(bad)?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(bad)?;
    // Chunked bodies would need decoding; axum sends fixed-length bodies for these handlers.
    Ok((code, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_binds_are_probed_on_loopback() {
        let a: SocketAddr = "0.0.0.0:9808".parse().unwrap();
        assert_eq!(probe_addr(a), "127.0.0.1:9808".parse().unwrap());
        let b: SocketAddr = "[::]:9808".parse().unwrap();
        assert_eq!(probe_addr(b), "[::1]:9808".parse().unwrap());
        let c: SocketAddr = "10.0.0.5:1".parse().unwrap();
        assert_eq!(probe_addr(c), c);
    }

    #[test]
    fn responses_parse_or_fail_loudly() {
        let ok = parse_response("HTTP/1.1 503 Service Unavailable\r\nA: b\r\n\r\n{}").unwrap();
        assert_eq!(ok, (503, "{}".to_owned()));
        assert!(matches!(
            parse_response("garbage"),
            Err(HttpError::BadResponse(_))
        ));
    }
}
