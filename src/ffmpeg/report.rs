//! Human-readable capability report for `mediacms-worker probe`: what works, and why not each
//! thing, then the backend each profile codec would get.

use std::fmt::Write as _;

use super::backend::{backend_name, choose_backend};
use super::caps::Capabilities;

/// Profile codecs MediaCMS ships (`files_encodeprofile.codec`).
const CODECS: [&str; 3] = ["h264", "h265", "vp9"];

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
    for codec in CODECS {
        let choice = choose_backend(caps, caps.hwaccel, codec);
        let name = backend_name(&choice.backend);
        writeln!(out, "  {codec:<5} -> {name}: {}", choice.reason)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HwAccel;
    use crate::ffmpeg::backend::Backend;
    use crate::ffmpeg::caps::{BackendReport, Family, FeatureReport};

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
        assert_eq!(c.backend, Backend::NvdecDecodeOnly);
        assert_eq!(c.device.as_deref(), Some("0"));
        assert!(c.reason.contains("h264_nvenc broken"), "{}", c.reason);
    }

    #[test]
    fn forced_nvenc_falls_back_to_nvdec_and_forced_vaapi_to_software() {
        assert_eq!(
            choose_backend(&h100(), HwAccel::Nvenc, "h264").backend,
            Backend::NvdecDecodeOnly
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
            Backend::Nvenc
        );
        // hevc_nvenc still broken: h265 gets the decode offload.
        assert_eq!(
            choose_backend(&caps, HwAccel::Auto, "h265").backend,
            Backend::NvdecDecodeOnly
        );
        let mut book = crate::ffmpeg::backend::HealthBook::default();
        let now = std::time::Instant::now();
        book.mark_failed(&Backend::Nvenc, now, "CUDA_ERROR_LAUNCH_FAILED");
        let c = crate::ffmpeg::backend::choose_healthy(&caps, HwAccel::Auto, "h264", &book, now);
        assert_eq!(c.backend, Backend::NvdecDecodeOnly);
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
}
