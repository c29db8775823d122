//! The long tasks other than encode_media, run through their handlers against real Postgres
//! (the reference upload), Redis and ffmpeg: create_hls (MediaCMS's `hls_info` rules via the
//! Python `m3u8` package, segment lengths, coalescing, atomic replacement), sprites (cell count
//! against ffmpeg's own frame count, no blank cell), the beat tasks (pickle loaded by Python),
//! remove_media_file refusals, whisper (missing CLI, fake CLI), chunkize_media rows and messages.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mediacms_worker::celery::envelope::{decode_redis, encode_redis};
use mediacms_worker::celery::message::{OutgoingTask, TaskMessage};
use mediacms_worker::plan::EncodeSettings;
use mediacms_worker::tasks::env::TaskEnv;
use mediacms_worker::tasks::whisper::WhisperOptions;
use mediacms_worker::tasks::{Outcome, TaskHandler, TaskName};
use serde_json::{json, Value};
use support::db::TestDb;
use support::env::{job_ctx, run_task, task_env, EnvOptions};
use support::redis::TestRedis;

const FT1: &str = "2SJorQ1Qe";
const FT2: &str = "emp3s0aau";
const ORIG1: &str = "original/user/refuser/41905ce2087146cdba79c28a24c33a9a.reference_720p.mp4";
const ORIG2: &str =
    "original/user/refuser/5af382d5f37447fa99853daeea4622fb.reference_long_360p.mp4";

struct Env {
    db: TestDb,
    redis: TestRedis,
    root: tempfile::TempDir,
    work: tempfile::TempDir,
    env: Arc<TaskEnv>,
}

impl Env {
    async fn new() -> Self {
        Self::with_settings(EncodeSettings::default()).await
    }

    async fn with_settings(settings: EncodeSettings) -> Self {
        let db = TestDb::with_upload_example().await;
        let root = tempfile::tempdir().unwrap();
        db.rebase_media_root(root.path()).await;
        let redis = TestRedis::claim();
        let opts = EnvOptions {
            settings,
            ..EnvOptions::default()
        };
        let temp = root.path().join("tmp");
        let env = Arc::new(task_env(&db.config(), root.path(), &temp, opts).await);
        let work = tempfile::tempdir().unwrap();
        Env {
            db,
            redis,
            root,
            work,
            env,
        }
    }

    fn root(&self) -> &Path {
        self.root.path()
    }

    async fn sql(&self, sql: &str) {
        self.db.client().await.batch_execute(sql).await.unwrap();
    }

    async fn text(&self, sql: &str) -> String {
        self.db
            .client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    }

    /// A clip made by `ffmpeg <args> <work>/<name>`, copied to `rel` under MEDIA_ROOT.
    fn clip_at(&self, rel: &str, name: &str, args: &str) -> PathBuf {
        let out = self.work.path().join(name);
        let mut a: Vec<String> = args.split_whitespace().map(String::from).collect();
        a.push(out.to_string_lossy().into_owned());
        support::media::ffmpeg(&a);
        let dest = self.root().join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&out, &dest).unwrap();
        out
    }
}

/// A decoded task as the pool would hand it over (encoded and decoded through the envelope).
fn message(name: &str, args: Value, kwargs: Value) -> TaskMessage {
    let Value::Array(args) = args else { panic!() };
    let Value::Object(kwargs) = kwargs else {
        panic!()
    };
    let task = OutgoingTask::new(name, "long_tasks", args, kwargs);
    decode_redis(&encode_redis(&task, "tag", "reply")).unwrap()
}

/// Runs `h` as the pool would; its follow-ups land in `e`'s Redis.
async fn run(e: &Env, h: &dyn TaskHandler, name: &str, args: Value, kwargs: Value) -> Outcome {
    run_task(h, &message(name, args, kwargs), job_ctx(None), &e.redis.url).await
}

fn ok(v: bool) -> Outcome {
    Outcome::Success(json!(v))
}

fn py(args: &[&str], env: &[(&'static str, String)]) -> String {
    let env: HashMap<&str, String> = env.iter().cloned().collect();
    support::redis::run_py(args, &env, Duration::from_secs(60))
}

/// Messages waiting in a Redis list, oldest first.
fn queued(r: &TestRedis, key: &str) -> Vec<TaskMessage> {
    let raw: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query(&mut r.conn())
        .unwrap();
    raw.iter().rev().map(|m| decode_redis(m).unwrap()).collect()
}

#[tokio::test]
async fn no_long_task_name_is_unknown_any_more() {
    let e = Env::new().await;
    let cache = redis::Client::open(e.redis.url.as_str()).unwrap();
    let whisper = WhisperOptions {
        command: "whisper".into(),
        model: "base".into(),
    };
    let mut r = mediacms_worker::app::registry(e.env.clone(), cache, whisper, 1);
    for name in mediacms_worker::celery::args::LONG_TASK_NAMES {
        let name = TaskName::parse(name).unwrap();
        assert!(r.handler(name).is_some(), "{name:?} has no handler");
    }
    let chunkize = TaskName::ChunkizeMedia;
    assert!(r.handler(chunkize).is_none(), "chunkize is opt-in");
    mediacms_worker::tasks::chunkize::register_chunkize(&mut r, e.env.clone());
    assert!(r.handler(chunkize).is_some());
}

#[path = "long_tasks/hls.rs"]
mod hls;
#[path = "long_tasks/misc.rs"]
mod misc;
#[path = "long_tasks/sprites.rs"]
mod sprites;
