//! The end of an `encode_media` run (contract §2.5, §2.6): validate and place the output, the
//! failure/retry rules, soft-limit and shutdown cancellation, and the chunk concatenation.

use std::path::Path;
use std::time::Instant;

use serde_json::json;

use super::{tmp_name, EncodeMedia, Job, MAX_RETRIES, RETRY_COUNTDOWN};
use crate::ffmpeg::probe;
use crate::mediacms::layout::LayoutError;
use crate::mediacms::signals::{Completion, ConcatOutput, FollowUp, SignalError};
use crate::mediacms::store::{ChunkKey, Started};
use crate::plan;
use crate::tasks::{Fence, JobContext, Outcome, Stop, TaskError};

/// MediaCMS's exception for ffmpeg failures (`files.backends.VideoEncodingError`).
fn encoding_error(tail: &str) -> TaskError {
    TaskError::new("VideoEncodingError", "files.backends", tail)
}

impl EncodeMedia {
    /// §2.6: a non-empty output that probes as video or audio succeeds; anything else fails
    /// (MediaCMS returns False, so the task itself succeeds with `false`). The signals'
    /// follow-ups go into `follow_ups` for the caller to publish (a ladder publishes each
    /// distinct one once per group instead of once per rendition).
    #[allow(clippy::too_many_arguments)] // the one ending every encode path shares
    pub(super) async fn finish(
        &self,
        s: &Started,
        output: &Path,
        logs: &str,
        // What a failed output leaves in the log.
        fail_log: &str,
        began: Instant,
        follow_ups: &mut Vec<FollowUp>,
        fence: &Fence,
    ) -> Result<Outcome, SignalError> {
        let path = output.to_path_buf();
        let valid = crate::blocking::run(move || {
            let non_empty = std::fs::metadata(&path).is_ok_and(|m| m.len() > 0);
            non_empty && probe::validate_output(&path).is_ok()
        });
        if valid.await {
            return self
                .succeed(s, output, logs, began, follow_ups, fence)
                .await;
        }
        let failed = self
            .env
            .signals
            .on_failure(s.encoding.id, Some(fail_log))
            .await?;
        follow_ups.extend(failed);
        Ok(Outcome::Success(json!(false)))
    }

    pub(super) async fn succeed(
        &self,
        s: &Started,
        output: &Path,
        logs: &str,
        began: Instant,
        follow_ups: &mut Vec<FollowUp>,
        fence: &Fence,
    ) -> Result<Outcome, SignalError> {
        let run_secs = i32::try_from(began.elapsed().as_secs()).unwrap_or(i32::MAX);
        let signals = &self.env.signals;
        let completion = signals
            .encoding_succeeded(&s.media, &s.profile, &s.encoding, output, logs, run_secs)
            .await?;
        let Completion::Saved { saved, .. } = completion else {
            tracing::info!(
                encoding = s.encoding.id,
                "Encoding deleted before it finished"
            );
            return Ok(Outcome::Success(json!(false)));
        };
        follow_ups.extend(saved.follow_ups);
        if let Some(key) = saved.concat {
            // The chunk's own follow-ups go out before the concatenation's, as MediaCMS's.
            self.env.hand_over_follow_ups(follow_ups);
            follow_ups.clear();
            // The chunk is committed; the concatenation has its own exactly-once lock, and a
            // crash during it should be restored after the lease, not the finishing window.
            fence.release().await;
            self.concatenate(&key).await?;
        }
        Ok(Outcome::Success(json!(true)))
    }

    /// §2.5: the row says `fail` with the stderr tail; one Celery retry after 5 s, then the
    /// final failure (`on_failure`: status, media recompute, a failed chunk fails its set).
    /// `logs` goes to the Encoding (any hardware attempt's account, then `tail`); the task's
    /// error carries `tail` alone, as MediaCMS's does.
    pub(super) async fn failed(
        &self,
        job: &Job<'_>,
        s: &Started,
        logs: &str,
        tail: &str,
    ) -> Result<Outcome, SignalError> {
        let signals = &self.env.signals;
        if job.task.retries < MAX_RETRIES {
            if let Some(enc) = signals
                .store()
                .mark_failed(s.encoding.id, Some(logs))
                .await?
            {
                let saved = signals.encoding_saved(&enc).await?;
                self.env.hand_over_follow_ups(&saved.follow_ups);
            }
            self.env.metrics.task_retried("encode_media");
            return Ok(Outcome::Retry {
                countdown: RETRY_COUNTDOWN,
                error: encoding_error(tail),
            });
        }
        let follow_ups = signals.on_failure(s.encoding.id, Some(logs)).await?;
        self.env.hand_over_follow_ups(&follow_ups);
        Ok(Outcome::Failure(encoding_error(tail)))
    }

    /// The job's token fired. Past the soft limit this is MediaCMS's `SoftTimeLimitExceeded`
    /// (fail, one retry). A revoke-terminate does what MediaCMS's `task_revoked` does: the
    /// task's Encodings are deleted. A shutdown abort requeues the delivery, so the row goes
    /// back to `pending` for the re-run. A lost lease touches nothing (another worker has it).
    pub(super) async fn cancelled(
        &self,
        job: &Job<'_>,
        s: &Started,
        ctx: &JobContext,
    ) -> Result<Outcome, SignalError> {
        let timed_out = ctx
            .deadline
            .is_some_and(|d| tokio::time::Instant::now() >= d);
        if timed_out {
            let why = "soft time limit exceeded";
            return self.failed(job, s, why, why).await;
        }
        match ctx.stop.get() {
            Some(Stop::LeaseLost) => {}
            Some(Stop::Terminated) if ctx.fence.claim().await => {
                let gone = (self.env.signals)
                    .encoding_revoked(&job.task.id, s.media.id)
                    .await?;
                tracing::info!(task = %job.task.id, deleted = gone.len(), "revoked: the task's Encodings are deleted, as MediaCMS's task_revoked does");
                return Ok(Outcome::Revoked("terminated".into()));
            }
            Some(Stop::Shutdown | Stop::SoftTimeLimit) | None if ctx.fence.claim().await => {
                self.env.signals.store().mark_pending(s.encoding.id).await?;
            }
            _ => {}
        }
        Ok(Outcome::Aborted)
    }

    /// §2.6 chunk finalisation: whichever worker finishes a set's last chunk concatenates it,
    /// exactly once (the store's lock); a failed concat leaves the set for a re-run.
    async fn concatenate(&self, key: &ChunkKey) -> Result<(), SignalError> {
        let signals = &self.env.signals;
        let Some(job) = signals.begin_concat(key).await? else {
            return Ok(());
        };
        let dir = self
            .env
            .job_dir()
            .map_err(|e| LayoutError::io("create job dir", &self.env.temp_root, e))?;
        let list = dir.path().join(format!("{}.txt", tmp_name()));
        let parts: Vec<String> = job
            .parts
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        std::fs::write(&list, plan::concat_list(&parts))
            .map_err(|e| LayoutError::io("write concat list", &list, e))?;
        let output = dir
            .path()
            .join(format!("{}.{}", tmp_name(), job.profile.extension));
        let argv = plan::plan_concat(&list.to_string_lossy(), &output.to_string_lossy());
        // Never cancelled by the job's token: the chunk itself is already committed.
        let never = tokio_util::sync::CancellationToken::new();
        match self.env.ffmpeg(argv, &never, |_| {}).await {
            Ok(out) => {
                let done = signals
                    .finish_concat(
                        job,
                        ConcatOutput {
                            temp_file: &output,
                            ffmpeg_stderr: &out.stderr_log,
                        },
                    )
                    .await?;
                tracing::info!(encoding = done.encoding.id, "chunks concatenated");
                self.env.hand_over_follow_ups(&done.follow_ups);
            }
            Err(e) => {
                tracing::error!(error = %e, "chunk concatenation failed; set left for a re-run");
                job.abandon().await?;
            }
        }
        Ok(())
    }
}
