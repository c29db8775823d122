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
use mediacms_worker::tasks::Outcome;
use serde_json::json;
use support::db::TestDb;
use support::env::{job_ctx, real_message, run_task, task_env, EnvOptions};
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

async fn env(db: &TestDb, media_root: &Path, hwaccel: HwAccel) -> TaskEnv {
    let opts = EnvOptions {
        hwaccel,
        ..EnvOptions::default()
    };
    let temp = media_root.join("tmp");
    task_env(&db.config(), media_root, &temp, opts).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_vaapi_falls_back_to_software_and_the_log_says_so() {
    let db = TestDb::with_upload_example().await;
    let redis = TestRedis::claim();
    let root = tempfile::tempdir().unwrap();
    db.rebase_media_root(root.path()).await;
    make_original(root.path());
    let env = Arc::new(env(&db, root.path(), HwAccel::Vaapi).await);
    let metrics = env.metrics.clone();
    let handler = EncodeMedia { env };
    // encode_media-1: ["2SJorQ1Qe", 23, 1] (h264-144, Encoding 1), priority 9.
    let task = real_message("encode_media-1.json");
    let outcome = run_task(&handler, &task, job_ctx(None), &redis.url).await;
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

/// Frames of a GIF as ffprobe counts them (packets read), and its pixel width.
fn gif_frames(path: &Path) -> (u64, u64) {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-count_packets", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=codec_name,width,nb_read_packets"])
        .args(["-of", "default=nw=1"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("codec_name=gif"), "{text}");
    let field = |k: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(k)).unwrap();
        line[k.len() + 1..].parse().unwrap()
    };
    (field("nb_read_packets"), field("width"))
}

/// Encoding 6 (the reference media's preview GIF) on a 2 s original, with `media_info`'s
/// duration set to `duration` seconds; returns the row's (status, media_file, logs).
async fn gif_of_two_second_clip(duration: f64) -> (String, String, String, Outcome, String) {
    let db = TestDb::with_upload_example().await;
    let redis = TestRedis::claim();
    let root = tempfile::tempdir().unwrap();
    db.rebase_media_root(root.path()).await;
    make_original(root.path());
    let c = db.client().await;
    c.execute(
        "UPDATE files_media SET media_info = \
         jsonb_set(media_info::jsonb, '{video_duration}', to_jsonb($1::float8))::text \
         WHERE friendly_token = '2SJorQ1Qe'",
        &[&duration],
    )
    .await
    .unwrap();
    let env = Arc::new(env(&db, root.path(), HwAccel::Software).await);
    let metrics = env.metrics.clone();
    let handler = EncodeMedia { env };
    // encode_media-6: ["2SJorQ1Qe", 1, 6] (preview gif, Encoding 6).
    let outcome = run_task(
        &handler,
        &real_message("encode_media-6.json"),
        job_ctx(None),
        &redis.url,
    )
    .await;
    let row = c
        .query_one(
            "SELECT status, media_file, logs FROM files_encoding WHERE id = 6",
            &[],
        )
        .await
        .unwrap();
    let media_file: String = row.get(1);
    if !media_file.is_empty() {
        let (frames, width) = gif_frames(&root.path().join(&media_file));
        assert!(frames >= 2, "an animated GIF has several frames: {frames}");
        assert_eq!(width, 344);
    }
    (
        row.get(0),
        media_file,
        row.get(2),
        outcome,
        metrics.encode_text(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_preview_gif_for_clips_shorter_than_the_3s_seek() {
    // media_info knows the clip is 2 s: the preview is made from the start at once.
    let (status, media_file, logs, outcome, metrics) = gif_of_two_second_clip(2.0).await;
    assert_eq!(outcome, Outcome::Success(json!(true)));
    assert_eq!(status, "success");
    assert!(media_file.starts_with(&format!("encoded/1/refuser/{UID}.tmp")));
    assert!(logs.contains("preview made from the start"), "{logs}");
    assert!(
        !metrics.contains("status_class=\"empty_output\""),
        "no empty run: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_gif_output_counted_as_success_in_metrics() {
    // media_info claims 8 s but the file is 2 s: MediaCMS's `-ss 3` argv runs, ffmpeg exits 0
    // with "Output file is empty"; that run is counted as empty_output, not ok, and the
    // preview is made again from the start.
    let (status, _, logs, outcome, metrics) = gif_of_two_second_clip(8.0).await;
    assert!(
        metrics.contains("mediacms_worker_ffmpeg_exits_total{status_class=\"empty_output\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mediacms_worker_ffmpeg_exits_total{status_class=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(logs.contains("ffmpeg wrote no frame from 3 s"), "{logs}");
    assert_eq!(status, "success");
    assert_eq!(outcome, Outcome::Success(json!(true)));
}
