//! One decode-once ladder process (ladder.rs): its argv from the members and extras, each row's
//! own MediaCMS argv in `commands`, progress saved to every row, how it ended, and the
//! one-by-one ending of each member.

use std::path::Path;
use std::time::Instant;

use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::gif::is_gif_file;
use super::ladder::{spec, Member};
use super::{EncodeMedia, PROGRESS_EVERY};
use crate::ffmpeg::progress::{percent, Progress, ProgressThrottle};
use crate::ffmpeg::run::RunError;
use crate::mediacms::signals::{FollowUp, SignalError};
use crate::mediacms::store::Started;
use crate::plan::{self, Backend, LadderExtras, LadderRung, MediaInfo, SpriteFrames};
use crate::tasks::sprites::MAX_FRAMES;
use crate::tasks::{JobContext, Outcome};

type Res<T> = Result<T, SignalError>;

/// How one ladder process ended.
pub(super) enum GroupEnd {
    Done(String),
    /// Every Encoding of the group was deleted while encoding (cancellation).
    AllDeleted,
    Cancelled,
    Failed(String),
}

impl EncodeMedia {
    /// One ffmpeg process for a group: each row's own MediaCMS argv in its `commands`, progress
    /// saved to every row. Returns how it ended and the shared argv (`commands_repr` form).
    pub(super) async fn run_group(
        &self,
        group: &[&Member],
        info: &MediaInfo,
        frames: Option<&Path>,
        ctx: &JobContext,
    ) -> Res<(GroupEnd, String)> {
        let own = &group[0].started;
        let input = self.input(own)?;
        let gif = group.iter().find(|m| m.started.profile.is_gif());
        let gif_out = gif.map(|m| m.output.to_string_lossy().into_owned());
        let rungs: Vec<LadderRung> = group
            .iter()
            .filter(|m| !m.started.profile.is_gif())
            .map(|m| LadderRung {
                profile: spec(&m.started),
                output: m.output.to_string_lossy().into_owned(),
            })
            .collect();
        let pattern = frames.map(|p| p.to_string_lossy().into_owned());
        let extras = LadderExtras {
            gif: gif_out.as_deref(),
            sprites: pattern.as_deref().map(|pattern| SpriteFrames {
                pattern,
                every_secs: self.env.settings.sprite_num_secs.max(1),
                max_frames: MAX_FRAMES,
            }),
        };
        let argv = match plan::plan_ladder_with(
            &input.to_string_lossy(),
            info,
            &rungs,
            &extras,
            &self.env.settings,
        ) {
            Ok(argv) => argv,
            Err(e) => return Ok((GroupEnd::Failed(e.to_string()), String::new())),
        };
        let shared = plan::commands_repr(std::slice::from_ref(&argv));
        let store = self.env.signals.store();
        // MediaCMS's GIF path writes no `commands` (nor does ours one by one).
        for m in group.iter().filter(|m| !m.started.profile.is_gif()) {
            let temp_file = m.output.to_string_lossy();
            let commands = self.own_commands(&m.started, &input, &m.output);
            store
                .set_commands(m.started.encoding.id, &temp_file, &commands)
                .await?;
        }
        let ids: Vec<i32> = group.iter().map(|m| m.started.encoding.id).collect();
        let (tx, rx) = watch::channel(None::<Progress>);
        let kill = ctx.cancel.child_token();
        let run = self.env.ffmpeg(argv, &kill, move |p| {
            let _ = tx.send(Some(p));
        });
        let duration = f64::from(own.media.duration);
        let saver = self.save_group_progress(&ids, duration, rx, &kill);
        let (result, saved) = tokio::join!(run, saver);
        let all_deleted = saved?;
        let end = match result {
            Ok(out) => GroupEnd::Done(out.stderr_tail),
            Err(RunError::Cancelled { .. }) if ctx.cancel.is_cancelled() => GroupEnd::Cancelled,
            Err(RunError::Cancelled { .. }) if all_deleted => GroupEnd::AllDeleted,
            Err(RunError::Cancelled { .. }) => GroupEnd::Cancelled,
            Err(e) => {
                tracing::warn!(encodings = ?ids, error = %e, "ladder ffmpeg failed");
                GroupEnd::Failed(e.stderr_tail().to_owned())
            }
        };
        Ok((end, shared))
    }

    /// What MediaCMS would have run for this row alone (what one-by-one stores): the software
    /// plan with the row's own temp output. Every member passed `rung_decisions`, so the plan
    /// exists; an empty string is only a guard.
    fn own_commands(&self, s: &Started, input: &Path, output: &Path) -> String {
        let pass_file = output.with_extension(format!("pass.{}", s.profile.extension));
        self.plan(s, input, output, &pass_file, &Backend::Software)
            .map(|p| plan::commands_repr(&p.passes))
            .unwrap_or_default()
    }

    /// Saves the group's progress on every row. A deleted row just stops getting saves (its
    /// output is dropped at the end by `encoding_succeeded`); ffmpeg is killed only when every
    /// row of the group is gone. Returns whether that happened.
    async fn save_group_progress(
        &self,
        ids: &[i32],
        duration: f64,
        mut rx: watch::Receiver<Option<Progress>>,
        kill: &CancellationToken,
    ) -> Res<bool> {
        let mut throttle = ProgressThrottle::new(PROGRESS_EVERY);
        let mut alive: Vec<i32> = ids.to_vec();
        while rx.changed().await.is_ok() {
            let Some(p) = rx.borrow_and_update().clone() else {
                continue;
            };
            if !throttle.should_save(Instant::now(), &p) || alive.is_empty() {
                continue;
            }
            let pct = percent(p.out_time, duration) as i16;
            let mut still = Vec::with_capacity(alive.len());
            for id in alive {
                if self.env.signals.store().update_progress(id, pct).await? {
                    still.push(id);
                }
            }
            alive = still;
            if alive.is_empty() {
                tracing::info!(encodings = ?ids, "every ladder Encoding deleted: killing ffmpeg");
                kill.cancel();
            }
        }
        Ok(alive.is_empty())
    }

    /// The one-by-one ending for one output, unless its own message took the row back.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn end_member(
        &self,
        task_id: &str,
        m: &Member,
        note: &str,
        tail: &str,
        began: Instant,
        follow_ups: &mut Vec<FollowUp>,
        ctx: &JobContext,
    ) -> Res<Outcome> {
        let id = m.started.encoding.id;
        if !self
            .env
            .signals
            .store()
            .ladder_still_owns(id, task_id)
            .await?
        {
            tracing::warn!(
                encoding = id,
                "restarted by its own message: ladder output dropped"
            );
            return Ok(Outcome::Success(json!(false)));
        }
        let logs = format!("{note}{tail}");
        // Ladder members are never chunks, so no concatenation follows: nothing to release.
        let fence = crate::tasks::Fence::default();
        if m.started.profile.is_gif() {
            return self.end_gif(m, &logs, tail, began, follow_ups, ctx).await;
        }
        self.finish(
            &m.started, &m.output, &logs, tail, began, follow_ups, &fence,
        )
        .await
    }

    /// The GIF member: the one-by-one GIF ending when the shared process wrote it, else the
    /// one-by-one GIF path itself (its own ffmpeg, the from-start fallback, its failure rules).
    async fn end_gif(
        &self,
        m: &Member,
        logs: &str,
        tail: &str,
        began: Instant,
        follow_ups: &mut Vec<FollowUp>,
        ctx: &JobContext,
    ) -> Res<Outcome> {
        if is_gif_file(&m.output) && !plan::ffmpeg_reported_empty(tail) {
            let fence = crate::tasks::Fence::default();
            return self
                .succeed(&m.started, &m.output, logs, began, follow_ups, &fence)
                .await;
        }
        tracing::warn!(
            encoding = m.started.encoding.id,
            "the shared process wrote no GIF: made one by one"
        );
        let dir = m.output.parent().unwrap_or(Path::new("."));
        self.gif(&m.started, dir, ctx, began).await
    }
}
