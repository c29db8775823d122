//! Shared helpers of the benches: the shared reference directory, MediaCMS default profiles,
//! and a 1080p30 `media_info`.
#![allow(dead_code)]

use std::path::PathBuf;

/// The reference-data root: `$MEDIACMS_SHARED`, else the in-repo copy `tests/fixtures`.
pub fn shared_dir() -> PathBuf {
    match std::env::var_os("MEDIACMS_SHARED") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")),
    }
}

/// Bytes of one captured Redis list entry from `mediacms/messages/`.
pub fn message(name: &str) -> Vec<u8> {
    let path = shared_dir().join("mediacms/messages").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

use mediacms_worker::plan::ProfileSpec;

/// MediaCMS's active-by-default profiles (contract §3.4) as `(id, extension, resolution, codec)`,
/// in the order the reference run (python-reference-run.md) executed them for one upload:
/// priority 0 first (360, 480, 720, 1080, then the gif), priority 9 last (144, 240).
pub const DEFAULT_PROFILES: [(i32, &str, Option<i32>, Option<&str>); 7] = [
    (3, "mp4", Some(360), Some("h264")),
    (13, "mp4", Some(480), Some("h264")),
    (10, "mp4", Some(720), Some("h264")),
    (7, "mp4", Some(1080), Some("h264")),
    (1, "gif", None, None),
    (23, "mp4", Some(144), Some("h264")),
    (2, "mp4", Some(240), Some("h264")),
];

/// [`DEFAULT_PROFILES`] as planner rows.
pub fn default_profiles() -> Vec<ProfileSpec> {
    DEFAULT_PROFILES
        .iter()
        .map(|&(id, ext, resolution, codec)| ProfileSpec {
            id,
            extension: ext.to_owned(),
            resolution,
            codec: codec.map(str::to_owned),
        })
        .collect()
}

/// `media_info` of the benchmark sources: 1920x1080, 30 fps, 30 s, with audio, progressive.
pub const MEDIA_INFO_1080P30: &str = r#"{"filename": "/srv/media/original/src.mp4",
 "file_size": 25500000, "video_duration": 30.0, "video_frame_rate_n": "30",
 "video_frame_rate_d": "1", "video_bitrate": 6504.0, "video_width": 1920, "video_height": 1080,
 "video_codec": "h264", "has_video": true, "has_audio": true, "color_range": "tv",
 "color_space": "bt709", "color_transfer": "bt709", "color_primaries": "bt709",
 "interlaced": false, "display_aspect_ratio": "16:9", "sample_aspect_ratio": "1:1",
 "audio_duration": 30.0, "audio_sample_rate": "48000", "audio_codec": "aac",
 "audio_bitrate": 125.0, "audio_channels": 2, "is_video": true}"#;
