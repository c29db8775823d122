//! `produce_sprite_from_video(friendly_token)` (contract §5.2): the hover-preview strip — one
//! 160x90 frame every SPRITE_NUM_SECS stacked vertically into one JPEG — stored as
//! `original/thumbnails/user/<U>/<H>.<orig>sprites.jpg` and saved in `files_media.sprites`.
//!
//! Two ffmpeg runs replace MediaCMS's ffmpeg + ImageMagick `convert -append`: first MediaCMS's
//! own frame extraction (`plan_sprite_frames`: `fps=1/N, scale=160:90` into `img%03d.jpg`), then
//! `tile=1x<K>` over exactly the K frames that were written. Counting real frames (instead of
//! predicting K from a probed duration with `sprite_frame_count`) is what guarantees the strip
//! never has a blank cell and never drops a frame: the prediction can be one off at `x.5`
//! boundaries or when the audio outlasts the video.
//!
//! Edge cases, decided:
//! - **No frame** (`fps=1/10` emits none for clips under ~5 s; MediaCMS then makes no sprite):
//!   one cell from the first frame, so short clips get a preview too.
//! - **Too long for one JPEG** (ffmpeg's mjpeg encoder refuses sides above 65 500 px ⇒
//!   [`MAX_FRAMES`] = 727 cells ⇒ 2 h 1 min at 10 s): the strip is capped at 727 frames and the
//!   cap is logged. Not resampled: the frontend maps
//!   second `t` to cell `floor(t / 10)`, so a larger interval would show a wrong picture at every
//!   position; capping keeps every shown preview exact and leaves hovers past 2 h blank.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use super::encode_media::EncodeMedia;
use super::env::TaskEnv;
use super::{infra_outcome, misrouted, JobContext, LongTask, Outcome, Task, TaskHandler};
use crate::ffmpeg::run::RunError;
use crate::mediacms::layout::{self, LayoutError};
use crate::mediacms::model::Media;
use crate::mediacms::signals::SignalError;
use crate::plan;

/// Cell size the frontend hard-codes (`VideoViewer/index.js`).
pub const CELL_HEIGHT: u32 = 90;
/// The tallest JPEG ffmpeg's mjpeg encoder writes ("JPEG does not support resolutions above
/// 65500x65500"; the format itself allows 65 535).
pub const MAX_JPEG_SIDE: u32 = 65_500;
/// Cells in the tallest strip.
pub const MAX_FRAMES: u32 = MAX_JPEG_SIDE / CELL_HEIGHT;

pub struct ProduceSprites {
    pub env: Arc<TaskEnv>,
}

/// Why no strip was made (the task then returns `false`; MediaCMS swallows these too).
enum Skip {
    Ffmpeg(String),
    Cancelled,
}

#[async_trait]
impl TaskHandler for ProduceSprites {
    async fn run(&self, task: &Task<'_>, ctx: JobContext) -> Outcome {
        let LongTask::ProduceSpriteFromVideo { friendly_token } = &task.call else {
            return misrouted(task);
        };
        match self.produce(task, friendly_token, &ctx).await {
            Ok(outcome) => outcome,
            Err(e) => infra_outcome(task, &ctx, &e.to_string(), e.disposition()).await,
        }
    }
}

impl ProduceSprites {
    async fn produce(
        &self,
        task: &Task<'_>,
        friendly_token: &str,
        ctx: &JobContext,
    ) -> Result<Outcome, SignalError> {
        let store = self.env.signals.store();
        let Some(media) = store.media_by_token(friendly_token).await? else {
            return Ok(Outcome::Success(json!(false)));
        };
        let input = layout::confine(self.env.media_root(), Path::new(&media.media_file))?;
        let dir = self
            .env
            .job_dir()
            .map_err(|e| LayoutError::io("create job dir", &self.env.temp_root, e))?;
        if self.env.decode_once {
            // The first long task of a media: its pending renditions and GIF share this decode
            // (encode_media's sprite_ladder); `None`: nothing to share, frames made here.
            let encoder = EncodeMedia {
                env: self.env.clone(),
            };
            let frames = dir.path().join("img%03d.jpg");
            let shared = encoder.sprite_ladder(task, &media, &frames, ctx).await?;
            if let Some(outcome) = shared {
                return Ok(outcome);
            }
        }
        sprites_one_by_one(&self.env, &media, &input, dir.path(), ctx).await
    }
}

/// MediaCMS's frame extraction into `dir` (any frames already there are dropped first: a shared
/// process that failed may have left some), then the strip.
pub(crate) async fn sprites_one_by_one(
    env: &TaskEnv,
    media: &Media,
    input: &Path,
    dir: &Path,
    ctx: &JobContext,
) -> Result<Outcome, SignalError> {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("img") && name.ends_with(".jpg") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let n = env.settings.sprite_num_secs.max(1);
    let src = input.to_string_lossy();
    let pattern = dir.join("img%03d.jpg").to_string_lossy().into_owned();
    let mut frames = plan::plan_sprite_frames(&src, &pattern, n);
    // Stop decoding once the strip is full (see the module doc for the cap).
    frames.insert(frames.len() - 1, "-frames:v".into());
    frames.insert(frames.len() - 1, MAX_FRAMES.to_string());
    if let Err(skip) = ffmpeg(env, frames, ctx).await {
        return Ok(skipped(&media.friendly_token, skip));
    }
    finish_strip(env, media, input, dir, ctx).await
}

/// What a skipped strip leaves: MediaCMS swallows these and returns False too.
fn skipped(friendly_token: &str, skip: Skip) -> Outcome {
    match skip {
        Skip::Cancelled => Outcome::Aborted,
        Skip::Ffmpeg(why) => {
            tracing::warn!(media = %friendly_token, why, "no sprites produced");
            Outcome::Success(json!(false))
        }
    }
}

/// Once MediaCMS's frames are in `dir` (this task's own ffmpeg, or a shared decode's output):
/// the strip, placed and saved on the media (the sprite task's result).
pub(crate) async fn finish_strip(
    env: &TaskEnv,
    media: &Media,
    input: &Path,
    dir: &Path,
    ctx: &JobContext,
) -> Result<Outcome, SignalError> {
    let strip = match stack(env, input, dir, ctx).await {
        Ok(strip) => strip,
        Err(skip) => return Ok(skipped(&media.friendly_token, skip)),
    };
    let placed = place(env, media, &strip).await?;
    env.signals.store().set_sprites(media.id, &placed).await?;
    tracing::info!(media = %media.friendly_token, sprites = %placed, "sprites saved");
    Ok(Outcome::Success(json!(true)))
}

/// The strip from the frames in `dir` (one cell from the first frame when there are none);
/// returns its path inside `dir`.
async fn stack(env: &TaskEnv, input: &Path, dir: &Path, ctx: &JobContext) -> Result<PathBuf, Skip> {
    let src = input.to_string_lossy();
    let pattern = dir.join("img%03d.jpg").to_string_lossy().into_owned();
    let mut count = count_frames(dir);
    if count == 0 {
        ffmpeg(env, first_frame_argv(&src, &pattern), ctx).await?;
        count = count_frames(dir);
    }
    if count == 0 {
        return Err(Skip::Ffmpeg("ffmpeg wrote no frame".into()));
    }
    if count == MAX_FRAMES {
        tracing::warn!(input = %src, cells = MAX_FRAMES, "sprite strip capped at the JPEG height limit");
    }
    let strip = dir.join("sprites.jpg");
    ffmpeg(
        env,
        tile_argv(&pattern, count, &strip.to_string_lossy()),
        ctx,
    )
    .await?;
    match std::fs::metadata(&strip) {
        Ok(m) if m.len() > 0 => Ok(strip),
        _ => Err(Skip::Ffmpeg("the strip is missing or empty".into())),
    }
}

async fn ffmpeg(env: &TaskEnv, argv: Vec<String>, ctx: &JobContext) -> Result<(), Skip> {
    match env.ffmpeg(argv, &ctx.cancel, |_| {}).await {
        Ok(_) => Ok(()),
        Err(RunError::Cancelled { .. }) => Err(Skip::Cancelled),
        Err(e) => Err(Skip::Ffmpeg(e.to_string())),
    }
}

/// `M.sprites.save(basename(orig) + "sprites.jpg")`: Django naming, never overwriting.
async fn place(env: &TaskEnv, media: &Media, strip: &Path) -> Result<String, LayoutError> {
    let uid_hex = media.uid_hex();
    let rel = layout::sprites_relative_path(&media.username, &uid_hex, &media.media_file)?;
    layout::place_file_async(env.media_root(), &rel, strip).await
}

/// `img001.jpg …` files ffmpeg wrote into `dir`.
fn count_frames(dir: &Path) -> u32 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let n = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("img") && name.ends_with(".jpg")
        })
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The single-cell fallback: the first frame, scaled like the others.
fn first_frame_argv(input: &str, pattern: &str) -> Vec<String> {
    let args = ["ffmpeg", "-y", "-i", input, "-vf", "scale=160:90"];
    let mut a: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    a.extend(["-frames:v", "1", "-f", "image2", pattern].map(String::from));
    a
}

/// Stack the `count` frames of `pattern` into one image, top to bottom in frame order.
/// `-q:v 2` keeps the JPEG near ImageMagick's default quality.
fn tile_argv(pattern: &str, count: u32, output: &str) -> Vec<String> {
    let tile = format!("tile=1x{count}");
    let args = ["ffmpeg", "-y", "-f", "image2", "-framerate", "1"];
    let mut a: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    a.extend(["-i", pattern, "-vf", &tile].map(String::from));
    a.extend(["-frames:v", "1", "-q:v", "2", "-update", "1", output].map(String::from));
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    // The cap is the largest strip a JPEG can hold.
    const _: () = assert!(MAX_FRAMES == 727 && MAX_FRAMES * CELL_HEIGHT <= MAX_JPEG_SIDE);

    #[test]
    fn tile_argv_stacks_exactly_count_cells() {
        let a = tile_argv("/d/img%03d.jpg", 4, "/d/s.jpg");
        assert!(a.windows(2).any(|w| w == ["-vf", "tile=1x4"]));
        assert_eq!(a.last().map(String::as_str), Some("/d/s.jpg"));
    }
}
