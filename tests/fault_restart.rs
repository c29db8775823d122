//! Fault case 2: the worker's own Redis and Postgres are crashed and restarted while an encode
//! runs (private servers: the shared ones are never touched). The worker must reconnect, the
//! task must finish or be retried (Encoding `success`, result SUCCESS, delivery acked), and the
//! same process must still serve a next task.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Map};
use support::fault::{
    envelope_of, lpush, result_doc, script, task_id, wait_until, Case, Endpoints, PgCluster,
    RedisServer, WorkerProc, QUEUE,
};
use support::media::{clip, ClipSpec};

const UID: &str = "41905ce2087146cdba79c28a24c33a9a";
const DB: &str = "fault_restart";

/// ffmpeg wrapper: every encode (libx264) is logged to `marks` and held 6 s before it starts,
/// so a restart reliably lands mid-task.
fn slow_ffmpeg(dir: &Path) -> String {
    let path = dir.join("slow-ffmpeg.sh");
    let marks = dir.join("marks");
    script(
        &path,
        &format!(
            "#!/bin/sh\ncase \"$*\" in *libx264*) echo $$ >> {m}; sleep 6;; esac\nexec ffmpeg \"$@\"\n",
            m = marks.display()
        ),
    );
    path.display().to_string()
}

fn marks(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("marks"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn encode(profile: i32, encoding: i32) -> Vec<u8> {
    let mut kw = Map::new();
    kw.insert("force".into(), json!(true));
    envelope_of(
        "encode_media",
        vec![json!("2SJorQ1Qe"), json!(profile), json!(encoding)],
        kw,
        0,
    )
}

fn status(pg: &PgCluster, id: i32) -> String {
    pg.query(
        DB,
        &format!("SELECT status FROM files_encoding WHERE id = {id}"),
    )
    .join("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_and_postgres_restarts_mid_encode_lose_nothing() {
    let case = Case::new("restart_redis_and_postgres");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("media");
    let originals = root.join("original/user/refuser");
    std::fs::create_dir_all(&originals).unwrap();
    let made = clip(
        &originals,
        &ClipSpec {
            width: 640,
            height: 360,
            seconds: 2.0,
            ..ClipSpec::default()
        },
    );
    std::fs::rename(made, originals.join(format!("{UID}.reference_720p.mp4"))).unwrap();
    let mut redis = RedisServer::start();
    let mut pg = PgCluster::start();
    pg.upload_example_db(DB, &root);
    let ep = Endpoints {
        redis_url: redis.url(1),
        pg: pg.config(DB),
        media_root: root.clone(),
        temp_dir: dir.path().join("tmp"),
    };
    let wrapper = slow_ffmpeg(dir.path());
    let log = dir.path().join("worker.log");
    let mut w = WorkerProc::spawn(
        &ep,
        &log,
        &["--lease-secs", "10", "--celery-soft-time-limit", "120"],
        &[("FFMPEG_COMMAND", wrapper.as_str())],
    );
    w.wait_consuming();

    // 1. Redis dies (every key lost: no persistence) while Encoding 1 runs.
    let a = encode(23, 1);
    lpush(&mut redis.conn(1), QUEUE, &a);
    wait_until(Duration::from_secs(30), "encode A started", || {
        (marks(dir.path()) >= 1).then_some(())
    });
    redis.kill();
    std::thread::sleep(Duration::from_secs(2));
    redis.up();
    let mut r = redis.conn(1);
    let doc = wait_until(
        Duration::from_secs(90),
        "result of A after the Redis restart",
        || {
            assert!(w.alive(), "worker died\n{}", w.log_tail());
            result_doc(&mut r, &task_id(&a))
        },
    );
    assert_eq!(doc["status"], "SUCCESS", "{doc}");
    assert_eq!(doc["result"], json!(true), "{doc}");
    assert_eq!(status(&pg, 1), "success");

    // 2. Postgres dies (immediate stop: every connection cut) while Encoding 2 runs.
    let b = encode(2, 2);
    lpush(&mut r, QUEUE, &b);
    let before = marks(dir.path());
    wait_until(Duration::from_secs(30), "encode B started", || {
        (marks(dir.path()) > before).then_some(())
    });
    pg.crash();
    // Down past the held 6 s, so the encode's own progress/success writes meet the outage.
    std::thread::sleep(Duration::from_secs(9));
    pg.up();
    let doc = wait_until(
        Duration::from_secs(120),
        "result of B after the Postgres restart",
        || {
            assert!(w.alive(), "worker died\n{}", w.log_tail());
            result_doc(&mut r, &task_id(&b))
        },
    );
    assert_eq!(doc["status"], "SUCCESS", "{doc}\n{}", w.log_tail());
    assert_eq!(doc["result"], json!(true), "{doc}");
    assert_eq!(status(&pg, 2), "success");

    // 3. The same process serves a next task, and nothing is left held.
    let cheap = envelope_of(
        "encode_media",
        vec![json!("NoSuchTok"), json!(23), json!(777_777)],
        Map::new(),
        0,
    );
    lpush(&mut r, QUEUE, &cheap);
    let doc = wait_until(Duration::from_secs(60), "the next task's result", || {
        result_doc(&mut r, &task_id(&cheap))
    });
    assert_eq!(doc["status"], "SUCCESS");
    assert!(w.alive());
    let held: Vec<String> = redis::cmd("HVALS").arg("unacked").query(&mut r).unwrap();
    for id in [task_id(&a), task_id(&b), task_id(&cheap)] {
        assert!(!held.iter().any(|h| h.contains(&id)), "{id} still held");
    }
    let finals = pg.query(
        DB,
        "SELECT count(*) FROM files_encoding WHERE media_id = 1 AND profile_id IN (23, 2)",
    );
    assert_eq!(finals, vec!["2"], "exactly one Encoding per profile");
    // Both outages moved the reconnect counters (they stayed 0 before issue 17). The sampler
    // syncs them every 2 s.
    wait_until(Duration::from_secs(30), "reconnect counters", || {
        let broker = w.metric("broker_reconnects_total");
        let db = w.metric("db_reconnects_total");
        (broker >= 1.0 && db >= 1.0).then_some(())
    });
    let text = w.log_text();
    let count = |needle: &str| text.matches(needle).count();
    println!(
        "restart: redis reconnect warnings {}, transient-requeues {}, encodes started {}",
        count("redis connect failed") + count("fetch failed"),
        count("transient error; requeueing"),
        marks(dir.path())
    );
    case.survived();
}
