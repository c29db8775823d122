//! Row structs of the MediaCMS tables the worker reads (contract §6), built only by the store.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// `files_encoding.status` values.
pub mod status {
    pub const PENDING: &str = "pending";
    pub const RUNNING: &str = "running";
    pub const SUCCESS: &str = "success";
    pub const FAIL: &str = "fail";
}

/// A `files_media` row (the columns the long tasks use) plus the owner's username, which
/// MediaCMS puts into every file path.
#[derive(Debug, Clone, PartialEq)]
pub struct Media {
    pub id: i32,
    pub uid: Uuid,
    pub friendly_token: String,
    pub title: String,
    pub user_id: i32,
    pub username: String,
    /// Relative to MEDIA_ROOT.
    pub media_file: String,
    pub media_type: String,
    pub encoding_status: String,
    pub state: String,
    pub is_reviewed: bool,
    pub listable: bool,
    /// Whole seconds (rounded) of the original.
    pub duration: i32,
    pub video_height: i32,
    /// The ffprobe JSON text of §5.7 (`""` when unknown).
    pub media_info: String,
    /// Absolute path of the gif preview.
    pub preview_file_path: String,
    /// Absolute path of `master.m3u8`.
    pub hls_file: String,
    /// Relative path of the sprite strip.
    pub sprites: String,
    pub thumbnail: String,
    pub poster: String,
    pub uploaded_thumbnail: String,
}

impl Media {
    /// `uid.hex`: 32 lowercase hex digits, the prefix of every file name of this media.
    pub fn uid_hex(&self) -> String {
        self.uid.simple().to_string()
    }
}

/// A `files_encodeprofile` row.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodeProfile {
    pub id: i32,
    pub name: String,
    /// `mp4` | `webm` | `gif`.
    pub extension: String,
    /// Target height; `None` for the gif preview.
    pub resolution: Option<i32>,
    /// `h264` | `h265` | `vp9`; `None` for the gif preview.
    pub codec: Option<String>,
    pub active: bool,
}

impl EncodeProfile {
    pub fn is_gif(&self) -> bool {
        self.extension == "gif"
    }

    pub fn is_h264(&self) -> bool {
        self.codec.as_deref() == Some("h264")
    }
}

/// A `files_encoding` row: every column of §6.2.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoding {
    pub id: i32,
    pub add_date: DateTime<Utc>,
    pub commands: String,
    pub chunk: bool,
    /// Absolute path of the source chunk `.mkv` (chunk rows only).
    pub chunk_file_path: String,
    /// JSON `{abs_chunk_path: md5}`, identical text on every chunk row of a media.
    pub chunks_info: String,
    pub logs: String,
    pub md5sum: Option<String>,
    pub media_id: i32,
    /// Relative to MEDIA_ROOT; `""` until the output is placed.
    pub media_file: String,
    pub profile_id: i32,
    pub progress: i16,
    pub update_date: DateTime<Utc>,
    pub retries: i32,
    pub size: String,
    pub status: String,
    pub temp_file: String,
    pub task_id: String,
    pub total_run_time: i32,
    pub worker: String,
}

impl Encoding {
    pub fn is_success(&self) -> bool {
        self.status == status::SUCCESS
    }

    pub fn is_fail(&self) -> bool {
        self.status == status::FAIL
    }
}

/// A `users_user` row, reduced to what paths and recounts need.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: i32,
    pub username: String,
    pub media_count: i32,
}

/// A `files_transcriptionrequest` row (§5.3).
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptionRequest {
    pub id: i32,
    pub media_id: i32,
    pub status: String,
    pub translate_to_english: bool,
    pub logs: Option<String>,
}
