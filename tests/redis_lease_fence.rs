//! The Redis lease as a fence (issue 17, item 1) against a real Redis: a holder that stalled
//! past its lease learns it at its next renewal or finish claim, and can neither ack nor requeue
//! (nor dead-letter) the new holder's delivery, although both share kombu's delivery tag; a
//! worker never restores its own holding; a holding whose bookkeeping Redis lost is held again
//! (renewal) or put back (requeue) from the worker's own bytes.

mod support;

use std::time::Duration;

use mediacms_worker::broker::redis::{RedisBroker, RedisBrokerOptions};
use mediacms_worker::broker::{Broker, BrokerError, Delivery};
use mediacms_worker::celery::message::OutgoingTask;
use serde_json::{Map, Value};
use support::redis::TestRedis;

const Q: &str = "long_tasks";

async fn broker(r: &TestRedis, lease: Duration) -> RedisBroker {
    let opts = RedisBrokerOptions {
        lease,
        dead_letter_key: "mediacms-worker.dead-letter".into(),
        ..RedisBrokerOptions::default()
    };
    RedisBroker::connect(&r.url, opts).await.unwrap()
}

async fn publish(b: &RedisBroker, arg: &str) {
    let t = OutgoingTask::new("create_hls", Q, vec![Value::from(arg)], Map::new());
    b.publish(&t).await.unwrap();
}

async fn fetch(b: &RedisBroker) -> Delivery {
    let qs = [Q.to_owned()];
    b.fetch(&qs, Duration::from_millis(500))
        .await
        .unwrap()
        .expect("a delivery")
}

fn held(d: &Delivery) -> [(String, String); 1] {
    [(d.tag.clone(), d.lease.clone())]
}

fn count(c: &mut redis::Connection, cmd: &str, key: &str, arg: Option<&str>) -> i64 {
    let mut k = redis::cmd(cmd);
    k.arg(key);
    if let Some(a) = arg {
        k.arg(a);
    }
    k.query(c).unwrap()
}

fn lost<T: std::fmt::Debug>(r: Result<T, BrokerError>) -> bool {
    matches!(r, Err(BrokerError::LeaseLost(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_runs_twice_after_a_stall_past_the_lease() {
    let r = TestRedis::claim();
    let lease = Duration::from_millis(800);
    let a = broker(&r, lease).await;
    let b = broker(&r, lease).await;
    publish(&a, "STALL").await;
    let first = fetch(&a).await;
    tokio::time::sleep(lease + Duration::from_millis(300)).await; // a "stalls"
    assert_eq!(
        a.restore_expired().await.unwrap(),
        0,
        "never its own holding"
    );
    assert_eq!(b.restore_expired().await.unwrap(), 1);
    let second = fetch(&b).await;
    assert_eq!(second.tag, first.tag, "kombu keeps the tag");
    assert_ne!(second.lease, first.lease);

    // a wakes up: every way of touching the delivery is fenced off.
    assert_eq!(
        a.renew_leases(&held(&first)).await.unwrap(),
        vec![first.lease.clone()]
    );
    assert!(!a.claim_finish(&first).await.unwrap());
    assert!(lost(a.ack(&first).await));
    assert!(lost(a.requeue(&first).await));
    assert!(lost(a.dead_letter(&first, "test").await));
    let mut c = r.conn();
    assert_eq!(
        count(&mut c, "HEXISTS", "unacked", Some(&first.tag)),
        1,
        "b's entry intact"
    );
    assert_eq!(count(&mut c, "LLEN", Q, None), 0, "nothing re-pushed");

    // b finishes normally; a finish claim keeps every restorer away meanwhile.
    assert!(b.renew_leases(&held(&second)).await.unwrap().is_empty());
    assert!(b.claim_finish(&second).await.unwrap());
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    assert_eq!(
        a.restore_expired().await.unwrap(),
        0,
        "finishing: not restored"
    );
    b.ack(&second).await.unwrap();
    assert_eq!(count(&mut c, "HLEN", "unacked", None), 0);
    assert_eq!(count(&mut c, "ZCARD", "unacked_index", None), 0);
    assert_eq!(count(&mut c, "ZCARD", "mediacms-worker.leases", None), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_bookkeeping_is_held_again_or_requeued_from_our_bytes() {
    let r = TestRedis::claim();
    let a = broker(&r, Duration::from_secs(30)).await;
    publish(&a, "ONE").await;
    publish(&a, "TWO").await;
    let one = fetch(&a).await;
    let two = fetch(&a).await;
    let mut c = r.conn();
    // What a Redis restart without persistence leaves: nothing at all.
    for t in [&one.tag, &two.tag] {
        let _: () = redis::pipe()
            .cmd("HDEL")
            .arg("unacked")
            .arg(t)
            .ignore()
            .cmd("ZREM")
            .arg("unacked_index")
            .arg(t)
            .ignore()
            .cmd("ZREM")
            .arg("mediacms-worker.leases")
            .arg(t)
            .ignore()
            .cmd("DEL")
            .arg(format!("mediacms-worker.holder.{t}"))
            .ignore()
            .query(&mut c)
            .unwrap();
    }
    assert!(a.renew_leases(&held(&one)).await.unwrap().is_empty());
    assert_eq!(
        count(&mut c, "HEXISTS", "unacked", Some(&one.tag)),
        1,
        "held again"
    );
    a.requeue(&two).await.unwrap();
    let queued: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg(Q)
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .unwrap();
    assert_eq!(queued.len(), 1, "re-published from our bytes");
    let back: Value = serde_json::from_slice(&queued[0]).unwrap();
    assert_eq!(back["properties"]["delivery_tag"], two.tag.as_str());
    assert_eq!(back["headers"]["redelivered"], true);
    // A second requeue of the same holding is a no-op (the tombstone), never a duplicate.
    assert!(lost(a.requeue(&two).await));
    assert_eq!(count(&mut c, "LLEN", Q, None), 1);
    a.ack(&one).await.unwrap();
    assert_eq!(count(&mut c, "HLEN", "unacked", None), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_finish_ends_the_window_so_a_crash_after_the_writes_is_restored_after_the_lease() {
    let r = TestRedis::claim();
    let lease = Duration::from_millis(800);
    let a = broker(&r, lease).await;
    let b = broker(&r, lease).await;
    publish(&a, "CHUNK").await;
    let d = fetch(&a).await;
    assert!(a.claim_finish(&d).await.unwrap());
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    assert_eq!(
        b.restore_expired().await.unwrap(),
        0,
        "inside the finishing window"
    );
    assert!(a.release_finish(&d).await.unwrap());
    drop(a); // dies during the concatenation
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    assert_eq!(
        b.restore_expired().await.unwrap(),
        1,
        "restored after the lease"
    );
}
