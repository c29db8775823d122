//! Pure backend decisions: which backend a job uses given probed capabilities, the config and
//! recent failures ([`HealthBook`]), and whether an ffmpeg failure looks like a hardware fault.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::caps::{Capabilities, Family};
use crate::config::HwAccel;

/// How a job's video is decoded/scaled/encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Software,
    Nvenc,
    Qsv,
    Vaapi,
    /// NVDEC decode + `scale_cuda`, frames downloaded, software encode (GPUs without NVENC).
    Nvdec,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Software => "software",
            Self::Nvenc => "nvenc",
            Self::Qsv => "qsv",
            Self::Vaapi => "vaapi",
            Self::Nvdec => "nvdec",
        }
    }
}

/// The decision and its reason (logged, and recorded in the Encoding log on fallbacks).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    pub backend: Backend,
    /// Device to pass to ffmpeg (CUDA index or render node), when the backend needs one.
    pub device: Option<String>,
    pub reason: String,
}

/// ffmpeg's encoder-name stem for a MediaCMS profile codec (`h264`, `h265`, `vp9`).
fn codec_stem(codec: &str) -> Option<&'static str> {
    match codec {
        "h264" => Some("h264"),
        "h265" | "hevc" => Some("hevc"),
        "vp9" => Some("vp9"),
        _ => None,
    }
}

fn encoder_name(family: Family, codec: &str) -> Option<String> {
    let suffix = match family {
        Family::Nvidia => "nvenc",
        Family::Vaapi => "vaapi",
        Family::Qsv => "qsv",
    };
    codec_stem(codec).map(|stem| format!("{stem}_{suffix}"))
}

/// Encode on `family` for `codec`: `Ok(device)` or why not.
fn encode_ready(caps: &Capabilities, family: Family, codec: &str) -> Result<String, String> {
    let Some(encoder) = encoder_name(family, codec) else {
        return Err(format!("no hardware encoder for codec {codec}"));
    };
    let mut why = Vec::new();
    for report in caps.backends.iter().filter(|b| b.family == family) {
        match report.check(&encoder) {
            Ok(()) => return Ok(report.device.clone()),
            Err(reason) => why.push(format!("{encoder} on {}: {reason}", report.device)),
        }
    }
    if why.is_empty() {
        why.push(format!("{} not probed", family.as_str()));
    }
    Err(why.join("; "))
}

/// NVDEC decode + CUDA scaling usable: `Ok(device)` or why not.
fn decode_offload_ready(caps: &Capabilities) -> Result<String, String> {
    let mut why = Vec::new();
    for report in caps.backends.iter().filter(|b| b.family == Family::Nvidia) {
        match report
            .check("nvdec")
            .and_then(|()| report.check("scale_cuda"))
        {
            Ok(()) => return Ok(report.device.clone()),
            Err(reason) => why.push(format!("nvdec+scale_cuda on {}: {reason}", report.device)),
        }
    }
    if why.is_empty() {
        why.push("nvidia not probed".into());
    }
    Err(why.join("; "))
}

fn family_of(backend: Backend) -> Option<Family> {
    match backend {
        Backend::Nvenc | Backend::Nvdec => Some(Family::Nvidia),
        Backend::Qsv => Some(Family::Qsv),
        Backend::Vaapi => Some(Family::Vaapi),
        Backend::Software => None,
    }
}

/// Picks the backend for one job. `auto`: nvenc > qsv > vaapi > nvdec decode-only > software;
/// a forced backend that does not work falls back (nvenc → nvdec → software, others →
/// software) with the reason.
pub fn choose_backend(caps: &Capabilities, hwaccel: HwAccel, codec: &str) -> Choice {
    choose(caps, hwaccel, codec, |_| None)
}

/// [`choose_backend`], skipping backends the [`HealthBook`] marks unhealthy at `now`.
pub fn choose_healthy(
    caps: &Capabilities,
    hwaccel: HwAccel,
    codec: &str,
    health: &HealthBook,
    now: Instant,
) -> Choice {
    choose(caps, hwaccel, codec, |b| health.unhealthy_reason(b, now))
}

fn choose(
    caps: &Capabilities,
    hwaccel: HwAccel,
    codec: &str,
    avoid: impl Fn(Backend) -> Option<String>,
) -> Choice {
    let order: &[Backend] = match hwaccel {
        HwAccel::Software => {
            return pick(Backend::Software, None, "hwaccel=software".into());
        }
        HwAccel::Auto => &[Backend::Nvenc, Backend::Qsv, Backend::Vaapi, Backend::Nvdec],
        HwAccel::Nvenc => &[Backend::Nvenc, Backend::Nvdec],
        HwAccel::Vaapi => &[Backend::Vaapi],
        HwAccel::Qsv => &[Backend::Qsv],
    };
    let mut why = Vec::new();
    for &backend in order {
        if let Some(reason) = avoid(backend) {
            why.push(format!("{}: {reason}", backend.as_str()));
            continue;
        }
        let ready = match (backend, family_of(backend)) {
            (Backend::Nvdec, _) => decode_offload_ready(caps),
            (_, Some(family)) => encode_ready(caps, family, codec),
            (_, None) => Ok(String::new()),
        };
        match ready {
            Ok(device) if why.is_empty() => {
                return pick(backend, Some(device), format!("{} works", backend.as_str()))
            }
            Ok(device) => {
                let reason = format!("{} works; not used: {}", backend.as_str(), why.join("; "));
                return pick(backend, Some(device), reason);
            }
            Err(reason) => why.push(format!("{}: {reason}", backend.as_str())),
        }
    }
    pick(
        Backend::Software,
        None,
        format!("software fallback: {}", why.join("; ")),
    )
}

fn pick(backend: Backend, device: Option<String>, reason: String) -> Choice {
    Choice {
        backend,
        device: device.filter(|d| !d.is_empty()),
        reason,
    }
}

/// Backends that failed recently, avoided until their cooldown ends (pure: time is passed in).
#[derive(Debug, Clone)]
pub struct HealthBook {
    cooldown: Duration,
    failed: HashMap<Backend, (Instant, String)>,
}

impl Default for HealthBook {
    fn default() -> Self {
        Self::new(Duration::from_secs(600))
    }
}

impl HealthBook {
    pub fn new(cooldown: Duration) -> Self {
        Self {
            cooldown,
            failed: HashMap::new(),
        }
    }

    /// Records a hardware failure of `backend` at `now`; later jobs avoid it for the cooldown.
    pub fn mark_failed(&mut self, backend: Backend, now: Instant, reason: impl Into<String>) {
        if backend != Backend::Software {
            self.failed
                .insert(backend, (now + self.cooldown, reason.into()));
        }
    }

    /// A success proves the backend works again.
    pub fn mark_ok(&mut self, backend: Backend) {
        self.failed.remove(&backend);
    }

    pub fn is_healthy(&self, backend: Backend, now: Instant) -> bool {
        self.unhealthy_reason(backend, now).is_none()
    }

    /// Why `backend` is avoided at `now`, if it is.
    pub fn unhealthy_reason(&self, backend: Backend, now: Instant) -> Option<String> {
        let (until, reason) = self.failed.get(&backend)?;
        (now < *until).then(|| {
            let left = until.saturating_duration_since(now).as_secs();
            format!("unhealthy for {left} s more after: {reason}")
        })
    }
}

/// stderr markers of a hardware (driver, device, session) failure rather than bad input.
const HW_MARKERS: [&str; 22] = [
    "nvenc",
    "cuda_error",
    "cuda error",
    "cuvid",
    "nvdec",
    "openencodesessionex",
    "no capable devices found",
    "no nvenc capable devices",
    "cannot load libcuda",
    "cannot load libnvidia-encode",
    "hwaccel initialisation returned error",
    "failed setup for format cuda",
    "device creation failed",
    "failed to initialise vaapi",
    "vaapi",
    "failed to create va",
    "vainitialize",
    "mfx",
    "qsv",
    "error initializing an internal mfx session",
    "hwupload",
    "hwdownload",
];

/// Whether a failed encode's stderr tail points at the hardware path (then the job is retried
/// in software and the backend marked unhealthy) rather than at the input.
pub fn is_hw_failure(stderr_tail: &str) -> bool {
    let text = stderr_tail.to_ascii_lowercase();
    HW_MARKERS.iter().any(|m| text.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hw_failure_heuristics() {
        assert!(is_hw_failure(
            "[h264_nvenc @ 0x55] OpenEncodeSessionEx failed: unsupported device (2)"
        ));
        assert!(is_hw_failure(
            "[AVHWDeviceContext @ 0x1] cu->cuInit(0) failed -> CUDA_ERROR_NO_DEVICE"
        ));
        assert!(is_hw_failure("Device creation failed: -542398533."));
        assert!(!is_hw_failure(
            "in.mp4: Invalid data found when processing input"
        ));
        assert!(!is_hw_failure("Output file is empty, nothing was encoded"));
    }

    #[test]
    fn health_book_expires() {
        let mut book = HealthBook::new(Duration::from_secs(60));
        let t0 = Instant::now();
        book.mark_failed(Backend::Nvenc, t0, "CUDA_ERROR_LAUNCH_FAILED");
        assert!(!book.is_healthy(Backend::Nvenc, t0 + Duration::from_secs(59)));
        assert!(book.is_healthy(Backend::Nvenc, t0 + Duration::from_secs(60)));
        assert!(book.is_healthy(Backend::Vaapi, t0));
        book.mark_failed(Backend::Software, t0, "never avoided");
        assert!(book.is_healthy(Backend::Software, t0));
        book.mark_ok(Backend::Nvenc);
        assert!(book.is_healthy(Backend::Nvenc, t0));
    }
}
