//! mediacms-worker: a drop-in Rust replacement for MediaCMS's Python `celery_long` worker.
//!
//! # Crate map (find any behaviour in one hop)
//!
//! Layers (see `../shared/design/ARCHITECTURE.md`): **pure** modules never do I/O; **adapters**
//! do one kind of I/O each; **orchestration** uses both through narrow handles; [`app`] is the
//! only place that picks concrete types.
//!
//! ## One task's trip, fetch to ack (decision 13)
//! 1. [`broker::redis`] `fetch_one` BRPOPs an entry; `hold` parses the envelope **once**
//!    ([`celery::envelope::read_redis`]: transport facts + decoded [`celery::message::TaskMessage`])
//!    and records the lease → a [`broker::Delivery`].
//! 2. [`worker`] `accept`: the name is looked up **once** ([`tasks::Registry::lookup`] on the
//!    closed [`celery::args::TaskName`] enum), [`worker::dispatch::classify`] triages it, the
//!    arguments are bound **once** ([`celery::args::bind_as`]).
//! 3. `worker::job` `run_delivery`: ETA hold, job slot, [`worker::dispatch::stale`] (revoked or
//!    expired while waiting), then the handler, matched by name, gets a typed
//!    [`celery::args::Task`] — or [`worker::dispatch::bad_args`] settles Python's TypeError.
//! 4. The handler returns an [`tasks::Outcome`]; the follow-ups it handed to its job's
//!    [`tasks::family`] come back with it; [`worker::dispatch::settle`] makes the
//!    [`worker::dispatch::Settlement`].
//! 5. `worker::job` `apply` — the only place that publishes, stores results, acks, requeues:
//!    lease fence claim, follow-ups, retry, result (with `children`), ack.
//!
//! ## Where each behaviour lives
//!
//! | behaviour | module | layer |
//! |---|---|---|
//! | flags + env + TOML → validated config (exit 64) | [`config`] | pure |
//! | signals, intake/abort tokens, drain deadline | [`shutdown`] | orchestration |
//! | start-up waits for the broker and Postgres (backoff, a log line per attempt) | [`startup`] | orchestration |
//! | capped exponential backoff (start-up waits, Redis reconnects, device cool-down) | [`backoff`] | pure |
//! | composition root: concrete types, the handlers of each task name, the host name (`origin`) | [`app`] | orchestration |
//! | Redis envelope parsed once (facts + task), protocol-v2 headers/body | [`celery::envelope`], [`celery::message`] | pure |
//! | ETA/expires parsing, Europe/London naive times | [`celery::time`] | pure |
//! | Python `json.dumps` bytes, Celery `saferepr` | [`celery::python`] | pure |
//! | the closed set of task names, typed arguments, Python's call rules | [`celery::args`] | pure |
//! | result documents (SUCCESS/FAILURE/RETRY/REVOKED, parent, children) | [`celery::result`] | pure |
//! | pidbox requests/replies, worker events | [`celery::control`] | pure |
//! | Unix time in float seconds (kombu scores, events, job starts) | [`clock`] | adapter |
//! | blocking work (libav, big file copies, tree swaps) off the runtime threads | [`blocking`] | adapter |
//! | the `Broker` trait, `Delivery`, priorities | [`broker`] | contract |
//! | kombu-exact Redis transport: priority lists, BRPOP order, unacked value | [`broker::redis`] (`keys`) | adapter |
//! | the lease as a fence: lease ids, Lua-checked renew/finish/ack/requeue | [`broker::redis`] (`fence`) | adapter |
//! | restoring expired leases (kombu's `restore_visible`), reconnecting | [`broker::redis`] (`restore`, `conn`) | adapter |
//! | capped dead letters | [`broker::redis::dead`] | adapter |
//! | RabbitMQ transport (lapin), same semantics | [`broker::amqp`] | adapter |
//! | `celery inspect`/control replies, worker heartbeats (Redis pidbox) | [`broker::pidbox`] | adapter |
//! | in-memory broker for orchestration tests | [`broker::memory`] | adapter |
//! | job slots, prefetch, ETA holding, the one name lookup and argument binding | [`worker`] | orchestration |
//! | triage, TypeError of bad arguments, outcome → settlement (pure) | [`worker::dispatch`] | pure |
//! | one delivery's life; `apply`: the only publish/result/ack/requeue/dead-letter | `worker::job` | orchestration |
//! | held deliveries' bookkeeping (phases, revoked ids, cancel reasons) | [`worker::state`] | orchestration |
//! | a job stops when its lease is lost; final writes claim the lease first | `worker::fence`, `worker::lease` | orchestration |
//! | a handler run outside the pool (tests, tools) | [`worker::run_unpooled`] | orchestration |
//! | the handler contract: `Task` in, `Outcome` out, no broker; registry by task name | [`tasks`] | orchestration |
//! | follow-ups handed over as children of the running task, published by the pool | [`tasks::family`] | orchestration |
//! | what handlers share: signals, ffmpeg options, settings, the follow-up hand-over | [`tasks::env`] | orchestration |
//! | hardware acceleration state: capabilities, device health, hardware slots per device | [`tasks::accel`] | orchestration |
//! | encode_media: claim, plan, ffmpeg, finish, retry rules, chunk concat, gif | [`tasks::encode_media`] | orchestration |
//! | decode-once ladder (default; `--decode-once=false` off): one ffmpeg for a media's renditions, GIF and sprite frames; playable-first under a backlog | [`plan::ladder`], [`tasks::encode_media`] | pure / orchestration |
//! | create_hls: coalescing, packaging, I-frame playlists, atomic tree swap | [`tasks::create_hls`] | orchestration |
//! | sprites, whisper, remove_media_file, the two beat tasks, chunkize | [`tasks::sprites`], [`tasks::whisper`], [`tasks::remove_media_file`], [`tasks::beat`], [`tasks::chunkize`] | orchestration |
//! | the pickle the Django cache reads | [`tasks::pickle`] | pure |
//! | profile + media info + settings → ffmpeg argv; MediaCMS's rules | [`plan`] ([`plan::rules`], [`plan::software`], [`plan::media_info`]) | pure |
//! | gif, sprites, chunk and concat argv; HLS layout and playlists | [`plan::extras`], [`plan::hls`] | pure |
//! | `files_encoding.commands` repr, exact frame-rate fractions | [`plan::repr`], [`plan::rational`] | pure |
//! | per-input hardware eligibility: where decode / scale / encode run | [`plan::eligibility`], [`plan::hw`] | pure |
//! | the only process spawner; pipe draining; progress; stderr tail | [`ffmpeg::run`], [`ffmpeg::progress`] | adapter / pure |
//! | in-process probe (`media_info` JSON), libav setup | [`ffmpeg::probe`], [`ffmpeg::libav`] | adapter |
//! | hardware capabilities (test encodes), the `probe` report | [`ffmpeg::caps`], [`ffmpeg::report`] | adapter |
//! | keyframe byte ranges of HLS segments (the I-frame playlists) | [`ffmpeg::keyframes`] | adapter |
//! | backend and device per job, device health with backoff, hardware-failure classes | [`ffmpeg::backend`], [`ffmpeg::hwfail`] | pure |
//! | all SQL (one start transaction reads the Encoding once) | [`mediacms::store`] | adapter |
//! | row types | [`mediacms::model`] | pure |
//! | replayed Django signals (post_encode_actions, chunk concat, …) | [`mediacms::signals`] | orchestration |
//! | paths under MEDIA_ROOT, Django file naming, confinement, placing files | [`mediacms::layout`] | pure + fs |
//! | metrics catalogue, bounded labels, logging, `/metrics` `/healthz` `/readyz` | [`telemetry`] | adapter |
//! | the `transcode` CLI: one local file, no services | [`transcode`] | orchestration |
//!
//! # Glossary
//! Broker (Redis/AMQP transport) · Delivery (one received message + its tag) · Task (a Celery
//! message: name, id, args — decoded, [`celery::args::Task`] is it with its arguments bound) ·
//! Encoding / Media / Profile (MediaCMS rows) · Plan (resolved encode decisions) · Rendition (one
//! output of a ladder) · Backend (software/nvenc/vaapi/qsv) · Lease (our claim on an unacked
//! delivery) · Outcome (what running a task came to, [`tasks::Outcome`]; its metrics label is
//! [`telemetry::OutcomeLabel`]) · Disposition (what to do with an error: retry or fail,
//! [`mediacms::Disposition`]; a fresh delivery's is its [`worker::Triage`]) · Settlement (every
//! effect of finishing a delivery) · Follow-up (a task a job asks to send).

// House rules, written down where the compiler checks them (clippy.toml names the methods and
// their one home module each): one process spawner, the environment read only by `config`, no
// `as` cast that can silently truncate, and every `unsafe` block says why it is sound.
#![deny(clippy::disallowed_methods)]
#![deny(clippy::cast_possible_truncation)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod app;
pub mod backoff;
pub mod blocking;
pub mod broker;
pub mod celery;
pub mod clock;
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
