//! Fault cases 9–11 (issue 17, item 1): a lease is a fence, not a timer. A holder that stalls
//! (SIGSTOP: a paused container or suspended VM) or is cut from Redis (a TCP proxy on loopback)
//! for 2× its lease while its encode runs loses the task to the other worker, and on waking
//! writes nothing: each task's effects — the Encoding's one transition to `success` (a trigger
//! counts them), the one `create_hls` follow-up, the one file in `encoded/` — happen exactly
//! once, every repetition. A lone worker stopped past its lease runs its task once.

mod support;

use std::time::Duration;

use mediacms_worker::celery::envelope;
use mediacms_worker::celery::message::OutgoingTask;
use serde_json::{json, Map};
use support::db::TestDb;
use support::fault::{
    descendants, insert_media_and_encoding, result_doc, script, wait_until, Case, Endpoints,
    WorkerProc,
};
use support::proxy::Proxy;
use support::redis::TestRedis;
use support::worker::files_under;

/// The queue the encodes go to; their `create_hls` follow-ups go to `long_tasks`, which no
/// worker here consumes, so its length counts the follow-ups published.
const TASKS: &str = "fault_lease";
const PROFILE: i32 = 23;
const LEASE_SECS: u64 = 2;
/// The stall: twice the lease.
const STALL: Duration = Duration::from_secs(2 * LEASE_SECS);
const PATIENCE: Duration = Duration::from_secs(120);

fn reps() -> usize {
    std::env::var("FAULT_LEASE_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// A database with a trigger counting each Encoding's transitions to `success`, a media root
/// with one short clip, and the ffmpeg wrapper that records which worker runs each encode.
struct Rig {
    db: TestDb,
    redis: TestRedis,
    dir: tempfile::TempDir,
    info: String,
    rel: String,
}

impl Rig {
    async fn new() -> Rig {
        let db = TestDb::with_upload_example().await;
        let redis = TestRedis::claim();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("media");
        db.rebase_media_root(&root).await;
        let (rel, info) = support::media::small_upload(&root);
        db.client()
            .await
            .batch_execute(
                "CREATE TABLE lease_audit (encoding_id int, at timestamptz DEFAULT now()); \
                 CREATE FUNCTION lease_audit() RETURNS trigger AS $$ BEGIN \
                   IF NEW.status = 'success' AND OLD.status IS DISTINCT FROM 'success' THEN \
                     INSERT INTO lease_audit (encoding_id) VALUES (NEW.id); END IF; \
                   RETURN NEW; END $$ LANGUAGE plpgsql; \
                 CREATE TRIGGER lease_audit AFTER UPDATE ON files_encoding \
                   FOR EACH ROW EXECUTE FUNCTION lease_audit();",
            )
            .await
            .unwrap();
        let wrapper = dir.path().join("ffmpeg.sh");
        // Each encode records its worker's pid, then takes a second before ffmpeg starts, so
        // the stall always lands mid-task.
        script(
            &wrapper,
            &format!(
                "#!/bin/sh\ncase \"$*\" in *libx264*) echo $PPID >> {m}; sleep 1;; esac\nexec ffmpeg \"$@\"\n",
                m = dir.path().join("marks").display()
            ),
        );
        Rig {
            db,
            redis,
            dir,
            info,
            rel,
        }
    }

    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("media")
    }

    /// A worker whose Redis is `redis_url` (the shared one, or a proxy to it).
    fn worker(&self, name: &str, redis_url: &str) -> WorkerProc {
        let ep = Endpoints::in_dir(redis_url, self.db.config(), self.dir.path());
        let wrapper = self.dir.path().join("ffmpeg.sh").display().to_string();
        let lease = LEASE_SECS.to_string();
        let args = ["-Q", TASKS, "-c", "1", "--lease-secs", &lease];
        let env = [("FFMPEG_COMMAND", wrapper.as_str())];
        let log = self.dir.path().join(format!("{name}.log"));
        let mut w = WorkerProc::spawn(&ep, &log, &args, &env);
        w.wait_consuming();
        w
    }

    /// The pid of every encode start so far, in order.
    fn marks(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir.path().join("marks"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Queue `encode_media` for a fresh Media + Encoding `id`; returns the task id.
    async fn publish(&self, id: i32) -> String {
        let token = format!("Lease{id}");
        let c = self.db.client().await;
        insert_media_and_encoding(&c, id, &token, &self.rel, &self.info, 1, PROFILE).await;
        let mut kw = Map::new();
        kw.insert("force".into(), json!(true));
        let args = vec![json!(token), json!(PROFILE), json!(id)];
        let t = OutgoingTask::new("encode_media", TASKS, args, kw);
        let raw = envelope::encode_redis(&t, &uuid::Uuid::new_v4().to_string(), "fault");
        support::fault::lpush(&mut self.redis.conn(), TASKS, &raw);
        t.id
    }

    /// Wait until the task is over everywhere: the row is final, nothing is held or queued,
    /// and every start of it (one per worker that ran it) has finished.
    async fn settled(&self, id: i32, task_id: &str, workers: &[&WorkerProc]) {
        let c = self.db.client().await;
        let mut r = self.redis.conn();
        let started = format!("Task encode_media[{task_id}] received");
        let finished = format!("Task encode_media[{task_id}] finished");
        for _ in 0..(PATIENCE.as_millis() / 100) {
            let row: Option<String> = c
                .query_opt("SELECT status FROM files_encoding WHERE id = $1", &[&id])
                .await
                .unwrap()
                .map(|r| r.get(0));
            let held: i64 = redis::cmd("HLEN").arg("unacked").query(&mut r).unwrap();
            let queued: i64 = redis::cmd("LLEN").arg(TASKS).query(&mut r).unwrap();
            let logs: String = workers.iter().map(|w| w.log_text()).collect();
            let open = logs.matches(&started).count() != logs.matches(&finished).count();
            let doc = result_doc(&mut r, task_id);
            if row.as_deref() == Some("success")
                && held == 0
                && queued == 0
                && !open
                && doc.is_some()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "encode {id} never settled\n{}",
            workers.iter().map(|w| w.log_tail()).collect::<String>()
        );
    }

    /// Exactly one of each effect per Encoding so far (`done` Encodings).
    async fn assert_once(&self, done: usize, what: &str) {
        let c = self.db.client().await;
        let rows = c
            .query(
                "SELECT encoding_id, count(*) FROM lease_audit GROUP BY 1 HAVING count(*) <> 1",
                &[],
            )
            .await
            .unwrap();
        let twice: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
        assert!(
            twice.is_empty(),
            "{what}: Encodings finished more than once: {twice:?}"
        );
        let n: i64 = c
            .query_one("SELECT count(*) FROM lease_audit", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n as usize, done, "{what}: one success per Encoding");
        let mut r = self.redis.conn();
        let hls: i64 = redis::cmd("LLEN").arg("long_tasks").query(&mut r).unwrap();
        assert_eq!(
            hls as usize, done,
            "{what}: one create_hls follow-up per Encoding"
        );
        let encoded = files_under(&self.root().join("encoded"));
        assert_eq!(
            encoded.len(),
            done,
            "{what}: one file per Encoding: {encoded:?}"
        );
        let temp = files_under(&self.dir.path().join("tmp"));
        assert!(temp.is_empty(), "{what}: temp output left: {temp:?}");
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a worker we spawned (or an ffmpeg below it).
    unsafe { libc::kill(pid as i32, sig) };
}

/// SIGSTOP the worker (and, with `tree`, everything below it: a paused container) for `STALL`.
fn stall(pid: u32, tree: bool) {
    let below = if tree { descendants(pid) } else { vec![] };
    signal(pid, libc::SIGSTOP);
    below.iter().for_each(|p| signal(*p, libc::SIGSTOP));
    std::thread::sleep(STALL); // the fault itself, not a synchronisation
    below.iter().for_each(|p| signal(*p, libc::SIGCONT));
    signal(pid, libc::SIGCONT);
}

/// Publish, wait until one of `workers` starts the encode, apply `fault` to that worker's
/// index, then wait until everything settled and check each effect happened once.
async fn one_rep(rig: &Rig, n: usize, workers: &[&WorkerProc], fault: impl Fn(usize, u32)) {
    let id = 1000 + n as i32;
    let before = rig.marks().len();
    let task_id = rig.publish(id).await;
    let holder = wait_until(Duration::from_secs(60), "the encode to start", || {
        rig.marks().get(before).copied()
    });
    let which = workers
        .iter()
        .position(|w| w.pid == holder)
        .expect("a worker's encode");
    fault(which, holder);
    rig.settled(id, &task_id, workers).await;
    rig.assert_once(n + 1, &format!("rep {n}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_sigstopped_for_twice_the_lease_finishes_nothing_twice() {
    let case = Case::new("lease_stall_sigstop_20x");
    let rig = Rig::new().await;
    let (a, b) = (
        rig.worker("a", &rig.redis.url),
        rig.worker("b", &rig.redis.url),
    );
    for n in 0..reps() {
        // Alternate: the worker alone (its ffmpeg finishes meanwhile, so the fence is what
        // stops it), and the whole tree (it wakes mid-encode and is cancelled).
        one_rep(&rig, n, &[&a, &b], |_, pid| stall(pid, n % 2 == 1)).await;
    }
    let lost: usize = [&a, &b]
        .iter()
        .map(|w| w.log_text().matches("lease lost").count())
        .sum();
    println!(
        "lease_stall_sigstop: {} reps, {lost} lease-lost events",
        reps()
    );
    assert!(
        lost > 0,
        "the stalls never cost a lease: the case tested nothing"
    );
    case.survived();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_cut_from_redis_for_twice_the_lease_finishes_nothing_twice() {
    let case = Case::new("lease_cut_from_redis_20x");
    let rig = Rig::new().await;
    let proxies = [Proxy::start(6379), Proxy::start(6379)];
    let url = |p: &Proxy| format!("redis://127.0.0.1:{}/{}", p.port, rig.redis.db);
    let (a, b) = (
        rig.worker("a", &url(&proxies[0])),
        rig.worker("b", &url(&proxies[1])),
    );
    for n in 0..reps() {
        one_rep(&rig, n, &[&a, &b], |which, _| {
            proxies[which].cut();
            std::thread::sleep(STALL); // the partition itself
            proxies[which].heal();
        })
        .await;
    }
    let lost: usize = [&a, &b]
        .iter()
        .map(|w| w.log_text().matches("lease lost").count())
        .sum();
    println!(
        "lease_cut_from_redis: {} reps, {lost} lease-lost events",
        reps()
    );
    assert!(
        lost > 0,
        "the cuts never cost a lease: the case tested nothing"
    );
    case.survived();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_worker_sigstopped_past_its_lease_runs_its_task_once() {
    let case = Case::new("lease_lone_worker_sigstop");
    let rig = Rig::new().await;
    let a = rig.worker("lone", &rig.redis.url);
    let mut passes = 0;
    for n in 0..3 {
        one_rep(&rig, n, &[&a], |_, pid| stall(pid, n % 2 == 1)).await;
        passes = if n == 0 { rig.marks().len() } else { passes };
    }
    // h264 profiles run two ffmpeg passes; a second run of any task would add more.
    assert_eq!(rig.marks().len(), 3 * passes, "each task's ffmpeg ran once");
    assert!(
        !a.log_text().contains("lease lost"),
        "nobody else could take it"
    );
    case.survived();
}
