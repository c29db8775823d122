//! Hardware backends: the same decisions as MediaCMS (height box, table bitrate, 4 s GOP,
//! maxrate/bufsize ×1.5, audio, container) mapped onto NVENC, VAAPI, QSV, or NVDEC decode with a
//! software encoder.
//!
//! Choices, documented once:
//! - Hardware scalers take plain numbers, so the output size is computed here from the source
//!   dimensions in `media_info` exactly as ffmpeg's `scale` would ([`fit_box`]: aspect kept, even
//!   dims, never above the box). Unknown dimensions ⇒ the encode is planned as software.
//! - CUDA paths keep frames on the GPU, where ffmpeg's auto-rotation (a CPU filter) cannot run:
//!   rotated sources are planned as software. VAAPI/QSV decode in software, so rotation works and
//!   the box is computed from the rotated size.
//! - Hardware encoders always run one pass (no pass logs): `-b:v` is the table rate and the
//!   ceiling is `-maxrate`/`-bufsize` = 1.5× like x264's VBV.
//! - NVENC quality: `-rc vbr -cq <q>` with q = MediaCMS's CRF (NVENC's `-cq` uses the same 0–51 QP
//!   scale); a tuning knob in [`nvenc_cq`].
//! - Keyframes: `-g` = MediaCMS's max GOP (x264/x265 `keyint` = 8 s, VP9 `-g` = 4 s) plus the same forced keyframes every 4 s, made
//!   IDR (`-forced-idr`/`-forced_idr`) so MP4 sync samples and HLS segment cuts land every 4 s.
//! - No `-pix_fmt` on hardware encoders (frames are hardware surfaces, nv12 via the scaler).

use super::media_info::MediaInfo;
use super::rules::{fit_box, Codec, Decisions, FORCE_KEY_FRAMES};
use super::software::{self, audio_args, fps_filter, push, tail_args, Pass};
use super::{Backend, EncodeIo, EncodePlan, EncodeSettings};

const CUDA_DECODE: [&str; 4] = ["-hwaccel", "cuda", "-hwaccel_output_format", "cuda"];

/// NVENC `-cq` for a codec: MediaCMS's CRF value.
pub fn nvenc_cq(codec: Codec) -> u32 {
    codec.crf()
}

/// Plans `backend`; `None` when it cannot serve this encode (the caller plans software).
pub fn passes(
    io: &EncodeIo<'_>,
    info: &MediaInfo,
    d: &Decisions,
    settings: &EncodeSettings,
    backend: &Backend,
) -> Option<EncodePlan> {
    let (w, h) = info.display_dims()?;
    let size = fit_box(w, h, d.resolution);
    let cuda_ok = info.rotation.rem_euclid(360) == 0;
    let passes = match backend {
        Backend::Software => return None,
        Backend::Nvenc if cuda_ok && d.codec != Codec::Vp9 => vec![nvenc(io, d, settings, size)],
        Backend::Vaapi { device } => vec![vaapi(io, d, settings, size, device)],
        Backend::Qsv => vec![qsv(io, d, settings, size)],
        Backend::NvdecDecodeOnly if cuda_ok => decode_only(io, d, settings, size),
        Backend::Nvenc | Backend::NvdecDecodeOnly => return None,
    };
    Some(EncodePlan {
        passes,
        backend: backend.clone(),
    })
}

/// `[yadif_cuda,]scale_cuda=W:H:…` — frames stay in GPU memory as nv12.
fn cuda_scale(d: &Decisions, (w, h): (i64, i64)) -> String {
    let deint = if d.interlaced { "yadif_cuda," } else { "" };
    format!("{deint}scale_cuda={w}:{h}:interp_algo=lanczos:format=nv12")
}

/// `[yadif,]fps=…,format=nv12,<upload>,<scaler>=w=W:h=H` for encoders fed by software decode:
/// deinterlace and drop frames on the CPU before uploading.
fn upload_chain(d: &Decisions, upload: &str, scaler: &str, (w, h): (i64, i64)) -> String {
    let deint = if d.interlaced { "yadif," } else { "" };
    let fps = fps_filter(d);
    format!("{deint}{fps},format=nv12,{upload},{scaler}=w={w}:h={h}")
}

/// `-b:v R -maxrate 1.5R -bufsize 1.5R`.
fn vbr_rates(d: &Decisions) -> Vec<String> {
    let rate = format!("{}k", d.rate_kbps);
    let max = format!("{}k", d.maxrate_kbps());
    let mut a = Vec::new();
    push(&mut a, &["-b:v", &rate, "-maxrate", &max, "-bufsize", &max]);
    a
}

/// `-g <MediaCMS's max GOP> [forced-idr] -force_key_frames expr`: the max GOP is x264/x265's
/// `keyint` (2 × kd) and VP9's `-g` (kd).
fn gop(d: &Decisions, forced_idr: Option<&str>) -> Vec<String> {
    let max_gop = if d.codec == Codec::Vp9 {
        d.kd
    } else {
        2 * d.kd
    };
    let mut a = Vec::new();
    push(&mut a, &["-g", &max_gop.to_string()]);
    if let Some(flag) = forced_idr {
        push(&mut a, &[flag, "1"]);
    }
    push(&mut a, &["-force_key_frames", FORCE_KEY_FRAMES]);
    a
}

/// `-profile:v main` for h264/h265 (vp9 hardware encoders take no named profile).
fn main_profile(codec: Codec) -> Vec<String> {
    match codec {
        Codec::H264 | Codec::H265 => vec!["-profile:v".into(), "main".into()],
        Codec::Vp9 => Vec::new(),
    }
}

fn nvenc(io: &EncodeIo<'_>, d: &Decisions, s: &EncodeSettings, size: (i64, i64)) -> Vec<String> {
    let encoder = if d.codec == Codec::H264 {
        "h264_nvenc"
    } else {
        "hevc_nvenc"
    };
    let filters = format!("{},{}", cuda_scale(d, size), fps_filter(d));
    let mut a = Vec::with_capacity(52);
    push(&mut a, &["ffmpeg", "-y"]);
    push(&mut a, &CUDA_DECODE);
    push(
        &mut a,
        &["-i", io.input, "-c:v", encoder, "-filter:v", &filters],
    );
    push(&mut a, &["-preset", "p5", "-rc", "vbr"]);
    push(&mut a, &["-cq", &nvenc_cq(d.codec).to_string()]);
    a.extend(vbr_rates(d));
    a.extend(audio_args(d));
    a.extend(gop(d, Some("-forced-idr")));
    a.extend(main_profile(d.codec));
    if d.codec == Codec::H264 {
        push(&mut a, &["-level", d.h264_level()]);
    }
    a.extend(tail_args(io, s, Pass::Crf));
    a
}

fn vaapi(
    io: &EncodeIo<'_>,
    d: &Decisions,
    s: &EncodeSettings,
    size: (i64, i64),
    device: &str,
) -> Vec<String> {
    let encoder = match d.codec {
        Codec::H264 => "h264_vaapi",
        Codec::H265 => "hevc_vaapi",
        Codec::Vp9 => "vp9_vaapi",
    };
    let filters = upload_chain(d, "hwupload", "scale_vaapi", size);
    let mut a = Vec::with_capacity(48);
    push(&mut a, &["ffmpeg", "-y", "-vaapi_device", device]);
    push(
        &mut a,
        &["-i", io.input, "-c:v", encoder, "-filter:v", &filters],
    );
    push(&mut a, &["-rc_mode", "VBR"]);
    a.extend(vbr_rates(d));
    a.extend(audio_args(d));
    a.extend(gop(d, None));
    a.extend(main_profile(d.codec));
    a.extend(tail_args(io, s, Pass::Crf));
    a
}

fn qsv(io: &EncodeIo<'_>, d: &Decisions, s: &EncodeSettings, size: (i64, i64)) -> Vec<String> {
    let encoder = match d.codec {
        Codec::H264 => "h264_qsv",
        Codec::H265 => "hevc_qsv",
        Codec::Vp9 => "vp9_qsv",
    };
    let filters = upload_chain(d, "hwupload=extra_hw_frames=64", "scale_qsv", size);
    let mut a = Vec::with_capacity(48);
    push(&mut a, &["ffmpeg", "-y", "-init_hw_device", "qsv=hw"]);
    push(&mut a, &["-filter_hw_device", "hw"]);
    push(
        &mut a,
        &["-i", io.input, "-c:v", encoder, "-filter:v", &filters],
    );
    push(&mut a, &["-preset", "medium"]);
    a.extend(vbr_rates(d));
    a.extend(audio_args(d));
    a.extend(gop(d, Some("-forced_idr")));
    a.extend(main_profile(d.codec));
    a.extend(tail_args(io, s, Pass::Crf));
    a
}

/// NVDEC decode + CUDA scale, then download and MediaCMS's software encode (both passes when
/// MediaCMS would do two-pass).
fn decode_only(
    io: &EncodeIo<'_>,
    d: &Decisions,
    s: &EncodeSettings,
    size: (i64, i64),
) -> Vec<Vec<String>> {
    let filters = format!(
        "{},hwdownload,format=nv12,format=yuv420p,{}",
        cuda_scale(d, size),
        fps_filter(d)
    );
    Pass::list(d.two_pass)
        .iter()
        .map(|&pass| software::argv_with(io, d, s, pass, &CUDA_DECODE, &filters))
        .collect()
}
