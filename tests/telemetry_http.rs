//! The operations endpoint over real TCP: `/metrics` shows what the helpers recorded, with the
//! catalogue's names and bounded labels; `/healthz` and `/readyz` follow the `Health` handle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mediacms_worker::telemetry::http::probe;
use mediacms_worker::telemetry::{serve_on, FfmpegExit, Health, HttpState, Metrics, OutcomeLabel};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

struct Server {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), mediacms_worker::telemetry::HttpError>>,
}

async fn start(stale_after: Duration) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Arc::new(Metrics::new());
    let health = Health::new(stale_after);
    let shutdown = CancellationToken::new();
    let state = HttpState {
        metrics: metrics.clone(),
        health: health.clone(),
    };
    let task = tokio::spawn(serve_on(listener, state, shutdown.clone()));
    Server {
        addr,
        metrics,
        health,
        shutdown,
        task,
    }
}

/// GET through the same std client the container HEALTHCHECK uses, off the async threads.
async fn get(addr: SocketAddr, path: &'static str) -> (u16, String) {
    tokio::task::spawn_blocking(move || probe(addr, path, Duration::from_secs(5)))
        .await
        .unwrap()
        .unwrap()
}

fn move_counters(m: &Metrics) {
    m.task_received("encode_media");
    m.task_received("encode_media");
    m.task_received("chunkize_media"); // not a long task: collapses to `other`
    m.task_started("encode_media");
    m.task_finished(
        "encode_media",
        OutcomeLabel::Success,
        Duration::from_secs(42),
    );
    m.task_finished(
        "create_hls",
        OutcomeLabel::Failure,
        Duration::from_millis(300),
    );
    m.task_retried("encode_media");
    m.encode_observed("h264-720", "nvenc", 12.5, 300.0);
    m.set_queue_depth("long_tasks", 3, 17);
    m.set_jobs_in_flight(2);
    m.hw_fallback("nvenc", "encoder_init");
    m.hw_fallback("nvenc", "some free text from an error"); // collapses to `other`
    m.restored(3);
    m.broker_reconnects_seen(1);
    m.db_reconnected();
    m.db_reconnected();
    m.ffmpeg_exited(FfmpegExit::Killed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_exposition_shows_recorded_values_with_bounded_labels() {
    let s = start(Duration::from_secs(60)).await;
    move_counters(&s.metrics);
    let (code, body) = get(s.addr, "/metrics").await;
    assert_eq!(code, 200);
    let expected = [
        r#"mediacms_worker_tasks_received_total{task="encode_media"} 2"#,
        r#"mediacms_worker_tasks_received_total{task="other"} 1"#,
        r#"mediacms_worker_tasks_started_total{task="encode_media"} 1"#,
        r#"mediacms_worker_tasks_finished_total{outcome="success",task="encode_media"} 1"#,
        r#"mediacms_worker_tasks_finished_total{outcome="failure",task="create_hls"} 1"#,
        r#"mediacms_worker_task_duration_seconds_sum{outcome="success",task="encode_media"} 42"#,
        r#"mediacms_worker_task_duration_seconds_bucket{outcome="failure",task="create_hls",le="0.5"} 1"#,
        r#"mediacms_worker_task_retries_total{task="encode_media"} 1"#,
        r#"mediacms_worker_encode_speed_ratio_sum{backend="nvenc",profile="h264-720"} 12.5"#,
        r#"mediacms_worker_encode_fps_count{backend="nvenc",profile="h264-720"} 1"#,
        r#"mediacms_worker_queue_depth{priority="3",queue="long_tasks"} 17"#,
        "mediacms_worker_jobs_in_flight 2",
        r#"mediacms_worker_hw_fallbacks_total{backend="nvenc",reason_class="encoder_init"} 1"#,
        r#"mediacms_worker_hw_fallbacks_total{backend="nvenc",reason_class="other"} 1"#,
        "mediacms_worker_restores_total 3",
        "mediacms_worker_broker_reconnects_total 1",
        "mediacms_worker_db_reconnects_total 2",
        r#"mediacms_worker_ffmpeg_exits_total{status_class="killed"} 1"#,
        &format!(
            r#"mediacms_worker_build_info{{version="{}"}} 1"#,
            env!("CARGO_PKG_VERSION")
        ),
    ];
    for line in expected {
        assert!(
            body.lines().any(|l| l == line),
            "missing `{line}` in\n{body}"
        );
    }
    assert!(body.contains("# TYPE mediacms_worker_task_duration_seconds histogram"));
    assert!(!body.contains("free text"), "unbounded label value leaked");
    s.shutdown.cancel();
    s.task.await.unwrap().unwrap();
}

// Paused time: the heartbeat goes stale because the test moves the clock, not because it slept.
#[tokio::test(start_paused = true)]
async fn healthz_follows_the_heartbeat() {
    let s = start(Duration::from_secs(60)).await;
    let (code, body) = get(s.addr, "/healthz").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""alive":true"#));
    tokio::time::advance(Duration::from_secs(61)).await;
    let (code, body) = get(s.addr, "/healthz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(r#""alive":false"#));
    s.health.beat();
    assert_eq!(get(s.addr, "/healthz").await.0, 200);
    s.shutdown.cancel();
    s.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_needs_broker_db_and_intake_and_says_which_is_missing() {
    let s = start(Duration::from_secs(60)).await;
    let (code, body) = get(s.addr, "/readyz").await;
    assert_eq!(code, 503);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], false);
    assert_eq!(v["broker"], false);

    s.health.set_broker_up(true);
    s.health.set_db_up(true);
    s.health.set_intake_open(true);
    let (code, body) = get(s.addr, "/readyz").await;
    assert_eq!(
        (code, body.contains(r#""ready":true"#)),
        (200, true),
        "{body}"
    );

    // First SIGTERM closes intake: the draining worker leaves readiness, stays alive.
    s.health.set_intake_open(false);
    let (code, body) = get(s.addr, "/readyz").await;
    assert_eq!(code, 503);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["broker"].clone(), v["db"].clone(), v["intake"].clone()),
        (true.into(), true.into(), false.into())
    );
    assert_eq!(get(s.addr, "/healthz").await.0, 200);
    s.shutdown.cancel();
    s.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_token_stops_the_server_and_frees_the_port() {
    let s = start(Duration::from_secs(60)).await;
    assert_eq!(get(s.addr, "/metrics").await.0, 200);
    s.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), s.task)
        .await
        .expect("server stops promptly")
        .unwrap()
        .unwrap();
    let addr = s.addr;
    let refused =
        tokio::task::spawn_blocking(move || probe(addr, "/healthz", Duration::from_secs(1)))
            .await
            .unwrap();
    assert!(refused.is_err());
}
