//! Fault case 14 (issue 17, item 4): deliveries a worker still has the bytes of are never
//! dropped at shutdown. Three ETA tasks are held; Redis is SIGKILLed and restarted empty (no
//! persistence); then SIGTERM. Every one is back in the queue exactly once — re-published from
//! the worker's own bytes when the bookkeeping is gone, or moved back once a renewal has held it
//! again — and `unacked` is empty. Fault case 16: a double SIGTERM mid-encode requeues the
//! task and leaves its Encoding `pending`, not `running`.

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

/// Fault case 16: a double SIGTERM mid-encode aborts the job; the delivery is requeued and the
/// Encoding goes back to `pending` instead of staying `running` with nothing running it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_sigterm_mid_encode_requeues_and_leaves_the_row_pending() {
    let case = Case::new("double_sigterm_row_pending");
    let db = TestDb::with_upload_example().await;
    let redis = support::redis::TestRedis::claim();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("media");
    db.rebase_media_root(&root).await;
    let (rel, info) = support::media::small_upload(&root);
    let c = db.client().await;
    support::fault::insert_media_and_encoding(&c, 4100, "Dbl4100", &rel, &info, 1, 23).await;
    let wrapper = dir.path().join("ffmpeg.sh");
    support::fault::script(
        &wrapper,
        "#!/bin/sh\ncase \"$*\" in *libx264*) sleep 60;; esac\nexec ffmpeg \"$@\"\n",
    );
    let ep = Endpoints::in_dir(&redis.url, db.config(), dir.path());
    let env = [("FFMPEG_COMMAND", wrapper.to_str().unwrap())];
    let mut w = WorkerProc::spawn(&ep, &dir.path().join("w.log"), &[], &env);
    w.wait_consuming();
    let mut r = redis.conn();
    let mut kw = Map::new();
    kw.insert("force".into(), json!(true));
    let t = OutgoingTask::new(
        "encode_media",
        QUEUE,
        vec![json!("Dbl4100"), json!(23), json!(4100)],
        kw,
    );
    lpush(
        &mut r,
        QUEUE,
        &envelope::encode_redis(&t, "dbl-tag", "fault"),
    );
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while support::fault::encoding_row(&c, 4100)
        .await
        .map(|r| r.0)
        .as_deref()
        != Some("running")
    {
        assert!(
            std::time::Instant::now() < until,
            "never running\n{}",
            w.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    w.sigterm();
    w.wait_log("shutdown: intake stopped", Duration::from_secs(30));
    w.sigterm();
    let status = w
        .wait_exit(Duration::from_secs(60))
        .expect("exits after the second SIGTERM");
    assert!(status.success(), "exit {status:?}\n{}", w.log_tail());
    let row = support::fault::encoding_row(&c, 4100).await.map(|r| r.0);
    assert_eq!(row.as_deref(), Some("pending"), "\n{}", w.log_tail());
    let back = queued_ids(&mut r);
    assert_eq!(back, vec![t.id.clone()], "requeued once");
    let held: i64 = redis::cmd("HLEN").arg("unacked").query(&mut r).unwrap();
    assert_eq!(held, 0);
    case.survived();
}
