//! `chunkize_media(friendly_token, profiles, force)` (contract §2.10; a `short_tasks` task, only
//! registered behind a flag — see [`register_chunkize`]): segment the original into 240 s `.mkv`
//! chunks next to it, md5 each, insert one chunk Encoding per (profile, chunk) and publish their
//! `encode_media` messages. When segmenting fails, fall back to one plain encode per profile.
//!
//! Priorities (on Redis 0 is the highest): chunks of MINIMUM_RESOLUTIONS_TO_ENCODE profiles get
//! 0 and the others 9, as MediaCMS's chunkize does, so the small rungs of a long video are
//! playable first. (Kept deliberately although `Media.encode` does the opposite, quirk §9.4.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use rand::distr::{Alphanumeric, SampleString};
use serde_json::{json, Map, Value};

use super::env::TaskEnv;
use super::{infra_outcome, misrouted, JobContext, LongTask, Outcome, Registry, Task};
use super::{TaskHandler, TaskName};
use crate::celery::message::{py_json, OutgoingTask};
use crate::ffmpeg::probe;
use crate::ffmpeg::run::RunError;
use crate::mediacms::layout::{self, LayoutError};
use crate::mediacms::model::{EncodeProfile, Media};
use crate::mediacms::signals::SignalError;
use crate::mediacms::store::NewChunk;

/// VIDEO_CHUNKS_DURATION.
pub const CHUNK_SECONDS: u32 = 240;
/// encode_media's declared soft limit, copied into its messages' `timelimit` by the producer.
const ENCODE_SOFT_LIMIT: f64 = 7200.0;
const HIGH_PRIORITY: u8 = 0;
const LOW_PRIORITY: u8 = 9;

pub struct ChunkizeMedia {
    pub env: Arc<TaskEnv>,
}

/// Registers `chunkize_media` (a short_tasks name: the worker must also consume `short_tasks`
/// for it to arrive). Called by `app` only when the operator enables chunkizing.
pub fn register_chunkize(r: &mut Registry, env: Arc<TaskEnv>) {
    r.register(TaskName::ChunkizeMedia, Arc::new(ChunkizeMedia { env }));
}

/// The bound arguments plus the message they came in (for parent/root ids).
struct Job {
    friendly_token: String,
    profiles: Vec<i64>,
    force: bool,
}

#[async_trait]
impl TaskHandler for ChunkizeMedia {
    async fn run(&self, task: &Task<'_>, ctx: JobContext) -> Outcome {
        let LongTask::ChunkizeMedia {
            friendly_token,
            profiles,
            force,
        } = &task.call
        else {
            return misrouted(task);
        };
        let job = Job {
            friendly_token: friendly_token.clone(),
            profiles: profiles.clone(),
            force: *force,
        };
        match self.chunkize(&job, &ctx).await {
            Ok(outcome) => outcome,
            Err(e) => infra_outcome(task, &ctx, &e.to_string(), e.disposition()).await,
        }
    }
}

impl ChunkizeMedia {
    async fn chunkize(&self, job: &Job, ctx: &JobContext) -> Result<Outcome, SignalError> {
        let store = self.env.signals.store();
        let Some(media) = store.media_by_token(&job.friendly_token).await? else {
            return Ok(Outcome::Success(json!(false)));
        };
        let profiles = self.profiles(&media, &job.profiles).await?;
        let original = layout::confine(self.env.media_root(), Path::new(&media.media_file))?;
        let chunks = match self.segment(&original, ctx).await? {
            Segmented::Chunks(chunks) => chunks,
            Segmented::Cancelled => return Ok(Outcome::Aborted),
            Segmented::Failed(why) => {
                tracing::warn!(media = %job.friendly_token, why, "segmenting failed; encoding whole");
                self.fallback(job, &media, &profiles).await?;
                return Ok(Outcome::Success(json!(false)));
            }
        };
        let mut info = Map::new();
        for chunk in &chunks {
            let md5 = md5_of(chunk).await?;
            info.insert(chunk.to_string_lossy().into_owned(), Value::String(md5));
        }
        let chunks_info = py_json(&Value::Object(info.clone()));
        let mut rows = Vec::new();
        for p in &profiles {
            for (path, md5) in &info {
                let md5sum = md5.as_str().unwrap_or_default();
                rows.push(NewChunk {
                    profile_id: p.id,
                    chunk_file_path: path,
                    md5sum,
                });
            }
        }
        let inserted = store
            .insert_chunk_encodings(media.id, &chunks_info, &rows)
            .await?;
        for enc in &inserted {
            let profile = profiles.iter().find(|p| p.id == enc.profile_id);
            let priority = profile.map_or(LOW_PRIORITY, |p| self.chunk_priority(p));
            let mut kwargs = Map::new();
            kwargs.insert("force".into(), json!(job.force));
            kwargs.insert("chunk".into(), json!(true));
            kwargs.insert("chunk_file_path".into(), json!(enc.chunk_file_path));
            self.publish_encode(job, enc.profile_id, enc.id, kwargs, priority)
                .await;
        }
        tracing::info!(media = %job.friendly_token, chunks = chunks.len(), rows = inserted.len(), "chunkized");
        Ok(Outcome::Success(json!(true)))
    }

    /// The requested profiles that exist, in request order, without the rungs above the video's
    /// height (MINIMUM_RESOLUTIONS_TO_ENCODE rungs are always kept), as `Media.encode` filters.
    async fn profiles(
        &self,
        media: &Media,
        ids: &[i64],
    ) -> Result<Vec<EncodeProfile>, SignalError> {
        let minimum = &self.env.settings.minimum_resolutions;
        let mut out = Vec::new();
        for id in ids {
            let Ok(id) = i32::try_from(*id) else { continue };
            let Some(p) = self.env.signals.store().profile(id).await? else {
                tracing::warn!(profile = id, "chunkize_media: no such profile");
                continue;
            };
            let too_tall = p.resolution.is_some_and(|r| {
                media.video_height > 0 && media.video_height < r && !minimum.contains(&r)
            });
            if !too_tall {
                out.push(p);
            }
        }
        Ok(out)
    }

    fn chunk_priority(&self, profile: &EncodeProfile) -> u8 {
        let minimum = &self.env.settings.minimum_resolutions;
        match profile.resolution {
            Some(r) if minimum.contains(&r) => HIGH_PRIORITY,
            _ => LOW_PRIORITY,
        }
    }

    /// `ffmpeg -y -i <orig> -c copy -f segment -segment_time 240 <dir>/%02d_<rand9>_<base>.mkv`.
    /// The chunks are the files of this run's unique pattern, in segment order.
    async fn segment(&self, original: &Path, ctx: &JobContext) -> Result<Segmented, LayoutError> {
        let dir = original.parent().unwrap_or(Path::new("/"));
        let base = original
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tag = Alphanumeric.sample_string(&mut rand::rng(), 9);
        let suffix = format!("_{tag}_{base}.mkv");
        // `%` is the segment muxer's pattern character: a literal one is doubled.
        let pattern = dir.join(format!("%02d{}", suffix.replace('%', "%%")));
        let argv = segment_argv(&original.to_string_lossy(), &pattern.to_string_lossy());
        let result = self.env.ffmpeg(argv, &ctx.cancel, |_| {}).await;
        let chunks = chunk_files(dir, &suffix)?;
        let failed = match result {
            Ok(_) if !chunks.is_empty() => return Ok(Segmented::Chunks(chunks)),
            Ok(_) => Segmented::Failed("ffmpeg wrote no chunk".into()),
            Err(RunError::Cancelled { .. }) => Segmented::Cancelled,
            Err(e) => Segmented::Failed(e.to_string()),
        };
        // A partial set must not linger next to the original.
        for c in &chunks {
            let _ = layout::remove_media_file(self.env.media_root(), c);
        }
        Ok(failed)
    }

    /// MediaCMS's fallback: one plain Encoding and `encode_media.delay(ft, pid, eid, force=…)`
    /// (default priority) per profile.
    async fn fallback(
        &self,
        job: &Job,
        media: &Media,
        profiles: &[EncodeProfile],
    ) -> Result<(), SignalError> {
        for p in profiles {
            let enc = self
                .env
                .signals
                .store()
                .insert_pending_encoding(media.id, p.id)
                .await?;
            let mut kwargs = Map::new();
            kwargs.insert("force".into(), json!(job.force));
            self.publish_encode(job, p.id, enc.id, kwargs, HIGH_PRIORITY)
                .await;
        }
        Ok(())
    }

    /// Publish one `encode_media` as a child of this task. A failed publish is logged: the row
    /// stays `pending`, which MediaCMS's "Generate missing encodings" action picks up.
    async fn publish_encode(
        &self,
        job: &Job,
        profile_id: i32,
        encoding_id: i32,
        kwargs: Map<String, Value>,
        priority: u8,
    ) {
        let args = vec![
            json!(job.friendly_token),
            json!(profile_id),
            json!(encoding_id),
        ];
        let mut task = OutgoingTask::new("encode_media", "long_tasks", args, kwargs);
        task.priority = priority;
        task.time_limit = (None, Some(ENCODE_SOFT_LIMIT));
        // A child of this chunkize_media (parent_id, root_id, listed in its result's children),
        // published by the pool when this job settles.
        let id = super::family::follow_up(task);
        tracing::debug!(encoding = encoding_id, %id, "encode_media follow-up");
    }
}

enum Segmented {
    Chunks(Vec<PathBuf>),
    Cancelled,
    Failed(String),
}

fn segment_argv(input: &str, pattern: &str) -> Vec<String> {
    let segment_time = CHUNK_SECONDS.to_string();
    let args = ["ffmpeg", "-y", "-i", input, "-c", "copy", "-f", "segment"];
    let mut a: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    a.extend(["-segment_time", &segment_time, pattern].map(String::from));
    a
}

/// Files `<NN>_<suffix>` in `dir`, ordered by their segment number.
fn chunk_files(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>, LayoutError> {
    let entries = std::fs::read_dir(dir).map_err(|e| LayoutError::io("read_dir", dir, e))?;
    let mut found: Vec<(u64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let index = name.strip_suffix(suffix)?;
            let n = index
                .chars()
                .all(|c| c.is_ascii_digit())
                .then(|| index.parse().ok())??;
            Some((n, e.path()))
        })
        .collect();
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

async fn md5_of(path: &Path) -> Result<String, LayoutError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || probe::md5_file(&owned))
        .await
        .map_err(|e| LayoutError::io("md5", path, std::io::Error::other(e)))?
        .map_err(|e| LayoutError::io("md5", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_files_are_ordered_by_index_and_match_only_this_run() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "10_abc_x.mp4.mkv",
            "02_abc_x.mp4.mkv",
            "01_zzz_x.mp4.mkv",
            "xx_abc_x.mp4.mkv",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let found = chunk_files(dir.path(), "_abc_x.mp4.mkv").unwrap();
        let names: Vec<_> = found
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["02_abc_x.mp4.mkv", "10_abc_x.mp4.mkv"]);
    }

    #[test]
    fn segment_argv_is_mediacms_shaped() {
        let a = segment_argv("/m/o.mp4", "/m/%02d_t_o.mp4.mkv");
        assert_eq!(
            a.join(" "),
            "ffmpeg -y -i /m/o.mp4 -c copy -f segment -segment_time 240 /m/%02d_t_o.mp4.mkv"
        );
    }
}
