//! A `TaskEnv` for driving task handlers through the library API against a test's own
//! database, Redis and media root — the one place tests build it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mediacms_worker::broker::redis::{RedisBroker, RedisBrokerOptions};
use mediacms_worker::broker::Broker;
use mediacms_worker::celery::envelope::decode_redis;
use mediacms_worker::celery::message::TaskMessage;
use mediacms_worker::config::{HwAccel, PostgresConfig};
use mediacms_worker::ffmpeg::caps::Capabilities;
use mediacms_worker::mediacms::signals::Signals;
use mediacms_worker::mediacms::store::Store;
use mediacms_worker::plan::EncodeSettings;
use mediacms_worker::tasks::accel::Accel;
use mediacms_worker::tasks::env::{FfmpegOptions, TaskEnv};
use mediacms_worker::tasks::{JobContext, Outcome, TaskHandler};
use mediacms_worker::telemetry::Metrics;
use mediacms_worker::worker::run_unpooled;
use tokio_util::sync::CancellationToken;

/// What varies between tests; the default is a fast software-only environment.
pub struct EnvOptions {
    pub settings: EncodeSettings,
    /// Anything but `Software` probes the (absent) hardware for real.
    pub hwaccel: HwAccel,
    pub decode_once: bool,
}

impl Default for EnvOptions {
    fn default() -> Self {
        Self {
            settings: EncodeSettings {
                preset: "ultrafast".into(),
                ..EncodeSettings::default()
            },
            hwaccel: HwAccel::Software,
            decode_once: false,
        }
    }
}

/// The handlers' environment. It has no broker: follow-ups come back from [`run_task`], which
/// publishes them as the pool does.
pub async fn task_env(
    pg: &PostgresConfig,
    media_root: &Path,
    temp_root: &Path,
    opts: EnvOptions,
) -> TaskEnv {
    let store = Store::connect(pg, 8).unwrap();
    let accel = match opts.hwaccel {
        HwAccel::Software => Accel::software(),
        h => {
            let caps = Capabilities::probe("ffmpeg", h, None).await;
            Accel::new(caps, h, 1, Duration::from_secs(600))
        }
    };
    TaskEnv {
        signals: Signals::new(store, media_root),
        ffmpeg: FfmpegOptions {
            program: "ffmpeg".into(),
            nice: 0,
        },
        settings: opts.settings,
        temp_root: temp_root.to_owned(),
        metrics: Arc::new(Metrics::new()),
        accel,
        decode_once: opts.decode_once,
    }
}

/// Run `handler` on `msg` as the pool does, minus the broker bookkeeping: bind the arguments,
/// run it in a job family, then publish the follow-ups it handed over to `redis_url`'s broker
/// (what the pool's apply step does after the fence).
pub async fn run_task(
    handler: &dyn TaskHandler,
    msg: &TaskMessage,
    ctx: JobContext,
    redis_url: &str,
) -> Outcome {
    let (outcome, follow_ups) = run_unpooled(handler, msg, ctx).await;
    if !follow_ups.is_empty() {
        let broker = RedisBroker::connect(redis_url, RedisBrokerOptions::default())
            .await
            .unwrap();
        for t in &follow_ups {
            broker.publish(t).await.unwrap();
        }
    }
    outcome
}

/// A job context as the pool gives one: a fresh token, hostname `long@test`, an optional soft
/// limit.
pub fn job_ctx(limit: Option<Duration>) -> JobContext {
    JobContext {
        cancel: CancellationToken::new(),
        hostname: "long@test".into(),
        deadline: limit.map(|l| tokio::time::Instant::now() + l),
        fence: Default::default(),
        stop: Default::default(),
    }
}

/// One of the real MediaCMS messages in `shared/mediacms/messages/`, decoded.
pub fn real_message(name: &str) -> TaskMessage {
    let path = super::db::shared_dir().join("mediacms/messages").join(name);
    decode_redis(&std::fs::read(path).unwrap()).unwrap()
}

/// ffmpeg processes a test's handlers started: every exit the metrics catalogue counted.
pub fn spawned(metrics: &Metrics) -> u64 {
    metrics
        .encode_text()
        .lines()
        .filter(|l| l.starts_with("mediacms_worker_ffmpeg_exits_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The reference upload on its own, for driving media 1's handlers: a fresh database
/// (`upload_example`, rebased onto the root), a private Redis, and a media root whose media 1
/// original is put in place with [`ReferenceSite::place_original`].
pub struct ReferenceSite {
    pub db: super::db::TestDb,
    pub redis: super::redis::TestRedis,
    pub root: tempfile::TempDir,
}

impl ReferenceSite {
    pub async fn new() -> Self {
        let db = super::db::TestDb::with_upload_example().await;
        let redis = super::redis::TestRedis::claim();
        let root = tempfile::tempdir().unwrap();
        db.rebase_media_root(root.path()).await;
        ReferenceSite { db, redis, root }
    }

    /// Copies `src` to where media 1's row says its original is.
    pub fn place_original(&self, src: &Path) {
        let dir = self.root.path().join("original/user/refuser");
        std::fs::create_dir_all(&dir).unwrap();
        let uid = super::worker::MEDIA1_UID;
        std::fs::copy(src, dir.join(format!("{uid}.reference_720p.mp4"))).unwrap();
    }
}
