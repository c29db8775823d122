//! Playable-first under a backlog (decode-once): when several uploads wait, each media's first
//! playable rendition runs before the remaining rungs of earlier media.
//!
//! Design: a priority of our own above kombu's order, applied only to work we can claim. A
//! ladder that has just finished its own media's minimum-resolution process (the
//! `MINIMUM_RESOLUTIONS_TO_ENCODE` rungs), and still has rungs left, first claims the pending
//! minimum-resolution Encodings of other media, one media at a time in upload order
//! (`Store::claim_first_playable`: the same atomic claim, marker and ownership checks as the
//! ladder's own claim), encodes each media's set in one process, ends every row through the
//! one-by-one ending, and only then runs its own remaining rungs.
//!
//! Why it keeps the worker's rules:
//! - **Never twice.** A claimed row's own message ends at `early_end` without encoding (the
//!   marker), and a row its own message started first is not `pending`, so it is never
//!   claimed; the claim is one UPDATE under row locks.
//! - **Never past a lease.** Nothing here holds a delivery: the other media's messages stay
//!   in the queue (or run, and find their row claimed). The only delivery held is the ladder's
//!   own, whose lease the worker keeps renewing while it runs; a lost lease or shutdown stops
//!   the borrowed process like any other (the job's token), and every final write asks the
//!   fence first. A re-run of the same task takes its claimed rows back (same task id).
//! - **`-c` and prefetch.** The work runs inside the job's own slot: no extra slot, no extra
//!   prefetch; two ladders on `-c 2` never claim the same row.
//! - **No starvation.** At most [`MAX_MEDIA`] other media per ladder, each only its minimum
//!   rungs; the ladder's own full set runs right after, and the other media's remaining rungs
//!   keep their place in the queue.
//!
//! A borrowed set that fails is failed at once (no Celery retry rides on it, as for a ladder
//! member after the claimer's own row ended).

use std::path::Path;
use std::time::Instant;

use super::group::GroupEnd;
use super::ladder::{borrowed_member, distinct, Member};
use super::EncodeMedia;
use crate::mediacms::model::Encoding;
use crate::mediacms::signals::SignalError;
use crate::mediacms::store::{FirstPlayableClaim, Started, LADDER_NOTE_PREFIX};
use crate::plan::{self, ladder, LadderSkip, MediaInfo};
use crate::tasks::JobContext;

/// MediaCMS's two-pass limit (`CRF_ENCODING_NUM_SECONDS`, 2 s) in whole seconds.
const TWO_PASS_UP_TO_SECS: i32 = 2;

/// Other media one ladder takes the first playable rungs of, at most.
pub const MAX_MEDIA: usize = 8;

/// How the playable-first pass ended for the ladder that runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PassEnd {
    /// Go on with the own remaining rungs.
    Go,
    /// The job's token fired (shutdown, revoke, soft limit, lost lease).
    Cancelled,
    /// The fence refused a final write: the lease is another run's.
    LeaseLost,
}

type Res<T> = Result<T, SignalError>;

impl EncodeMedia {
    /// Claims and encodes the first playable rungs of up to [`MAX_MEDIA`] other media.
    pub(super) async fn playable_first(
        &self,
        task_id: &str,
        own: &Started,
        dir: &Path,
        ctx: &JobContext,
        began: Instant,
    ) -> Res<PassEnd> {
        let note = format!("{LADDER_NOTE_PREFIX}: playable first, by task {task_id}\n");
        let mut taken = vec![own.media.id];
        while taken.len() <= MAX_MEDIA {
            if ctx.cancel.is_cancelled() {
                return Ok(PassEnd::Cancelled);
            }
            let claim = FirstPlayableClaim {
                exclude_media: &taken,
                task_id,
                worker: &own.encoding.worker,
                note: &note,
                minimum: &self.env.settings.minimum_resolutions,
                // `duration` is rounded: above 2 whole seconds the source is above 2.5 s, so
                // never two-pass (the check after the claim is only a guard).
                min_duration_secs: TWO_PASS_UP_TO_SECS,
            };
            let claimed = self
                .env
                .signals
                .store()
                .claim_first_playable(&claim)
                .await?;
            let Some(media_id) = claimed.first().map(|e| e.media_id) else {
                break; // no other media waits for its first playable rendition
            };
            taken.push(media_id);
            tracing::info!(
                encoding = own.encoding.id,
                media = media_id,
                rungs = claimed.len(),
                "playable first: another media's minimum rungs before our remaining ones"
            );
            let (members, info) = self.borrowed_members(media_id, claimed, dir).await?;
            if members.is_empty() {
                continue;
            }
            let end = self
                .run_borrowed(task_id, &members, &info, &note, ctx, began)
                .await?;
            if end != PassEnd::Go {
                return Ok(end);
            }
        }
        Ok(PassEnd::Go)
    }

    /// The claimed rows as ladder members; a row MediaCMS would not encode fails now, as its own
    /// message would (and as the ladder's own claim does).
    async fn borrowed_members(
        &self,
        media_id: i32,
        claimed: Vec<Encoding>,
        dir: &Path,
    ) -> Res<(Vec<Member>, MediaInfo)> {
        let signals = &self.env.signals;
        let Some(media) = signals.store().media_by_id(media_id).await? else {
            return Ok((vec![], MediaInfo::default())); // media deleted meanwhile
        };
        let info = MediaInfo::from_json(&media.media_info);
        let mut members = Vec::with_capacity(claimed.len());
        for encoding in claimed {
            let Some(profile) = signals.store().profile(encoding.profile_id).await? else {
                continue;
            };
            let started = Started {
                media: media.clone(),
                profile,
                encoding,
                replaced: vec![],
            };
            let spec = super::ladder::spec(&started);
            match ladder::rung_decisions(&info, &spec, &self.env.settings) {
                Ok(_) => {}
                // Not ours to share after all: back to `pending` for its own message (the
                // marker stays, but a pending row is free to start).
                Err(LadderSkip::TwoPass) => {
                    signals.store().mark_pending(started.encoding.id).await?;
                    continue;
                }
                // MediaCMS would not encode it: its own message would fail it just so.
                Err(LadderSkip::Plan(_)) => {
                    let follow_ups = signals.on_failure(started.encoding.id, None).await?;
                    self.env.hand_over_follow_ups(&follow_ups);
                    continue;
                }
            }
            members.push(borrowed_member(started, dir));
        }
        Ok((members, info))
    }

    /// One process for another media's claimed first playable rungs (playable.rs): the same
    /// ending as the ladder's own groups; a failure fails the set at once.
    pub(super) async fn run_borrowed(
        &self,
        task_id: &str,
        members: &[Member],
        info: &MediaInfo,
        note: &str,
        ctx: &JobContext,
        began: Instant,
    ) -> Res<PassEnd> {
        let group: Vec<&Member> = members.iter().collect();
        let (end, shared) = self.run_group(&group, info, None, ctx).await?;
        let note = &format!("{note}[mediacms-worker] made by the shared process {shared}\n");
        let writes = matches!(end, GroupEnd::Done(_) | GroupEnd::Failed(_));
        if writes && !ctx.fence.claim().await {
            return Ok(PassEnd::LeaseLost);
        }
        let tail = match end {
            GroupEnd::Done(tail) => tail,
            GroupEnd::Failed(tail) if plan::ffmpeg_error_is_final(&tail) => tail,
            GroupEnd::AllDeleted => return Ok(PassEnd::Go),
            // Left claimed: a re-run of this task takes them back (same task id).
            GroupEnd::Cancelled => return Ok(PassEnd::Cancelled),
            GroupEnd::Failed(tail) => {
                self.fail_all(&group, &tail).await?;
                return Ok(PassEnd::Go);
            }
        };
        let mut follow_ups = Vec::new();
        let mut ended = Ok(());
        for m in &group {
            let done = self
                .end_member(task_id, m, note, &tail, began, &mut follow_ups, ctx)
                .await;
            if let Err(e) = done {
                ended = Err(e);
                break;
            }
        }
        self.env.hand_over_follow_ups(&distinct(follow_ups));
        ended.map(|()| PassEnd::Go)
    }
}
