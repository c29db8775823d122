//! mediacms-worker: a drop-in Rust replacement for MediaCMS's Python `celery_long` worker.
//!
//! # Crate map (find any behaviour in one hop)
//!
//! Layers (see `../shared/design/ARCHITECTURE.md`): **pure** modules never do I/O; **adapters**
//! do one kind of I/O each; **orchestration** uses both through narrow handles; [`app`] is the
//! only place that picks concrete types.
//!
//! | behaviour | module | layer |
//! |---|---|---|
//! | flags + env + TOML → validated config (exit 64) | [`config`] | pure |
//! | signals, intake/abort tokens, drain deadline | [`shutdown`] | orchestration |
//! | start-up waits for the broker and Postgres (backoff, a log line per attempt) | [`startup`] | orchestration |
//! | Redis envelope, protocol-v2 headers/body, ETA parsing | [`celery::envelope`], [`celery::message`], [`celery::time`] | pure |
//! | typed arguments of the seven long task names | [`celery::args`] | pure |
//! | result documents (SUCCESS/FAILURE/RETRY/REVOKED) | [`celery::result`] | pure |
//! | pidbox requests/replies, worker events | [`celery::control`] | pure |
//! | the `Broker` trait, `Delivery`, priorities | [`broker`] | contract |
//! | kombu-exact Redis transport (unacked, lease, restore) | [`broker::redis`] | adapter |
//! | the lease as a fence: lease ids, Lua-checked renew/finish/ack/requeue, capped dead letters | `broker::redis::fence`, [`broker::redis::dead`] | adapter |
//! | RabbitMQ transport (lapin), same semantics | [`broker::amqp`] | adapter |
//! | `celery inspect`/control replies, worker heartbeats (Redis pidbox) | [`broker::pidbox`] | adapter |
//! | in-memory broker for orchestration tests | [`broker::memory`] | adapter |
//! | job slots, prefetch, ETA holding, dispatch, the one place that acks | [`worker`] | orchestration |
//! | a job stops when its lease is lost; final writes claim the lease first | `worker::fence`, `worker::lease` | orchestration |
//! | one handler per Celery task name (encode_media, create_hls, sprites, beat, whisper, …) | [`tasks`] | orchestration |
//! | follow-ups published as children of the running task (`parent_id`, `root_id`, `children`) | [`tasks::family`] | orchestration |
//! | profile + media info + settings → ffmpeg argv | [`plan`] | pure |
//! | per-input hardware eligibility: where decode / scale / encode run | [`plan::eligibility`], [`plan::hw`] | pure |
//! | decode-once ladder (default; `--decode-once=false` off): one ffmpeg for a media's renditions and GIF; playable-first under a backlog | [`plan::ladder`], [`tasks::encode_media`] | pure / orchestration |
//! | the only process spawner; progress; stderr tail | [`ffmpeg::run`], [`ffmpeg::progress`] | adapter / pure |
//! | in-process probe (`media_info` JSON), hardware capabilities | [`ffmpeg::probe`], [`ffmpeg::caps`] | adapter |
//! | keyframe byte ranges of HLS segments (the I-frame playlists) | [`ffmpeg::keyframes`] | adapter |
//! | backend and device per job, device health with backoff, hardware-failure classes | [`ffmpeg::backend`], [`ffmpeg::hwfail`] | pure |
//! | hardware slot pools per device, the software re-run of a failed hardware job | [`tasks::env`], [`tasks::encode_media`] | orchestration |
//! | all SQL | [`mediacms::store`] | adapter |
//! | replayed Django signals (post_encode_actions, …) | [`mediacms::signals`] | orchestration |
//! | paths under MEDIA_ROOT, Django file naming, confinement | [`mediacms::layout`] | pure + fs |
//! | metrics catalogue, logging, `/metrics` `/healthz` `/readyz` | [`telemetry`] | adapter |
//! | the `transcode` CLI: one local file, no services | [`transcode`] | orchestration |
//!
//! # Glossary
//! Broker (Redis/AMQP transport) · Delivery (one received message + its tag) · Task (a Celery
//! message: name, id, args) · Encoding / Media / Profile (MediaCMS rows) · Plan (resolved encode
//! decisions) · Rendition (one output of a ladder) · Backend (software/nvenc/vaapi/qsv) · Lease
//! (our claim on an unacked delivery).

// House rules, written down where the compiler checks them (clippy.toml names the methods and
// their one home module each): one process spawner, the environment read only by `config`, no
// `as` cast that can silently truncate, and every `unsafe` block says why it is sound.
#![deny(clippy::disallowed_methods)]
#![deny(clippy::cast_possible_truncation)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod app;
pub mod broker;
pub mod celery;
pub mod config;
pub mod ffmpeg;
pub mod mediacms;
pub mod plan;
pub mod shutdown;
pub mod startup;
pub mod tasks;
pub mod telemetry;
pub mod transcode;
pub mod worker;
