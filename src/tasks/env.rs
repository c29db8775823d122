//! What every task handler shares: the store with its replayed signals, the publisher for
//! follow-up tasks, ffmpeg options, MediaCMS's encode settings, metrics, and the hardware
//! acceleration state (probed capabilities, backend health, hardware job slots).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Map;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::family;
use crate::broker::{Broker, BrokerError};
use crate::celery::message::OutgoingTask;
use crate::config::HwAccel;
use crate::ffmpeg::backend::{backend_name, choose_healthy, Choice, HealthBook};
use crate::ffmpeg::caps::Capabilities;
use crate::ffmpeg::progress::Progress;
use crate::ffmpeg::run::{self, RunError, RunOutput, RunSpec};
use crate::mediacms::signals::{FollowUp, Signals};
use crate::plan::{Backend, EncodeSettings};
use crate::telemetry::metrics::Metrics;

/// How ffmpeg children are started.
#[derive(Debug, Clone)]
pub struct FfmpegOptions {
    /// FFMPEG_COMMAND.
    pub program: String,
    /// Niceness of every child (0..=19).
    pub nice: i32,
}

/// Probed capabilities, the operator's choice, recent hardware failures and hardware slots.
pub struct Accel {
    caps: Capabilities,
    hwaccel: HwAccel,
    health: Mutex<HealthBook>,
    slots: Arc<Semaphore>,
}

/// A backend decision for one job, holding a hardware slot when it is not software.
pub struct Granted {
    pub choice: Choice,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Accel {
    /// A failed backend is avoided for `cooldown`; `hw_slots` bounds concurrent encoder sessions.
    pub fn new(caps: Capabilities, hwaccel: HwAccel, hw_slots: usize, cooldown: Duration) -> Self {
        Self {
            caps,
            hwaccel,
            health: Mutex::new(HealthBook::new(cooldown)),
            slots: Arc::new(Semaphore::new(hw_slots.max(1))),
        }
    }

    /// Software only: for tests and the `transcode` CLI without probing.
    pub fn software() -> Self {
        let caps = Capabilities {
            ffmpeg: String::new(),
            ffmpeg_version: "not probed".into(),
            hwaccel: HwAccel::Software,
            backends: vec![],
            probe_ms: 0,
        };
        Self::new(caps, HwAccel::Software, 1, Duration::ZERO)
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// The backend for a profile codec. A hardware backend needs a free hardware slot; when all
    /// are busy the job runs in software rather than queueing behind the GPU.
    pub fn grant(&self, codec: &str) -> Granted {
        let choice = {
            let health = self.health.lock().expect("health book lock");
            choose_healthy(&self.caps, self.hwaccel, codec, &health, Instant::now())
        };
        if choice.backend == Backend::Software {
            return Granted {
                choice,
                _slot: None,
            };
        }
        match self.slots.clone().try_acquire_owned() {
            Ok(slot) => Granted {
                choice,
                _slot: Some(slot),
            },
            Err(_) => Granted {
                choice: Choice {
                    backend: Backend::Software,
                    device: None,
                    reason: format!("{}: all hardware slots busy", choice.reason),
                },
                _slot: None,
            },
        }
    }

    /// When the operator forced a hardware backend (`--hwaccel nvenc|vaapi|qsv`) and this job
    /// runs in software anyway: the backend asked for and why, for the Encoding log.
    pub fn forced_fallback(&self, granted: &Granted) -> Option<(&'static str, String)> {
        let asked = match self.hwaccel {
            HwAccel::Auto | HwAccel::Software => return None,
            HwAccel::Nvenc => "nvenc",
            HwAccel::Vaapi => "vaapi",
            HwAccel::Qsv => "qsv",
        };
        (granted.choice.backend == Backend::Software)
            .then(|| (asked, granted.choice.reason.clone()))
    }

    /// Mark a backend unhealthy after a hardware failure so the next jobs avoid it for a while.
    pub fn failed(&self, backend: &Backend, reason: &str) {
        let mut health = self.health.lock().expect("health book lock");
        health.mark_failed(backend, Instant::now(), reason);
        tracing::warn!(
            backend = backend_name(backend),
            reason,
            "hardware backend marked unhealthy"
        );
    }
}

/// Shared by every handler (built once in `app`).
pub struct TaskEnv {
    pub signals: Signals,
    pub publisher: Arc<dyn Broker>,
    pub ffmpeg: FfmpegOptions,
    pub settings: EncodeSettings,
    /// TEMP_DIRECTORY: job directories for ffmpeg outputs before they move into MEDIA_ROOT.
    pub temp_root: PathBuf,
    pub metrics: Arc<Metrics>,
    pub accel: Accel,
    /// `--decode-once`: a non-chunk encode claims the media's other pending video Encodings
    /// and produces all renditions from one decode (`tasks::encode_media::ladder`).
    pub decode_once: bool,
}

impl TaskEnv {
    pub fn media_root(&self) -> &Path {
        self.signals.media_root()
    }

    /// Publish what the replayed signals asked for (Celery's `.delay` inside signals). A failed
    /// publish is logged: the rows are already committed and MediaCMS's own beat/admin actions
    /// regenerate HLS, so failing the task would only redo a finished encode.
    pub async fn publish_follow_ups(&self, follow_ups: &[FollowUp]) {
        for f in follow_ups {
            let mut task = OutgoingTask::new(f.task_name(), f.queue(), f.args(), Map::new());
            task.argsrepr_tuple = true; // `.delay(token)`
            match self.publish_child(task).await {
                Ok(id) => tracing::info!(task = f.task_name(), %id, "published follow-up"),
                Err(e) => {
                    tracing::error!(task = f.task_name(), error = %e, "publishing follow-up failed")
                }
            }
        }
    }

    /// Publish `task` as a child of the running task (`parent_id`, `root_id`, and listed in its
    /// result's `children`, as Celery does for anything sent from inside a task).
    pub async fn publish_child(&self, task: OutgoingTask) -> Result<String, BrokerError> {
        let task = family::adopt(task);
        self.publisher.publish(&task).await?;
        family::published(&task.id);
        Ok(task.id)
    }

    /// A private directory under TEMP_DIRECTORY, removed with everything in it on drop.
    pub fn job_dir(&self) -> std::io::Result<tempfile::TempDir> {
        std::fs::create_dir_all(&self.temp_root)?;
        tempfile::Builder::new()
            .prefix("mediacms-worker-")
            .tempdir_in(&self.temp_root)
    }

    /// Run one MediaCMS-style ffmpeg argv through the crate's only spawner.
    pub async fn ffmpeg(
        &self,
        argv: Vec<String>,
        cancel: &CancellationToken,
        progress: impl FnMut(Progress),
    ) -> Result<RunOutput, RunError> {
        let mut spec = RunSpec::ffmpeg(self.ffmpeg.program.clone(), argv);
        spec.nice = self.ffmpeg.nice;
        let result = run::run(spec, cancel, progress).await;
        self.metrics.ffmpeg_exited(exit_class(&result));
        result
    }
}

fn exit_class(result: &Result<RunOutput, RunError>) -> crate::telemetry::metrics::FfmpegExit {
    use crate::telemetry::metrics::FfmpegExit;
    match result {
        // ffmpeg exits 0 after writing nothing (a seek past the end): not a success.
        Ok(out) if crate::plan::ffmpeg_reported_empty(&out.stderr_tail) => FfmpegExit::EmptyOutput,
        Ok(_) => FfmpegExit::Ok,
        Err(RunError::Cancelled { .. }) => FfmpegExit::Killed,
        Err(RunError::Failed { status, .. }) => FfmpegExit::classify(status.code(), false),
        Err(RunError::Spawn { .. }) => FfmpegExit::Error,
    }
}
