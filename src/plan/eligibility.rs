//! Per-input hardware eligibility: for one source (codec, profile, pixel format, bit depth,
//! chroma, interlacing, rotation, size) and one hardware family, where each stage — decode,
//! scale, encode — runs. Pure; the planner ([`super::hw`]) turns the [`Route`] into argv.
//!
//! Facts from FFmpeg 5.1.9's source (Debian bookworm's build), not yet run on a GPU:
//! - NVDEC hands CUDA frames out only for what each decoder's `get_format` offers: H.264 only
//!   8-bit 4:2:0 (`h264_slice.c`); HEVC 8/10-bit 4:2:0 (4:4:4 needs newer GPUs); VP9 profile 0
//!   and 2 (8/10-bit 4:2:0); MPEG-2 8-bit 4:2:0. Anything else (High 10, 4:2:2, 4:4:4, ProRes,
//!   DNxHD…) silently decodes to software frames, which then stop at `scale_cuda` with
//!   `Impossible to convert between the formats…`. AV1 NVDEC exists only on Ampere and later, and
//!   the probe does not test it, so AV1 decodes in software. MJPEG NVDEC is left out for the same
//!   reason (per-GPU, unprobed).
//! - NVDEC limits: H.264 up to 4096×4096, HEVC/VP9 up to 8192×8192; ffmpeg's auto-rotation is a
//!   CPU filter, so rotated sources decode in software.
//! - Software decode + upload works for any input ffmpeg can decode: `format=nv12` converts on
//!   the CPU (10-bit and 4:2:2/4:4:4 become 8-bit 4:2:0, what MediaCMS's `main` profile encodes).
//!   VAAPI and QSV always take this path here (their frames auto-rotate, any codec works).
//! - Hardware scalers get even input sizes; an odd-sized source is scaled on the CPU to the
//!   (always even) output box before the upload.
//! - Hardware encoders: outputs below [`MIN_HW_ENCODE`] on either side are encoded in software
//!   (NVENC/VAAPI/QSV have per-GPU minimums, and such tiny renditions cost nothing on a CPU);
//!   H.264 wider or taller than 4096 is software too (the H.264 hardware encoders' limit).

use serde::Serialize;

use super::media_info::MediaInfo;
use super::rules::Codec;

/// Smallest output side planned on a hardware encoder.
pub const MIN_HW_ENCODE: i64 = 96;
/// Largest side of an H.264 hardware encode (NVENC, VAAPI and QSV alike).
const MAX_H264_HW: i64 = 4096;

/// The vendor API a backend runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HwFamily {
    /// NVDEC + CUDA filters, with NVENC when `encoder` (false on A100/H100/H200).
    Nvidia {
        encoder: bool,
    },
    Vaapi,
    Qsv,
}

/// Where a stage runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Place {
    Hardware,
    Software,
}

/// Where decode, scale and encode run for one input on one family, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    pub decode: Place,
    pub scale: Place,
    pub encode: Place,
    /// Why any stage is not on the hardware (empty when all are).
    pub why: String,
}

impl Route {
    pub fn software(why: impl Into<String>) -> Route {
        Route {
            decode: Place::Software,
            scale: Place::Software,
            encode: Place::Software,
            why: why.into(),
        }
    }

    /// Whether any stage uses the hardware.
    pub fn uses_hardware(&self) -> bool {
        [self.decode, self.scale, self.encode].contains(&Place::Hardware)
    }
}

/// What the decoders care about, read from `media_info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceVideo {
    pub codec: Option<String>,
    pub profile: Option<String>,
    pub pix_fmt: Option<String>,
    pub bit_depth: Option<u32>,
    /// `420`, `422`, `444` (or `400` for gray) from the pixel format.
    pub chroma: Option<u32>,
    pub interlaced: bool,
    pub rotation: i32,
    /// Coded size.
    pub size: Option<(i64, i64)>,
}

impl SourceVideo {
    pub fn from_info(info: &MediaInfo) -> SourceVideo {
        let layout = info.pix_fmt.as_deref().and_then(pix_fmt_layout);
        SourceVideo {
            codec: info.video_codec.clone(),
            profile: info.video_profile.clone(),
            pix_fmt: info.pix_fmt.clone(),
            bit_depth: layout.map(|l| l.1),
            chroma: layout.map(|l| l.0),
            interlaced: info.interlaced,
            rotation: info.rotation.rem_euclid(360),
            size: info.video_width.zip(info.video_height),
        }
    }

    /// Short label for reports: `h264 High 10 yuv420p10le`.
    pub fn label(&self) -> String {
        let parts = [&self.codec, &self.profile, &self.pix_fmt];
        let known: Vec<&str> = parts.iter().filter_map(|p| p.as_deref()).collect();
        match known.is_empty() {
            true => "unknown source".into(),
            false => known.join(" "),
        }
    }
}

/// `(chroma, bit depth)` of an ffmpeg pixel format name, for the YUV families uploads see.
pub fn pix_fmt_layout(name: &str) -> Option<(u32, u32)> {
    let name = name.trim_end_matches("le").trim_end_matches("be");
    let (chroma, rest) = if let Some(r) = name.strip_prefix("yuvj") {
        (&r[..r.len().min(3)], &r[r.len().min(3)..])
    } else if let Some(r) = name.strip_prefix("yuva") {
        (&r[..r.len().min(3)], &r[r.len().min(3)..])
    } else if let Some(r) = name.strip_prefix("yuv") {
        (&r[..r.len().min(3)], &r[r.len().min(3)..])
    } else {
        return match name {
            "nv12" | "nv21" => Some((420, 8)),
            "p010" => Some((420, 10)),
            "p016" => Some((420, 16)),
            "nv16" => Some((422, 8)),
            "gray" => Some((400, 8)),
            "gray10" => Some((400, 10)),
            _ => None,
        };
    };
    let chroma: u32 = chroma.parse().ok()?;
    let depth = rest.strip_prefix('p')?;
    let depth = if depth.is_empty() {
        8
    } else {
        depth.parse().ok()?
    };
    Some((chroma, depth))
}

/// Whether NVDEC gives CUDA frames for this source; `Err` says why not.
pub fn nvdec_decodes(src: &SourceVideo) -> Result<(), String> {
    if src.rotation != 0 {
        return Err(format!(
            "rotated {}°: auto-rotation is a CPU filter",
            src.rotation
        ));
    }
    let codec = src.codec.as_deref().ok_or("source codec unknown")?;
    let (w, h) = src.size.ok_or("source size unknown")?;
    if w % 2 != 0 || h % 2 != 0 {
        return Err(format!("odd size {w}x{h}"));
    }
    let layout = src.chroma.zip(src.bit_depth);
    let (formats, max): (&[(u32, u32)], i64) = match codec {
        "h264" => (&[(420, 8)], 4096),
        "hevc" => (&[(420, 8), (420, 10)], 8192),
        "vp9" => (&[(420, 8), (420, 10)], 8192),
        "mpeg2video" => (&[(420, 8)], 4096),
        "av1" => return Err("AV1 NVDEC depends on the GPU generation and is not probed".into()),
        other => return Err(format!("no NVDEC path for {other} in ffmpeg 5.1")),
    };
    if !layout.is_some_and(|l| formats.contains(&l)) {
        let what = src.pix_fmt.as_deref().unwrap_or("unknown pixel format");
        let profile = src.profile.as_deref().unwrap_or("?");
        return Err(format!(
            "NVDEC gives no CUDA frames for {codec} {profile} {what}"
        ));
    }
    if w > max || h > max {
        return Err(format!("{w}x{h} is above NVDEC's {max} for {codec}"));
    }
    Ok(())
}

/// Whether the family's encoder takes this output; `Err` says why not.
pub fn hw_encodes(family: HwFamily, codec: Codec, (w, h): (i64, i64)) -> Result<(), String> {
    match (family, codec) {
        (HwFamily::Nvidia { encoder: false }, _) => return Err("no NVENC on this GPU".into()),
        (HwFamily::Nvidia { .. }, Codec::Vp9) => return Err("NVENC has no VP9 encoder".into()),
        _ => {}
    }
    if w < MIN_HW_ENCODE || h < MIN_HW_ENCODE {
        return Err(format!("{w}x{h} output is below {MIN_HW_ENCODE} px"));
    }
    if codec == Codec::H264 && (w > MAX_H264_HW || h > MAX_H264_HW) {
        return Err(format!("{w}x{h} is above H.264's {MAX_H264_HW}"));
    }
    Ok(())
}

/// The route for one input on one family, given the output size of the rendition.
pub fn route(src: &SourceVideo, family: HwFamily, codec: Codec, out: (i64, i64)) -> Route {
    let decode = match family {
        HwFamily::Nvidia { .. } => nvdec_decodes(src),
        // The planner's VAAPI/QSV argv decode in software by design (module doc).
        HwFamily::Vaapi | HwFamily::Qsv => Err("decoded in software (auto-rotation)".into()),
    };
    let encode = hw_encodes(family, codec, out);
    match (decode, encode) {
        (Ok(()), Ok(())) => Route {
            decode: Place::Hardware,
            scale: Place::Hardware,
            encode: Place::Hardware,
            why: String::new(),
        },
        // NVDEC + scale_cuda, then download to the software encoder.
        (Ok(()), Err(enc)) => Route {
            decode: Place::Hardware,
            scale: Place::Hardware,
            encode: Place::Software,
            why: enc,
        },
        (Err(dec), Ok(())) => {
            let odd = src.size.is_some_and(|(w, h)| w % 2 != 0 || h % 2 != 0);
            let scale = match odd {
                true => Place::Software,
                false => Place::Hardware,
            };
            let why = match family {
                HwFamily::Nvidia { .. } => dec,
                _ if odd => "odd size: scaled on the CPU before the upload".into(),
                _ => String::new(),
            };
            Route {
                decode: Place::Software,
                scale,
                encode: Place::Hardware,
                why,
            }
        }
        (Err(dec), Err(enc)) => Route::software(format!("{dec}; {enc}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_formats_give_chroma_and_depth() {
        let cases = [
            ("yuv420p", Some((420, 8))),
            ("yuvj420p", Some((420, 8))),
            ("yuv420p10le", Some((420, 10))),
            ("yuv422p10be", Some((422, 10))),
            ("yuv444p12le", Some((444, 12))),
            ("yuva420p", Some((420, 8))),
            ("nv12", Some((420, 8))),
            ("p010le", Some((420, 10))),
            ("gray", Some((400, 8))),
            ("rgb24", None),
            ("bayer_rggb8", None),
        ];
        for (name, want) in cases {
            assert_eq!(pix_fmt_layout(name), want, "{name}");
        }
    }

    #[test]
    fn unknown_sources_never_reach_nvdec() {
        let src = SourceVideo::from_info(&MediaInfo::from_json(
            r#"{"video_width": 1920, "video_height": 1080}"#,
        ));
        assert_eq!(nvdec_decodes(&src), Err("source codec unknown".into()));
        let r = route(
            &src,
            HwFamily::Nvidia { encoder: true },
            Codec::H264,
            (1280, 720),
        );
        assert_eq!(
            (r.decode, r.scale, r.encode),
            (Place::Software, Place::Hardware, Place::Hardware)
        );
        assert_eq!(src.label(), "unknown source");
    }
}
