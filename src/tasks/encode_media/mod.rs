//! `encode_media`: MediaCMS's encoding state machine (contract §2) — claim the Encoding, plan,
//! run ffmpeg with progress and row-deletion cancellation, then replay Django's signals through
//! `mediacms::signals` and publish their follow-ups. A chunk encode may end in the one
//! concatenation of its set (`finish.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;
use tokio::sync::watch;

use self::fallback::fallback_note;
use super::env::TaskEnv;
use super::{infra_outcome, misrouted, JobContext, LongTask, Outcome, Task, TaskHandler};
use crate::celery::message::TaskMessage;
use crate::ffmpeg::backend::{backend_name, classify_hw_failure};
use crate::ffmpeg::progress::{percent, Progress, ProgressThrottle};
use crate::ffmpeg::run::RunError;
use crate::mediacms::layout;
use crate::mediacms::signals::SignalError;
use crate::mediacms::store::{StartOutcome, StartRequest, Started};
use crate::mediacms::Disposition;
use crate::plan::{self, Backend, EncodeIo, MediaInfo, ProfileSpec};

/// How often progress is saved while ffmpeg runs; each save also detects a deleted Encoding,
/// so this bounds cancellation latency (MediaCMS: ~30 s).
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// MediaCMS: `self.retry(countdown=5, max_retries=1)`.
const RETRY_COUNTDOWN: Duration = Duration::from_secs(5);
const MAX_RETRIES: u32 = 1;

pub struct EncodeMedia {
    pub env: Arc<TaskEnv>,
}

/// The arguments of one `encode_media` message.
struct Job<'a> {
    task: &'a TaskMessage,
    force: bool,
    chunk_file_path: Option<String>,
    encoding_id: i32,
    profile_id: i32,
    friendly_token: String,
}

/// How one ffmpeg pass ended.
enum Pass {
    Done(String),
    /// The Encoding row was deleted (MediaCMS's cancellation): stop, write nothing.
    RowDeleted,
    /// The job's token fired (shutdown abort, revoke terminate, soft limit).
    Cancelled,
    Failed(String),
}

#[async_trait]
impl TaskHandler for EncodeMedia {
    async fn run(&self, task: &Task<'_>, ctx: JobContext) -> Outcome {
        let LongTask::EncodeMedia {
            friendly_token,
            profile_id,
            encoding_id,
            force,
            chunk,
            chunk_file_path,
            ..
        } = &task.call
        else {
            return misrouted(task);
        };
        let job = Job {
            task: task.message,
            force: *force,
            chunk_file_path: chunk.then(|| chunk_file_path.clone()),
            encoding_id: *encoding_id,
            profile_id: *profile_id,
            friendly_token: friendly_token.clone(),
        };
        match self.encode(&job, &ctx).await {
            Ok(outcome) => outcome,
            Err(e) => {
                let message = e.to_string();
                if e.disposition() == Disposition::Fail {
                    self.permanent_failure(job.encoding_id, &message).await;
                }
                infra_outcome(task, &ctx, &message, e.disposition()).await
            }
        }
    }
}

impl EncodeMedia {
    /// A permanent error (a DB path escaping MEDIA_ROOT, a foreign file type) ends the
    /// Encoding `fail` with the reason in its log, as MediaCMS's `on_failure` does; otherwise
    /// the row claimed at start would stay `running` forever with nothing to say why.
    async fn permanent_failure(&self, encoding_id: i32, message: &str) {
        match self
            .env
            .signals
            .on_failure(encoding_id, Some(message))
            .await
        {
            Ok(follow_ups) => self.env.hand_over_follow_ups(&follow_ups),
            Err(e) => {
                tracing::error!(encoding = encoding_id, error = %e, "marking the Encoding failed")
            }
        }
    }
}

impl EncodeMedia {
    async fn encode(&self, job: &Job<'_>, ctx: &JobContext) -> Result<Outcome, SignalError> {
        let req = StartRequest {
            encoding_id: job.encoding_id,
            friendly_token: &job.friendly_token,
            profile_id: job.profile_id,
            force: job.force,
            chunk_file_path: job.chunk_file_path.as_deref(),
            task_id: &job.task.id,
            worker: &ctx.hostname,
            retries: job.task.retries as i32,
        };
        let started = match self.env.signals.begin_encoding(&req).await? {
            StartOutcome::Started(s) => s,
            StartOutcome::Missing | StartOutcome::Dropped { .. } => {
                return Ok(Outcome::Success(json!(false)))
            }
            StartOutcome::ClaimedByLadder(status) => {
                tracing::info!(encoding = job.encoding_id, %status, "claimed by a ladder: not re-encoded");
                return Ok(Outcome::Success(json!(status == "success")));
            }
        };
        let dir = self
            .env
            .job_dir()
            .map_err(|e| layout::LayoutError::io("create job dir", &self.env.temp_root, e))?;
        let began = Instant::now();
        if started.profile.is_gif() {
            return self.gif(&started, dir.path(), ctx, began).await;
        }
        if self.env.decode_once && !started.encoding.chunk {
            let ladder = self.ladder(job, &started, dir.path(), ctx, began).await?;
            if let Some(outcome) = ladder {
                return Ok(outcome);
            }
        }
        self.video(job, &started, dir.path(), ctx, began).await
    }

    /// The input file: the chunk for chunk encodes, else the original, confined to MEDIA_ROOT.
    fn input(&self, s: &Started) -> Result<PathBuf, SignalError> {
        let path = if s.encoding.chunk {
            PathBuf::from(&s.encoding.chunk_file_path)
        } else {
            PathBuf::from(&s.media.media_file)
        };
        Ok(layout::confine(self.env.media_root(), &path)?)
    }

    async fn video(
        &self,
        job: &Job<'_>,
        s: &Started,
        dir: &Path,
        ctx: &JobContext,
        began: Instant,
    ) -> Result<Outcome, SignalError> {
        let input = self.input(s)?;
        let ext = &s.profile.extension;
        let output = dir.join(format!("{}.{ext}", tmp_name()));
        let pass_file = dir.join(format!("{}.{ext}", tmp_name()));
        let codec = s.profile.codec.clone().unwrap_or_default();
        let mut granted = self.env.accel.grant(&codec);
        let mut backend = granted.choice.backend.clone();
        let mut notes = String::new();
        if let Some((asked, reason)) = self.env.accel.forced_fallback(&granted) {
            // The operator asked for hardware that cannot run here: say so where they look.
            self.env.metrics.hw_fallback(asked, "device_open");
            notes = format!(
                "[mediacms-worker] --hwaccel {asked} unavailable, encoded in software: {reason}\n"
            );
        }
        loop {
            let plan = match self.plan(s, &input, &output, &pass_file, &backend) {
                Ok(p) => p,
                Err(skip) => {
                    tracing::info!(encoding = s.encoding.id, %skip, "no command for this profile");
                    // MediaCMS leaves `logs` empty for a profile it skips by rule; an unusable
                    // source (no video stream, unreadable file) is said in the log instead, or
                    // the operator sees a bare `fail` with nothing to act on.
                    let why = matches!(skip, plan::PlanSkip::InvalidMediaInfo(_))
                        .then(|| format!("[mediacms-worker] not encoded: {skip}"));
                    let follow_ups = self
                        .env
                        .signals
                        .on_failure(s.encoding.id, why.as_deref())
                        .await?;
                    self.env.hand_over_follow_ups(&follow_ups);
                    return Ok(Outcome::Success(json!(false)));
                }
            };
            if plan.backend == Backend::Software {
                // Nothing of this input runs on the GPU (e.g. High 10 on a GPU without NVENC):
                // its slot goes to another job.
                granted.release();
            }
            if plan.route.uses_hardware() && !plan.route.why.is_empty() {
                // Part of this input stays on the CPU (e.g. NVDEC cannot decode High 10).
                let (name, route) = (backend_name(&plan.backend), &plan.route);
                tracing::info!(
                    encoding = s.encoding.id,
                    backend = name,
                    ?route,
                    "hardware route"
                );
            }
            let store = self.env.signals.store();
            let temp_file = output.to_string_lossy();
            let commands = plan::commands_repr(&plan.passes);
            store
                .set_commands(s.encoding.id, &temp_file, &commands)
                .await?;
            let pass = self.run_passes(s, &plan.passes, &plan.backend, ctx).await?;
            let hw_retry = matches!(pass, Pass::Failed(_)) && plan.backend != Backend::Software;
            let writes = matches!(pass, Pass::Done(_) | Pass::Failed(_)) && !hw_retry;
            if writes && !ctx.fence.claim().await {
                // Lease lost (this worker stalled or was cut off past it, and another one has
                // the task now): the row, files and follow-ups are that run's to write.
                return Ok(Outcome::Aborted);
            }
            match pass {
                Pass::Done(tail) => {
                    self.env.accel.succeeded(&plan.backend);
                    let logs = format!("{notes}{tail}");
                    let mut follow_ups = Vec::new();
                    let f = &mut follow_ups;
                    // A failed output's log keeps the hardware attempt's account too.
                    let fence = &ctx.fence;
                    let done = self.finish(s, &output, &logs, &logs, began, f, fence).await;
                    self.env.hand_over_follow_ups(&follow_ups);
                    return done;
                }
                Pass::RowDeleted => return Ok(Outcome::Success(json!(false))),
                Pass::Cancelled => return self.cancelled(job, s, ctx).await,
                Pass::Failed(tail) if plan.backend != Backend::Software => {
                    // Redo this job in software; only a device-level failure touches the
                    // device's health, and the slot goes back before the software run.
                    let failure = classify_hw_failure(&tail);
                    granted.release();
                    let last = tail.lines().rev().find(|l| !l.trim().is_empty());
                    let reason = last.unwrap_or("ffmpeg failed");
                    self.env.accel.failed(&plan.backend, failure, reason);
                    let name = backend_name(&plan.backend);
                    self.env.metrics.hw_fallback(name, failure.reason_class());
                    notes = fallback_note(&plan.backend, failure, &tail);
                    backend = Backend::Software;
                }
                // The log keeps any hardware attempt before the software run's own tail.
                Pass::Failed(tail) => {
                    return self.failed(job, s, &format!("{notes}{tail}"), &tail).await
                }
            }
        }
    }

    fn plan(
        &self,
        s: &Started,
        input: &Path,
        output: &Path,
        pass_file: &Path,
        backend: &Backend,
    ) -> Result<plan::EncodePlan, plan::PlanSkip> {
        let io = EncodeIo {
            input: &input.to_string_lossy(),
            output: &output.to_string_lossy(),
            pass_file: &pass_file.to_string_lossy(),
            chunk: s.encoding.chunk,
        };
        let profile = ProfileSpec {
            id: s.profile.id,
            extension: s.profile.extension.clone(),
            resolution: s.profile.resolution,
            codec: s.profile.codec.clone(),
        };
        let info = MediaInfo::from_json(&s.media.media_info);
        plan::plan_encode(&io, &info, &profile, &self.env.settings, backend)
    }

    /// Run every pass; MediaCMS goes on to the next pass after a "real ffmpeg error" and lets
    /// the output check decide, so a final error is remembered and reported at the end.
    async fn run_passes(
        &self,
        s: &Started,
        passes: &[Vec<String>],
        backend: &Backend,
        ctx: &JobContext,
    ) -> Result<Pass, SignalError> {
        let mut last = String::new();
        for argv in passes {
            match self.run_pass(s, argv.clone(), backend, ctx).await? {
                Pass::Done(tail) => last = tail,
                // MediaCMS's rule is about its software argv; a hardware run that printed such
                // an error is re-run in software instead, so software decides the outcome.
                Pass::Failed(tail)
                    if *backend == Backend::Software && plan::ffmpeg_error_is_final(&tail) =>
                {
                    last = tail
                }
                other => return Ok(other),
            }
        }
        Ok(Pass::Done(last))
    }

    /// One ffmpeg run; progress is saved every [`PROGRESS_EVERY`], and a save that hits no row
    /// (the Encoding was deleted) kills ffmpeg.
    async fn run_pass(
        &self,
        s: &Started,
        argv: Vec<String>,
        backend: &Backend,
        ctx: &JobContext,
    ) -> Result<Pass, SignalError> {
        let (tx, rx) = watch::channel(None::<Progress>);
        let kill = ctx.cancel.child_token();
        let run = self.env.ffmpeg(argv, &kill, move |p| {
            let _ = tx.send(Some(p));
        });
        let saver = self.save_progress(s, rx, &kill);
        let (result, saved) = tokio::join!(run, saver);
        let last = saved?;
        if let Some(p) = &last {
            let speed = p.speed.unwrap_or(f64::NAN);
            let fps = p.fps.unwrap_or(f64::NAN);
            self.env
                .metrics
                .encode_observed(&s.profile.name, backend_name(backend), speed, fps);
        }
        Ok(match result {
            Ok(out) => Pass::Done(out.stderr_tail),
            Err(RunError::Cancelled { .. }) if !ctx.cancel.is_cancelled() => Pass::RowDeleted,
            Err(RunError::Cancelled { .. }) => Pass::Cancelled,
            Err(e) => {
                tracing::warn!(encoding = s.encoding.id, error = %e, "ffmpeg failed");
                Pass::Failed(e.stderr_tail().to_owned())
            }
        })
    }

    /// Saves progress until ffmpeg's sender is gone; returns the last reading.
    async fn save_progress(
        &self,
        s: &Started,
        mut rx: watch::Receiver<Option<Progress>>,
        kill: &tokio_util::sync::CancellationToken,
    ) -> Result<Option<Progress>, SignalError> {
        let mut throttle = ProgressThrottle::new(PROGRESS_EVERY);
        let mut last = None;
        while rx.changed().await.is_ok() {
            let Some(p) = rx.borrow_and_update().clone() else {
                continue;
            };
            if throttle.should_save(Instant::now(), &p) {
                let pct = percent(p.out_time, f64::from(s.media.duration)) as i16;
                let store = self.env.signals.store();
                if !store.update_progress(s.encoding.id, pct).await? {
                    tracing::info!(encoding = s.encoding.id, "Encoding deleted: killing ffmpeg");
                    kill.cancel();
                }
            }
            last = Some(p);
        }
        Ok(last)
    }
}

/// `tmpXXXXXXXX`, the shape of Python's NamedTemporaryFile names (they end up in gif names).
pub(crate) fn tmp_name() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    let tag = Alphanumeric.sample_string(&mut rand::rng(), 8);
    format!("tmp{}", tag.to_ascii_lowercase())
}

mod fallback;
mod finish;
mod gif;
mod group;
mod ladder;
mod playable;
mod sprite_ladder;
