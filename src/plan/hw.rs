//! Hardware backends: the same decisions as MediaCMS (height box, table bitrate, 4 s GOP,
//! maxrate/bufsize ×1.5, audio, container) mapped onto NVENC, VAAPI, QSV, or NVDEC decode with a
//! software encoder, along the per-input [`Route`] of [`super::eligibility`].
//!
//! Choices, documented once:
//! - Hardware scalers take plain numbers, so the output size is computed here from the source
//!   dimensions in `media_info` exactly as ffmpeg's `scale` would ([`fit_box`]: aspect kept, even
//!   dims, never above the box). Unknown dimensions ⇒ the encode is planned as software.
//! - Routes: hardware decode keeps frames on the GPU (`-hwaccel cuda`, `scale_cuda`); software
//!   decode uploads (`hwupload_cuda=device=N` / `hwupload`) after the CPU filters (`yadif`,
//!   `fps`, `format=nv12`, and `scale` for odd-sized sources); a route with no hardware encoder
//!   downloads after `scale_cuda` into MediaCMS's software encoder; a route with no hardware
//!   stage at all is MediaCMS's software command.
//! - Devices: every argv names its device — `-hwaccel_device N` and `hwupload_cuda=device=N`
//!   (the frames' device is the one NVENC encodes on), `-gpu N` (NVENC's own pick when it opens
//!   a device itself), `-vaapi_device NODE`, and QSV derived from the VAAPI node.
//! - Rate control: hardware encoders run one pass (no pass logs) at `-b:v` = the table rate with
//!   `-maxrate`/`-bufsize` = 1.5× like x264's VBV. MediaCMS's profiles are bitrate-capped: the
//!   table says what a rendition should weigh and the 1.5× VBV is what HLS variants and players
//!   rely on. NVENC's `-cq` would make `-rc vbr` ignore `-b:v` and `-bufsize` (only `-maxrate`
//!   still caps), and its quality scale is not x264's CRF scale, so `-cq 23` would reproduce
//!   neither MediaCMS's quality nor its sizes; NVENC therefore gets `-rc vbr` with the three
//!   rates and no `-cq` (docker/README.md, "Rate control on NVENC").
//! - Keyframes: `-g` = MediaCMS's max GOP (x264/x265 `keyint` = 8 s, VP9 `-g` = 4 s) plus the
//!   same forced keyframes every 4 s, made IDR (`-forced-idr`/`-forced_idr`) so MP4 sync samples
//!   and HLS segment cuts land every 4 s.
//! - No `-pix_fmt` on hardware encoders (frames are hardware surfaces, nv12 via the scaler).

use super::eligibility::{self, Place, Route, SourceVideo};
use super::media_info::MediaInfo;
use super::rules::{fit_box, Codec, Decisions, FORCE_KEY_FRAMES};
use super::software::{self, audio_args, fps_filter, push, tail_args, Pass};
use super::{Backend, EncodeIo, EncodePlan, EncodeSettings};

/// `-hwaccel cuda -hwaccel_device N -hwaccel_output_format cuda`.
fn cuda_decode(device: &str) -> Vec<String> {
    let mut a = Vec::new();
    push(&mut a, &["-hwaccel", "cuda", "-hwaccel_device", device]);
    push(&mut a, &["-hwaccel_output_format", "cuda"]);
    a
}

/// Plans `backend` along the input's route; `Err(route)` when no stage can use the hardware
/// (the caller plans software and keeps the route's reason).
pub fn passes(
    io: &EncodeIo<'_>,
    info: &MediaInfo,
    d: &Decisions,
    settings: &EncodeSettings,
    backend: &Backend,
) -> Result<EncodePlan, Route> {
    let family = backend
        .family()
        .ok_or_else(|| Route::software("software"))?;
    let device = backend.device().unwrap_or_default();
    let (w, h) = info
        .display_dims()
        .ok_or_else(|| Route::software("source size unknown"))?;
    let size = fit_box(w, h, d.resolution);
    let route = eligibility::route(&SourceVideo::from_info(info), family, d.codec, size);
    let hw_decode = route.decode == Place::Hardware;
    let sw_scale = route.scale == Place::Software;
    let passes = match (backend, route.encode) {
        _ if !route.uses_hardware() => return Err(route),
        (Backend::Nvenc { .. } | Backend::NvdecDecodeOnly { .. }, Place::Software) => {
            decode_only(io, d, settings, size, device)
        }
        (Backend::Nvenc { .. }, Place::Hardware) if hw_decode => {
            let filters = format!("{},{}", cuda_scale(d, size), fps_filter(d));
            vec![nvenc(
                io,
                d,
                settings,
                &cuda_decode(device),
                &filters,
                device,
            )]
        }
        (Backend::Nvenc { .. }, Place::Hardware) => {
            let upload = format!("hwupload_cuda=device={device}");
            let filters = upload_chain(d, &upload, sw_scale, size, |(w, h)| {
                format!("scale_cuda={w}:{h}:interp_algo=lanczos:format=nv12")
            });
            vec![nvenc(io, d, settings, &[], &filters, device)]
        }
        (Backend::Vaapi { .. }, _) => vec![vaapi(io, d, settings, size, sw_scale, device)],
        (Backend::Qsv { .. }, _) => vec![qsv(io, d, settings, size, sw_scale, device)],
        (Backend::Software | Backend::NvdecDecodeOnly { .. }, _) => return Err(route),
    };
    // A route that left the encoder out runs on the decode offload.
    let backend = match (backend, route.encode) {
        (Backend::Nvenc { device }, Place::Software) => Backend::NvdecDecodeOnly {
            device: device.clone(),
        },
        _ => backend.clone(),
    };
    Ok(EncodePlan {
        passes,
        backend,
        route,
    })
}

/// `[yadif_cuda,]scale_cuda=W:H:…` — frames stay in GPU memory as nv12.
fn cuda_scale(d: &Decisions, (w, h): (i64, i64)) -> String {
    let deint = if d.interlaced { "yadif_cuda," } else { "" };
    format!("{deint}scale_cuda={w}:{h}:interp_algo=lanczos:format=nv12")
}

/// `[yadif,]fps=…,format=nv12,<upload>,<hw scaler>` for encoders fed by software decode:
/// deinterlace and drop frames on the CPU before uploading. Odd-sized sources are scaled on the
/// CPU instead (`…,scale=W:H,format=nv12,<upload>`), so the GPU only sees even sizes.
fn upload_chain(
    d: &Decisions,
    upload: &str,
    sw_scale: bool,
    size: (i64, i64),
    hw_scaler: impl Fn((i64, i64)) -> String,
) -> String {
    let deint = if d.interlaced { "yadif," } else { "" };
    let fps = fps_filter(d);
    match sw_scale {
        true => format!(
            "{deint}{fps},scale={}:{},format=nv12,{upload}",
            size.0, size.1
        ),
        false => format!("{deint}{fps},format=nv12,{upload},{}", hw_scaler(size)),
    }
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

/// NVENC on `device`; `pre` are the input options (CUDA decode, or none for uploads).
fn nvenc(
    io: &EncodeIo<'_>,
    d: &Decisions,
    s: &EncodeSettings,
    pre: &[String],
    filters: &str,
    device: &str,
) -> Vec<String> {
    let encoder = if d.codec == Codec::H264 {
        "h264_nvenc"
    } else {
        "hevc_nvenc"
    };
    let mut a = Vec::with_capacity(56);
    push(&mut a, &["ffmpeg", "-y"]);
    a.extend_from_slice(pre);
    push(&mut a, &["-i", io.input, "-c:v", encoder, "-gpu", device]);
    push(
        &mut a,
        &["-filter:v", filters, "-preset", "p5", "-rc", "vbr"],
    );
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
    sw_scale: bool,
    device: &str,
) -> Vec<String> {
    let encoder = match d.codec {
        Codec::H264 => "h264_vaapi",
        Codec::H265 => "hevc_vaapi",
        Codec::Vp9 => "vp9_vaapi",
    };
    let filters = upload_chain(d, "hwupload", sw_scale, size, |(w, h)| {
        format!("scale_vaapi=w={w}:h={h}")
    });
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

/// Quick Sync on the render node `device`: a VAAPI device on that node, QSV derived from it
/// (`-init_hw_device qsv=hw@va`), the only way ffmpeg 5.1 pins QSV to one node.
fn qsv(
    io: &EncodeIo<'_>,
    d: &Decisions,
    s: &EncodeSettings,
    size: (i64, i64),
    sw_scale: bool,
    device: &str,
) -> Vec<String> {
    let encoder = match d.codec {
        Codec::H264 => "h264_qsv",
        Codec::H265 => "hevc_qsv",
        Codec::Vp9 => "vp9_qsv",
    };
    let upload = "hwupload=extra_hw_frames=64";
    let filters = upload_chain(d, upload, sw_scale, size, |(w, h)| {
        format!("scale_qsv=w={w}:h={h}")
    });
    let va = format!("vaapi=va:{device}");
    let mut a = Vec::with_capacity(52);
    push(&mut a, &["ffmpeg", "-y", "-init_hw_device", &va]);
    push(
        &mut a,
        &["-init_hw_device", "qsv=hw@va", "-filter_hw_device", "hw"],
    );
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

/// NVDEC decode + CUDA scale on `device`, then download and MediaCMS's software encode (both
/// passes when MediaCMS would do two-pass).
fn decode_only(
    io: &EncodeIo<'_>,
    d: &Decisions,
    s: &EncodeSettings,
    size: (i64, i64),
    device: &str,
) -> Vec<Vec<String>> {
    let filters = format!(
        "{},hwdownload,format=nv12,format=yuv420p,{}",
        cuda_scale(d, size),
        fps_filter(d)
    );
    let pre = cuda_decode(device);
    let pre: Vec<&str> = pre.iter().map(String::as_str).collect();
    Pass::list(d.two_pass)
        .iter()
        .map(|&pass| software::argv_with(io, d, s, pass, &pre, &filters))
        .collect()
}
