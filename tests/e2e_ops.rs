//! Issues 2 and 6 through the real binary: `/metrics` after a real encode, Python Celery's
//! `inspect ping`/`inspect active` answered by our worker mid-encode, graceful SIGTERM (long
//! drain: the encode finishes and is acked; short drain: requeued and finished by a second
//! instance), `kill -9` recovered by a second instance within the lease, and config errors
//! exiting 64 naming the field.

mod support;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::redis::run_py_raw;
use support::worker::{
    metric, wait_for, worker_command, Site, Worker, WorkerOpts, MEDIA1_TOKEN, QUEUE,
};

/// h264-720 of the fixture: the slowest profile, so an encode is reliably still running
/// when a test acts on it.
const P720: i32 = 10;
/// Fixture Encoding row of (media 1, h264-720).
const ENC720: i32 = 5;

/// These tests run ffmpeg at MediaCMS's default preset and time what the worker does; on a
/// 2-core machine parallel encodes would distort each other's timings, so they run one at a
/// time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Media 1 as a `seconds`-long 720p clip, its h264-720 encode published, and a worker with
/// `opts` (MediaCMS's `medium` preset) running it; returns once ffmpeg runs.
async fn encoding(site: &Site, seconds: u32, opts: WorkerOpts) -> (Worker, String) {
    site.media1_clip(seconds).await;
    let task_id = site.publish_encode(MEDIA1_TOKEN, P720, ENC720);
    let mut w = site.worker(opts).await;
    wait_ffmpeg(&mut w).await;
    (w, task_id)
}

async fn wait_ffmpeg(w: &mut Worker) {
    let pid = w.pid;
    w.until(Duration::from_secs(60), "ffmpeg running", || async move {
        support::worker::processes()
            .iter()
            .any(|p| p.ppid == pid && p.comm == "ffmpeg")
            .then_some(())
    })
    .await;
}

fn medium(opts: WorkerOpts) -> WorkerOpts {
    WorkerOpts {
        preset: "medium".into(),
        ..opts
    }
}

/// `celery -b <broker> inspect <what> -d <hostname> --json` from the venv; its JSON reply.
fn inspect(site: &Site, what: &str, hostname: &str) -> Value {
    let out = run_py_raw(
        &[
            "-m",
            "celery",
            "-b",
            &site.redis.url,
            "inspect",
            what,
            "-d",
            hostname,
            "--timeout",
            "10",
            "--json",
        ],
        &HashMap::new(),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "celery inspect {what} failed ({}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("inspect {what} output is not JSON ({e}): {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_answers_mid_encode_and_metrics_count_the_encode() {
    let _serial = SERIAL.lock().await;
    let site = Site::upload_example().await;
    let (mut w, task_id) = encoding(&site, 12, medium(WorkerOpts::default())).await;

    // Python Celery's own CLI, talking pidbox to our worker while ffmpeg runs.
    let ping = inspect(&site, "ping", &w.hostname);
    assert_eq!(
        ping[&w.hostname],
        serde_json::json!({"ok": "pong"}),
        "{ping}"
    );
    let active = inspect(&site, "active", &w.hostname);
    let tasks = active[&w.hostname]
        .as_array()
        .unwrap_or_else(|| panic!("inspect active: {active}"));
    assert_eq!(tasks.len(), 1, "{active}");
    assert_eq!(tasks[0]["id"], task_id.as_str(), "{active}");
    assert_eq!(tasks[0]["name"], "encode_media", "{active}");
    assert!(
        !w.ffmpeg_children().is_empty(),
        "the encode ended before inspect finished: the test proves nothing about mid-encode"
    );

    let (site_ref, id_ref) = (&site, &task_id);
    w.until(
        Duration::from_secs(150),
        "the encode's result",
        || async move { site_ref.result(id_ref) },
    )
    .await;
    assert_eq!(
        site.encoding_status(ENC720).await.as_deref(),
        Some("success")
    );

    let m = w.metrics();
    let finished = metric(
        &m,
        "mediacms_worker_tasks_finished_total",
        &[("task", "encode_media"), ("outcome", "success")],
    );
    assert!(
        finished >= Some(1.0),
        "tasks_finished_total: {finished:?}\n{m}"
    );
    let durations = metric(
        &m,
        "mediacms_worker_task_duration_seconds_count",
        &[("task", "encode_media"), ("outcome", "success")],
    );
    assert!(
        durations >= Some(1.0),
        "duration histogram: {durations:?}\n{m}"
    );
    let speed = metric(
        &m,
        "mediacms_worker_encode_speed_ratio_count",
        &[("profile", "h264-720"), ("backend", "software")],
    );
    assert!(speed >= Some(1.0), "encode_speed_ratio: {speed:?}\n{m}");
    let exits = metric(
        &m,
        "mediacms_worker_ffmpeg_exits_total",
        &[("status_class", "ok")],
    );
    assert!(exits >= Some(1.0), "ffmpeg_exits_total ok: {exits:?}\n{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_long_drain_finishes_and_acks_the_encode() {
    let _serial = SERIAL.lock().await;
    let site = Site::upload_example().await;
    let (mut w, task_id) = encoding(
        &site,
        4,
        medium(WorkerOpts {
            drain_secs: 120,
            ..WorkerOpts::default()
        }),
    )
    .await;
    w.sigterm();
    let status = w.wait_exit(Duration::from_secs(150)).await;
    assert!(status.success(), "exit status {status}\n{}", w.log_tail());
    assert_eq!(
        site.encoding_status(ENC720).await.as_deref(),
        Some("success"),
        "{}",
        w.log_tail()
    );
    let result = site.result(&task_id).expect("result stored before exit");
    assert_eq!(result["status"], "SUCCESS", "{result}");
    assert_eq!(result["result"], Value::Bool(true), "{result}");
    assert_eq!(site.unacked(), 0, "the delivery is acked");
    // Not requeued: all that waits is the create_hls the success published (intake had
    // stopped, so nobody consumed it).
    let queued: Vec<String> = site.list(QUEUE).into_iter().map(|t| t.name).collect();
    assert_eq!(queued, vec!["create_hls".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_short_drain_requeues_and_a_second_worker_completes() {
    let _serial = SERIAL.lock().await;
    let site = Site::upload_example().await;
    let (mut w, task_id) = encoding(
        &site,
        6,
        medium(WorkerOpts {
            drain_secs: 1,
            ..WorkerOpts::default()
        }),
    )
    .await;
    w.sigterm();
    let status = w.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "exit status {status}\n{}", w.log_tail());
    assert!(
        w.ffmpeg_children().is_empty(),
        "the aborted ffmpeg must not outlive the worker"
    );
    // Requeued: back on its list, not held, no result written.
    let queued: Vec<String> = site.list(QUEUE).into_iter().map(|t| t.id).collect();
    assert_eq!(queued, vec![task_id.clone()], "{}", w.log_tail());
    assert_eq!(site.unacked(), 0);
    assert!(
        site.result(&task_id).is_none(),
        "an aborted task has no result"
    );
    drop(w);

    let mut w2 = site.worker(medium(WorkerOpts::default())).await;
    let (site_ref, id_ref) = (&site, &task_id);
    w2.until(
        Duration::from_secs(150),
        "the second worker's result",
        || async move { site_ref.result(id_ref) },
    )
    .await;
    let result = site.result(&task_id).unwrap();
    assert_eq!(result["result"], Value::Bool(true), "{result}");
    let running: i64 = site
        .db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM files_encoding WHERE status = 'running'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(running, 0, "no Encoding may be left running");
    assert_eq!(
        site.encoding_status(ENC720).await.as_deref(),
        Some("success")
    );
    // Acked, and its create_hls follow-up consumed too.
    w2.until(
        Duration::from_secs(60),
        "queue and unacked empty",
        || async move { site_ref.idle().then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_is_recovered_by_a_second_worker_within_the_lease() {
    let _serial = SERIAL.lock().await;
    let site = Site::upload_example().await;
    let lease = WorkerOpts {
        lease_secs: 10,
        ..WorkerOpts::default()
    };
    let (mut w, task_id) = encoding(&site, 6, medium(lease.clone())).await;
    w.sigkill();
    let killed = Instant::now();
    // Regression (ffmpeg outlived kill -9 of its worker): the kernel kills the children of a
    // SIGKILLed worker (PR_SET_PDEATHSIG), so no orphan keeps encoding.
    let w_ref = &w;
    wait_for(
        Duration::from_secs(5),
        "the killed worker's ffmpeg to die",
        || async move { (w_ref.orphans_alive() == 0).then_some(()) },
    )
    .await;
    assert_eq!(
        site.unacked(),
        1,
        "the delivery stays held by the dead worker"
    );

    let mut w2 = site.worker(medium(lease)).await;
    wait_ffmpeg(&mut w2).await;
    let rerun_after = killed.elapsed();
    // Lease 10 s, restore scan every lease/2, plus start-up: well under 30 s.
    assert!(
        rerun_after < Duration::from_secs(30),
        "re-run started {rerun_after:?} after the kill"
    );
    let (site_ref, id_ref) = (&site, &task_id);
    w2.until(
        Duration::from_secs(150),
        "the re-run's result",
        || async move { site_ref.result(id_ref) },
    )
    .await;
    let result = site.result(&task_id).unwrap();
    assert_eq!(result["status"], "SUCCESS", "{result}");
    assert_eq!(result["result"], Value::Bool(true), "{result}");
    assert_eq!(
        site.encoding_status(ENC720).await.as_deref(),
        Some("success")
    );
    w2.until(Duration::from_secs(10), "unacked empty", || async move {
        (site_ref.unacked() == 0).then_some(())
    })
    .await;
    eprintln!(
        "kill -9: re-run started {:.1} s after the kill",
        rerun_after.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_exits_64_naming_the_field() {
    let site = Site::upload_example().await;
    for (opts, field) in [
        (
            WorkerOpts {
                concurrency: 0,
                ..WorkerOpts::default()
            },
            "concurrency",
        ),
        (
            WorkerOpts {
                lease_secs: 1,
                ..WorkerOpts::default()
            },
            "lease_secs",
        ),
        (
            WorkerOpts {
                extra_args: vec!["--ffmpeg-nice".into(), "40".into()],
                ..WorkerOpts::default()
            },
            "ffmpeg_nice",
        ),
    ] {
        let http = format!("127.0.0.1:{}", support::worker::free_port())
            .parse()
            .unwrap();
        let out = worker_command(&site, &opts, "e2e-config@test", http)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("run the worker");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{field}: {stderr}");
        assert!(stderr.contains(field), "{field} not named: {stderr}");
    }
}
