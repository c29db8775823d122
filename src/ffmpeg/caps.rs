//! Hardware capability probe (ARCHITECTURE decision 10): open each device in-process with libav,
//! then really decode/scale/encode a few frames with the FFMPEG_COMMAND binary that will run the
//! jobs (it may be a different build than the linked libav). Every feature records that it works
//! or the exact reason it does not.

use std::ffi::CString;
use std::time::Instant;

use ffmpeg_next::ffi;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::hwtest::{args, encode_args, reason_of, run_test, Sample, Scratch};
use super::libav;
use super::run::{run, RunSpec};
use crate::config::HwAccel;

pub use super::backend::{
    backend_name, choose_backend, choose_healthy, classify_hw_failure, Backend, Choice, HealthBook,
    HwFailure,
};

/// A hardware vendor API, probed per device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Nvidia,
    Vaapi,
    Qsv,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nvidia => "nvidia",
            Self::Vaapi => "vaapi",
            Self::Qsv => "qsv",
        }
    }
}

/// One feature (`device`, `nvdec`, `scale_cuda`, `h264_nvenc`, …) and whether it works.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureReport {
    pub name: String,
    pub works: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Everything probed on one device of one family.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendReport {
    pub family: Family,
    /// CUDA index (`0`), render node path, or `default`.
    pub device: String,
    pub features: Vec<FeatureReport>,
}

impl BackendReport {
    /// `Ok` when `feature` was probed and works, else the recorded reason.
    pub fn check(&self, feature: &str) -> Result<(), String> {
        let find = |name: &str| self.features.iter().find(|f| f.name == name);
        if let Some(device) = find("device").filter(|d| !d.works && feature != "device") {
            let why = device.reason.as_deref().unwrap_or("does not open");
            return Err(format!("device {} did not open: {why}", self.device));
        }
        match find(feature) {
            Some(f) if f.works => Ok(()),
            Some(f) => Err(f.reason.clone().unwrap_or_else(|| "does not work".into())),
            None => Err(format!("{feature} not probed")),
        }
    }
}

/// The probe result, cached by the caller and re-probed on demand.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Capabilities {
    pub ffmpeg: String,
    /// First line of `ffmpeg -version`, or why it could not run.
    pub ffmpeg_version: String,
    #[serde(serialize_with = "hwaccel_name")]
    pub hwaccel: HwAccel,
    pub backends: Vec<BackendReport>,
    pub probe_ms: u64,
}

fn hwaccel_name<S: serde::Serializer>(h: &HwAccel, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{h:?}").to_ascii_lowercase())
}

fn works(name: &str) -> FeatureReport {
    FeatureReport {
        name: name.into(),
        works: true,
        reason: None,
    }
}

pub(super) fn broken(name: &str, reason: impl Into<String>) -> FeatureReport {
    FeatureReport {
        name: name.into(),
        works: false,
        reason: Some(reason.into()),
    }
}

pub(super) fn outcome(name: &str, result: Result<(), String>) -> FeatureReport {
    match result {
        Ok(()) => works(name),
        Err(reason) => broken(name, reason),
    }
}

impl Capabilities {
    /// Probes every family (or none with `hwaccel = software`). `device` is a CUDA index or a
    /// render node path; it narrows the probe to that device.
    pub async fn probe(ffmpeg: &str, hwaccel: HwAccel, device: Option<&str>) -> Capabilities {
        let started = Instant::now();
        let ffmpeg_version = ffmpeg_version(ffmpeg).await;
        let backends = if hwaccel == HwAccel::Software {
            [Family::Nvidia, Family::Vaapi, Family::Qsv]
                .into_iter()
                .map(|family| BackendReport {
                    family,
                    device: "-".into(),
                    features: vec![broken("device", "not probed: hwaccel=software")],
                })
                .collect()
        } else {
            let scratch = Scratch::new();
            let mut sample = Sample::new(ffmpeg, scratch.path());
            // `--hw-device` may list several devices (`0,1` or render nodes), comma-separated.
            let listed: Vec<&str> = device
                .map(|d| {
                    d.split(',')
                        .map(str::trim)
                        .filter(|d| !d.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            let cuda: Vec<&str> = listed
                .iter()
                .copied()
                .filter(|d| !d.starts_with('/'))
                .collect();
            let nodes: Vec<&str> = listed
                .iter()
                .copied()
                .filter(|d| d.starts_with('/'))
                .collect();
            let mut reports = Vec::new();
            for idx in cuda_devices(&cuda).await {
                reports.push(probe_nvidia(ffmpeg, &idx, &mut sample).await);
            }
            let nodes = render_nodes(&nodes);
            for node in &nodes {
                reports.push(probe_vaapi(ffmpeg, node, &mut sample).await);
            }
            for node in &nodes {
                reports.push(probe_qsv(ffmpeg, node).await);
            }
            reports
        };
        Capabilities {
            ffmpeg: ffmpeg.into(),
            ffmpeg_version,
            hwaccel,
            backends,
            probe_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }
}

async fn ffmpeg_version(ffmpeg: &str) -> String {
    let spec = RunSpec {
        add_progress: false,
        ..RunSpec::ffmpeg(ffmpeg, vec!["ffmpeg".into(), "-version".into()])
    };
    match run(spec, &CancellationToken::new(), |_| {}).await {
        Ok(out) => out.stdout.lines().next().unwrap_or("").to_owned(),
        Err(e) => format!("unusable: {}", reason_of(&e)),
    }
}

/// Opens a libav hardware device of `kind` in-process; the error names libav's own reason.
pub fn open_device(kind: &str, device: Option<&str>) -> Result<(), String> {
    let (result, log) = libav::capture_log(|| {
        let name = CString::new(kind).map_err(|e| e.to_string())?;
        let dev = device
            .map(CString::new)
            .transpose()
            .map_err(|e| e.to_string())?;
        // SAFETY: valid C strings; the created context is released right away.
        unsafe {
            let t = ffi::av_hwdevice_find_type_by_name(name.as_ptr());
            if t == ffi::AVHWDeviceType::AV_HWDEVICE_TYPE_NONE {
                return Err(format!("libav was built without {kind} support"));
            }
            let mut ctx: *mut ffi::AVBufferRef = std::ptr::null_mut();
            let dev_ptr = dev.as_ref().map_or(std::ptr::null(), |d| d.as_ptr());
            let rc = ffi::av_hwdevice_ctx_create(&mut ctx, t, dev_ptr, std::ptr::null_mut(), 0);
            if rc < 0 {
                return Err(format!(
                    "cannot open {kind} device: {}",
                    libav::error_text(rc)
                ));
            }
            ffi::av_buffer_unref(&mut ctx);
            Ok(())
        }
    });
    result.map_err(|e| match log.is_empty() {
        true => e,
        false => format!("{e} (libav: {})", log.join("; ")),
    })
}

async fn open_device_blocking(kind: &'static str, device: Option<String>) -> Result<(), String> {
    tokio::task::spawn_blocking(move || open_device(kind, device.as_deref()))
        .await
        .unwrap_or_else(|e| Err(format!("device probe crashed: {e}")))
}

const SKIPPED: &str = "skipped: the device did not open";

/// Most CUDA devices looked for when `--hw-device` names none.
const MAX_CUDA_DEVICES: u32 = 16;

/// The CUDA indices to probe: the configured ones, else `0`, `1`, … while each opens in-process
/// (so every GPU of a multi-GPU node gets its own report, device and slot pool). Index `0` is
/// kept even when it does not open, so the report says why NVIDIA is out.
async fn cuda_devices(configured: &[&str]) -> Vec<String> {
    if !configured.is_empty() {
        return configured.iter().map(|d| d.to_string()).collect();
    }
    let mut found = vec!["0".to_owned()];
    for idx in 1..MAX_CUDA_DEVICES {
        if open_device_blocking("cuda", Some(idx.to_string()))
            .await
            .is_err()
        {
            break;
        }
        found.push(idx.to_string());
    }
    found
}

/// NVIDIA on CUDA device `idx`: the filters and encoder options the planner's CUDA argv use
/// (`plan::hw`), naming the device the same way.
async fn probe_nvidia(ffmpeg: &str, idx: &str, sample: &mut Sample<'_>) -> BackendReport {
    let idx = idx.to_owned();
    let opened = open_device_blocking("cuda", Some(idx.clone())).await;
    let mut features = vec![outcome("device", opened)];
    let names = [
        "nvdec",
        "scale_cuda",
        "yadif_cuda",
        "h264_nvenc",
        "hevc_nvenc",
    ];
    if !features[0].works {
        features.extend(names.map(|n| broken(n, SKIPPED)));
        return report(Family::Nvidia, idx, features);
    }
    let scale = "scale_cuda=128:72:interp_algo=lanczos:format=nv12";
    let filters = [
        ("nvdec", "hwdownload,format=nv12".to_owned()),
        ("scale_cuda", format!("{scale},hwdownload,format=nv12")),
        (
            "yadif_cuda",
            format!("yadif_cuda,{scale},hwdownload,format=nv12"),
        ),
    ];
    for (name, vf) in filters {
        let pre = [
            "-hwaccel",
            "cuda",
            "-hwaccel_device",
            &idx,
            "-hwaccel_output_format",
            "cuda",
        ];
        let argv_for = |input: &str| decode_args(&pre, input, &vf);
        features.push(sample.test(ffmpeg, name, argv_for).await);
    }
    for enc in ["h264_nvenc", "hevc_nvenc"] {
        let codec = [
            "-c:v", enc, "-gpu", &idx, "-preset", "p5", "-rc", "vbr", "-b:v", "500k",
        ];
        let argv = encode_args(&[], &[], &codec);
        features.push(outcome(enc, run_test(ffmpeg, argv).await));
    }
    report(Family::Nvidia, idx, features)
}

/// VAAPI on one render node: hardware decode + scale, and the planner's upload + scale + encode.
async fn probe_vaapi(ffmpeg: &str, node: &str, sample: &mut Sample<'_>) -> BackendReport {
    let opened = open_device_blocking("vaapi", Some(node.into())).await;
    let mut features = vec![outcome("device", opened)];
    let names = ["vaapi_decode", "h264_vaapi", "hevc_vaapi", "vp9_vaapi"];
    if !features[0].works {
        features.extend(names.map(|n| broken(n, SKIPPED)));
        return report(Family::Vaapi, node.into(), features);
    }
    let pre = [
        "-hwaccel",
        "vaapi",
        "-hwaccel_device",
        node,
        "-hwaccel_output_format",
        "vaapi",
    ];
    let vf = "scale_vaapi=w=128:h=72,hwdownload,format=nv12";
    let argv_for = |input: &str| decode_args(&pre, input, vf);
    features.push(sample.test(ffmpeg, "vaapi_decode", argv_for).await);
    for enc in &names[1..] {
        let vf = ["-vf", "format=nv12,hwupload,scale_vaapi=w=160:h=120"];
        let codec = ["-c:v", enc, "-rc_mode", "VBR", "-b:v", "500k"];
        let argv = encode_args(&["-vaapi_device", node], &vf, &codec);
        features.push(outcome(enc, run_test(ffmpeg, argv).await));
    }
    report(Family::Vaapi, node.into(), features)
}

/// Quick Sync on one render node, as the planner uses it (QSV derived from a VAAPI device on
/// that node). The in-process open uses libav's default QSV device: libav has no node option
/// for it, and the test encodes below name the node.
async fn probe_qsv(ffmpeg: &str, node: &str) -> BackendReport {
    let mut features = vec![outcome("device", open_device_blocking("qsv", None).await)];
    let names = ["h264_qsv", "hevc_qsv", "vp9_qsv"];
    if !features[0].works {
        features.extend(names.map(|n| broken(n, SKIPPED)));
        return report(Family::Qsv, node.into(), features);
    }
    let va = format!("vaapi=va:{node}");
    for enc in names {
        let pre = [
            "-init_hw_device",
            &va,
            "-init_hw_device",
            "qsv=hw@va",
            "-filter_hw_device",
            "hw",
        ];
        let vf = [
            "-vf",
            "format=nv12,hwupload=extra_hw_frames=64,scale_qsv=w=160:h=120",
        ];
        let argv = encode_args(&pre, &vf, &["-c:v", enc, "-b:v", "500k"]);
        features.push(outcome(enc, run_test(ffmpeg, argv).await));
    }
    report(Family::Qsv, node.into(), features)
}

/// `<pre> -i <input> -vf <vf> -f null -` (the caller adds `ffmpeg -v error`).
fn decode_args(pre: &[&str], input: &str, vf: &str) -> Vec<String> {
    let mut argv = args(pre);
    argv.extend(args(&["-i", input, "-vf", vf, "-f", "null", "-"]));
    argv
}

fn report(family: Family, device: String, features: Vec<FeatureReport>) -> BackendReport {
    BackendReport {
        family,
        device,
        features,
    }
}

/// Render nodes to probe: the configured ones, or every `/dev/dri/renderD*`.
fn render_nodes(configured: &[&str]) -> Vec<String> {
    if !configured.is_empty() {
        return configured.iter().map(|n| n.to_string()).collect();
    }
    let mut nodes: Vec<String> = std::fs::read_dir("/dev/dri")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("renderD"))
        })
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    nodes.sort();
    if nodes.is_empty() {
        // Keep a row so the report says why VAAPI is out.
        nodes.push("/dev/dri/renderD128".into());
    }
    nodes
}

pub use super::report::report_text;
