//! The sprite task as a ladder's owner (decode-once, issue 18). MediaCMS queues
//! `produce_sprite_from_video` ahead of a new upload's `encode_media` messages, so under a
//! one-slot worker it is the first long task of the media. It claims the media's pending video
//! Encodings and preview GIF (`Store::claim_ladder`, the claim `encode_media` uses, with no
//! Encoding of its own) and writes MediaCMS's sprite frames as one more output of the first
//! process: the strip, the minimum rungs and the GIF come from one decode, the remaining rungs
//! from a second (after other media's first playable renditions, playable.rs).
//!
//! The strip is placed right after the first process (it is this task's result); the rows end
//! as in any ladder, and their own messages later end at `early_end` without encoding. Nothing
//! to claim (the encodes ran first, or the media has none), an interlaced or two-pass source,
//! or hardware encoding: `None`, and the sprite task makes its frames itself, as one by one.
//! A failed process fails the claimed rows at once (no Celery retry rides on a sprite task);
//! cancellation requeues the task, whose re-run takes the rows back (same task id).

use std::path::Path;
use std::time::Instant;

use super::ladder::{borrowed_member, gif_in_first_group, spec, Member, Owner};
use super::EncodeMedia;
use crate::celery::message::TaskMessage;
use crate::mediacms::model::{Encoding, Media};
use crate::mediacms::signals::SignalError;
use crate::mediacms::store::{LadderClaim, Started, LADDER_NOTE_PREFIX};
use crate::plan::{self, ladder, MediaInfo};
use crate::tasks::{JobContext, Outcome};

type Res<T> = Result<T, SignalError>;

impl EncodeMedia {
    /// Runs the media's ladder from the sprite task; `frames` is the `img%03d.jpg` pattern in the
    /// task's job dir. `None`: no ladder, the caller makes the sprites one by one.
    pub async fn sprite_ladder(
        &self,
        task: &TaskMessage,
        media: &Media,
        frames: &Path,
        ctx: &JobContext,
    ) -> Res<Option<Outcome>> {
        let info = MediaInfo::from_json(&media.media_info);
        let two_pass = info
            .video_duration
            .is_none_or(|d| d <= plan::rules::CRF_ENCODING_NUM_SECONDS);
        if info.interlaced || two_pass || !self.software_for("h264") {
            return Ok(None);
        }
        let began = Instant::now();
        let note = format!(
            "{LADDER_NOTE_PREFIX}: one decode by task {} (sprites)\n",
            task.id
        );
        let claim = LadderClaim {
            media_id: media.id,
            own_encoding_id: 0, // no Encoding of its own: every pending row is a member
            task_id: &task.id,
            worker: &ctx.hostname,
            retries: 0,
            note: &note,
            with_gif: ladder::gif_joins_ladder(&info),
        };
        let claimed = self.env.signals.store().claim_ladder(&claim).await?;
        let dir = frames.parent().unwrap_or(Path::new("."));
        let members = self.sprite_members(media, claimed, &info, dir).await?;
        if members.is_empty() {
            return Ok(None);
        }
        let resolutions: Vec<i32> = members
            .iter()
            .map(|m| m.started.profile.resolution.unwrap_or(0))
            .collect();
        let gif = members.iter().position(|m| m.started.profile.is_gif());
        let minimum = &self.env.settings.minimum_resolutions;
        let groups = gif_in_first_group(ladder::ladder_groups(&resolutions, minimum), gif);
        tracing::info!(
            media = media.id,
            rungs = members.len(),
            "decode-once ladder from the sprite task"
        );
        let owner = Owner::Sprites {
            task_id: &task.id,
            frames,
            media,
        };
        self.run_ladder(&owner, &members, &groups, &info, &note, ctx, began)
            .await
            .map(Some)
    }

    /// The claimed rows as members. A row MediaCMS would not encode fails now (as its own
    /// message would); a GIF with no rendition to ride on goes back to `pending` for its own.
    async fn sprite_members(
        &self,
        media: &Media,
        claimed: Vec<Encoding>,
        info: &MediaInfo,
        dir: &Path,
    ) -> Res<Vec<Member>> {
        let signals = &self.env.signals;
        let mut members = Vec::with_capacity(claimed.len());
        for encoding in claimed {
            let Some(profile) = signals.store().profile(encoding.profile_id).await? else {
                continue; // profile deleted meanwhile: the row's own message drops it
            };
            let started = Started {
                media: media.clone(),
                profile,
                encoding,
                replaced: vec![],
            };
            let is_gif = started.profile.is_gif();
            if !is_gif && ladder::rung_decisions(info, &spec(&started), &self.env.settings).is_err()
            {
                let follow_ups = signals.on_failure(started.encoding.id, None).await?;
                self.env.hand_over_follow_ups(&follow_ups);
                continue;
            }
            members.push(borrowed_member(started, dir));
        }
        if members.iter().all(|m| m.started.profile.is_gif()) {
            for m in &members {
                signals.store().mark_pending(m.started.encoding.id).await?;
            }
            members.clear();
        }
        Ok(members)
    }
}
