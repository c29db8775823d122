//! Encoding rows are never left `running` by a stopped job (issue 17, item 7): a shutdown abort
//! (drain deadline, double SIGTERM) puts the row back to `pending` for the requeued re-run, and
//! `revoke(terminate=True)` deletes the task's Encodings as MediaCMS's `task_revoked` handler
//! does. Real Postgres, real ffmpeg behind a wrapper that holds the encode so the stop lands
//! mid-run.

mod support;

use std::sync::Arc;
use std::time::Duration;

use mediacms_worker::tasks::encode_media::EncodeMedia;
use mediacms_worker::tasks::{Outcome, Stop, StopCause};
use support::db::TestDb;
use support::env::{job_ctx, run_task};
use support::fault::{encode_task, encoding_row, insert_media_and_encoding, script, task_env};
use support::redis::TestRedis;

const PROFILE: i32 = 23;

/// Start an encode of a fresh Encoding `id`, stop it with `stop` once the row is `running`;
/// returns the outcome and the row afterwards.
async fn stopped_encode(stop: Stop, id: i32) -> (Outcome, Option<(String, String)>) {
    let db = TestDb::with_upload_example().await;
    let redis = TestRedis::claim();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("media");
    db.rebase_media_root(&root).await;
    let (rel, info) = support::media::small_upload(&root);
    let c = db.client().await;
    let token = format!("Stop{id}");
    insert_media_and_encoding(&c, id, &token, &rel, &info, 1, PROFILE).await;
    let wrapper = dir.path().join("ffmpeg.sh");
    script(
        &wrapper,
        "#!/bin/sh\ncase \"$*\" in *libx264*) sleep 60;; esac\nexec ffmpeg \"$@\"\n",
    );
    let mut env = task_env(&db.config(), &root, &dir.path().join("tmp")).await;
    env.ffmpeg.program = wrapper.display().to_string();
    let handler = EncodeMedia { env: Arc::new(env) };
    let mut ctx = job_ctx(None);
    ctx.stop = StopCause::fixed(stop);
    let cancel = ctx.cancel.clone();
    let task = encode_task(&token, PROFILE, id);
    let url = redis.url.clone();
    let run = tokio::spawn(async move { run_task(&handler, &task, ctx, &url).await });
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    while encoding_row(&c, id).await.map(|r| r.0).as_deref() != Some("running") {
        assert!(tokio::time::Instant::now() < until, "the row never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the stop is prompt")
        .unwrap();
    (outcome, encoding_row(&c, id).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_abort_leaves_the_row_pending_not_running() {
    let (outcome, row) = stopped_encode(Stop::Shutdown, 3101).await;
    assert_eq!(outcome, Outcome::Aborted, "requeued by the pool");
    assert_eq!(row.map(|r| r.0).as_deref(), Some("pending"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_terminate_deletes_the_tasks_encoding_as_mediacms_does() {
    let (outcome, row) = stopped_encode(Stop::Terminated, 3102).await;
    assert_eq!(outcome, Outcome::Revoked("terminated".into()));
    assert_eq!(row, None, "task_revoked deletes the Encoding");
}
