//! Playable-first under a backlog (decode-once, issue 18) against real Postgres, Redis and
//! ffmpeg: a ladder that has made its own media's first playable renditions encodes another
//! waiting media's minimum rungs before its own remaining ones; the rows it took end once and
//! as the one-by-one ending leaves them, their own messages end without encoding (never twice),
//! and a ladder whose lease is lost writes nothing of them until the same task runs again.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use mediacms_worker::mediacms::store::LADDER_NOTE_PREFIX;
use mediacms_worker::tasks::encode_media::EncodeMedia;
use mediacms_worker::tasks::{Fence, FinishGate, Outcome};
use mediacms_worker::telemetry::Metrics;
use serde_json::json;
use support::db::TestDb;
use support::env::{job_ctx, real_message, run_task, spawned, task_env, EnvOptions, ReferenceSite};
use support::fault::{encode_task, insert_media_and_encoding};
use support::media::{clip, ClipSpec};
use support::redis::TestRedis;

/// The second upload waiting behind media 1: its 144, 240 and 360 Encodings.
const OTHER: i32 = 300;
const OTHER_TOKEN: &str = "PlayFirst300";
/// (Encoding id, profile id) of the other media's rows.
const OTHER_ROWS: [(i32, i32); 3] = [(300, 23), (301, 2), (302, 3)];

struct Rig {
    db: TestDb,
    redis: TestRedis,
    _root: tempfile::TempDir,
    handler: EncodeMedia,
    metrics: Arc<Metrics>,
}

/// Media 1 of the reference upload (Encodings 1..5 video, 6 its GIF) and a second media with
/// pending 144/240/360 rows, both on one small 8 s clip, and a decode-once handler.
async fn rig() -> Rig {
    rig_with(8).await
}

/// `other_secs`: the other media's duration (its rows and media_info say so).
async fn rig_with(other_secs: i32) -> Rig {
    let site = ReferenceSite::new().await;
    let spec = ClipSpec {
        width: 640,
        height: 360,
        fps: 30,
        seconds: 8.0,
        ..ClipSpec::default()
    };
    site.place_original(&clip(site.root.path(), &spec));
    let ReferenceSite { db, redis, root } = site;
    let c = db.client().await;
    let row = c
        .query_one(
            "SELECT media_file, media_info FROM files_media WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    let (file, info): (String, String) = (row.get(0), row.get(1));
    let mut info: serde_json::Value = serde_json::from_str(&info).unwrap();
    info["video_duration"] = json!(f64::from(other_secs));
    let info = info.to_string();
    let (p, secs) = (OTHER_ROWS[0].1, other_secs);
    insert_media_and_encoding(&c, OTHER, OTHER_TOKEN, &file, &info, secs, p).await;
    for (id, profile) in &OTHER_ROWS[1..] {
        c.execute(
            "UPDATE fault_enc SET id = $1, profile_id = $2",
            &[id, profile],
        )
        .await
        .unwrap();
        c.batch_execute("INSERT INTO files_encoding SELECT * FROM fault_enc")
            .await
            .unwrap();
    }
    let opts = EnvOptions {
        decode_once: true,
        ..EnvOptions::default()
    };
    let tmp = root.path().join("tmp");
    let env = Arc::new(task_env(&db.config(), root.path(), &tmp, opts).await);
    let metrics = env.metrics.clone();
    Rig {
        db,
        redis,
        _root: root,
        handler: EncodeMedia { env },
        metrics,
    }
}

/// (status, task_id, logs, commands, media_file) of an Encoding.
async fn row(db: &TestDb, id: i32) -> (String, String, String, String, String) {
    let r = db
        .client()
        .await
        .query_one(
            "SELECT status, task_id, logs, commands, media_file FROM files_encoding WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
}

/// Encoding ids of finished rows, in the order they were last written.
async fn finish_order(db: &TestDb) -> Vec<i32> {
    let rows = db
        .client()
        .await
        .query(
            "SELECT id FROM files_encoding WHERE status = 'success' ORDER BY update_date, id",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

fn files_under(dir: &Path) -> usize {
    walk(dir)
}

fn walk(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                walk(&p)
            } else {
                1
            }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_media_s_first_playable_runs_before_our_remaining_rungs_and_only_once() {
    let rig = rig().await;
    // MediaCMS's order: the 360 message (priority 0) of media 1 comes first.
    let first = real_message("encode_media-3.json");
    let out = run_task(&rig.handler, &first, job_ctx(None), &rig.redis.url).await;
    assert_eq!(out, Outcome::Success(json!(true)));
    // Three processes: media 1's 144+240+gif, the other media's 144+240, media 1's 360–720.
    assert_eq!(spawned(&rig.metrics), 3);
    let order = finish_order(&rig.db).await;
    let pos = |id: i32| order.iter().position(|&x| x == id).unwrap();
    for own_low in [1, 2] {
        for other_low in [300, 301] {
            assert!(pos(own_low) < pos(other_low), "{order:?}");
        }
    }
    for other_low in [300, 301] {
        for own_high in [3, 4, 5] {
            assert!(pos(other_low) < pos(own_high), "{order:?}");
        }
    }
    for (id, _) in &OTHER_ROWS[..2] {
        let (status, task_id, logs, commands, file) = row(&rig.db, *id).await;
        assert_eq!(status, "success", "row {id}");
        assert_eq!(task_id, first.id, "row {id}: claimed by the running task");
        assert!(
            logs.starts_with(&format!("{LADDER_NOTE_PREFIX}: playable first")),
            "{logs}"
        );
        // Its own MediaCMS argv, not the shared process's.
        assert!(
            commands.contains("'-filter:v'") && !commands.contains("-filter_complex"),
            "{commands}"
        );
        assert!(file.starts_with("encoded/"), "{file}");
    }
    assert_eq!(row(&rig.db, 302).await.0, "pending", "not a minimum rung");

    // The other media's own messages: the claimed rows end without a process (never twice).
    let media_files = files_under(&rig._root.path().join("encoded"));
    for (id, profile) in &OTHER_ROWS[..2] {
        let t = encode_task(OTHER_TOKEN, *profile, *id);
        assert_eq!(
            run_task(&rig.handler, &t, job_ctx(None), &rig.redis.url).await,
            Outcome::Success(json!(true))
        );
    }
    assert_eq!(spawned(&rig.metrics), 3);
    assert_eq!(files_under(&rig._root.path().join("encoded")), media_files);
    // Its 360 is its own to run, one by one (nothing left to share), once.
    let (id, profile) = OTHER_ROWS[2];
    let t = encode_task(OTHER_TOKEN, profile, id);
    assert_eq!(
        run_task(&rig.handler, &t, job_ctx(None), &rig.redis.url).await,
        Outcome::Success(json!(true))
    );
    assert_eq!(spawned(&rig.metrics), 4);
    assert_eq!(row(&rig.db, 302).await.0, "success");
    // Media 1's other messages (144, 240, 480, 720, GIF) end without a process too.
    for n in [1, 2, 4, 5, 6] {
        let t = real_message(&format!("encode_media-{n}.json"));
        assert_eq!(
            run_task(&rig.handler, &t, job_ctx(None), &rig.redis.url).await,
            Outcome::Success(json!(true)),
            "message {n}"
        );
    }
    assert_eq!(spawned(&rig.metrics), 4);
}

/// Grants the first `grant` fence claims, refuses the rest (the lease went to another worker).
struct Gate {
    grant: usize,
    asked: AtomicUsize,
}

#[async_trait]
impl FinishGate for Gate {
    async fn claim(&self) -> bool {
        self.asked.fetch_add(1, Ordering::SeqCst) < self.grant
    }
    async fn release(&self) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_writes_nothing_of_the_other_media_and_the_re_run_takes_it_back() {
    let rig = rig().await;
    let first = real_message("encode_media-3.json");
    // The first process's writes are granted; the lease is gone by the other media's.
    let mut ctx = job_ctx(None);
    ctx.fence = Fence::new(Arc::new(Gate {
        grant: 1,
        asked: AtomicUsize::new(0),
    }));
    assert_eq!(
        run_task(&rig.handler, &first, ctx, &rig.redis.url).await,
        Outcome::Aborted
    );
    for (id, _) in &OTHER_ROWS[..2] {
        let (status, task_id, _, _, file) = row(&rig.db, *id).await;
        assert_eq!(
            (status.as_str(), file.as_str()),
            ("running", ""),
            "row {id}: no output written past the lease"
        );
        assert_eq!(task_id, first.id);
    }
    // The other media's own message meanwhile: the row is claimed, it does not encode it.
    let t = encode_task(OTHER_TOKEN, OTHER_ROWS[0].1, OTHER_ROWS[0].0);
    let before = spawned(&rig.metrics);
    assert_eq!(
        run_task(&rig.handler, &t, job_ctx(None), &rig.redis.url).await,
        Outcome::Success(json!(false))
    );
    assert_eq!(spawned(&rig.metrics), before);
    // The delivery's new holder runs the same task (same id): it takes the rows back and ends
    // each once.
    let out = run_task(&rig.handler, &first, job_ctx(None), &rig.redis.url).await;
    assert_eq!(out, Outcome::Success(json!(true)));
    for id in [1, 2, 3, 4, 5, 6, 300, 301] {
        assert_eq!(row(&rig.db, id).await.0, "success", "row {id}");
    }
}

/// Regression (the differential suite's short_2s clip): a source MediaCMS encodes in two passes
/// cannot share a graph; another media's ladder must leave its rows to their own messages
/// instead of failing them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_pass_media_s_rows_are_left_to_their_own_messages() {
    let rig = rig_with(2).await;
    let first = real_message("encode_media-3.json");
    assert_eq!(
        run_task(&rig.handler, &first, job_ctx(None), &rig.redis.url).await,
        Outcome::Success(json!(true))
    );
    assert_eq!(spawned(&rig.metrics), 2, "media 1's two processes only");
    for (id, _) in OTHER_ROWS {
        assert_eq!(row(&rig.db, id).await.0, "pending", "row {id}");
    }
}
