//! One handler per Celery task name, and the contract between handlers and the worker pool.
//!
//! A handler never acks, retries or writes results itself: it returns an [`Outcome`] and the
//! pool (`crate::worker`) is the one place that publishes a retry, stores the result and acks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::celery::message::TaskMessage;
use crate::mediacms::Disposition;

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

impl Outcome {
    /// Arguments that do not fit the task's signature: Python raises `TypeError` before the
    /// task body runs, so the result is that FAILURE and nothing else happens.
    pub fn bad_args(message: String) -> Self {
        Outcome::Failure(TaskError::new("TypeError", "builtins", message))
    }
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

#[async_trait]
pub trait TaskHandler: Send + Sync + 'static {
    async fn run(&self, task: &TaskMessage, ctx: JobContext) -> Outcome;
}

/// Task name → handler. A name with no handler is "unknown" to the pool.
#[derive(Default, Clone)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn TaskHandler>>,
}

impl Registry {
    pub fn register(&mut self, name: &str, handler: Arc<dyn TaskHandler>) {
        self.handlers.insert(name.to_owned(), handler);
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn TaskHandler>> {
        self.handlers.get(name).cloned()
    }

    /// Registered names, sorted (for `inspect registered`).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.handlers.keys().cloned().collect();
        names.sort();
        names
    }
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
