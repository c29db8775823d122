//! Fault case 14 (issue 17, item 4): deliveries a worker still has the bytes of are never
//! dropped at shutdown. Three ETA tasks are held; Redis is SIGKILLed and restarted empty (no
//! persistence); then SIGTERM. Every one is back in the queue exactly once — re-published from
//! the worker's own bytes when the bookkeeping is gone, or moved back once a renewal has held it
//! again — and `unacked` is empty.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use mediacms_worker::celery::envelope;
use mediacms_worker::celery::message::OutgoingTask;
use serde_json::{json, Map};
use support::db::TestDb;
use support::fault::{lpush, Case, Endpoints, RedisServer, WorkerProc, QUEUE};

/// An `encode_media` due in an hour: held in `unacked` until then.
fn eta_task(n: i32) -> Vec<u8> {
    let mut t = OutgoingTask::new(
        "encode_media",
        QUEUE,
        vec![json!("T"), json!(23), json!(n)],
        Map::new(),
    );
    t.eta = Some(Utc::now() + chrono::Duration::hours(1));
    envelope::encode_redis(&t, &uuid::Uuid::new_v4().to_string(), "fault")
}

fn queued_ids(c: &mut redis::Connection) -> Vec<String> {
    let raw: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg(QUEUE)
        .arg(0)
        .arg(-1)
        .query(c)
        .unwrap();
    raw.iter()
        .map(|r| envelope::decode_redis(r).unwrap().id)
        .collect()
}

/// Hold three ETA tasks, restart Redis empty, optionally wait for the renewal that holds them
/// again, SIGTERM: all three back once.
fn round(db: &TestDb, dir: &std::path::Path, lease: &str, wait_rehold: bool) {
    let mut redis = RedisServer::start();
    let ep = Endpoints::in_dir(&redis.url(1), db.config(), dir);
    let log = dir.join(format!("w-{lease}.log"));
    let mut w = WorkerProc::spawn(&ep, &log, &["--lease-secs", lease], &[]);
    w.wait_consuming();
    let mut c = redis.conn(1);
    let sent: BTreeSet<String> = (1..=3)
        .map(|n| {
            let raw = eta_task(900 + n);
            lpush(&mut c, QUEUE, &raw);
            envelope::decode_redis(&raw).unwrap().id
        })
        .collect();
    support::fault::wait_until(Duration::from_secs(30), "3 held", || {
        let n: i64 = redis::cmd("HLEN").arg("unacked").query(&mut c).unwrap();
        (n == 3).then_some(())
    });
    redis.kill();
    redis.up();
    let mut c = redis.conn(1);
    if wait_rehold {
        w.wait_log("held again", Duration::from_secs(30));
    }
    w.sigterm();
    let status = w
        .wait_exit(Duration::from_secs(60))
        .expect("exits after SIGTERM");
    assert!(status.success(), "exit {status:?}\n{}", w.log_tail());
    let back = queued_ids(&mut c);
    let unique: BTreeSet<String> = back.iter().cloned().collect();
    assert_eq!(
        back.len(),
        3,
        "lease {lease}: all back, none twice: {back:?}\n{}",
        w.log_tail()
    );
    assert_eq!(unique, sent, "lease {lease}: the same three tasks");
    let held: i64 = redis::cmd("HLEN").arg("unacked").query(&mut c).unwrap();
    assert_eq!(held, 0, "nothing left held");
    assert!(!w.log_text().contains("requeue failed"), "{}", w.log_tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_eta_tasks_survive_a_redis_restart_then_sigterm() {
    let case = Case::new("shutdown_requeues_after_redis_restart");
    let db = TestDb::with_upload_example().await;
    let dir = tempfile::tempdir().unwrap();
    // Long lease: SIGTERM comes before any renewal noticed, so the requeue re-publishes from
    // the worker's bytes. Short lease: a renewal holds them again first, the requeue moves them.
    round(&db, dir.path(), "60", false);
    round(&db, dir.path(), "2", true);
    case.survived();
}
