//! Shared fixtures of the planner goldens: the source scenarios, profile and path helpers.
#![allow(dead_code)]

use mediacms_worker::plan::{
    plan_encode, Backend, EncodeIo, EncodePlan, EncodeSettings, MediaInfo, PlanSkip, ProfileSpec,
};

/// Splits a golden written as one line; goldens never hold spaces inside a token.
pub fn sv(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// An 8-bit 4:2:0 H.264 (High) source, what phones and cameras upload most.
pub fn media(fps_n: &str, fps_d: &str, w: i64, h: i64, secs: f64, interlaced: bool) -> MediaInfo {
    MediaInfo::from_json(&format!(
        r#"{{"video_duration": {secs:?}, "video_frame_rate_n": "{fps_n}", "video_frame_rate_d": "{fps_d}",
            "video_width": {w}, "video_height": {h}, "has_video": true, "has_audio": true,
            "interlaced": {interlaced}, "video_codec": "h264",
            "video_info": {{"codec_name": "h264", "profile": "High", "pix_fmt": "yuv420p"}}}}"#
    ))
}

/// 30 fps 1080p, 120 s, audio, progressive: the source of the §3.3 examples.
pub fn plain_1080() -> MediaInfo {
    media("30", "1", 1920, 1080, 120.0, false)
}

pub fn interlaced_5994() -> MediaInfo {
    media("60000", "1001", 1920, 1080, 120.0, true)
}

pub fn fps_120() -> MediaInfo {
    media("120", "1", 1920, 1080, 120.0, false)
}

/// 1.5 s: two-pass.
pub fn short_15() -> MediaInfo {
    media("30", "1", 1920, 1080, 1.5, false)
}

pub fn plain_2160() -> MediaInfo {
    media("30", "1", 3840, 2160, 120.0, false)
}

pub fn profile(codec: &str, resolution: i32) -> ProfileSpec {
    ProfileSpec {
        id: 0,
        extension: extension(codec).to_string(),
        resolution: Some(resolution),
        codec: Some(codec.to_string()),
    }
}

pub fn extension(codec: &str) -> &'static str {
    if codec == "vp9" {
        "webm"
    } else {
        "mp4"
    }
}

/// Plans with the golden paths `IN`, `OUT.<ext>`, `PASS`.
pub fn encode(
    info: &MediaInfo,
    codec: &str,
    resolution: i32,
    chunk: bool,
    backend: &Backend,
) -> Result<EncodePlan, PlanSkip> {
    let output = format!("OUT.{}", extension(codec));
    let io = EncodeIo {
        input: "IN",
        output: &output,
        pass_file: "PASS",
        chunk,
    };
    let settings = EncodeSettings::default();
    plan_encode(&io, info, &profile(codec, resolution), &settings, backend)
}

/// The single software argv of a CRF encode.
pub fn sw(info: &MediaInfo, codec: &str, resolution: i32, chunk: bool) -> Vec<String> {
    let plan = encode(info, codec, resolution, chunk, &Backend::Software).unwrap();
    assert_eq!(plan.backend, Backend::Software);
    assert_eq!(plan.passes.len(), 1, "CRF is one command");
    plan.passes.into_iter().next().unwrap()
}

pub fn fixture(name: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/goldens/plan/").to_string() + name;
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A file of the reference data: `$MEDIACMS_SHARED`, else the in-repo copy `tests/fixtures`.
pub fn shared_file(rel: &str) -> String {
    let root = std::env::var("MEDIACMS_SHARED")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures").to_string());
    let path = format!("{root}/{rel}");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (set MEDIACMS_SHARED to the shared spec folder)"))
}
