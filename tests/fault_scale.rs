//! Fault case 6: scale-out. Three real worker processes on one private Redis DB consume 100
//! cheap tasks of mixed priority (encode_media for an Encoding that does not exist: one SQL
//! read, result `false`). Every task is finalised exactly once (100 SUCCESS result documents,
//! each id started once, `unacked` empty) and priorities are respected per worker.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Map, Value};
use support::db::TestDb;
use support::fault::{
    envelope_of, list_for, lpush, task_id, wait_until, Case, Endpoints, WorkerProc,
};
use support::redis::TestRedis;

const WORKERS: usize = 3;
const TASKS: usize = 100;
const PRIORITIES: [u8; 4] = [0, 3, 6, 9];

/// `(timestamp, task id)` of every "Task …[id] received" (= started) line in a JSON log.
fn starts(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Task encode_media[") && m.ends_with("received"))
        })
        .map(|v| {
            (
                v["timestamp"].as_str().unwrap().to_owned(),
                v["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_finalise_every_task_once_in_priority_order() {
    let case = Case::new("scale_out_3x100");
    let redis = TestRedis::claim();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let ep = Endpoints::in_dir(&redis.url, db.config(), dir.path());
    let mut r = redis.conn();
    let mut priority_of = HashMap::new();
    for i in 0..TASKS {
        let p = PRIORITIES[i % PRIORITIES.len()];
        let raw = envelope_of(
            "encode_media",
            vec![json!("NoSuchTok"), json!(23), json!(900_000 + i)],
            Map::new(),
            p,
        );
        priority_of.insert(task_id(&raw), p);
        lpush(&mut r, &list_for(p), &raw);
    }

    let mut workers: Vec<WorkerProc> = (0..WORKERS)
        .map(|n| {
            let log = dir.path().join(format!("worker-{n}.log"));
            let host = format!("scale{n}@test");
            let args = [
                "-c",
                "1",
                "-n",
                &host,
                "--log-format",
                "json",
                "--lease-secs",
                "10",
            ];
            WorkerProc::spawn(&ep, &log, &args, &[])
        })
        .collect();
    let ids: Vec<String> = priority_of.keys().cloned().collect();
    wait_until(Duration::from_secs(120), "100 results", || {
        for w in workers.iter_mut() {
            assert!(w.alive(), "a worker died\n{}", w.log_tail());
        }
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("celery-task-meta-*")
            .query(&mut r)
            .unwrap();
        (keys.len() >= TASKS).then_some(())
    });
    for w in &workers {
        w.sigterm();
    }
    for w in workers.iter_mut() {
        let status = w
            .wait_exit(Duration::from_secs(30))
            .expect("worker exits on SIGTERM");
        assert!(status.success(), "{}", w.log_tail());
    }

    // Exactly once: 100 result documents, all SUCCESS false, nothing held, nothing queued.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("celery-task-meta-*")
        .query(&mut r)
        .unwrap();
    assert_eq!(keys.len(), TASKS);
    for id in &ids {
        let doc = support::fault::result_doc(&mut r, id).unwrap_or_else(|| panic!("{id}"));
        assert_eq!(
            (doc["status"].clone(), doc["result"].clone()),
            (json!("SUCCESS"), json!(false))
        );
    }
    let unacked: usize = redis::cmd("HLEN").arg("unacked").query(&mut r).unwrap();
    assert_eq!(unacked, 0, "unacked must be empty");
    for p in PRIORITIES {
        let left: usize = redis::cmd("LLEN").arg(list_for(p)).query(&mut r).unwrap();
        assert_eq!(left, 0, "priority {p} list drained");
    }

    let per_worker: Vec<Vec<(String, String)>> =
        workers.iter().map(|w| starts(&w.log_text())).collect();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for s in per_worker.iter().flatten() {
        *seen.entry(s.1.as_str()).or_default() += 1;
    }
    assert_eq!(seen.len(), TASKS, "every task started");
    assert!(
        seen.values().all(|n| *n == 1),
        "a task started twice: {seen:?}"
    );
    let shares: Vec<usize> = per_worker.iter().map(Vec::len).collect();
    println!("scale: tasks per worker {shares:?}");

    // Per worker (prefetch 1, all messages present at start): priorities never go back up.
    for (n, starts) in per_worker.iter().enumerate() {
        let prios: Vec<u8> = starts.iter().map(|(_, id)| priority_of[id]).collect();
        assert!(
            prios.windows(2).all(|w| w[0] <= w[1]),
            "worker {n} started out of priority order: {prios:?}"
        );
    }
    // Across workers: a lower priority may start before the last higher-priority one only on
    // the other workers' single prefetched delivery.
    let mut all: Vec<(String, u8)> = per_worker
        .iter()
        .flatten()
        .map(|(ts, id)| (ts.clone(), priority_of[id]))
        .collect();
    all.sort();
    for hi in PRIORITIES {
        let last_hi = all.iter().rposition(|(_, p)| *p == hi).unwrap();
        let early = all[..last_hi].iter().filter(|(_, p)| *p > hi).count();
        assert!(
            early < WORKERS,
            "{early} tasks below priority {hi} started before its last task"
        );
    }
    case.survived();
}
