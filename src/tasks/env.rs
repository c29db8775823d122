//! What every task handler shares: the store with its replayed signals, the hand-over of
//! follow-up tasks to the running job (no broker: the pool publishes them), ffmpeg options,
//! MediaCMS's encode settings, metrics, and the hardware acceleration state ([`Accel`], its own
//! module).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Map;
use tokio_util::sync::CancellationToken;

use super::accel::Accel;
use super::family;
use crate::celery::message::OutgoingTask;
use crate::ffmpeg::progress::Progress;
use crate::ffmpeg::run::{self, RunError, RunOutput, RunSpec};
use crate::mediacms::signals::{FollowUp, Signals};
use crate::plan::EncodeSettings;
use crate::telemetry::metrics::Metrics;

/// How ffmpeg children are started.
#[derive(Debug, Clone)]
pub struct FfmpegOptions {
    /// FFMPEG_COMMAND.
    pub program: String,
    /// Niceness of every child (0..=19).
    pub nice: i32,
}

/// Shared by every handler (built once in `app`).
pub struct TaskEnv {
    pub signals: Signals,
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

    /// Hand what the replayed signals asked for (Celery's `.delay` inside signals) to the
    /// running job; the pool publishes it when the job settles, after the lease fence.
    pub fn hand_over_follow_ups(&self, follow_ups: &[FollowUp]) {
        for f in follow_ups {
            let mut task = OutgoingTask::new(f.task_name(), f.queue(), f.args(), Map::new());
            task.argsrepr_tuple = true; // `.delay(token)`
            family::follow_up(task);
        }
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
