//! `whisper_transcribe(friendly_token, translate_to_english)` (contract §5.3): run the `whisper`
//! CLI on the original, save its `.vtt` as a `files_subtitle`, finish the TranscriptionRequest
//! and ask the short worker to rebuild the search vector.
//!
//! Differences from MediaCMS, all invisible to Django: the input path is the configured
//! MEDIA_ROOT, not a hard-coded one (quirk §9.13), and the argv is a list, not a split string;
//! the file is placed before its row is inserted (no row ever names a missing file); one
//! `update_search_vector` is published instead of two. A missing CLI ends the request `fail`
//! with a log that says so, instead of a traceback.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Map};

use super::env::TaskEnv;
use super::{infra_outcome, misrouted, JobContext, LongTask, Outcome, Task, TaskHandler};
use crate::celery::message::OutgoingTask;
use crate::ffmpeg::run::{self, RunError};
use crate::mediacms::layout::{self, LayoutError};
use crate::mediacms::model::{Media, TranscriptionRequest};
use crate::mediacms::signals::SignalError;

/// Subtitle post_save: `update_search_vector.apply_async(args=[ft], countdown=10)`.
const SEARCH_VECTOR_COUNTDOWN: Duration = Duration::from_secs(10);

/// How whisper is run.
#[derive(Debug, Clone)]
pub struct WhisperOptions {
    /// Program name (looked up on PATH) or path.
    pub command: String,
    /// WHISPER_MODEL (`--model`).
    pub model: String,
}

pub struct WhisperTranscribe {
    pub env: Arc<TaskEnv>,
    pub options: WhisperOptions,
}

#[async_trait]
impl TaskHandler for WhisperTranscribe {
    async fn run(&self, task: &Task<'_>, ctx: JobContext) -> Outcome {
        let LongTask::WhisperTranscribe {
            friendly_token,
            translate_to_english,
        } = &task.call
        else {
            return misrouted(task);
        };
        match self
            .transcribe(friendly_token, *translate_to_english, &ctx)
            .await
        {
            Ok(outcome) => outcome,
            Err(e) => infra_outcome(task, &ctx, &e.to_string(), e.disposition()).await,
        }
    }
}

impl WhisperTranscribe {
    async fn transcribe(
        &self,
        friendly_token: &str,
        translate: bool,
        ctx: &JobContext,
    ) -> Result<Outcome, SignalError> {
        let store = self.env.signals.store();
        let Some(media) = store.media_by_token(friendly_token).await? else {
            return Ok(Outcome::Success(json!(false)));
        };
        let Some(request) = store
            .claim_transcription_request(media.id, translate)
            .await?
        else {
            return Ok(Outcome::Success(json!(false)));
        };
        let Some(program) = crate::ffmpeg::run::find_program(&self.options.command) else {
            let logs = format!(
                "Transcription failed after 0.00 seconds. Error: the whisper CLI `{}` is missing \
                 (not found on PATH; install openai-whisper or set WHISPER_COMMAND)",
                self.options.command
            );
            tracing::error!(media = %friendly_token, command = %self.options.command, "whisper CLI missing");
            store
                .finish_transcription_request(request.id, "fail", &logs)
                .await?;
            return Ok(Outcome::Success(json!(false)));
        };
        let began = Instant::now();
        let dir = self
            .env
            .job_dir()
            .map_err(|e| LayoutError::io("create job dir", &self.env.temp_root, e))?;
        let input = layout::confine(self.env.media_root(), Path::new(&media.media_file))?;
        let args = self.args(&input, dir.path(), translate);
        let result = run::run_program(
            &program.to_string_lossy(),
            &args,
            input.parent(),
            &ctx.cancel,
        )
        .await;
        let secs = began.elapsed().as_secs_f64();
        let error = match result {
            Ok(_) => String::new(),
            Err(RunError::Cancelled { .. }) => return self.interrupted(&request, ctx).await,
            Err(e) => e.to_string(),
        };
        let vtt = dir.path().join(format!("{}.vtt", file_stem(&input)));
        if !vtt.is_file() {
            let logs = format!("Transcription failed after {secs:.2} seconds. Error: {error}");
            store
                .finish_transcription_request(request.id, "fail", &logs)
                .await?;
            return Ok(Outcome::Success(json!(false)));
        }
        self.save_subtitle(&media, translate, &vtt).await?;
        let logs = format!("Transcription took {secs:.2} seconds.");
        store
            .finish_transcription_request(request.id, "success", &logs)
            .await?;
        self.publish_search_vector(friendly_token).await;
        Ok(Outcome::Success(json!(true)))
    }

    /// `whisper <abs original> --model <M> --output_dir <dir> [--task translate]`.
    fn args(&self, input: &Path, out_dir: &Path, translate: bool) -> Vec<String> {
        let mut a = vec![
            input.to_string_lossy().into_owned(),
            "--model".into(),
            self.options.model.clone(),
            "--output_dir".into(),
            out_dir.to_string_lossy().into_owned(),
        ];
        if translate {
            a.extend(["--task".into(), "translate".into()]);
        }
        a
    }

    /// Shutdown or revoke: the request goes back to `pending` so the requeued delivery claims
    /// it again. Past the soft limit it fails instead (MediaCMS would leave it `running`).
    async fn interrupted(
        &self,
        request: &TranscriptionRequest,
        ctx: &JobContext,
    ) -> Result<Outcome, SignalError> {
        let store = self.env.signals.store();
        let timed_out = ctx
            .deadline
            .is_some_and(|d| tokio::time::Instant::now() >= d);
        if timed_out {
            let logs = "Transcription failed: soft time limit exceeded";
            store
                .finish_transcription_request(request.id, "fail", logs)
                .await?;
            return Ok(Outcome::Success(json!(false)));
        }
        let logs = "Transcription interrupted; queued again";
        store
            .finish_transcription_request(request.id, "pending", logs)
            .await?;
        Ok(Outcome::Aborted)
    }

    /// Language row, the `.vtt` under `original/subtitles/user/<U>/…`, then the subtitle row.
    async fn save_subtitle(
        &self,
        media: &Media,
        translate: bool,
        vtt: &Path,
    ) -> Result<i32, SignalError> {
        let store = self.env.signals.store();
        let (code, title) = if translate {
            ("whisper-translation", "English Translation")
        } else {
            ("whisper", "Transcription")
        };
        let language = store.language_id(code, title).await?;
        let rel =
            layout::subtitle_relative_path(&media.username, &media.uid_hex(), &media.media_file)?;
        let placed = layout::place_file_async(self.env.media_root(), &rel, vtt).await?;
        match store
            .insert_subtitle(media.id, media.user_id, language, &placed)
            .await
        {
            Ok(id) => Ok(id),
            Err(e) => {
                let _ = layout::remove_media_file(self.env.media_root(), Path::new(&placed));
                Err(e.into())
            }
        }
    }

    /// Handed to the pool as a follow-up; a failed publish there is logged only: the subtitle
    /// is saved, and the search vector is refreshed on the media's next save anyway.
    async fn publish_search_vector(&self, friendly_token: &str) {
        let mut task = OutgoingTask::new(
            "update_search_vector",
            "short_tasks",
            vec![json!(friendly_token)],
            Map::new(),
        );
        let countdown = chrono::Duration::from_std(SEARCH_VECTOR_COUNTDOWN).unwrap_or_default();
        task.eta = Some(chrono::Utc::now() + countdown);
        super::family::follow_up(task);
    }
}

/// The basename without its last extension (whisper names its outputs that way).
fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}
