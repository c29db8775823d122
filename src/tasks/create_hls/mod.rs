//! `create_hls(friendly_token)` (contract §4.4, §5.1; ARCHITECTURE decision 9): package every
//! successful non-chunk h264 MP4 of a media into `hls/<uid.hex>/` with ffmpeg's HLS muxer in
//! stream-copy mode (no Bento4, no python3), then set `files_media.hls_file`.
//!
//! Files: the new tree is built in a hidden temp dir inside `MEDIA_ROOT/hls/` (same filesystem)
//! and swapped in with one `renameat2(RENAME_EXCHANGE)`, so a player never sees a missing or
//! half-written `master.m3u8`; the old tree is then deleted. Where the filesystem cannot exchange,
//! the old dir is renamed aside, the new one into place, and the old one deleted.
//!
//! Coalescing (MediaCMS publishes `create_hls` at least twice per h264 success, quirk §9.3):
//! - **in-process debounce**: with more than one job slot each call waits [`DEBOUNCE`]; if
//!   another `create_hls` for the same media arrived meanwhile, this one returns `false` and the
//!   later one packages ([`debounce_for`]: with one slot nothing can arrive, so no wait);
//! - **per-media serialisation** in the process, so two runs never package one media at once;
//! - **cross-worker guard: an inputs manifest.** The packaged tree records a fingerprint of its
//!   inputs (path, size, mtime of each MP4, in order) in [`MANIFEST`]. A run whose inputs match
//!   the fingerprint of the tree in place skips packaging. A second worker therefore repackages
//!   only when the inputs really changed; two workers packaging the very same change at the same
//!   instant both produce complete trees and the atomic exchange makes the last one win — wasted
//!   work, never a broken tree. (No lock is held across workers: no DB connection is pinned for
//!   the packaging time, and a crashed worker cannot leave a stale lock.)

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use super::env::TaskEnv;
use super::{infra_outcome, misrouted, JobContext, LongTask, Outcome, Task, TaskHandler};
use crate::ffmpeg::probe;
use crate::ffmpeg::run::RunError;
use crate::mediacms::layout::{self, LayoutError};
use crate::mediacms::model::Media;
use crate::mediacms::signals::SignalError;
use crate::plan::hls::H264_MAIN_L42_CODEC;
use crate::plan::{self, HlsInput};
use tree::{
    fingerprint, iframe_entries, mtime_ns, set_mode, swap_into_place, variant_rates, video_codec,
    write_file,
};

/// How long a `create_hls` waits for a later one for the same media before packaging.
pub const DEBOUNCE: Duration = Duration::from_secs(2);
/// The debounce only helps when a later `create_hls` can start while this one waits, i.e. on
/// another job slot. With one slot (`celery_long -c 1`) the waiting call holds the only slot,
/// nothing can supersede it, and the wait would only delay every job behind it.
pub fn debounce_for(job_slots: usize) -> Duration {
    if job_slots > 1 {
        DEBOUNCE
    } else {
        Duration::ZERO
    }
}

/// The inputs fingerprint inside `hls/<H>/` (an md5: reveals no path to players).
pub const MANIFEST: &str = ".mediacms-worker-inputs";
/// Bumped when the packaging itself changes, so old trees are rebuilt once (v2: I-frame
/// playlists).
const LAYOUT_VERSION: &str = "hls-v2";

pub struct CreateHls {
    env: Arc<TaskEnv>,
    debounce: Duration,
    /// Latest ticket per friendly token: a waiting call that no longer holds it was superseded.
    latest: Mutex<HashMap<String, u64>>,
    tickets: AtomicU64,
    /// One packaging per media at a time in this process.
    packaging: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Why a packaging attempt produced no new tree.
enum Failed {
    Cancelled,
    Ffmpeg(String),
    Infra(SignalError),
}

impl From<SignalError> for Failed {
    fn from(e: SignalError) -> Self {
        Self::Infra(e)
    }
}

impl From<LayoutError> for Failed {
    fn from(e: LayoutError) -> Self {
        Self::Infra(e.into())
    }
}

#[async_trait]
impl TaskHandler for CreateHls {
    async fn run(&self, task: &Task<'_>, ctx: JobContext) -> Outcome {
        let LongTask::CreateHls { friendly_token } = &task.call else {
            return misrouted(task);
        };
        match self.wait_for_last(friendly_token, &ctx).await {
            Some(true) => {}
            Some(false) => {
                tracing::info!(media = %friendly_token, "create_hls superseded by a later one");
                return Outcome::Success(json!(false));
            }
            None => return Outcome::Aborted,
        }
        let lock = self.media_lock(friendly_token);
        let result = {
            let _held = lock.lock().await;
            self.package(friendly_token, &ctx).await
        };
        self.release_media_lock(friendly_token, lock);
        match result {
            Ok(done) => Outcome::Success(json!(done)),
            Err(Failed::Cancelled) => Outcome::Aborted,
            Err(Failed::Ffmpeg(why)) => {
                tracing::error!(media = %friendly_token, why, "HLS packaging failed; old tree kept");
                Outcome::Success(json!(false))
            }
            Err(Failed::Infra(e)) => {
                infra_outcome(task, &ctx, &e.to_string(), e.disposition()).await
            }
        }
    }
}

impl CreateHls {
    /// `job_slots`: the pool's concurrency (see [`debounce_for`]).
    pub fn new(env: Arc<TaskEnv>, job_slots: usize) -> Self {
        Self::with_debounce(env, debounce_for(job_slots))
    }

    pub fn with_debounce(env: Arc<TaskEnv>, debounce: Duration) -> Self {
        Self {
            env,
            debounce,
            latest: Mutex::new(HashMap::new()),
            tickets: AtomicU64::new(0),
            packaging: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(true)`: this call is the last of its burst; `Some(false)`: superseded; `None`:
    /// cancelled while waiting.
    async fn wait_for_last(&self, friendly_token: &str, ctx: &JobContext) -> Option<bool> {
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        self.latest
            .lock()
            .expect("create_hls tickets lock")
            .insert(friendly_token.to_owned(), ticket);
        tokio::select! {
            _ = tokio::time::sleep(self.debounce) => {}
            _ = ctx.cancel.cancelled() => return None,
        }
        let mut latest = self.latest.lock().expect("create_hls tickets lock");
        if latest.get(friendly_token) != Some(&ticket) {
            return Some(false);
        }
        latest.remove(friendly_token);
        Some(true)
    }

    fn media_lock(&self, friendly_token: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.packaging.lock().expect("create_hls packaging lock");
        map.entry(friendly_token.to_owned()).or_default().clone()
    }

    /// Forget the media's lock once no other call holds or waits for it.
    fn release_media_lock(&self, friendly_token: &str, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut map = self.packaging.lock().expect("create_hls packaging lock");
        drop(lock);
        if map
            .get(friendly_token)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            map.remove(friendly_token);
        }
    }

    /// §5.1 with the tree swapped atomically. `Ok(false)`: the media does not exist.
    async fn package(&self, friendly_token: &str, ctx: &JobContext) -> Result<bool, Failed> {
        let store = self.env.signals.store();
        let media = store
            .media_by_token(friendly_token)
            .await
            .map_err(SignalError::from)?;
        let Some(media) = media else {
            return Ok(false);
        };
        let inputs = self.inputs(&media).await?;
        if inputs.is_empty() {
            tracing::info!(media = %friendly_token, "no h264 encoding to package yet");
            return Ok(true);
        }
        let root = self.env.media_root();
        let uid_hex = media.uid_hex();
        let final_dir = layout::hls_dir(root, &uid_hex);
        let master = layout::hls_master_path(root, &uid_hex);
        let fingerprint = fingerprint(&inputs);
        let current = std::fs::read_to_string(final_dir.join(MANIFEST)).ok();
        if current.as_deref() == Some(fingerprint.as_str()) && master.is_file() {
            tracing::info!(media = %friendly_token, "HLS tree already matches its inputs");
        } else {
            self.build_and_swap(&inputs, &uid_hex, &final_dir, &fingerprint, ctx)
                .await?;
            tracing::info!(media = %friendly_token, renditions = inputs.len(), "HLS packaged");
        }
        store
            .set_hls_file(media.id, &master.to_string_lossy())
            .await
            .map_err(SignalError::from)?;
        Ok(true)
    }

    /// The packageable MP4s with their probed sizes; a file that cannot be read is skipped.
    async fn inputs(&self, media: &Media) -> Result<Vec<Packaged>, Failed> {
        let store = self.env.signals.store();
        let rows = store
            .hls_inputs(media.id)
            .await
            .map_err(SignalError::from)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let path = layout::confine(self.env.media_root(), Path::new(&row.media_file))?;
            let probed = path.clone();
            let facts = crate::blocking::run(move || {
                (std::fs::metadata(&probed), probe::probe_summary(&probed))
            });
            let (meta, summary) = match facts.await {
                (Ok(m), Ok(s)) if s.has_video => (m, s),
                _ => {
                    tracing::warn!(encoding = row.id, path = %path.display(), "unreadable h264 encoding not packaged");
                    continue;
                }
            };
            out.push(Packaged {
                path,
                size: meta.len(),
                mtime_ns: mtime_ns(&meta),
                width: summary.width,
                height: summary.height,
                has_audio: summary.has_audio,
            });
        }
        Ok(out)
    }

    async fn build_and_swap(
        &self,
        inputs: &[Packaged],
        uid_hex: &str,
        final_dir: &Path,
        fingerprint: &str,
        ctx: &JobContext,
    ) -> Result<(), Failed> {
        let hls_root = final_dir.parent().unwrap_or(final_dir);
        std::fs::create_dir_all(hls_root)
            .map_err(|e| LayoutError::io("create_dir_all", hls_root, e))?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{uid_hex}.new-"))
            .tempdir_in(hls_root)
            .map_err(|e| LayoutError::io("create temp dir", hls_root, e))?;
        let out_dir = tmp.path().to_string_lossy().into_owned();
        if out_dir.contains('%') {
            return Err(Failed::Ffmpeg(format!(
                "`%` in {out_dir:?} breaks the segment pattern"
            )));
        }
        let planned: Vec<HlsInput> = inputs.iter().map(Packaged::planned).collect();
        for dir in plan::hls_variant_dirs(&planned, &out_dir) {
            std::fs::create_dir(&dir)
                .map_err(|e| LayoutError::io("create_dir", Path::new(&dir), e))?;
        }
        for argv in plan::plan_hls(&planned, &out_dir) {
            match self.env.ffmpeg(argv, &ctx.cancel, |_| {}).await {
                Ok(_) => {}
                Err(RunError::Cancelled { .. }) => return Err(Failed::Cancelled),
                Err(e) => return Err(Failed::Ffmpeg(e.to_string())),
            }
        }
        // Keyframe reads, playlist writes and the swap (which deletes the previous tree) block.
        let (final_dir, fingerprint) = (final_dir.to_path_buf(), fingerprint.to_owned());
        crate::blocking::run(move || complete_tree(tmp, planned, &final_dir, &fingerprint)).await
    }
}

/// After ffmpeg: each variant's rates, codec and I-frame playlist, the master playlist and the
/// manifest, then the finished tree swapped into `final_dir` (blocking; see `build_and_swap`).
fn complete_tree(
    tmp: tempfile::TempDir,
    mut planned: Vec<HlsInput>,
    final_dir: &Path,
    fingerprint: &str,
) -> Result<(), Failed> {
    for (n, input) in planned.iter_mut().enumerate() {
        let variant = tmp.path().join(format!("media-{}", n + 1));
        let rates = variant_rates(&variant).map_err(Failed::Ffmpeg)?;
        input.bandwidth = rates.peak;
        input.average_bandwidth = rates.average;
        input.video_codec = video_codec(&variant.join("segment-0.ts"));
        // Bento4's I-frame playlist; a variant whose keyframes cannot be read goes without.
        match iframe_entries(&variant) {
            Ok(entries) if !entries.is_empty() => {
                write_file(
                    &variant.join("iframes.m3u8"),
                    &plan::iframe_playlist(&entries),
                )?;
                input.iframes = Some(plan::iframe_rates(&entries));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(variant = %variant.display(), error = %e, "no I-frame playlist")
            }
        }
    }
    write_file(
        &tmp.path().join("master.m3u8"),
        &plan::master_playlist(&planned),
    )?;
    write_file(&tmp.path().join(MANIFEST), fingerprint)?;
    set_mode(tmp.path(), 0o755)?;
    swap_into_place(tmp.path(), final_dir)
        .map_err(|e| LayoutError::io("swap HLS dir", final_dir, e))?;
    // `tmp` now holds the previous tree (or nothing): dropping it deletes that.
    Ok(())
}

/// One input as probed.
struct Packaged {
    path: PathBuf,
    size: u64,
    mtime_ns: i128,
    width: u32,
    height: u32,
    has_audio: bool,
}

impl Packaged {
    fn planned(&self) -> HlsInput {
        HlsInput {
            path: self.path.to_string_lossy().into_owned(),
            width: self.width,
            height: self.height,
            bandwidth: 0,
            average_bandwidth: 0,
            video_codec: H264_MAIN_L42_CODEC.into(),
            has_audio: self.has_audio,
            iframes: None,
        }
    }
}

mod tree;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_pool_with_another_slot_waits_for_a_later_call() {
        assert_eq!(debounce_for(1), Duration::ZERO);
        assert_eq!(debounce_for(0), Duration::ZERO);
        assert_eq!(debounce_for(2), DEBOUNCE);
    }
}
