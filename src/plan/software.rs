//! The software backend: MediaCMS's `produce_ffmpeg_commands` argv, token for token (§3.2).
//! Also the pieces every backend shares (audio, tail, threads).

use super::rules::{box_long_side, Codec, Decisions, FORCE_KEY_FRAMES};
use super::{EncodeIo, EncodeSettings};

/// Which run of an encode an argv is: the single CRF run (MediaCMS calls it pass 2), or pass 1/2
/// of a two-pass encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Crf,
    First,
    Second,
}

impl Pass {
    pub fn list(two_pass: bool) -> &'static [Pass] {
        if two_pass {
            &[Pass::First, Pass::Second]
        } else {
            &[Pass::Crf]
        }
    }

    fn number(self) -> Option<&'static str> {
        match self {
            Pass::Crf => None,
            Pass::First => Some("1"),
            Pass::Second => Some("2"),
        }
    }
}

pub(crate) fn push(argv: &mut Vec<String>, items: &[&str]) {
    argv.extend(items.iter().map(|s| s.to_string()));
}

/// All runs of a software encode.
pub fn passes(io: &EncodeIo<'_>, d: &Decisions, settings: &EncodeSettings) -> Vec<Vec<String>> {
    let filters = software_filters(d);
    Pass::list(d.two_pass)
        .iter()
        .map(|&pass| argv_with(io, d, settings, pass, &[], &filters))
        .collect()
}

/// MediaCMS's argv with optional decoder options before `-i` and a replaced filter chain: the
/// software encoder's rate control, audio and tail stay untouched (used by NVDEC decode-only).
pub fn argv_with(
    io: &EncodeIo<'_>,
    d: &Decisions,
    settings: &EncodeSettings,
    pass: Pass,
    pre_input: &[&str],
    filters: &str,
) -> Vec<String> {
    let mut a = Vec::with_capacity(52);
    push(&mut a, &["ffmpeg", "-y"]);
    push(&mut a, pre_input);
    push(
        &mut a,
        &["-i", io.input, "-c:v", d.codec.software_encoder()],
    );
    push(&mut a, &["-filter:v", filters, "-pix_fmt", "yuv420p"]);
    a.extend(software_rate(d, pass));
    a.extend(audio_args(d));
    a.extend(codec_args(d, settings, io.pass_file, pass));
    a.extend(tail_args(io, settings, pass));
    a
}

/// `[yadif,]scale=<box>…,fps=fps=<fps>`, with the literal `\,` MediaCMS writes.
pub fn software_filters(d: &Decisions) -> String {
    let mut parts = Vec::with_capacity(3);
    if d.interlaced {
        parts.push("yadif".to_string());
    }
    parts.push(scale_filter(d.resolution));
    parts.push(fps_filter(d));
    parts.join(",")
}

/// MediaCMS's height-box scale: the box is transposed for portrait sources.
pub fn scale_filter(resolution: i32) -> String {
    let (r, long) = (resolution, box_long_side(resolution));
    format!(
        "scale=if(lt(iw\\,ih)\\,{r}\\,{long}):if(lt(iw\\,ih)\\,{long}\\,{r})\
         :force_original_aspect_ratio=decrease:force_divisible_by=2:flags=lanczos"
    )
}

pub fn fps_filter(d: &Decisions) -> String {
    format!("fps=fps={}", d.fps)
}

/// Two-pass → `-b:v`; CRF → `-crf` (+ `-b:v` for vp9's constrained quality).
fn software_rate(d: &Decisions, pass: Pass) -> Vec<String> {
    let rate = format!("{}k", d.rate_kbps);
    let mut a = Vec::new();
    if pass == Pass::Crf {
        push(&mut a, &["-crf", &d.codec.crf().to_string()]);
        if d.codec == Codec::Vp9 {
            push(&mut a, &["-b:v", &rate]);
        }
    } else {
        push(&mut a, &["-b:v", &rate]);
    }
    a
}

/// `-c:a … -b:a …k -ac 2`, only when the source has audio. Identical for every backend.
pub fn audio_args(d: &Decisions) -> Vec<String> {
    if !d.has_audio {
        return Vec::new();
    }
    let kbps = format!("{}k", d.codec.audio_kbps());
    let mut a = Vec::new();
    push(
        &mut a,
        &["-c:a", d.codec.audio_encoder(), "-b:a", &kbps, "-ac", "2"],
    );
    a
}

fn codec_args(
    d: &Decisions,
    settings: &EncodeSettings,
    pass_file: &str,
    pass: Pass,
) -> Vec<String> {
    match d.codec {
        Codec::H264 => x264_args(d, settings, pass_file, pass),
        Codec::H265 => x265_args(d, settings, pass_file, pass),
        Codec::Vp9 => vp9_args(d, pass_file, pass),
    }
}

fn x264_args(d: &Decisions, settings: &EncodeSettings, pass_file: &str, pass: Pass) -> Vec<String> {
    let max = format!("{}k", d.maxrate_kbps());
    let keyint = format!("keyint={}:keyint_min={}", 2 * d.kd, d.kd);
    let mut a = Vec::new();
    push(&mut a, &["-maxrate", &max, "-bufsize", &max]);
    push(
        &mut a,
        &[
            "-force_key_frames",
            FORCE_KEY_FRAMES,
            "-x264-params",
            &keyint,
        ],
    );
    push(&mut a, &["-preset", &settings.preset, "-profile:v", "main"]);
    push(&mut a, &["-level", d.h264_level()]);
    a.extend(passlog_args(pass_file, pass));
    a
}

fn x265_args(d: &Decisions, settings: &EncodeSettings, pass_file: &str, pass: Pass) -> Vec<String> {
    let max = d.maxrate_kbps();
    let mut params = format!(
        "vbv-maxrate={max}:vbv-bufsize={max}:keyint={}:keyint_min={}",
        2 * d.kd,
        d.kd
    );
    if let Some(n) = pass.number() {
        params.push_str(&format!(":stats={pass_file}:pass={n}"));
    }
    let mut a = Vec::new();
    push(
        &mut a,
        &[
            "-force_key_frames",
            FORCE_KEY_FRAMES,
            "-x265-params",
            &params,
        ],
    );
    push(&mut a, &["-preset", &settings.preset, "-profile:v", "main"]);
    a
}

fn vp9_args(d: &Decisions, pass_file: &str, pass: Pass) -> Vec<String> {
    let kd = d.kd.to_string();
    let max = format!("{}k", d.maxrate_kbps());
    let min = format!("{}k", d.minrate_kbps());
    let speed = if pass == Pass::First { "4" } else { "2" };
    let mut a = Vec::new();
    push(&mut a, &["-g", &kd, "-keyint_min", &kd]);
    push(
        &mut a,
        &["-maxrate", &max, "-minrate", &min, "-bufsize", &max],
    );
    push(&mut a, &["-speed", speed]);
    a.extend(passlog_args(pass_file, pass));
    a
}

fn passlog_args(pass_file: &str, pass: Pass) -> Vec<String> {
    let mut a = Vec::new();
    if let Some(n) = pass.number() {
        push(&mut a, &["-passlogfile", pass_file, "-pass", n]);
    }
    a
}

/// `[-threads N] -strict -2` then pass 1's null sink or the output (with `+faststart` only for
/// chunk mp4s, as MediaCMS).
pub fn tail_args(io: &EncodeIo<'_>, settings: &EncodeSettings, pass: Pass) -> Vec<String> {
    let mut a = Vec::new();
    if settings.ffmpeg_threads > 0 {
        push(&mut a, &["-threads", &settings.ffmpeg_threads.to_string()]);
    }
    push(&mut a, &["-strict", "-2"]);
    if pass == Pass::First {
        push(&mut a, &["-an", "-f", "null", "/dev/null"]);
        return a;
    }
    if io.output.ends_with("mp4") && io.chunk {
        push(&mut a, &["-movflags", "+faststart"]);
    }
    push(&mut a, &[io.output]);
    a
}
