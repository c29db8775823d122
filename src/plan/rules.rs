//! MediaCMS's encoding constants and decision rules (contract §3.1–§3.2), resolved once per
//! encode into [`Decisions`] that every backend turns into argv.

use super::media_info::MediaInfo;
use super::rational::Ratio;
use super::{EncodeSettings, PlanSkip, ProfileSpec};

/// `video_duration > 2` ⇒ CRF (one command); otherwise two passes.
pub const CRF_ENCODING_NUM_SECONDS: f64 = 2.0;
/// Seconds between forced keyframes (also the HLS segment target).
pub const KEYFRAME_DISTANCE_SECS: i64 = 4;
/// The `-force_key_frames` expression every encoder gets.
pub const FORCE_KEY_FRAMES: &str = "expr:gte(t,n_forced*4)";

/// The three video codecs MediaCMS profiles name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
    Vp9,
}

impl Codec {
    /// Profile `codec` column → codec; `hevc` is accepted as an alias of `h265` like MediaCMS.
    pub fn from_profile(codec: Option<&str>) -> Option<Codec> {
        match codec? {
            "h264" => Some(Codec::H264),
            "h265" | "hevc" => Some(Codec::H265),
            "vp9" => Some(Codec::Vp9),
            _ => None,
        }
    }

    pub fn software_encoder(self) -> &'static str {
        match self {
            Codec::H264 => "libx264",
            Codec::H265 => "libx265",
            Codec::Vp9 => "libvpx-vp9",
        }
    }

    pub fn crf(self) -> u32 {
        match self {
            Codec::H264 => 23,
            Codec::H265 => 28,
            Codec::Vp9 => 32,
        }
    }

    pub fn audio_encoder(self) -> &'static str {
        match self {
            Codec::H264 | Codec::H265 => "aac",
            Codec::Vp9 => "libopus",
        }
    }

    pub fn audio_kbps(self) -> u32 {
        match self {
            Codec::H264 | Codec::H265 => 128,
            Codec::Vp9 => 96,
        }
    }
}

/// `VIDEO_BITRATES[codec]["25" | "60"][resolution]` in kbit/s; `None` where the table has no entry.
fn table_rate(codec: Codec, high_fps: bool, resolution: i32) -> Option<u32> {
    const RESOLUTIONS: [i32; 8] = [144, 240, 360, 480, 720, 1080, 1440, 2160];
    // Table "60" only has the four top rows (0 = absent).
    const H264_25: [u32; 8] = [150, 300, 500, 1000, 2500, 4500, 9000, 18000];
    const H264_60: [u32; 8] = [0, 0, 0, 0, 3500, 7500, 18000, 40000];
    const HEVC_25: [u32; 8] = [75, 150, 275, 500, 1024, 1800, 4500, 10000];
    const HEVC_60: [u32; 8] = [0, 0, 0, 0, 1800, 3000, 8000, 18000];
    let row = RESOLUTIONS.iter().position(|&r| r == resolution)?;
    let table = match (codec, high_fps) {
        (Codec::H264, false) => &H264_25,
        (Codec::H264, true) => &H264_60,
        (Codec::H265 | Codec::Vp9, false) => &HEVC_25,
        (Codec::H265 | Codec::Vp9, true) => &HEVC_60,
    };
    Some(table[row]).filter(|&r| r > 0)
}

/// Target bitrate: table "60" when the *source* fps is above 30, falling back to table "25".
pub fn target_rate_kbps(codec: Codec, source_fps: Ratio, resolution: i32) -> Option<u32> {
    let high = source_fps.gt_int(30);
    table_rate(codec, high, resolution).or_else(|| table_rate(codec, false, resolution))
}

/// Output frame rate: halve while above 60, never below 1.
pub fn output_fps(source: Ratio) -> Ratio {
    let mut fps = source;
    while fps.gt_int(60) {
        fps = fps.halve();
    }
    if fps.gt_int(1) || fps == Ratio::integer(1) {
        fps
    } else {
        Ratio::integer(1)
    }
}

/// The height box `(landscape width, height)`: width is `round(res * 16 / 9)` (no ties exist
/// because 9 is odd), e.g. 480 → 853.
pub fn box_long_side(resolution: i32) -> i64 {
    (i64::from(resolution) * 32 + 9) / 18
}

/// Everything MediaCMS decides for one (media, profile) before writing argv.
#[derive(Debug, Clone, PartialEq)]
pub struct Decisions {
    pub codec: Codec,
    pub resolution: i32,
    pub rate_kbps: u32,
    /// Output fps (after halving).
    pub fps: Ratio,
    /// `int(fps * 4)`: frames per keyframe distance.
    pub kd: i64,
    pub two_pass: bool,
    pub interlaced: bool,
    pub has_audio: bool,
}

impl Decisions {
    pub fn maxrate_kbps(&self) -> u32 {
        self.rate_kbps * 3 / 2
    }

    pub fn minrate_kbps(&self) -> u32 {
        self.rate_kbps / 2
    }

    /// x264 `-level`: 4.2 up to 1080, 5.2 above.
    pub fn h264_level(&self) -> &'static str {
        if self.resolution <= 1080 {
            "4.2"
        } else {
            "5.2"
        }
    }
}

/// Python `int(str)` for the fps fields (surrounding whitespace allowed, like Python).
fn parse_int(s: &str) -> Option<i64> {
    s.trim().replace('_', "").parse().ok()
}

fn source_fps(info: &MediaInfo) -> Result<Ratio, PlanSkip> {
    match (&info.video_frame_rate_n, &info.video_frame_rate_d) {
        (Some(n), Some(d)) => {
            let bad = || PlanSkip::InvalidMediaInfo("video_frame_rate_n/d");
            Ratio::new(parse_int(n).ok_or_else(bad)?, parse_int(d).ok_or_else(bad)?).ok_or_else(bad)
        }
        _ => Ok(Ratio::integer(30)),
    }
}

/// Applies §3.2 rules 2–6 in MediaCMS's order.
pub fn decide(
    info: &MediaInfo,
    profile: &ProfileSpec,
    settings: &EncodeSettings,
) -> Result<Decisions, PlanSkip> {
    let codec = Codec::from_profile(profile.codec.as_deref())
        .ok_or_else(|| PlanSkip::UnknownCodec(profile.codec.clone()))?;
    let fps = source_fps(info)?;
    let resolution = profile.resolution;
    let rate_kbps = resolution
        .and_then(|r| target_rate_kbps(codec, fps, r))
        .ok_or(PlanSkip::NoBitrate { codec, resolution })?;
    let resolution = resolution.expect("a bitrate implies a resolution");
    let source_height = info
        .video_height
        .ok_or(PlanSkip::InvalidMediaInfo("video_height"))?;
    if source_height < i64::from(resolution) && !settings.minimum_resolutions.contains(&resolution)
    {
        return Err(PlanSkip::SourceTooSmall {
            source_height,
            resolution,
        });
    }
    let duration = info
        .video_duration
        .ok_or(PlanSkip::InvalidMediaInfo("video_duration"))?;
    let fps_out = output_fps(fps);
    Ok(Decisions {
        codec,
        resolution,
        rate_kbps,
        fps: fps_out,
        kd: fps_out.mul_int_trunc(KEYFRAME_DISTANCE_SECS),
        two_pass: duration <= CRF_ENCODING_NUM_SECONDS,
        interlaced: info.interlaced,
        has_audio: info.has_audio,
    })
}

/// ffmpeg's `scale` with `force_original_aspect_ratio=decrease:force_divisible_by=2` into MediaCMS's
/// box (transposed for portrait sources): the exact output size, needed by hardware scalers that
/// take plain numbers. Mirrors libavfilter's `ff_scale_adjust_dimensions` (ffmpeg 5.1).
pub fn fit_box(src_w: i64, src_h: i64, resolution: i32) -> (i64, i64) {
    let long = box_long_side(resolution);
    let short = i64::from(resolution);
    let (bw, bh) = if src_w < src_h {
        (short, long)
    } else {
        (long, short)
    };
    const DIV: i64 = 2;
    let tmp_w = rescale_near(bh, src_w, src_h * DIV) * DIV;
    let tmp_h = rescale_near(bw, src_h, src_w * DIV) * DIV;
    let w = tmp_w.min(bw) / DIV * DIV;
    let h = tmp_h.min(bh) / DIV * DIV;
    (w, h)
}

/// `av_rescale(a, b, c)` for non-negative values: `a*b/c` rounded half away from zero.
fn rescale_near(a: i64, b: i64, c: i64) -> i64 {
    (a * b + c / 2) / c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_widths_match_the_contract() {
        let widths: Vec<i64> = [144, 240, 360, 480, 720, 1080, 1440, 2160]
            .iter()
            .map(|&r| box_long_side(r))
            .collect();
        assert_eq!(widths, [256, 427, 640, 853, 1280, 1920, 2560, 3840]);
    }

    #[test]
    fn table_60_falls_back_to_25() {
        let f120 = Ratio::integer(120);
        assert_eq!(target_rate_kbps(Codec::H264, f120, 360), Some(500));
        assert_eq!(target_rate_kbps(Codec::H264, f120, 720), Some(3500));
        assert_eq!(target_rate_kbps(Codec::Vp9, f120, 1080), Some(3000));
        assert_eq!(
            target_rate_kbps(Codec::H265, Ratio::integer(30), 1024),
            None
        );
        let ntsc = Ratio::new(30000, 1001).unwrap();
        assert_eq!(target_rate_kbps(Codec::H264, ntsc, 720), Some(2500));
    }

    #[test]
    fn fps_halving_and_floor() {
        assert_eq!(output_fps(Ratio::integer(120)), Ratio::integer(60));
        assert_eq!(output_fps(Ratio::integer(240)), Ratio::integer(60));
        assert_eq!(output_fps(Ratio::integer(144)), Ratio::integer(36));
        assert_eq!(output_fps(Ratio::integer(0)), Ratio::integer(1));
        assert_eq!(output_fps(Ratio::new(1, 2).unwrap()), Ratio::integer(1));
        assert_eq!(
            output_fps(Ratio::new(60000, 1001).unwrap()).to_string(),
            "60000/1001"
        );
    }

    #[test]
    fn fit_box_matches_ffmpeg_scale() {
        // Every pair below was checked by hand against ffmpeg 5.1.9's scale filter with MediaCMS's
        // exact expression on a lavfi `color` source of that size.
        assert_eq!(fit_box(1920, 1080, 720), (1280, 720));
        assert_eq!(fit_box(1920, 1080, 480), (852, 480));
        assert_eq!(fit_box(1920, 1080, 240), (426, 240));
        assert_eq!(fit_box(1080, 1920, 480), (480, 852));
        assert_eq!(fit_box(640, 360, 144), (256, 144));
        assert_eq!(fit_box(640, 360, 720), (1280, 720));
        assert_eq!(fit_box(1440, 1080, 720), (960, 720));
        assert_eq!(fit_box(720, 576, 480), (600, 480));
        assert_eq!(fit_box(1000, 1000, 360), (360, 360));
        assert_eq!(fit_box(1366, 768, 360), (640, 360));
        assert_eq!(fit_box(3840, 1600, 1080), (1920, 800));
    }
}
