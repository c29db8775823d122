//! One handler per Celery task name, and the contract between handlers and the worker pool.
//!
//! A handler never acks, retries, publishes or writes results itself: it gets the delivery
//! already decoded and bound ([`Task`]), returns an [`Outcome`], and hands the tasks it wants
//! published to its job's [`family`]; the pool (`crate::worker`) settles all of it in one place.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use crate::celery::args::{LongTask, Task, TaskName};
use crate::celery::message::TaskMessage;
use crate::mediacms::Disposition;

pub mod accel;
pub mod beat;
pub mod chunkize;
pub mod create_hls;
pub mod encode_media;
pub mod env;
pub mod family;
pub mod pickle;
pub mod remove_media_file;
pub mod sprites;
pub mod whisper;

/// A Celery-shaped exception: `{exc_type, exc_message: [message], exc_module}`.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskError {
    pub exc_type: String,
    pub exc_module: String,
    pub message: String,
}

impl TaskError {
    pub fn new(exc_type: &str, exc_module: &str, message: impl Into<String>) -> Self {
        Self {
            exc_type: exc_type.to_owned(),
            exc_module: exc_module.to_owned(),
            message: message.into(),
        }
    }
}

/// What running a task came to; the pool maps each to a result document and an ack.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Task returned normally with this value (MediaCMS tasks return `true`/`false`).
    Success(Value),
    /// Celery `self.retry(countdown=…)`: republish same id with `retries + 1` and an ETA.
    Retry {
        countdown: Duration,
        error: TaskError,
    },
    /// Task raised; result FAILURE.
    Failure(TaskError),
    /// Revoked (terminate) or expired; result REVOKED with this reason.
    Revoked(String),
    /// The job was aborted by shutdown: the pool requeues the delivery, writes no result.
    Aborted,
}

/// Per-job handles given to a handler.
#[derive(Clone, Debug)]
pub struct JobContext {
    /// Cancelled on revoke-terminate or on shutdown abort; handlers kill ffmpeg and return.
    pub cancel: CancellationToken,
    /// This worker's Celery hostname (`-n`), e.g. `long@host`.
    pub hostname: String,
    /// When the soft time limit passes (`timelimit` header's soft value, else the configured
    /// default). At that instant the pool cancels `cancel`; a handler that wants MediaCMS's
    /// `SoftTimeLimitExceeded` handling (mark the Encoding failed) checks this to tell a timeout
    /// from a revoke or shutdown.
    pub deadline: Option<tokio::time::Instant>,
    /// The lease check before the final writes (row, files, follow-ups): see [`Fence`].
    pub fence: Fence,
    /// Why `cancel` fired, once it has.
    pub stop: StopCause,
}

/// Why the pool stopped a job, as its handler sees it (what the row should say afterwards).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// `revoke(terminate=True)`: MediaCMS's `task_revoked` deletes the task's Encodings.
    Terminated,
    /// The soft time limit passed.
    SoftTimeLimit,
    /// Shutdown abort (drain deadline or a second SIGTERM): the delivery is requeued, so the
    /// row goes back to `pending` for the re-run.
    Shutdown,
    /// Another worker holds the delivery now: touch nothing.
    LeaseLost,
}

/// Reads the reason the pool recorded when it cancelled the job (`None` before that, and from
/// the default handle: tests and the CLI).
#[derive(Clone, Default)]
pub struct StopCause(Option<Arc<dyn Fn() -> Option<Stop> + Send + Sync>>);

impl StopCause {
    pub fn new(read: Arc<dyn Fn() -> Option<Stop> + Send + Sync>) -> Self {
        StopCause(Some(read))
    }

    /// Always `stop` (tests).
    pub fn fixed(stop: Stop) -> Self {
        StopCause::new(Arc::new(move || Some(stop)))
    }

    pub fn get(&self) -> Option<Stop> {
        self.0.as_ref().and_then(|read| read())
    }
}

impl std::fmt::Debug for StopCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StopCause({:?})", self.get())
    }
}

/// What answers a [`Fence`]: the pool, from the broker's lease.
#[async_trait]
pub trait FinishGate: Send + Sync + 'static {
    async fn claim(&self) -> bool;
    async fn release(&self);
}

/// A lease is a fence, not a timer (ARCHITECTURE decision 4): a handler calls
/// [`Fence::claim`] right before its final writes. `true`: the delivery is still ours and no
/// other worker can take it from now on, write. `false`: another worker has it (this one
/// stalled or was cut off past its lease) — write nothing and return [`Outcome::Aborted`]; the
/// pool then leaves the delivery to its new holder. The default fence (tests, no broker) always
/// grants.
#[derive(Clone, Default)]
pub struct Fence(Option<Arc<dyn FinishGate>>);

impl Fence {
    pub fn new(gate: Arc<dyn FinishGate>) -> Self {
        Fence(Some(gate))
    }

    pub async fn claim(&self) -> bool {
        match &self.0 {
            None => true,
            Some(gate) => gate.claim().await,
        }
    }

    /// The fenced writes are done and more work follows (a chunk's concatenation, which has its
    /// own exactly-once lock): the delivery goes back to the ordinary lease, so a crash from
    /// here on is restored after the lease rather than the long finishing window.
    pub async fn release(&self) {
        if let Some(gate) = &self.0 {
            gate.release().await;
        }
    }
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Fence(lease)"
        } else {
            "Fence(open)"
        })
    }
}

/// Runs one task name. The pool calls it only with a [`Task`] whose `call` is that name's
/// [`LongTask`] variant (arguments that do not bind never reach a handler).
#[async_trait]
pub trait TaskHandler: Send + Sync + 'static {
    async fn run(&self, task: &Task<'_>, ctx: JobContext) -> Outcome;
}

/// The handler of each task name this worker serves; a name without one is "unregistered".
#[derive(Default, Clone)]
pub struct Registry {
    encode_media: Option<Arc<dyn TaskHandler>>,
    create_hls: Option<Arc<dyn TaskHandler>>,
    produce_sprite_from_video: Option<Arc<dyn TaskHandler>>,
    whisper_transcribe: Option<Arc<dyn TaskHandler>>,
    get_list_of_popular_media: Option<Arc<dyn TaskHandler>>,
    update_listings_thumbnails: Option<Arc<dyn TaskHandler>>,
    remove_media_file: Option<Arc<dyn TaskHandler>>,
    chunkize_media: Option<Arc<dyn TaskHandler>>,
}

impl Registry {
    fn slot(&mut self, name: TaskName) -> &mut Option<Arc<dyn TaskHandler>> {
        match name {
            TaskName::EncodeMedia => &mut self.encode_media,
            TaskName::CreateHls => &mut self.create_hls,
            TaskName::ProduceSpriteFromVideo => &mut self.produce_sprite_from_video,
            TaskName::WhisperTranscribe => &mut self.whisper_transcribe,
            TaskName::GetListOfPopularMedia => &mut self.get_list_of_popular_media,
            TaskName::UpdateListingsThumbnails => &mut self.update_listings_thumbnails,
            TaskName::RemoveMediaFile => &mut self.remove_media_file,
            TaskName::ChunkizeMedia => &mut self.chunkize_media,
        }
    }

    pub fn register(&mut self, name: TaskName, handler: Arc<dyn TaskHandler>) {
        *self.slot(name) = Some(handler);
    }

    /// The handler of `name`, if this worker serves it (dispatch is this `match`).
    pub fn handler(&self, name: TaskName) -> Option<Arc<dyn TaskHandler>> {
        let slot = match name {
            TaskName::EncodeMedia => &self.encode_media,
            TaskName::CreateHls => &self.create_hls,
            TaskName::ProduceSpriteFromVideo => &self.produce_sprite_from_video,
            TaskName::WhisperTranscribe => &self.whisper_transcribe,
            TaskName::GetListOfPopularMedia => &self.get_list_of_popular_media,
            TaskName::UpdateListingsThumbnails => &self.update_listings_thumbnails,
            TaskName::RemoveMediaFile => &self.remove_media_file,
            TaskName::ChunkizeMedia => &self.chunkize_media,
        };
        slot.clone()
    }

    /// The registered name of a fetched task, or `None`: not a name we know, or one this
    /// worker does not serve (both are "unregistered" to Celery).
    pub fn lookup(&self, name: &str) -> Option<(TaskName, Arc<dyn TaskHandler>)> {
        let name = TaskName::parse(name)?;
        self.handler(name).map(|h| (name, h))
    }

    /// Registered names, sorted (for `inspect registered`).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = TaskName::ALL
            .into_iter()
            .filter(|n| self.handler(*n).is_some())
            .map(|n| n.as_str().to_owned())
            .collect();
        names.sort();
        names
    }
}

/// What a handler answers when the pool hands it another name's arguments: impossible by
/// construction (the registry dispatches on the same enum the arguments were bound to), so a
/// wiring bug, reported as a failure rather than a panic.
pub fn misrouted(task: &Task<'_>) -> Outcome {
    tracing::error!(task = %task.name, id = %task.id, call = ?task.call, "task routed to the wrong handler");
    Outcome::Failure(TaskError::new(
        "WorkerError",
        "mediacms_worker",
        format!("{} was routed to the wrong handler", task.name),
    ))
}

/// How long a task waits before giving its delivery back after a transient infrastructure
/// error (database or volume unavailable), so a down dependency is not hammered.
const INFRA_BACKOFF: Duration = Duration::from_secs(5);

/// The outcome of an infrastructure error, by its disposition: transient → the delivery goes
/// back to the queue after a short pause (nothing lost, the Encoding row is claimed again by
/// the re-run); permanent → FAILURE naming the cause.
pub async fn infra_outcome(
    task: &TaskMessage,
    ctx: &JobContext,
    message: &str,
    disposition: Disposition,
) -> Outcome {
    match disposition {
        Disposition::Retry => {
            tracing::warn!(task = %task.name, id = %task.id, error = message, "transient error; requeueing");
            tokio::select! {
                _ = tokio::time::sleep(INFRA_BACKOFF) => {}
                _ = ctx.cancel.cancelled() => {}
            }
            Outcome::Aborted
        }
        Disposition::Fail => {
            tracing::error!(task = %task.name, id = %task.id, error = message, "task failed");
            Outcome::Failure(TaskError::new("WorkerError", "mediacms_worker", message))
        }
    }
}
