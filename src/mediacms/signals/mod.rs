//! Every side effect Django's Encoding/Media signals perform in the Python worker, as explicit
//! named functions over the store (contract §2.6-§2.8): `encoding_saved` (post_save),
//! `encoding_deleted` (post_delete), `post_encode_actions`, `on_failure`, and the chunk path
//! (in `chunks`). Signals never talk to the broker: they return [`FollowUp`]s for the task
//! handler to publish.
//!
//! Once per save: the Python worker saves a successful Encoding twice (file save, then
//! run-time save) and a concatenation row twice, so `create_hls` is published 2× per h264
//! success (quirk §9.3). Here the success is one UPDATE and the handler calls
//! [`Signals::encoding_saved`] once for it, so exactly one [`FollowUp::CreateHls`] results.

mod chunks;

pub use chunks::{chunk_set_complete, ConcatJob, ConcatOutput, Concatenated};

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::layout::{self, LayoutError};
use super::model::{EncodeProfile, Encoding, Media};
use super::store::{
    ChunkKey, PostEncodeUpdate, PreviewChange, StartOutcome, StartRequest, Store, StoreError,
    SuccessUpdate,
};
use super::Disposition;

/// A task the handler must publish because of a signal (Celery's `.delay` inside signals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowUp {
    /// `create_hls(friendly_token)` on `long_tasks`, priority 0.
    CreateHls { friendly_token: String },
    /// `post_trim_action(friendly_token)` on `short_tasks` (run by the Python short worker).
    PostTrimAction { friendly_token: String },
}

impl FollowUp {
    pub fn task_name(&self) -> &'static str {
        match self {
            Self::CreateHls { .. } => "create_hls",
            Self::PostTrimAction { .. } => "post_trim_action",
        }
    }

    pub fn queue(&self) -> &'static str {
        match self {
            Self::CreateHls { .. } => "long_tasks",
            Self::PostTrimAction { .. } => "short_tasks",
        }
    }

    /// Positional args of the Celery message (`.delay(ft)`: no kwargs).
    pub fn args(&self) -> Vec<Value> {
        match self {
            Self::CreateHls { friendly_token } | Self::PostTrimAction { friendly_token } => {
                vec![json!(friendly_token)]
            }
        }
    }
}

/// `post_encode_actions`' `action` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeAction {
    Add,
    Delete,
}

/// What a post_save produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Saved {
    pub follow_ups: Vec<FollowUp>,
    /// A chunk finished and its set looks complete: call [`Signals::begin_concat`].
    pub concat: Option<ChunkKey>,
}

/// Result of [`Signals::encoding_succeeded`].
#[derive(Debug, Clone)]
pub enum Completion {
    Saved {
        encoding: Box<Encoding>,
        saved: Saved,
    },
    /// The Encoding was deleted while encoding: the placed file was removed again.
    Cancelled,
}

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

impl SignalError {
    pub fn disposition(&self) -> Disposition {
        match self {
            Self::Store(e) => e.disposition(),
            Self::Layout(e) if e.is_transient() => Disposition::Retry,
            Self::Layout(_) => Disposition::Fail,
        }
    }
}

pub type Result<T, E = SignalError> = std::result::Result<T, E>;

/// The store plus MEDIA_ROOT: what every signal needs.
#[derive(Debug, Clone)]
pub struct Signals {
    store: Store,
    media_root: PathBuf,
}

impl Signals {
    pub fn new(store: Store, media_root: impl Into<PathBuf>) -> Self {
        Self {
            store,
            media_root: media_root.into(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn media_root(&self) -> &Path {
        &self.media_root
    }

    /// §2.1: claim the Encoding (see [`Store::start_encoding`]) and run post_delete for every
    /// row it deleted (the task's own on `Dropped`, the replaced ones on `Started`).
    pub async fn begin_encoding(&self, req: &StartRequest<'_>) -> Result<StartOutcome> {
        let outcome = self.store.start_encoding(req).await?;
        let deleted = match &outcome {
            StartOutcome::Missing | StartOutcome::ClaimedByLadder(_) => &[][..],
            StartOutcome::Dropped { deleted, .. } => deleted.as_slice(),
            StartOutcome::Started(s) => s.replaced.as_slice(),
        };
        for row in deleted {
            self.encoding_deleted(row).await?;
        }
        Ok(outcome)
    }

    /// §2.6 success: move `output` into MEDIA_ROOT under MediaCMS's name (gif: a
    /// `tmpXXXXXXXX.gif` name; video: `basename(input).<ext>`), write the success columns, and
    /// run post_save once. `run_secs` is the real run time of this task.
    pub async fn encoding_succeeded(
        &self,
        media: &Media,
        profile: &EncodeProfile,
        encoding: &Encoding,
        output: &Path,
        logs: &str,
        run_secs: i32,
    ) -> Result<Completion> {
        let name = if profile.is_gif() {
            layout::gif_output_name()
        } else if encoding.chunk {
            layout::encoding_output_name(&encoding.chunk_file_path, &profile.extension)
        } else {
            layout::encoding_output_name(&media.media_file, &profile.extension)
        };
        let wanted =
            layout::encoded_relative_path(profile.id, &media.username, &media.uid_hex(), &name)?;
        let size_bytes = std::fs::metadata(output)
            .map_err(|e| LayoutError::io("stat", output, e))?
            .len();
        let placed = layout::place_file_async(&self.media_root, &wanted, output).await?;
        let up = SuccessUpdate {
            media_file: &placed,
            size_bytes,
            logs,
            total_run_time: run_secs,
        };
        match self.store.mark_success(encoding.id, &up).await {
            Ok(Some(enc)) => {
                // A re-run (restored after a crash, a retry) replaces the file a previous run
                // of this row placed; without this the old output stays in encoded/ forever.
                if !encoding.media_file.is_empty() && encoding.media_file != placed {
                    self.remove_quietly(&encoding.media_file);
                }
                let saved = self.encoding_saved(&enc).await?;
                Ok(Completion::Saved {
                    encoding: Box::new(enc),
                    saved,
                })
            }
            Ok(None) => {
                self.remove_quietly(&placed);
                Ok(Completion::Cancelled)
            }
            Err(e) => {
                self.remove_quietly(&placed);
                Err(e.into())
            }
        }
    }

    /// Encoding post_save: a finished chunk → completeness check (→ `concat`); a failed chunk →
    /// nothing (the handler calls [`Signals::on_failure`] once no retry follows); a non-chunk
    /// `success`/`fail` → `post_encode_actions(add)`.
    pub async fn encoding_saved(&self, enc: &Encoding) -> Result<Saved> {
        if enc.chunk {
            if !enc.is_success() || enc.media_file.is_empty() {
                return Ok(Saved::default());
            }
            let key = ChunkKey {
                media_id: enc.media_id,
                profile_id: enc.profile_id,
                chunks_info: enc.chunks_info.clone(),
            };
            let rows = self.store.chunk_rows(&key).await?;
            return match chunk_set_complete(&enc.chunks_info, &rows) {
                Some(true) => Ok(Saved {
                    follow_ups: vec![],
                    concat: Some(key),
                }),
                Some(false) => Ok(Saved::default()),
                None => {
                    // Unparsable chunks_info: MediaCMS deletes the row and stops.
                    tracing::warn!(
                        encoding = enc.id,
                        "chunks_info is not a JSON object; deleting chunk row"
                    );
                    if let Some(row) = self.store.delete_encoding(enc.id).await? {
                        self.encoding_deleted(&row).await?;
                    }
                    Ok(Saved::default())
                }
            };
        }
        if enc.is_success() || enc.is_fail() {
            let follow_ups = self
                .post_encode_actions(enc.media_id, Some(enc), EncodeAction::Add)
                .await?;
            return Ok(Saved {
                follow_ups,
                concat: None,
            });
        }
        Ok(Saved::default())
    }

    /// Encoding post_delete: remove its file (only a regular file inside MEDIA_ROOT; a refusal
    /// is logged, never fatal) and, for a non-chunk row that had a file, recompute the media.
    pub async fn encoding_deleted(&self, enc: &Encoding) -> Result<()> {
        if enc.media_file.is_empty() {
            return Ok(());
        }
        self.remove_quietly(&enc.media_file);
        if !enc.chunk {
            self.post_encode_actions(enc.media_id, Some(enc), EncodeAction::Delete)
                .await?;
        }
        Ok(())
    }

    /// `Media.post_encode_actions` (§2.7) with every value computed in SQL from current rows
    /// (fixes quirks §9.7). Returns `create_hls` for a non-chunk h264 success "add", plus
    /// `post_trim_action` when that success also completed a running trim request.
    pub async fn post_encode_actions(
        &self,
        media_id: i32,
        encoding: Option<&Encoding>,
        action: EncodeAction,
    ) -> Result<Vec<FollowUp>> {
        let profile = match encoding {
            Some(e) => self.store.profile(e.profile_id).await?,
            None => None,
        };
        let mut preview = PreviewChange::Keep;
        let mut hls = false;
        if let (Some(enc), Some(p)) = (encoding, &profile) {
            if p.is_gif() {
                preview = match action {
                    EncodeAction::Delete => PreviewChange::Clear,
                    EncodeAction::Add if !enc.media_file.is_empty() => {
                        PreviewChange::Set(layout::absolute(&self.media_root, &enc.media_file))
                    }
                    EncodeAction::Add => PreviewChange::Keep,
                };
            }
            hls = enc.is_success() && p.is_h264() && action == EncodeAction::Add && !enc.chunk;
        }
        let up = PostEncodeUpdate {
            media_id,
            preview,
            claim_trim_request: hls,
        };
        let Some(res) = self.store.post_encode_update(&up).await? else {
            return Ok(vec![]);
        };
        let mut follow_ups = Vec::new();
        if hls {
            follow_ups.push(FollowUp::CreateHls {
                friendly_token: res.friendly_token.clone(),
            });
        }
        if res.trim_request_claimed {
            follow_ups.push(FollowUp::PostTrimAction {
                friendly_token: res.friendly_token,
            });
        }
        Ok(follow_ups)
    }

    /// `EncodingTask.on_failure` (§2.8) and every final failure: `status='fail'` (+ `logs`
    /// when given), then a non-chunk row gets `post_encode_actions`, a chunk row fails its whole
    /// set ([`Signals::chunk_failed`]). A missing row (deleted meanwhile) is a no-op.
    pub async fn on_failure(&self, encoding_id: i32, logs: Option<&str>) -> Result<Vec<FollowUp>> {
        let Some(enc) = self.store.mark_failed(encoding_id, logs).await? else {
            return Ok(vec![]);
        };
        if enc.chunk {
            self.chunk_failed(&enc).await
        } else {
            Ok(self.encoding_saved(&enc).await?.follow_ups)
        }
    }

    /// `task_revoked` (§2.8): delete the Encodings of `media_id` carrying this task id, with
    /// post_delete (other media's rows a ladder borrowed are spared: see
    /// `Store::revoke_task_encodings`). The caller kills the task's ffmpeg.
    pub async fn encoding_revoked(&self, task_id: &str, media_id: i32) -> Result<Vec<Encoding>> {
        let deleted = self.store.revoke_task_encodings(task_id, media_id).await?;
        for row in &deleted {
            self.encoding_deleted(row).await?;
        }
        Ok(deleted)
    }

    /// Best-effort removal of a DB- or message-supplied path; refusals are logged.
    pub(crate) fn remove_quietly(&self, path: &str) {
        if let Err(e) = layout::remove_media_file(&self.media_root, Path::new(path)) {
            tracing::warn!(path, error = %e, "media file not removed");
        }
    }
}
