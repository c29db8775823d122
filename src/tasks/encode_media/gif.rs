//! encode_media's preview GIF (contract §2.2): MediaCMS's argv, from the start of the clip where
//! its 3 s seek leaves nothing, and an output ffmpeg reports as empty is a failure.

use std::path::Path;
use std::time::Instant;

use super::{tmp_name, EncodeMedia};
use crate::ffmpeg::run::RunError;
use crate::mediacms::signals::SignalError;
use crate::mediacms::store::Started;
use crate::plan::{self, MediaInfo};
use crate::tasks::{JobContext, Outcome, TaskError};

impl EncodeMedia {
    /// §2.2, with quirk §9.2 fixed: a failed gif ends `fail`, not `running`. MediaCMS's argv
    /// seeks to 3 s; a clip no longer than that, or one where the seek still gave ffmpeg nothing
    /// to write, gets its preview from the start instead (MediaCMS leaves such media without one).
    pub(super) async fn gif(
        &self,
        s: &Started,
        dir: &Path,
        ctx: &JobContext,
        began: Instant,
    ) -> Result<Outcome, SignalError> {
        let output = dir.join(format!("{}.gif", tmp_name()));
        let Some((mut tail, notes)) = self.make_gif(s, &output, ctx).await? else {
            return Ok(Outcome::Aborted);
        };
        if !ctx.fence.claim().await {
            return Ok(Outcome::Aborted); // lease lost: the row is another run's now
        }
        // MediaCMS accepts the gif when `filetype` sees image magic bytes; `validate_output`
        // rejects image formats (gif included) by design, so it cannot be used here.
        if is_gif_file(&output) && !plan::ffmpeg_reported_empty(&tail) {
            let mut follow_ups = Vec::new();
            // MediaCMS's gif rows have an empty log; ours says when the preview starts at 0.
            let done = self
                .succeed(s, &output, &notes, began, &mut follow_ups, &ctx.fence)
                .await;
            self.env.hand_over_follow_ups(&follow_ups);
            return done;
        }
        let why = if plan::ffmpeg_reported_empty(&tail) {
            "ffmpeg reported the preview GIF as empty (Output file is empty, nothing was encoded)"
        } else {
            "ffmpeg wrote no GIF"
        };
        tracing::error!(encoding = s.encoding.id, "{why}");
        tail = format!("{notes}[mediacms-worker] {why}\n{tail}");
        let follow_ups = self
            .env
            .signals
            .on_failure(s.encoding.id, Some(&tail))
            .await?;
        self.env.hand_over_follow_ups(&follow_ups);
        // A FAILURE result (like a video's final failure), so the metrics count it as one.
        Ok(Outcome::Failure(TaskError::new(
            "VideoEncodingError",
            "files.backends",
            why,
        )))
    }

    /// Run MediaCMS's GIF argv, or the from-start one when the clip is too short for its seek
    /// or the seek left ffmpeg nothing to write. `None`: cancelled. Else the stderr tail of the
    /// last run and the notes for the row's log.
    async fn make_gif(
        &self,
        s: &Started,
        output: &Path,
        ctx: &JobContext,
    ) -> Result<Option<(String, String)>, SignalError> {
        let input = self.input(s)?;
        let (input, out) = (input.to_string_lossy(), output.to_string_lossy());
        let mut notes = String::new();
        let mut from_start = plan::gif_seek_past_end(media_duration(&s.media));
        if from_start {
            notes = format!(
                "[mediacms-worker] the clip is no longer than the preview's {} s start: \
                 preview made from the start\n",
                plan::GIF_SEEK_SECS
            );
        }
        loop {
            let argv = if from_start {
                plan::plan_gif_from_start(&input, &out)
            } else {
                plan::plan_gif(&input, &out)
            };
            let tail = match self.env.ffmpeg(argv, &ctx.cancel, |_| {}).await {
                Ok(out) => out.stderr_tail,
                Err(RunError::Cancelled { .. }) => return Ok(None),
                Err(e) => e.stderr_tail().to_owned(),
            };
            if from_start || !plan::ffmpeg_reported_empty(&tail) {
                return Ok(Some((tail, notes)));
            }
            tracing::warn!(
                encoding = s.encoding.id,
                "preview GIF from 3 s is empty; making it from the start"
            );
            notes.push_str("[mediacms-worker] ffmpeg wrote no frame from 3 s (Output file is empty): preview made from the start\n");
            from_start = true;
        }
    }
}

/// The clip's duration in seconds: ffprobe's float from `media_info`, else the rounded column.
fn media_duration(media: &crate::mediacms::model::Media) -> Option<f64> {
    MediaInfo::from_json(&media.media_info)
        .video_duration
        .or((media.duration > 0).then_some(f64::from(media.duration)))
}

pub(super) fn is_gif_file(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 6];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| &magic == b"GIF87a" || &magic == b"GIF89a")
}
