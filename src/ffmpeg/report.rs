//! Human-readable capability report for `mediacms-worker probe`: what works, and why not each
//! thing, then the backend each profile codec would get and, per source class, where decode,
//! scale and encode run on it (`plan::eligibility`); `probe --json` carries the same decisions.

use std::fmt::Write as _;

use serde::Serialize;

use super::backend::{backend_name, choose_backend};
use super::caps::Capabilities;
use crate::plan::eligibility::{self, Route, SourceVideo};
use crate::plan::{Codec, MediaInfo};

/// Profile codecs MediaCMS ships (`files_encodeprofile.codec`).
const CODECS: [&str; 3] = ["h264", "h265", "vp9"];

/// Source classes reported: (label, codec, profile, pix_fmt), each a 1080p upload encoded to
/// the 720p rendition.
const SOURCES: [(&str, &str, &str, &str); 10] = [
    ("h264 8-bit 4:2:0", "h264", "High", "yuv420p"),
    ("h264 High 10", "h264", "High 10", "yuv420p10le"),
    ("h264 4:2:2", "h264", "High 4:2:2", "yuv422p"),
    ("hevc 8-bit", "hevc", "Main", "yuv420p"),
    ("hevc 10-bit", "hevc", "Main 10", "yuv420p10le"),
    ("hevc 4:4:4", "hevc", "Rext", "yuv444p"),
    ("vp9 8-bit", "vp9", "Profile 0", "yuv420p"),
    ("av1 8-bit", "av1", "Main", "yuv420p"),
    ("prores 4:2:2", "prores", "HQ", "yuv422p10le"),
    ("mjpeg", "mjpeg", "Baseline", "yuvj422p"),
];

/// The backend one profile codec gets here, and the route of each source class on it.
#[derive(Debug, Clone, Serialize)]
pub struct CodecDecision {
    pub codec: &'static str,
    pub backend: &'static str,
    /// Every device the backend may run a job on.
    pub devices: Vec<String>,
    pub reason: String,
    pub inputs: Vec<InputDecision>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InputDecision {
    pub source: &'static str,
    #[serde(flatten)]
    pub route: Route,
}

/// The per-codec, per-source decisions for `caps` (what `probe --json` reports).
pub fn decisions(caps: &Capabilities) -> Vec<CodecDecision> {
    CODECS
        .iter()
        .map(|&codec| {
            let choice = choose_backend(caps, caps.hwaccel, codec);
            let family = choice.backend.family();
            let profile_codec = Codec::from_profile(Some(codec)).unwrap_or(Codec::H264);
            let inputs = SOURCES
                .iter()
                .map(|&(label, src_codec, profile, pix_fmt)| {
                    let info = MediaInfo::from_json(&format!(
                        r#"{{"video_width": 1920, "video_height": 1080, "video_codec": "{src_codec}",
                            "video_info": {{"profile": "{profile}", "pix_fmt": "{pix_fmt}"}}}}"#
                    ));
                    let route = match family {
                        Some(f) => eligibility::route(
                            &SourceVideo::from_info(&info),
                            f,
                            profile_codec,
                            (1280, 720),
                        ),
                        None => Route::software(choice.reason.clone()),
                    };
                    InputDecision {
                        source: label,
                        route,
                    }
                })
                .collect();
            CodecDecision {
                codec,
                backend: backend_name(&choice.backend),
                devices: choice.candidates.iter().filter_map(|b| b.device().map(String::from)).collect(),
                reason: choice.reason,
                inputs,
            }
        })
        .collect()
}

pub fn report_text(caps: &Capabilities) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = write_report(&mut out, caps);
    out
}

fn write_report(out: &mut String, caps: &Capabilities) -> std::fmt::Result {
    writeln!(out, "ffmpeg:  {} ({})", caps.ffmpeg, caps.ffmpeg_version)?;
    let hw = format!("{:?}", caps.hwaccel).to_ascii_lowercase();
    writeln!(out, "hwaccel: {hw} (probe took {} ms)", caps.probe_ms)?;
    for backend in &caps.backends {
        writeln!(out, "\n{} [{}]", backend.family.as_str(), backend.device)?;
        for f in &backend.features {
            match (&f.works, &f.reason) {
                (true, _) => writeln!(out, "  {:<13} works", f.name)?,
                (false, reason) => {
                    let why = reason.as_deref().unwrap_or("does not work");
                    writeln!(out, "  {:<13} NO: {why}", f.name)?
                }
            }
        }
    }
    writeln!(out, "\nbackend per codec (hwaccel={hw}):")?;
    for d in decisions(caps) {
        writeln!(out, "  {:<5} -> {}: {}", d.codec, d.backend, d.reason)?;
        if d.backend == "software" {
            continue;
        }
        for i in &d.inputs {
            let r = &i.route;
            let place = |p| match p {
                eligibility::Place::Hardware => "hw",
                eligibility::Place::Software => "sw",
            };
            let (dec, sc, enc) = (place(r.decode), place(r.scale), place(r.encode));
            write!(
                out,
                "      {:<17} decode {dec} scale {sc} encode {enc}",
                i.source
            )?;
            match r.why.is_empty() {
                true => writeln!(out)?,
                false => writeln!(out, " ({})", r.why)?,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HwAccel;
    use crate::ffmpeg::backend::Backend;
    use crate::ffmpeg::caps::{BackendReport, Family, FeatureReport};

    fn nvenc() -> Backend {
        Backend::Nvenc { device: "0".into() }
    }

    fn nvdec() -> Backend {
        Backend::NvdecDecodeOnly { device: "0".into() }
    }

    fn feature(name: &str, works: bool) -> FeatureReport {
        FeatureReport {
            name: name.into(),
            works,
            reason: (!works).then(|| format!("{name} broken")),
        }
    }

    /// What an H100 looks like: CUDA decode and scaling, no NVENC; no VAAPI/QSV.
    fn h100() -> Capabilities {
        Capabilities {
            ffmpeg: "ffmpeg".into(),
            ffmpeg_version: "ffmpeg version 5.1".into(),
            hwaccel: HwAccel::Auto,
            probe_ms: 1,
            backends: vec![
                BackendReport {
                    family: Family::Nvidia,
                    device: "0".into(),
                    features: vec![
                        feature("device", true),
                        feature("nvdec", true),
                        feature("scale_cuda", true),
                        feature("h264_nvenc", false),
                        feature("hevc_nvenc", false),
                    ],
                },
                BackendReport {
                    family: Family::Vaapi,
                    device: "/dev/dri/renderD128".into(),
                    features: vec![feature("device", false)],
                },
            ],
        }
    }

    #[test]
    fn auto_on_h100_uses_decode_offload_with_reason() {
        let c = choose_backend(&h100(), HwAccel::Auto, "h264");
        assert_eq!(c.backend, nvdec());
        assert_eq!(c.device.as_deref(), Some("0"));
        assert!(c.reason.contains("h264_nvenc broken"), "{}", c.reason);
    }

    #[test]
    fn forced_nvenc_falls_back_to_nvdec_and_forced_vaapi_to_software() {
        assert_eq!(
            choose_backend(&h100(), HwAccel::Nvenc, "h264").backend,
            nvdec()
        );
        let c = choose_backend(&h100(), HwAccel::Vaapi, "h264");
        assert_eq!(c.backend, Backend::Software);
        assert!(c.reason.contains("device"), "{}", c.reason);
        assert_eq!(
            choose_backend(&h100(), HwAccel::Software, "h264").backend,
            Backend::Software
        );
    }

    #[test]
    fn nvenc_preferred_when_it_works_and_health_book_steers_away() {
        let mut caps = h100();
        caps.backends[0].features[3] = feature("h264_nvenc", true);
        assert_eq!(
            choose_backend(&caps, HwAccel::Auto, "h264").backend,
            nvenc()
        );
        // hevc_nvenc still broken: h265 gets the decode offload.
        assert_eq!(
            choose_backend(&caps, HwAccel::Auto, "h265").backend,
            nvdec()
        );
        let mut book = crate::ffmpeg::backend::HealthBook::default();
        let now = std::time::Instant::now();
        book.mark_failed(&nvenc(), now, "CUDA_ERROR_LAUNCH_FAILED");
        let c = crate::ffmpeg::backend::choose_healthy(&caps, HwAccel::Auto, "h264", &book, now);
        assert_eq!(c.backend, nvdec());
        assert!(
            c.reason.contains("CUDA_ERROR_LAUNCH_FAILED"),
            "{}",
            c.reason
        );
    }

    #[test]
    fn report_names_every_feature_and_reason() {
        let text = report_text(&h100());
        assert!(
            text.contains("h264_nvenc    NO: h264_nvenc broken"),
            "{text}"
        );
        assert!(text.contains("scale_cuda    works"), "{text}");
        assert!(text.contains("h264  -> nvdec: nvdec works on 0"), "{text}");
    }

    #[test]
    fn two_gpus_are_both_candidates_and_a_failed_one_is_skipped() {
        let mut caps = h100();
        caps.backends[0].features[3] = feature("h264_nvenc", true);
        let mut second = caps.backends[0].clone();
        second.device = "1".into();
        caps.backends.insert(1, second);
        let c = choose_backend(&caps, HwAccel::Auto, "h264");
        let gpu1 = Backend::Nvenc { device: "1".into() };
        assert_eq!(c.candidates, vec![nvenc(), gpu1.clone()]);
        let mut book = crate::ffmpeg::backend::HealthBook::default();
        let now = std::time::Instant::now();
        book.mark_failed(&nvenc(), now, "CUDA_ERROR_LAUNCH_FAILED");
        let c = crate::ffmpeg::backend::choose_healthy(&caps, HwAccel::Auto, "h264", &book, now);
        assert_eq!(c.backend, gpu1);
        assert_eq!(c.candidates, vec![gpu1]);
    }

    #[test]
    fn report_gives_each_source_class_its_route_on_h100() {
        let d = decisions(&h100());
        let h264 = d.iter().find(|d| d.codec == "h264").unwrap();
        assert_eq!(
            (h264.backend, h264.devices.clone()),
            ("nvdec", vec!["0".to_string()])
        );
        let route = |label: &str| {
            &h264
                .inputs
                .iter()
                .find(|i| i.source == label)
                .unwrap()
                .route
        };
        assert_eq!(
            route("h264 8-bit 4:2:0").decode,
            eligibility::Place::Hardware
        );
        // No NVENC and no NVDEC for High 10: nothing is left on the GPU.
        assert!(!route("h264 High 10").uses_hardware());
        assert!(
            route("h264 High 10").why.contains("High 10"),
            "{:?}",
            route("h264 High 10")
        );
        let text = report_text(&h100());
        assert!(
            text.contains("h264 High 10      decode sw scale sw encode sw"),
            "{text}"
        );
    }
}
