//! In-process probing with libav: MediaCMS's `media_info` JSON (contract §5.7), output
//! validation before an encode is moved into place, and a short summary for the CLI.
//!
//! All functions block (file reads, md5); call them from `spawn_blocking`.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use ffmpeg_next::ffi;
use ffmpeg_next::format::context::Input;
use ffmpeg_next::media::Type;
use md5::{Digest, Md5};
use serde_json::{json, Map, Value};

use super::libav;
use super::stream_info::{field_order_name, stream_dict};

/// Demuxers MediaCMS treats as still images, not video (contract §5.7).
const IMAGE_FORMATS: [&str; 6] = ["tty", "image2", "image2pipe", "bin", "png_pipe", "gif"];

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{path}: no such file")]
    Missing { path: PathBuf },
    #[error("{path}: empty file")]
    Empty { path: PathBuf },
    #[error("{path}: unreadable by libav: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("{path}: neither video nor audio ({reason})")]
    NotMedia { path: PathBuf, reason: String },
}

/// What a validated output holds (MediaCMS accepts `is_video` or `is_audio`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    Video,
    Audio,
}

/// The facts the `transcode`/`probe` CLI prints and planning sanity checks use.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProbeSummary {
    /// Seconds (format duration, else the video stream's).
    pub duration: f64,
    pub has_video: bool,
    /// Coded size of the video stream (0 without video); rotation not applied, as MediaCMS.
    pub width: u32,
    pub height: u32,
    pub fps: Option<f64>,
    pub has_audio: bool,
    pub interlaced: bool,
    /// Clockwise degrees a player rotates the picture by (0, 90, 180, 270).
    pub rotation: i32,
}

pub(crate) fn open(path: &Path) -> Result<Input, ProbeError> {
    libav::init();
    let meta = std::fs::metadata(path).map_err(|_| ProbeError::Missing { path: path.into() })?;
    if !meta.is_file() {
        return Err(ProbeError::Missing { path: path.into() });
    }
    if meta.len() == 0 {
        return Err(ProbeError::Empty { path: path.into() });
    }
    ffmpeg_next::format::input(path).map_err(|e| ProbeError::Unreadable {
        path: path.into(),
        reason: e.to_string(),
    })
}

/// MediaCMS's `media_file_info(path)`: the `files_media.media_info` JSON, keys in its order.
/// `with_md5` false skips hashing the whole file (`"md5sum": ""`, allowed for outputs by §11).
pub fn media_file_info(path: &Path, with_md5: bool) -> Value {
    let fail = || json!({"fail": true});
    let Ok(meta) = std::fs::metadata(path) else {
        return fail();
    };
    if !meta.is_file() {
        return fail();
    }
    let md5sum = if with_md5 {
        md5_file(path).unwrap_or_default()
    } else {
        String::new()
    };
    let Ok(mut input) = open(path) else {
        return fail();
    };
    build_info(&mut input, path, meta.len(), md5sum).unwrap_or_else(fail)
}

/// The last stream of each kind wins, as in MediaCMS's loop over ffprobe's streams.
struct Found {
    video: Option<(usize, Map<String, Value>)>,
    audio: Option<(usize, Map<String, Value>)>,
}

fn find_streams(input: &Input) -> Found {
    let mut found = Found {
        video: None,
        audio: None,
    };
    for stream in input.streams() {
        match stream.parameters().medium() {
            Type::Video => found.video = Some((stream.index(), stream_dict(input, &stream))),
            Type::Audio => found.audio = Some((stream.index(), stream_dict(input, &stream))),
            _ => {}
        }
    }
    found
}

fn build_info(input: &mut Input, path: &Path, size: u64, md5sum: String) -> Option<Value> {
    let found = find_streams(input);
    let audio_info = found
        .audio
        .as_ref()
        .map(|(_, d)| d.clone())
        .unwrap_or_default();
    let Some((_, video)) = found.video else {
        return Some(json!({
            "is_video": false,
            "is_audio": found.audio.is_some(),
            "audio_info": audio_info,
        }));
    };
    if IMAGE_FORMATS.contains(&input.format().name()) {
        return None;
    }
    let video_duration = stream_duration(&video, input)?;
    let video_bitrate = bitrate(&video, input, Type::Video, video_duration);
    let rate = video
        .get("r_frame_rate")
        .and_then(Value::as_str)
        .unwrap_or("");
    let (rate_n, rate_d) = rate.split_once('/').unwrap_or((rate, ""));
    let field = video.get("field_order").and_then(Value::as_str);
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| m.insert(k.to_owned(), v);
    put("filename", json!(path.to_string_lossy()));
    put("file_size", json!(size));
    put("video_duration", json!(video_duration));
    put("video_frame_rate_n", json!(rate_n));
    put("video_frame_rate_d", json!(rate_d));
    put("video_bitrate", json!(video_bitrate));
    put("video_width", video["width"].clone());
    put("video_height", video["height"].clone());
    put("video_codec", video["codec_name"].clone());
    put("has_video", json!(true));
    put("has_audio", json!(found.audio.is_some()));
    let get = |k: &str| video.get(k).cloned().unwrap_or(Value::Null);
    put("color_range", get("color_range"));
    put("color_space", get("color_space"));
    // MediaCMS copies color_space here (its bug, kept: the Django side may read it).
    put("color_transfer", get("color_space"));
    put("color_primaries", get("color_primaries"));
    put(
        "interlaced",
        json!(matches!(field, Some("tt" | "tb" | "bt" | "bb"))),
    );
    put("display_aspect_ratio", get("display_aspect_ratio"));
    put("sample_aspect_ratio", get("sample_aspect_ratio"));
    if let Some((_, audio)) = &found.audio {
        audio_keys(&mut m, audio, input)?;
    }
    let mut put = |k: &str, v: Value| m.insert(k.to_owned(), v);
    put("video_info", Value::Object(video));
    put("audio_info", Value::Object(audio_info));
    put("is_video", json!(true));
    put("md5sum", json!(md5sum));
    Some(Value::Object(m))
}

/// The `audio_*` keys MediaCMS adds when the file has audio.
fn audio_keys(
    m: &mut Map<String, Value>,
    audio: &Map<String, Value>,
    input: &mut Input,
) -> Option<()> {
    let duration = stream_duration(audio, input)?;
    let mut put = |k: &str, v: Value| m.insert(k.to_owned(), v);
    put("audio_duration", json!(duration));
    put("audio_sample_rate", audio["sample_rate"].clone());
    put("audio_codec", audio["codec_name"].clone());
    put(
        "audio_bitrate",
        json!(bitrate(audio, input, Type::Audio, duration)),
    );
    put("audio_channels", audio["channels"].clone());
    Some(())
}

/// Stream `duration`, else the Matroska `DURATION` tag, else the container's duration.
fn stream_duration(info: &Map<String, Value>, input: &Input) -> Option<f64> {
    if let Some(d) = info.get("duration").and_then(Value::as_str) {
        return d.parse().ok();
    }
    let tag = info
        .get("tags")
        .and_then(|t| t.get("DURATION"))
        .and_then(Value::as_str);
    if let Some(d) = tag.and_then(parse_tag_duration) {
        return Some(d);
    }
    let us = input.duration();
    (us != ffi::AV_NOPTS_VALUE).then(|| format!("{:.6}", us as f64 / 1e6).parse().ok())?
}

/// `HH:MM:SS.fffffffff` (or with a comma) → seconds, as MediaCMS computes it.
pub fn parse_tag_duration(text: &str) -> Option<f64> {
    let (hms, frac) = text.split_once(['.', ','])?;
    let mut secs = 0u64;
    for part in hms.split(':') {
        secs = secs * 60 + part.trim().parse::<u64>().ok()?;
    }
    let frac: f64 = format!("0.{frac}").parse().ok()?;
    Some(secs as f64 + frac)
}

/// kbit/s as MediaCMS stores it: `bit_rate / 1024`, else summed packet sizes of every stream
/// of that kind over the duration; rounded to 2 decimals.
fn bitrate(info: &Map<String, Value>, input: &mut Input, kind: Type, duration: f64) -> f64 {
    let given = info.get("bit_rate").and_then(Value::as_str);
    if let Some(rate) = given.and_then(|b| b.parse::<f64>().ok()) {
        return round2(rate / 1024.0);
    }
    let wanted: Vec<usize> = input
        .streams()
        .filter(|s| s.parameters().medium() == kind)
        .map(|s| s.index())
        .collect();
    let mut bytes = 0u64;
    for (stream, packet) in input.packets() {
        if wanted.contains(&stream.index()) {
            bytes += packet.size() as u64;
        }
    }
    if duration > 0.0 {
        round2(bytes as f64 * 8.0 / 1024.0 / duration)
    } else {
        0.0
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Hex md5 of a file, read in 1 MiB blocks.
pub fn md5_file(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// MediaCMS's acceptance test for an encode output (`is_video` or `is_audio`), without the
/// md5 and packet scan `media_file_info` would do.
pub fn validate_output(path: &Path) -> Result<OutputKind, ProbeError> {
    let input = open(path)?;
    let found = find_streams(&input);
    let not_media = |reason: &str| ProbeError::NotMedia {
        path: path.into(),
        reason: reason.into(),
    };
    match (found.video, found.audio) {
        (Some(_), _) if IMAGE_FORMATS.contains(&input.format().name()) => {
            Err(not_media("still image format"))
        }
        (Some((_, video)), _) => stream_duration(&video, &input)
            .map(|_| OutputKind::Video)
            .ok_or_else(|| not_media("video without a duration")),
        (None, Some(_)) => Ok(OutputKind::Audio),
        (None, None) => Err(not_media("no audio or video stream")),
    }
}

/// Duration, size, rate, audio presence, interlacing and rotation of a media file.
pub fn probe_summary(path: &Path) -> Result<ProbeSummary, ProbeError> {
    let input = open(path)?;
    let has_audio = input.streams().best(Type::Audio).is_some();
    let format_secs =
        (input.duration() != ffi::AV_NOPTS_VALUE).then(|| input.duration() as f64 / 1e6);
    let mut summary = ProbeSummary {
        duration: format_secs.unwrap_or(0.0),
        has_video: false,
        width: 0,
        height: 0,
        fps: None,
        has_audio,
        interlaced: false,
        rotation: 0,
    };
    let Some(video) = input.streams().best(Type::Video) else {
        return Ok(summary);
    };
    // SAFETY: pointers of a live stream of the open input.
    unsafe {
        let st = &*video.as_ptr();
        let par = &*st.codecpar;
        summary.has_video = true;
        summary.width = par.width.max(0) as u32;
        summary.height = par.height.max(0) as u32;
        let rate = if st.avg_frame_rate.num > 0 {
            st.avg_frame_rate
        } else {
            st.r_frame_rate
        };
        summary.fps =
            (rate.num > 0 && rate.den > 0).then(|| f64::from(rate.num) / f64::from(rate.den));
        summary.interlaced =
            matches!(field_order_name(par.field_order), Some(o) if o != "progressive");
        summary.rotation = rotation(st);
        if format_secs.is_none() && st.duration != ffi::AV_NOPTS_VALUE {
            summary.duration =
                st.duration as f64 * f64::from(st.time_base.num) / f64::from(st.time_base.den);
        }
    }
    Ok(summary)
}

/// Clockwise rotation from the display matrix, normalised like the ffmpeg CLI does.
unsafe fn rotation(st: &ffi::AVStream) -> i32 {
    let mut size = 0;
    let data = ffi::av_stream_get_side_data(
        st,
        ffi::AVPacketSideDataType::AV_PKT_DATA_DISPLAYMATRIX,
        &mut size,
    );
    if data.is_null() || size < 36 {
        return 0;
    }
    let ccw = ffi::av_display_rotation_get(data as *const i32);
    if ccw.is_nan() {
        return 0;
    }
    // av_display_rotation_get answers degrees in [-180, 180]: the cast is exact after round().
    #[allow(clippy::cast_possible_truncation)]
    let cw = -ccw.round() as i32;
    cw.rem_euclid(360)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_durations_parse_like_mediacms() {
        assert_eq!(parse_tag_duration("00:00:08.000000000"), Some(8.0));
        assert_eq!(parse_tag_duration("01:02:03,5"), Some(3723.5));
        assert_eq!(parse_tag_duration("garbage"), None);
    }

    #[test]
    fn rounding_to_two_decimals() {
        assert_eq!(round2(3016942.0 / 1024.0), 2946.23);
        assert_eq!(round2(69344.0 / 1024.0), 67.72);
    }
}
