//! The encode_media handler through the library API against real Postgres, Redis and ffmpeg:
//! a real MediaCMS message on the reference upload, with a forced hardware backend that cannot
//! work here (no GPU) — the encode must still succeed in software and say so in its log.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mediacms_worker::celery::envelope::decode_redis;
use mediacms_worker::config::HwAccel;
use mediacms_worker::tasks::encode_media::EncodeMedia;
use mediacms_worker::tasks::env::TaskEnv;
use mediacms_worker::tasks::{Outcome, TaskHandler};
use serde_json::json;
use support::db::TestDb;
use support::env::{job_ctx, real_message, task_env, EnvOptions};
use support::media::{clip, ClipSpec};
use support::redis::TestRedis;

const UID: &str = "41905ce2087146cdba79c28a24c33a9a";

/// The reference upload's original, regenerated small (the rows' media_info still says 8 s
/// 1280x720, which is what the planner reads).
fn make_original(media_root: &Path) -> PathBuf {
    let dir = media_root.join("original/user/refuser");
    std::fs::create_dir_all(&dir).unwrap();
    let spec = ClipSpec {
        width: 640,
        height: 360,
        fps: 30,
        seconds: 2.0,
        ..ClipSpec::default()
    };
    let made = clip(&dir, &spec);
    let target = dir.join(format!("{UID}.reference_720p.mp4"));
    std::fs::rename(made, &target).unwrap();
    target
}

async fn env(db: &TestDb, redis: &TestRedis, media_root: &Path, hwaccel: HwAccel) -> TaskEnv {
    let opts = EnvOptions {
        hwaccel,
        ..EnvOptions::default()
    };
    let temp = media_root.join("tmp");
    task_env(&db.config(), &redis.url, media_root, &temp, opts).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_vaapi_falls_back_to_software_and_the_log_says_so() {
    let db = TestDb::with_upload_example().await;
    let redis = TestRedis::claim();
    let root = tempfile::tempdir().unwrap();
    db.rebase_media_root(root.path()).await;
    make_original(root.path());
    let env = Arc::new(env(&db, &redis, root.path(), HwAccel::Vaapi).await);
    let metrics = env.metrics.clone();
    let handler = EncodeMedia { env };
    // encode_media-1: ["2SJorQ1Qe", 23, 1] (h264-144, Encoding 1), priority 9.
    let task = real_message("encode_media-1.json");
    let outcome = handler.run(&task, job_ctx(None)).await;
    assert_eq!(outcome, Outcome::Success(json!(true)));

    let c = db.client().await;
    let row = c
        .query_one(
            "SELECT status, progress, media_file, logs, task_id, worker, commands \
             FROM files_encoding WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    let (status, progress, media_file, logs, task_id, worker): (
        String,
        i16,
        String,
        String,
        String,
        String,
    ) = (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
    );
    assert_eq!(status, "success");
    assert_eq!(progress, 100);
    assert_eq!(
        media_file,
        format!("encoded/23/refuser/{UID}.{UID}.reference_720p.mp4.mp4")
    );
    assert!(
        logs.contains("--hwaccel vaapi unavailable, encoded in software"),
        "log must name the fallback: {logs}"
    );
    assert_eq!(task_id, task.id);
    assert_eq!(worker, "long@test");
    let commands: String = row.get(6);
    assert!(commands.contains("'-c:v', 'libx264'"), "{commands}");
    assert!(root.path().join(&media_file).is_file());
    let text = metrics.encode_text();
    assert!(
        text.contains(
            "mediacms_worker_hw_fallbacks_total{backend=\"vaapi\",reason_class=\"device_open\"} 1"
        ),
        "{text}"
    );

    // post_encode_actions published one create_hls for this h264 success.
    let mut r = redis.conn();
    let queued: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg("long_tasks")
        .arg(0)
        .arg(-1)
        .query(&mut r)
        .unwrap();
    let names: Vec<String> = queued
        .iter()
        .map(|raw| decode_redis(raw).unwrap().name)
        .collect();
    assert_eq!(names, vec!["create_hls".to_string()]);
}
