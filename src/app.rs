//! Composition root: the only place concrete types are picked and wired together.

use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use anyhow::Context;

use crate::broker::amqp::{AmqpBroker, AmqpOptions};
use crate::broker::pidbox::Pidbox;
use crate::broker::redis::{RedisBroker, RedisBrokerOptions};
use crate::broker::{Broker, ResultStore};
use crate::config::{Config, ConfigError};
use crate::ffmpeg::caps::Capabilities;
use crate::mediacms::signals::Signals;
use crate::mediacms::store::Store;
use crate::plan::EncodeSettings;
use crate::shutdown::Shutdown;
use crate::startup;
use crate::tasks::accel::Accel;
use crate::tasks::beat::BeatTasks;
use crate::tasks::create_hls::CreateHls;
use crate::tasks::encode_media::EncodeMedia;
use crate::tasks::env::{FfmpegOptions, TaskEnv};
use crate::tasks::remove_media_file::RemoveMediaFile;
use crate::tasks::sprites::ProduceSprites;
use crate::tasks::whisper::{WhisperOptions, WhisperTranscribe};
use crate::tasks::{Registry, TaskName};
use crate::telemetry::{Health, HttpState, Metrics};
use crate::worker::{PoolOptions, PoolState, WorkerPool};

/// Arguments of `mediacms-worker transcode`.
#[derive(Debug, clap::Args)]
pub struct TranscodeArgs {
    /// The source video (none: an 8 s 1280x720 test clip is made in the output directory).
    pub input: Option<PathBuf>,
    /// Directory the renditions are written to.
    #[arg(long, default_value = "renditions")]
    pub out: PathBuf,
    /// Profile names or ids (default: MediaCMS's active profiles).
    #[arg(long, value_delimiter = ',')]
    pub profiles: Vec<String>,
    #[arg(long, env = "FFMPEG_COMMAND", default_value = "ffmpeg")]
    pub ffmpeg_command: String,
    #[arg(long, env = "FFMPEG_DEFAULT_PRESET", default_value = "medium")]
    pub preset: String,
}

/// The host part of Celery's `%h`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Celery's `origin` of what this process publishes, `gen<pid>@<host>` (the host read here, in
/// the composition root, not in the codec).
fn producer_origin() -> String {
    crate::celery::message::origin_of(std::process::id(), &host_name())
}

/// MediaCMS runs its workers as www-data; running ffmpeg on uploads as root is refused unless
/// the operator says so.
fn refuse_root(config: &Config) -> Result<(), ConfigError> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 && !config.allow_root {
        return Err(ConfigError {
            field: "allow_root",
            reason: "refusing to run as root (run as www-data, or pass --allow-root)".into(),
        });
    }
    Ok(())
}

/// `mediacms-worker run`.
pub fn run(config: Config) -> anyhow::Result<()> {
    refuse_root(&config)?;
    crate::telemetry::logging::init(&config.log_filter, config.log_format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(config))
}

/// Wire every component and run until shutdown: signals → pool drain → control plane and HTTP.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    startup::clean_stale_job_dirs(&config.temp_directory, startup::STALE_JOB_DIR_AGE);
    let metrics = Arc::new(Metrics::new());
    let health = Health::new(Duration::from_secs(60));
    let http_state = HttpState {
        metrics: metrics.clone(),
        health: health.clone(),
    };
    let http = tokio::spawn(crate::telemetry::serve(
        config.http_addr,
        http_state,
        shutdown.abort.clone(),
    ));
    tokio::spawn(shutdown.clone().watch_signals(config.drain));
    // The capability probe (test encodes, ~0.1 s on a CPU-only node) overlaps the connects, so
    // it does not delay consuming. Dependencies that are not up yet are waited for.
    let stop = shutdown.intake.clone();
    let broker_up = startup::wait_for("the broker", &health, &stop, || connect_broker(&config));
    let (connected, caps) = tokio::join!(
        broker_up,
        Capabilities::probe(
            &config.ffmpeg_command,
            config.hwaccel,
            config.hw_device.as_deref(),
        )
    );
    let Some((broker, results, depths)) = connected? else {
        return stopped_while_waiting(&shutdown, http).await;
    };
    health.set_broker_up(true);
    let store = Store::connect(&config.postgres, config.concurrency + 4)
        .context("configuring the Postgres pool")?;
    let db_up = startup::wait_for("Postgres", &health, &stop, || async {
        Ok(store.ping().await?)
    });
    if db_up.await?.is_none() {
        return stopped_while_waiting(&shutdown, http).await;
    }
    health.set_db_up(true);
    tracing::info!("{}", crate::ffmpeg::report::report_text(&caps));
    let env = Arc::new(task_env(&config, store.clone(), metrics.clone(), caps));
    let cache = redis::Client::open(config.redis_location.as_str()).context("REDIS_LOCATION")?;
    let whisper = WhisperOptions {
        command: config.whisper_command.clone(),
        model: config.whisper_model.clone(),
    };
    let mut registry = registry(env.clone(), cache, whisper, config.concurrency);
    if config.chunkize {
        crate::tasks::chunkize::register_chunkize(&mut registry, env);
    }
    // Intake follows readiness: no fetch while Postgres, which every long task needs, is down.
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(true);
    let pool = WorkerPool::new(broker.clone(), results, registry, pool_options(&config))
        .with_metrics(metrics.clone())
        .with_intake_gate(ready_rx)
        .with_health(health.clone());
    let state = pool.state();
    if let Some(client) = redis_control_client(&config)? {
        tokio::spawn(Pidbox::new(client, state.clone()).run(shutdown.abort.clone()));
    }
    let sampler = Sampler {
        health,
        ready: ready_tx,
        broker,
        store,
        state,
        metrics,
        depths,
        queues: config.queues.clone(),
    };
    tokio::spawn(sampler.run(shutdown.clone()));
    tracing::info!(hostname = %config.hostname, queues = ?config.queues, "consuming");
    pool.run((&shutdown).into()).await;
    // Everything is settled: stop the control plane and the HTTP server.
    shutdown.abort.cancel();
    http.await.context("HTTP server task")??;
    Ok(())
}

/// SIGTERM while a dependency was still awaited: nothing was consumed, stop the HTTP server.
async fn stopped_while_waiting(
    shutdown: &Shutdown,
    http: tokio::task::JoinHandle<Result<(), crate::telemetry::http::HttpError>>,
) -> anyhow::Result<()> {
    tracing::info!("shutdown before every dependency was reachable: nothing was consumed");
    shutdown.abort.cancel();
    http.await.context("HTTP server task")??;
    Ok(())
}

/// Broker by URL scheme; results always go to the Redis result backend. The third value samples
/// queue depths (Redis brokers only).
async fn connect_broker(
    config: &Config,
) -> anyhow::Result<(Arc<dyn Broker>, Arc<dyn ResultStore>, Option<RedisBroker>)> {
    let lease = RedisBrokerOptions {
        lease: config.lease,
        dead_letter_caps: config.dead_letters,
        ..RedisBrokerOptions::default()
    };
    let results = RedisBroker::connect(&config.result_backend, lease.clone())
        .await
        .context("connecting to the result backend")?;
    if config.broker_url.starts_with("amqp") || config.broker_url.starts_with("pyamqp") {
        let prefetch = u16::try_from(pool_options(config).prefetch_limit()).unwrap_or(u16::MAX);
        let mut options = AmqpOptions::new(prefetch);
        options.connection_name = format!("mediacms-worker {}", producer_origin());
        let amqp = AmqpBroker::connect(&config.broker_url, options)
            .await
            .context("connecting to the AMQP broker")?;
        return Ok((Arc::new(amqp), Arc::new(results), None));
    }
    let broker = if config.broker_url == config.result_backend {
        results.clone()
    } else {
        RedisBroker::connect(&config.broker_url, lease)
            .await
            .context("connecting to the Redis broker")?
    };
    Ok((Arc::new(broker.clone()), Arc::new(results), Some(broker)))
}

/// The pidbox control plane speaks Redis PUB/SUB; on AMQP it is not available (yet).
fn redis_control_client(config: &Config) -> anyhow::Result<Option<redis::Client>> {
    if !config.broker_url.starts_with("redis") {
        tracing::warn!("celery inspect/control is only served on a Redis broker");
        return Ok(None);
    }
    Ok(Some(
        redis::Client::open(config.broker_url.as_str()).context("broker URL")?,
    ))
}

fn pool_options(config: &Config) -> PoolOptions {
    let mut opts = PoolOptions::new(config.queues.clone(), config.concurrency, &config.hostname);
    opts.prefetch_multiplier = config.prefetch_multiplier;
    opts.forward_unknown_to = config.forward_unknown_to.clone();
    opts.soft_time_limit = Some(config.soft_time_limit);
    opts.origin = producer_origin();
    // Renew well inside the lease; restore dead workers' deliveries about twice per lease.
    opts.lease_renew_every = config.lease / 3;
    opts.restore_every = config.lease / 2;
    opts
}

fn task_env(config: &Config, store: Store, metrics: Arc<Metrics>, caps: Capabilities) -> TaskEnv {
    TaskEnv {
        signals: Signals::new(store, config.media_root.clone()),
        ffmpeg: FfmpegOptions {
            program: config.ffmpeg_command.clone(),
            nice: config.ffmpeg_nice,
        },
        settings: encode_settings(config),
        temp_root: config.temp_directory.clone(),
        metrics,
        accel: Accel::new(caps, config.hwaccel, config.hw_concurrency, HW_COOLDOWN),
        decode_once: config.decode_once,
    }
}

/// A readiness ping slower than this counts as the database being down.
const DB_PING_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a hardware backend that just failed is avoided.
const HW_COOLDOWN: Duration = Duration::from_secs(600);

pub fn encode_settings(config: &Config) -> EncodeSettings {
    EncodeSettings {
        preset: config.ffmpeg_default_preset.clone(),
        minimum_resolutions: config.minimum_resolutions_to_encode.clone(),
        sprite_num_secs: config.sprite_num_secs,
        ffmpeg_threads: config.ffmpeg_threads,
    }
}

/// Every long task name → its handler. `cache` is the Django cache (REDIS_LOCATION);
/// `job_slots` the pool's concurrency.
pub fn registry(
    env: Arc<TaskEnv>,
    cache: redis::Client,
    whisper: WhisperOptions,
    job_slots: usize,
) -> Registry {
    let mut r = Registry::default();
    r.register(
        TaskName::EncodeMedia,
        Arc::new(EncodeMedia { env: env.clone() }),
    );
    r.register(
        TaskName::CreateHls,
        Arc::new(CreateHls::new(env.clone(), job_slots)),
    );
    r.register(
        TaskName::ProduceSpriteFromVideo,
        Arc::new(ProduceSprites { env: env.clone() }),
    );
    let beat = Arc::new(BeatTasks {
        env: env.clone(),
        cache,
    });
    r.register(TaskName::GetListOfPopularMedia, beat.clone());
    r.register(TaskName::UpdateListingsThumbnails, beat);
    r.register(
        TaskName::WhisperTranscribe,
        Arc::new(WhisperTranscribe {
            env: env.clone(),
            options: whisper,
        }),
    );
    r.register(TaskName::RemoveMediaFile, Arc::new(RemoveMediaFile { env }));
    r
}

/// Readiness flags, the intake gate and sampled gauges, every 2 s until abort. (The liveness
/// beat comes from the pool's intake loop itself, not from here.)
struct Sampler {
    health: Health,
    /// The pool's intake gate: open while Postgres answers.
    ready: tokio::sync::watch::Sender<bool>,
    /// For its reconnect count.
    broker: Arc<dyn Broker>,
    store: Store,
    state: PoolState,
    metrics: Arc<Metrics>,
    depths: Option<RedisBroker>,
    queues: Vec<String>,
}

impl Sampler {
    async fn run(self, shutdown: Shutdown) {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.abort.cancelled() => return,
            }
            self.health.set_intake_open(!shutdown.intake.is_cancelled());
            // Bounded: a hung database must read as down, not stall this loop.
            let ping = tokio::time::timeout(DB_PING_TIMEOUT, self.store.ping()).await;
            let db_up = matches!(ping, Ok(Ok(())));
            if db_up && !self.health.readiness().db {
                self.metrics.db_reconnected();
            }
            self.health.set_db_up(db_up);
            self.ready
                .send_if_modified(|open| std::mem::replace(open, db_up) != db_up);
            self.metrics
                .broker_reconnects_seen(self.broker.reconnects());
            self.metrics
                .set_jobs_in_flight(self.state.snapshot().active.len());
            if let Some(broker) = &self.depths {
                match broker.queue_depths(&self.queues).await {
                    Ok(depths) => {
                        self.health.set_broker_up(true);
                        for (q, step, n) in depths {
                            self.metrics.set_queue_depth(&q, step, n);
                        }
                    }
                    Err(_) => self.health.set_broker_up(false),
                }
            }
        }
    }
}

/// `mediacms-worker probe [--json]`: what hardware acceleration works here, and why not.
pub fn probe(config: Config, json: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // `software` probes nothing; the report is about what *could* be used.
    let hwaccel = match config.hwaccel {
        crate::config::HwAccel::Software => crate::config::HwAccel::Auto,
        h => h,
    };
    let caps = runtime.block_on(Capabilities::probe(
        &config.ffmpeg_command,
        hwaccel,
        config.hw_device.as_deref(),
    ));
    if json {
        // The probe itself, plus the backend and per-source route each profile codec gets.
        let mut doc = serde_json::to_value(&caps)?;
        doc["decisions"] = serde_json::to_value(crate::ffmpeg::report::decisions(&caps))?;
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", crate::ffmpeg::report::report_text(&caps));
    }
    Ok(())
}

/// `mediacms-worker transcode INPUT --out DIR`: no services, same planner and runner.
pub fn transcode(args: TranscodeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let profiles = crate::transcode::select_profiles(&args.profiles)?;
    let settings = EncodeSettings {
        preset: args.preset.clone(),
        ..EncodeSettings::default()
    };
    let written = runtime.block_on(async {
        let input = match &args.input {
            Some(input) => input.clone(),
            None => crate::transcode::make_demo_clip(&args.out, &args.ffmpeg_command).await?,
        };
        crate::transcode::transcode(
            &input,
            &args.out,
            &profiles,
            &args.ffmpeg_command,
            &settings,
        )
        .await
    })?;
    print!(
        "{}",
        crate::transcode::summary_table(&crate::transcode::describe(&written))
    );
    Ok(())
}

/// `mediacms-worker healthcheck`: GET /healthz on the local HTTP address (Docker HEALTHCHECK).
pub fn healthcheck(config: Config) -> anyhow::Result<()> {
    let addr = crate::telemetry::http::probe_addr(config.http_addr);
    let (status, body) = crate::telemetry::http::probe(addr, "/healthz", Duration::from_secs(3))
        .with_context(|| format!("GET http://{addr}/healthz"))?;
    anyhow::ensure!(status == 200, "/healthz answered {status}: {body}");
    Ok(())
}
