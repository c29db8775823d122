//! Decode-once ladder (on by default; `--decode-once=false` turns it off): a non-chunk video
//! `encode_media` claims the media's other pending video Encodings (`Store::claim_ladder`) and
//! produces the renditions from one decode per process (`plan::plan_ladder`): the
//! `MINIMUM_RESOLUTIONS_TO_ENCODE` rungs first in one quick process so the first playable
//! rendition is not held back, then the rest, in as few processes as the memory bound allows
//! (`plan::ladder_groups`: one for 360–720, the 1080 rung of a 1080p source alone).
//!
//! Each output then goes through the one-by-one ending (`finish` → `signals.encoding_succeeded`
//! → follow-ups), so rows and media end as one-by-one leaves them. `commands` holds the argv
//! MediaCMS (and our one-by-one path) would have run for that row alone, so the row reads as
//! MediaCMS leaves it; what differs: `task_id` is the claiming task's id (the row's own message
//! has not been seen yet), `logs` starts with the claim note (the marker) and names the shared
//! process's argv, and `total_run_time` is the claiming task's run time. The identical
//! `create_hls` every rendition's post_save asks for is published once per ladder process, not
//! once per rendition.
//!
//! The preview GIF Encoding joins the first process when its frames can come from the shared
//! decode (`plan::gif_joins_ladder`): one more `split` output with MediaCMS's GIF options, byte-
//! identical to its own command's output. Its row ends as the one-by-one GIF path leaves it
//! (`commands` empty, as MediaCMS's GIF rows); a GIF the shared process did not write is made
//! by that path after all.
//!
//! The owner ([`Owner`]) is the `encode_media` message that claimed, or the media's
//! `produce_sprite_from_video` message, which MediaCMS queues first (sprite_ladder.rs: the sprite
//! frames are one more output of the first process). Before rungs beyond its first playable
//! ones, a ladder encodes other waiting media's first playable rungs (playable.rs).
//!
//! The claimed rows' own messages, when they arrive, end at [`EncodeMedia::early_end`]
//! without touching the row.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;

use super::group::GroupEnd;
use super::playable::PassEnd;
use super::{tmp_name, EncodeMedia, Job, MAX_RETRIES};
use crate::mediacms::model::Media;
use crate::mediacms::signals::{FollowUp, SignalError};
use crate::mediacms::store::{LadderClaim, Started, LADDER_NOTE_PREFIX};
use crate::plan::{self, ladder, Backend, MediaInfo, ProfileSpec};
use crate::tasks::sprites::{finish_strip, sprites_one_by_one};
use crate::tasks::{JobContext, Outcome, Stop};

/// One claimed rendition: its fresh rows (as `start_encoding` would return them) and output.
pub(super) struct Member {
    pub(super) started: Started,
    pub(super) output: PathBuf,
}

/// Who runs a ladder.
pub(super) enum Owner<'a> {
    /// An `encode_media` message; its own started Encoding is the first member.
    Encode(&'a Job<'a>),
    /// A `produce_sprite_from_video` message (sprite_ladder.rs): no Encoding of its own; the
    /// sprite frames come out of the first process into `frames` (an `img%03d.jpg` pattern) and
    /// the strip is its result.
    Sprites {
        task_id: &'a str,
        frames: &'a Path,
        media: &'a Media,
    },
}

impl Owner<'_> {
    fn task_id(&self) -> &str {
        match self {
            Owner::Encode(job) => &job.task.id,
            Owner::Sprites { task_id, .. } => task_id,
        }
    }
}

type Res<T> = Result<T, SignalError>;

pub(super) fn spec(s: &Started) -> ProfileSpec {
    ProfileSpec {
        id: s.profile.id,
        extension: s.profile.extension.clone(),
        resolution: s.profile.resolution,
        codec: s.profile.codec.clone(),
    }
}

impl EncodeMedia {
    /// After our own Encoding started: `None` = no ladder here (nothing to claim, hardware,
    /// two-pass, or MediaCMS would not encode our profile): the one-by-one path goes on.
    pub(super) async fn ladder(
        &self,
        job: &Job<'_>,
        own: &Started,
        dir: &Path,
        ctx: &JobContext,
        began: Instant,
    ) -> Res<Option<Outcome>> {
        let info = MediaInfo::from_json(&own.media.media_info);
        let settings = &self.env.settings;
        if ladder::rung_decisions(&info, &spec(own), settings).is_err() || !self.software_only(own)
        {
            return Ok(None);
        }
        let note = format!(
            "{LADDER_NOTE_PREFIX}: one decode by task {} (Encoding {})\n",
            job.task.id, own.encoding.id
        );
        let Some(members) = self.claim(job, own, &info, &note, dir).await? else {
            return Ok(None);
        };
        let resolutions: Vec<i32> = members
            .iter()
            .map(|m| m.started.profile.resolution.unwrap_or(0))
            .collect();
        let gif = members.iter().position(|m| m.started.profile.is_gif());
        let groups = gif_in_first_group(
            ladder::ladder_groups(&resolutions, &settings.minimum_resolutions),
            gif,
        );
        tracing::info!(
            encoding = own.encoding.id,
            rungs = members.len(),
            "decode-once ladder"
        );
        let owner = Owner::Encode(job);
        self.run_ladder(&owner, &members, &groups, &info, &note, ctx, began)
            .await
            .map(Some)
    }

    /// The ladder runs only where one-by-one would run software (no hardware grant, no forced
    /// hardware fallback note to write).
    fn software_only(&self, own: &Started) -> bool {
        self.software_for(&own.profile.codec.clone().unwrap_or_default())
    }

    pub(super) fn software_for(&self, codec: &str) -> bool {
        let granted = self.env.accel.grant(codec);
        granted.choice.backend == Backend::Software
            && self.env.accel.forced_fallback(&granted).is_none()
    }

    /// Claims the siblings; a claimed row MediaCMS would not encode fails now, exactly as its
    /// own message would (no commands → `fail`, post_encode_actions). `None`: nothing to share.
    async fn claim(
        &self,
        job: &Job<'_>,
        own: &Started,
        info: &MediaInfo,
        note: &str,
        dir: &Path,
    ) -> Res<Option<Vec<Member>>> {
        let signals = &self.env.signals;
        let claim = LadderClaim {
            media_id: own.media.id,
            own_encoding_id: own.encoding.id,
            task_id: &job.task.id,
            worker: &own.encoding.worker,
            retries: own.encoding.retries,
            note,
            with_gif: ladder::gif_joins_ladder(info),
        };
        let claimed = signals.store().claim_ladder(&claim).await?;
        let mut members = vec![member(own.clone(), dir)];
        for encoding in claimed {
            let Some(profile) = signals.store().profile(encoding.profile_id).await? else {
                continue; // profile deleted meanwhile: the row's own message drops it
            };
            let started = Started {
                media: own.media.clone(),
                profile,
                encoding,
                replaced: vec![],
            };
            if started.profile.is_gif() {
                members.push(member(started, dir)); // made from the first process's decode
                continue;
            }
            if ladder::rung_decisions(info, &spec(&started), &self.env.settings).is_err() {
                let follow_ups = signals.on_failure(started.encoding.id, None).await?;
                self.env.hand_over_follow_ups(&follow_ups);
                continue;
            }
            members.push(member(started, dir));
        }
        Ok((members.len() > 1).then_some(members))
    }

    /// Runs the groups in order and ends every member; returns the owner's outcome (its own
    /// Encoding's, or the sprite strip's).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn run_ladder(
        &self,
        owner: &Owner<'_>,
        members: &[Member],
        groups: &[Vec<usize>],
        info: &MediaInfo,
        note: &str,
        ctx: &JobContext,
        began: Instant,
    ) -> Res<Outcome> {
        let own = &members[0].started;
        let task_id = owner.task_id();
        let mut own_outcome = None;
        let mut others_served = false;
        for (n, group) in groups.iter().enumerate() {
            let group: Vec<&Member> = group.iter().map(|&i| &members[i]).collect();
            if !others_served && !self.is_minimum_group(&group) {
                // Before rungs beyond our first playable ones, other media's first playable
                // renditions (playable.rs). Also when our own were made by an earlier run.
                others_served = true;
                let dir = members[0].output.parent().unwrap_or(Path::new("."));
                let served = self.playable_first(task_id, own, dir, ctx, began).await?;
                let stop = self
                    .stop_after(served, owner, own, &own_outcome, ctx)
                    .await?;
                if let Some(stop) = stop {
                    return Ok(stop);
                }
            }
            let frames = match owner {
                Owner::Sprites { frames, .. } if n == 0 => Some(*frames),
                _ => None,
            };
            let (end, shared) = self.run_group(&group, info, frames, ctx).await?;
            // The row's `commands` is its own MediaCMS argv; the process that really made it
            // is named in the log, after the claim note (the marker stays first).
            let note = &format!("{note}[mediacms-worker] made by the shared process {shared}\n");
            let writes = matches!(end, GroupEnd::Done(_) | GroupEnd::Failed(_));
            // Only a process that ended cleanly wrote every sprite frame.
            let clean = matches!(end, GroupEnd::Done(_));
            if writes && !ctx.fence.claim().await {
                return Ok(Outcome::Aborted); // lease lost: the rows are another run's now
            }
            let tail = match end {
                GroupEnd::Done(tail) => tail,
                GroupEnd::Failed(tail) if plan::ffmpeg_error_is_final(&tail) => tail,
                GroupEnd::AllDeleted => continue,
                GroupEnd::Cancelled => {
                    return self.stopped_mid_ladder(owner, own, &own_outcome, ctx).await;
                }
                GroupEnd::Failed(tail) => {
                    let rest: Vec<&Member> =
                        groups[n..].iter().flatten().map(|&i| &members[i]).collect();
                    return match owner {
                        Owner::Encode(job) => {
                            self.ladder_failed(job, own_outcome, &rest, &tail).await
                        }
                        Owner::Sprites { .. } => {
                            self.fail_all(&rest, &tail).await?;
                            self.strip_unless_made(owner, own, own_outcome, ctx).await
                        }
                    };
                }
            };
            // Every rendition's post_save asks for the same create_hls: one per group is
            // enough (the group's outputs land together), and a -c 1 worker does not spend a
            // debounce per rendition on them.
            let mut follow_ups = Vec::new();
            let mut ended = Ok(());
            for &m in &group {
                match self
                    .end_member(task_id, m, note, &tail, began, &mut follow_ups, ctx)
                    .await
                {
                    Ok(outcome)
                        if matches!(owner, Owner::Encode(_))
                            && m.started.encoding.id == own.encoding.id =>
                    {
                        own_outcome = Some(outcome)
                    }
                    Ok(_) => {}
                    Err(e) => {
                        ended = Err(e);
                        break;
                    }
                }
            }
            self.env.hand_over_follow_ups(&distinct(follow_ups));
            ended?;
            if let (Owner::Sprites { frames, media, .. }, 0, true) = (owner, n, clean) {
                // The strip (the task's own result) right after the first process's rows.
                let dir = frames.parent().unwrap_or(Path::new("."));
                let input = self.input(own)?;
                let strip = finish_strip(&self.env, media, &input, dir, ctx).await?;
                if strip == Outcome::Aborted {
                    return Ok(strip);
                }
                own_outcome = Some(strip);
            }
        }
        match owner {
            Owner::Sprites { .. } => self.strip_unless_made(owner, own, own_outcome, ctx).await,
            Owner::Encode(_) => Ok(own_outcome.unwrap_or(Outcome::Success(json!(false)))),
        }
    }

    /// The sprite task's result: the strip made from the first process, or, when that process
    /// made none (it failed, or every Encoding of it was deleted), the one-by-one frames.
    async fn strip_unless_made(
        &self,
        owner: &Owner<'_>,
        own: &Started,
        made: Option<Outcome>,
        ctx: &JobContext,
    ) -> Res<Outcome> {
        match (made, owner) {
            (Some(strip), _) => Ok(strip),
            (None, Owner::Sprites { frames, media, .. }) => {
                let dir = frames.parent().unwrap_or(Path::new("."));
                let input = self.input(own)?;
                sprites_one_by_one(&self.env, media, &input, dir, ctx).await
            }
            (None, Owner::Encode(_)) => Ok(Outcome::Success(json!(false))),
        }
    }

    /// What the ladder returns when the playable-first pass stopped it (`None`: go on).
    async fn stop_after(
        &self,
        served: PassEnd,
        owner: &Owner<'_>,
        own: &Started,
        own_outcome: &Option<Outcome>,
        ctx: &JobContext,
    ) -> Res<Option<Outcome>> {
        Ok(match (served, owner, own_outcome) {
            (PassEnd::Go, _, _) => None,
            // The sprite task requeued re-claims its unfinished rows (same task id).
            (PassEnd::LeaseLost, _, _) | (PassEnd::Cancelled, Owner::Sprites { .. }, _) => {
                Some(Outcome::Aborted)
            }
            (PassEnd::Cancelled, Owner::Encode(_), _) => Some(
                self.stopped_mid_ladder(owner, own, own_outcome, ctx)
                    .await?,
            ),
        })
    }

    /// The job's token fired with claimed members unfinished. They stay claimed under this
    /// task's id, and only a re-run of this very task takes them back (their own messages see
    /// them claimed and end): so a shutdown abort must requeue the delivery even when the
    /// owner's own row is already done — acking it would leave them `running` for ever.
    /// A revoke-terminate deletes the task's rows of this media (MediaCMS's `task_revoked`).
    async fn stopped_mid_ladder(
        &self,
        owner: &Owner<'_>,
        own: &Started,
        own_outcome: &Option<Outcome>,
        ctx: &JobContext,
    ) -> Res<Outcome> {
        match (owner, own_outcome, ctx.stop.get()) {
            (Owner::Sprites { .. }, _, _) => Ok(Outcome::Aborted),
            (Owner::Encode(_), Some(_), Some(Stop::Shutdown) | None) => Ok(Outcome::Aborted),
            (Owner::Encode(job), Some(_), Some(Stop::Terminated))
            | (Owner::Encode(job), None, _) => self.cancelled(job, own, ctx).await,
            // Lease lost: another holder re-runs it; soft limit: the owner's row is done.
            (Owner::Encode(_), Some(done), _) => Ok(done.clone()),
        }
    }

    /// Fails the members at once, with the process's tail (no Celery retry rides on them).
    pub(super) async fn fail_all(&self, members: &[&Member], tail: &str) -> Res<()> {
        for m in members {
            let id = m.started.encoding.id;
            let follow_ups = self.env.signals.on_failure(id, Some(tail)).await?;
            self.env.hand_over_follow_ups(&follow_ups);
        }
        Ok(())
    }

    fn is_minimum_group(&self, group: &[&Member]) -> bool {
        let minimum = &self.env.settings.minimum_resolutions;
        group.iter().any(|m| {
            !m.started.profile.is_gif()
                && m.started
                    .profile
                    .resolution
                    .is_some_and(|r| minimum.contains(&r))
        })
    }

    /// A retryable ladder failure. While our own Encoding is unfinished it takes MediaCMS's
    /// path (one Celery retry, which re-claims the still-running members; or the final
    /// failure, which fails them too). When ours already succeeded there is no retry to ride
    /// on: the members fail now (one-by-one would have retried each once).
    async fn ladder_failed(
        &self,
        job: &Job<'_>,
        own_outcome: Option<Outcome>,
        rest: &[&Member],
        tail: &str,
    ) -> Res<Outcome> {
        let retrying = own_outcome.is_none() && job.task.retries < MAX_RETRIES;
        if !retrying {
            for m in rest
                .iter()
                .filter(|m| m.started.encoding.id != job.encoding_id)
            {
                let follow_ups = self
                    .env
                    .signals
                    .on_failure(m.started.encoding.id, Some(tail))
                    .await?;
                self.env.hand_over_follow_ups(&follow_ups);
            }
        }
        match (
            own_outcome,
            rest.iter()
                .find(|m| m.started.encoding.id == job.encoding_id),
        ) {
            (Some(done), _) => Ok(done),
            (None, Some(own)) => self.failed(job, &own.started, tail, tail).await,
            (None, None) => Ok(Outcome::Success(json!(false))),
        }
    }
}

/// Follow-ups without repeats, first occurrence order.
pub(super) fn distinct(follow_ups: Vec<FollowUp>) -> Vec<FollowUp> {
    let mut out: Vec<FollowUp> = Vec::with_capacity(follow_ups.len());
    for f in follow_ups {
        if !out.contains(&f) {
            out.push(f);
        }
    }
    out
}

/// The GIF (index `gif`, when claimed) runs in the first process: its decode is shared anyway,
/// and the preview then lands with the first playable rendition.
pub(super) fn gif_in_first_group(
    mut groups: Vec<Vec<usize>>,
    gif: Option<usize>,
) -> Vec<Vec<usize>> {
    let Some(gif) = gif else {
        return groups;
    };
    for g in &mut groups {
        g.retain(|&i| i != gif);
    }
    groups.retain(|g| !g.is_empty());
    match groups.first_mut() {
        Some(first) => first.push(gif),
        None => groups.push(vec![gif]),
    }
    groups
}

/// A playable-first member (another media's row): same temp naming.
pub(super) fn borrowed_member(started: Started, dir: &Path) -> Member {
    member(started, dir)
}

fn member(started: Started, dir: &Path) -> Member {
    let output = dir.join(format!("{}.{}", tmp_name(), started.profile.extension));
    Member { started, output }
}

#[cfg(test)]
mod tests {
    use super::gif_in_first_group;

    #[test]
    fn the_gif_joins_the_first_process() {
        let groups = vec![vec![1, 3], vec![0, 2, 4]];
        assert_eq!(
            gif_in_first_group(groups.clone(), Some(4)),
            vec![vec![1, 3, 4], vec![0, 2]]
        );
        assert_eq!(gif_in_first_group(groups.clone(), None), groups);
        assert_eq!(
            gif_in_first_group(vec![vec![0, 1]], Some(1)),
            vec![vec![0, 1]]
        );
    }
}
