//! Fault cases 12–13 (issue 17, items 2–3): dependencies that are down at start or go down
//! later. Redis down for 30 s at start: the worker waits (a log line per attempt, `/healthz`
//! alive, `/readyz` not ready) and serves within 5 s of Redis returning. Postgres down: at start
//! the worker waits for it; later, intake pauses — no task is fetched while it is down, the
//! queue is untouched — and resumes when it returns (time-to-resume logged and measured).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mediacms_worker::telemetry::http::probe;
use support::db::TestDb;
use support::fault::{
    encode_task, envelope_of, lpush, result_doc, task_id, wait_until, Case, Endpoints, PgCluster,
    RedisServer, WorkerProc, QUEUE,
};
use support::redis::TestRedis;

const DB: &str = "fault_startup";

fn status(addr: SocketAddr, path: &str) -> u16 {
    probe(addr, path, Duration::from_secs(5)).map_or(0, |(s, _)| s)
}

/// A cheap task: `encode_media` of an Encoding that does not exist (one SQL read, SUCCESS
/// `false`) — it needs Postgres, nothing else.
fn cheap_task(encoding: i32) -> Vec<u8> {
    let t = encode_task("NoSuchMedia", 23, encoding);
    let kw = t.kwargs.clone();
    envelope_of("encode_media", t.args.clone(), kw, 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_30s_at_start_then_serving_within_5s_of_its_return() {
    let case = Case::new("startup_waits_for_redis_30s");
    let db = TestDb::with_upload_example().await;
    let mut redis = RedisServer::start();
    redis.kill();
    let dir = tempfile::tempdir().unwrap();
    let ep = Endpoints::in_dir(&redis.url(1), db.config(), dir.path());
    let mut w = WorkerProc::spawn(&ep, &dir.path().join("w.log"), &[], &[]);
    let addr = w.http_addr();
    w.wait_log("waiting for the broker (attempt 1", Duration::from_secs(30));
    let down = Instant::now();
    assert_eq!(status(addr, "/healthz"), 200, "alive while waiting");
    assert_eq!(status(addr, "/readyz"), 503, "not ready while waiting");
    // The outage itself: 30 s (checked alive along the way, and at its end).
    while down.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_secs(5));
        assert!(w.alive(), "the worker gave up\n{}", w.log_tail());
    }
    assert_eq!(
        status(addr, "/healthz"),
        200,
        "still alive after 30 s of waiting"
    );
    let attempts = w.log_text().matches("waiting for the broker").count();
    redis.up();
    let back = Instant::now();
    w.wait_log("consuming", Duration::from_secs(30));
    let took = back.elapsed();
    println!("startup_waits_for_redis_30s: {attempts} attempts logged; consuming {took:.2?} after Redis returned");
    assert!(
        took <= Duration::from_secs(5),
        "serving {took:?} after Redis returned"
    );
    assert!(attempts >= 10, "one log line per attempt ({attempts})");
    let raw = cheap_task(424242);
    lpush(&mut redis.conn(1), QUEUE, &raw);
    let id = task_id(&raw);
    wait_until(Duration::from_secs(60), "the task result", || {
        result_doc(&mut redis.conn(1), &id)
    });
    wait_until(Duration::from_secs(30), "/readyz 200", || {
        (status(addr, "/readyz") == 200).then_some(())
    });
    case.survived();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_follows_postgres_readiness_the_queue_is_untouched_while_it_is_down() {
    let case = Case::new("intake_follows_postgres_readiness");
    let redis = TestRedis::claim();
    let dir = tempfile::tempdir().unwrap();
    let mut pg = PgCluster::start();
    pg.upload_example_db(DB, &dir.path().join("media"));
    let ep = Endpoints::in_dir(&redis.url, pg.config(DB), dir.path());
    // Down at start: the worker waits for it.
    pg.crash();
    let mut w = WorkerProc::spawn(&ep, &dir.path().join("w.log"), &[], &[]);
    let addr = w.http_addr();
    w.wait_log("waiting for Postgres (attempt 2", Duration::from_secs(60));
    assert_eq!(status(addr, "/healthz"), 200);
    assert_eq!(status(addr, "/readyz"), 503);
    pg.up();
    w.wait_consuming();

    // Down while serving: intake pauses before anything is fetched.
    pg.crash();
    w.wait_log("intake paused", Duration::from_secs(30));
    let mut r = redis.conn();
    let raw = cheap_task(434343);
    lpush(&mut r, QUEUE, &raw);
    // A bounded look at "nothing happens" (absence cannot be waited for).
    std::thread::sleep(Duration::from_secs(6));
    let queued: i64 = redis::cmd("LLEN").arg(QUEUE).query(&mut r).unwrap();
    let held: i64 = redis::cmd("HLEN").arg("unacked").query(&mut r).unwrap();
    assert_eq!((queued, held), (1, 0), "fetched while Postgres was down");
    let started = w.log_text().contains("Task encode_media[");
    assert!(!started, "a task started while Postgres was down");
    assert_eq!(status(addr, "/readyz"), 503);

    pg.up();
    let back = Instant::now();
    w.wait_log("intake resumed", Duration::from_secs(30));
    let resumed = back.elapsed();
    let id = task_id(&raw);
    wait_until(Duration::from_secs(60), "the task result", || {
        result_doc(&mut r, &id)
    });
    let served = back.elapsed();
    println!(
        "intake_follows_postgres_readiness: intake resumed {resumed:.2?} and the task was served {served:.2?} after Postgres returned"
    );
    assert!(
        resumed <= Duration::from_secs(10),
        "resumed {resumed:?} after Postgres returned"
    );
    case.survived();
}
