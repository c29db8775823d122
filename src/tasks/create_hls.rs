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
//! - **in-process debounce**: each call waits [`DEBOUNCE`]; if another `create_hls` for the same
//!   media arrived meanwhile, this one returns `false` and the later one packages;
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
use super::{infra_outcome, JobContext, Outcome, TaskError, TaskHandler};
use crate::celery::args::{bind, LongTask};
use crate::celery::message::TaskMessage;
use crate::ffmpeg::probe;
use crate::ffmpeg::run::RunError;
use crate::mediacms::layout::{self, LayoutError};
use crate::mediacms::model::Media;
use crate::mediacms::signals::SignalError;
use crate::plan::hls::H264_MAIN_L42_CODEC;
use crate::plan::{self, HlsInput};

/// How long a `create_hls` waits for a later one for the same media before packaging.
pub const DEBOUNCE: Duration = Duration::from_secs(2);
/// The inputs fingerprint inside `hls/<H>/` (an md5: reveals no path to players).
pub const MANIFEST: &str = ".mediacms-worker-inputs";
/// Bumped when the packaging itself changes, so old trees are rebuilt once.
const LAYOUT_VERSION: &str = "hls-v1";

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
    async fn run(&self, task: &TaskMessage, ctx: JobContext) -> Outcome {
        let friendly_token = match bind(task) {
            Ok(LongTask::CreateHls { friendly_token }) => friendly_token,
            Ok(other) => return bad_args(format!("not a create_hls task: {other:?}")),
            Err(e) => return bad_args(e.to_string()),
        };
        match self.wait_for_last(&friendly_token, &ctx).await {
            Some(true) => {}
            Some(false) => {
                tracing::info!(media = %friendly_token, "create_hls superseded by a later one");
                return Outcome::Success(json!(false));
            }
            None => return Outcome::Aborted,
        }
        let lock = self.media_lock(&friendly_token);
        let result = {
            let _held = lock.lock().await;
            self.package(&friendly_token, &ctx).await
        };
        self.release_media_lock(&friendly_token, lock);
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
    pub fn new(env: Arc<TaskEnv>) -> Self {
        Self::with_debounce(env, DEBOUNCE)
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
            let (meta, summary) = match (std::fs::metadata(&path), probe::probe_summary(&path)) {
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
        let mut planned: Vec<HlsInput> = inputs.iter().map(Packaged::planned).collect();
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
        for (n, input) in planned.iter_mut().enumerate() {
            let variant = tmp.path().join(format!("media-{}", n + 1));
            let rates = variant_rates(&variant).map_err(Failed::Ffmpeg)?;
            input.bandwidth = rates.peak;
            input.average_bandwidth = rates.average;
            input.video_codec = video_codec(&variant.join("segment-0.ts"));
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
        }
    }
}

fn mtime_ns(meta: &std::fs::Metadata) -> i128 {
    use std::os::unix::fs::MetadataExt;
    i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec())
}

/// md5 of the layout version and every input's path, size and mtime, in input order.
fn fingerprint(inputs: &[Packaged]) -> String {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    h.update(LAYOUT_VERSION.as_bytes());
    for i in inputs {
        h.update(format!("\n{}\t{}\t{}", i.path.display(), i.size, i.mtime_ns).as_bytes());
    }
    hex::encode(h.finalize())
}

/// Bits per second of one packaged variant: the peak over its segments (HLS `BANDWIDTH`) and
/// the whole-stream average (`AVERAGE-BANDWIDTH`), from segment sizes and `#EXTINF` durations.
struct Rates {
    peak: u64,
    average: u64,
}

fn variant_rates(variant: &Path) -> Result<Rates, String> {
    let playlist = variant.join("stream.m3u8");
    let text =
        std::fs::read_to_string(&playlist).map_err(|e| format!("{}: {e}", playlist.display()))?;
    let mut peak = 0.0_f64;
    let (mut bytes, mut secs) = (0u64, 0.0_f64);
    let mut duration = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("#EXTINF:") {
            duration = rest
                .split(',')
                .next()
                .and_then(|d| d.trim().parse::<f64>().ok());
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let size = std::fs::metadata(variant.join(line.trim()))
                .map_err(|e| format!("segment {line}: {e}"))?
                .len();
            let d = duration.take().filter(|d| *d > 0.0).unwrap_or(1.0);
            peak = peak.max(size as f64 * 8.0 / d);
            bytes += size;
            secs += d;
        }
    }
    if secs == 0.0 {
        return Err(format!("{} lists no segment", playlist.display()));
    }
    Ok(Rates {
        peak: peak.ceil() as u64,
        average: (bytes as f64 * 8.0 / secs).ceil() as u64,
    })
}

/// `avc1.PPCCLL` from the first SPS in the first segment (MPEG-TS carries Annex B, and the SPS
/// sits in the first video packet), else x264's main-profile tag MediaCMS encodes produce.
fn video_codec(first_segment: &Path) -> String {
    use std::io::Read;
    let mut head = Vec::new();
    let read =
        std::fs::File::open(first_segment).and_then(|f| f.take(64 * 1024).read_to_end(&mut head));
    read.ok()
        .and_then(|_| plan::avc1_codec_from_avcc(&head))
        .unwrap_or_else(|| H264_MAIN_L42_CODEC.into())
}

fn write_file(path: &Path, text: &str) -> Result<(), LayoutError> {
    std::fs::write(path, text).map_err(|e| LayoutError::io("write", path, e))?;
    set_mode(path, 0o644)
}

/// Temp dirs are created 0700; the served tree must be readable by the web server.
fn set_mode(path: &Path, mode: u32) -> Result<(), LayoutError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| LayoutError::io("chmod", path, e))
}

/// Puts `new` at `dest`. Afterwards `new` holds the previous tree (exchange), or nothing.
fn swap_into_place(new: &Path, dest: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    match std::fs::rename(new, dest) {
        Ok(()) => return Ok(()),
        // A non-empty directory is in the way: exchange with it.
        Err(e) if dest.is_dir() => tracing::debug!(error = %e, "HLS dir exists; exchanging"),
        Err(e) => return Err(e),
    }
    let c_new = std::ffi::CString::new(new.as_os_str().as_bytes())?;
    let c_dest = std::ffi::CString::new(dest.as_os_str().as_bytes())?;
    // SAFETY: two valid NUL-terminated paths; renameat2 has no other preconditions.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_new.as_ptr(),
            libc::AT_FDCWD,
            c_dest.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if !matches!(
        err.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
    ) {
        return Err(err);
    }
    // No exchange on this filesystem: aside, into place, delete the old one.
    let mut aside = new.as_os_str().to_owned();
    aside.push("-old");
    let aside = PathBuf::from(aside);
    std::fs::rename(dest, &aside)?;
    std::fs::rename(new, dest)?;
    let _ = std::fs::remove_dir_all(&aside);
    Ok(())
}

fn bad_args(message: String) -> Outcome {
    Outcome::Failure(TaskError::new("TypeError", "builtins", message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_exchanges_with_an_existing_tree() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("h");
        let new = root.path().join(".h.new");
        std::fs::create_dir_all(dest.join("media-9")).unwrap();
        std::fs::write(dest.join("master.m3u8"), "old").unwrap();
        std::fs::create_dir(&new).unwrap();
        std::fs::write(new.join("master.m3u8"), "new").unwrap();
        swap_into_place(&new, &dest).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("master.m3u8")).unwrap(),
            "new"
        );
        assert!(
            !dest.join("media-9").exists(),
            "no stale file survives the swap"
        );
        assert_eq!(
            std::fs::read_to_string(new.join("master.m3u8")).unwrap(),
            "old"
        );
    }

    #[test]
    fn swap_renames_when_nothing_is_there() {
        let root = tempfile::tempdir().unwrap();
        let (new, dest) = (root.path().join("n"), root.path().join("d"));
        std::fs::create_dir(&new).unwrap();
        swap_into_place(&new, &dest).unwrap();
        assert!(dest.is_dir() && !new.exists());
    }
}
