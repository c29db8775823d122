//! The subset of MediaCMS's `files_media.media_info` JSON the planner reads, parsed as tolerantly as
//! MediaCMS does (`json.loads` failure ⇒ `{}`).

use serde_json::{Map, Value};

/// Fields of `media_info` (contract §5.7) that drive command construction.
///
/// Missing keys stay `None`; MediaCMS would raise on some of them (e.g. `video_height`), which the
/// planner reports as [`crate::plan::PlanSkip::InvalidMediaInfo`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaInfo {
    /// ffprobe `r_frame_rate` numerator, stored by MediaCMS as a string (`"30"`, `"30000"`).
    pub video_frame_rate_n: Option<String>,
    /// ffprobe `r_frame_rate` denominator, a string (`"1"`, `"1001"`).
    pub video_frame_rate_d: Option<String>,
    /// Coded height (rotation ignored, as MediaCMS stores it).
    pub video_height: Option<i64>,
    /// Coded width.
    pub video_width: Option<i64>,
    /// Seconds (float).
    pub video_duration: Option<f64>,
    /// Python truthiness of `has_audio`.
    pub has_audio: bool,
    /// Python truthiness of `interlaced` (ffprobe `field_order` ∈ tt/tb/bt/bb).
    pub interlaced: bool,
    /// Display rotation in degrees from the raw `video_info` stream (`tags.rotate` or the display
    /// matrix side data); 0 when absent. MediaCMS ignores it; hardware planning needs it because
    /// ffmpeg auto-rotates while decoding, which swaps the picture's width and height.
    pub rotation: i32,
    /// Source video codec (`video_codec`, else `video_info.codec_name`): `h264`, `hevc`, `prores`…
    pub video_codec: Option<String>,
    /// ffprobe's codec profile (`video_info.profile`): `High 10`, `Main 10`, `4:2:2 HQ`…
    pub video_profile: Option<String>,
    /// ffprobe's decoded pixel format (`video_info.pix_fmt`): `yuv420p`, `yuv420p10le`…
    pub pix_fmt: Option<String>,
}

impl MediaInfo {
    /// Parses the stored JSON text. Invalid JSON or a non-object yields the empty info, like
    /// MediaCMS's `{}` fallback.
    pub fn from_json(text: &str) -> MediaInfo {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => MediaInfo::from_map(&map),
            _ => MediaInfo::default(),
        }
    }

    fn from_map(map: &Map<String, Value>) -> MediaInfo {
        MediaInfo {
            video_frame_rate_n: map.get("video_frame_rate_n").and_then(text_of),
            video_frame_rate_d: map.get("video_frame_rate_d").and_then(text_of),
            video_height: map.get("video_height").and_then(int_of),
            video_width: map.get("video_width").and_then(int_of),
            video_duration: map.get("video_duration").and_then(Value::as_f64),
            has_audio: map.get("has_audio").is_some_and(truthy),
            interlaced: map.get("interlaced").is_some_and(truthy),
            rotation: map.get("video_info").map(rotation_of).unwrap_or(0),
            video_codec: map
                .get("video_codec")
                .and_then(text_of)
                .or_else(|| stream_text(map, "codec_name")),
            video_profile: stream_text(map, "profile"),
            pix_fmt: stream_text(map, "pix_fmt"),
        }
    }

    /// Width and height of the decoded picture after ffmpeg's auto-rotation (±90° swaps them).
    pub fn display_dims(&self) -> Option<(i64, i64)> {
        let (w, h) = (self.video_width?, self.video_height?);
        if w <= 0 || h <= 0 {
            return None;
        }
        if self.rotation.rem_euclid(180) == 90 {
            Some((h, w))
        } else {
            Some((w, h))
        }
    }
}

/// A text field of the raw ffprobe stream MediaCMS keeps in `video_info`.
fn stream_text(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get("video_info")?.get(key).and_then(text_of)
}

/// Strings as-is; integral numbers as their decimal text (so `int()` semantics still apply).
fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Some(i.to_string()),
            (None, Some(f)) if f.fract() == 0.0 => Some(format!("{f:.0}")),
            _ => Some(n.to_string()),
        },
        _ => None,
    }
}

fn int_of(v: &Value) -> Option<i64> {
    // Python's int(float) truncates toward zero, as `as` does (saturating at the bounds).
    #[allow(clippy::cast_possible_truncation)]
    let int = |f: f64| f as i64;
    v.as_i64().or_else(|| v.as_f64().map(int))
}

/// Python `bool(x)` for JSON values.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// ffprobe reports rotation either as `tags.rotate` ("90", older ffmpeg) or as a display-matrix
/// side data entry with `rotation` (-90, newer ffmpeg).
fn rotation_of(stream: &Value) -> i32 {
    let tag = stream
        .pointer("/tags/rotate")
        .and_then(|v| text_of(v).and_then(|s| s.trim().parse::<i32>().ok()));
    let side = stream
        .get("side_data_list")
        .and_then(Value::as_array)
        .and_then(|list| list.iter().find_map(|e| e.get("rotation").and_then(int_of)))
        .and_then(|r| i32::try_from(r).ok());
    tag.or(side).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_json_is_empty_like_mediacms() {
        assert_eq!(MediaInfo::from_json(""), MediaInfo::default());
        assert_eq!(MediaInfo::from_json("[1,2]"), MediaInfo::default());
        assert_eq!(MediaInfo::from_json("{not json"), MediaInfo::default());
    }

    #[test]
    fn reads_the_fields_and_truthiness() {
        let info = MediaInfo::from_json(
            r#"{"video_frame_rate_n": "30000", "video_frame_rate_d": "1001", "video_height": 1080,
                "video_width": 1920, "video_duration": 12.5, "has_audio": true, "interlaced": 1}"#,
        );
        assert_eq!(info.video_frame_rate_n.as_deref(), Some("30000"));
        assert_eq!(info.video_frame_rate_d.as_deref(), Some("1001"));
        assert_eq!(
            (info.video_width, info.video_height),
            (Some(1920), Some(1080))
        );
        assert_eq!(info.video_duration, Some(12.5));
        assert!(info.has_audio && info.interlaced);
        assert_eq!(info.rotation, 0);
    }

    #[test]
    fn rotation_swaps_display_dims() {
        let tag = MediaInfo::from_json(
            r#"{"video_width": 1920, "video_height": 1080, "video_info": {"tags": {"rotate": "90"}}}"#,
        );
        assert_eq!(tag.display_dims(), Some((1080, 1920)));
        let side = MediaInfo::from_json(
            r#"{"video_width": 1920, "video_height": 1080,
                "video_info": {"side_data_list": [{"side_data_type": "Display Matrix", "rotation": -90}]}}"#,
        );
        assert_eq!(side.rotation, -90);
        assert_eq!(side.display_dims(), Some((1080, 1920)));
        let flipped = MediaInfo::from_json(
            r#"{"video_width": 1920, "video_height": 1080, "video_info": {"tags": {"rotate": "180"}}}"#,
        );
        assert_eq!(flipped.display_dims(), Some((1920, 1080)));
    }
}
