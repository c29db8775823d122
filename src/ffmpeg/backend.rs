//! Pure backend decisions: which backend a job uses given probed capabilities, the config and
//! recent failures ([`HealthBook`]), and whether an ffmpeg failure looks like a hardware fault.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::caps::{Capabilities, Family};
use crate::config::HwAccel;
pub use crate::plan::Backend;

/// Backend kinds in preference order; a kind plus a device makes a [`Backend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Nvenc,
    Qsv,
    Vaapi,
    Nvdec,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Nvenc => "nvenc",
            Self::Qsv => "qsv",
            Self::Vaapi => "vaapi",
            Self::Nvdec => "nvdec",
        }
    }

    fn backend(self, device: &str) -> Backend {
        match self {
            Self::Nvenc => Backend::Nvenc,
            Self::Qsv => Backend::Qsv,
            Self::Vaapi => Backend::Vaapi {
                device: device.to_owned(),
            },
            Self::Nvdec => Backend::NvdecDecodeOnly,
        }
    }
}

/// Short name of a backend for logs, metrics labels and reasons.
pub fn backend_name(backend: &Backend) -> &'static str {
    match backend {
        Backend::Software => "software",
        Backend::Nvenc => Kind::Nvenc.name(),
        Backend::Qsv => Kind::Qsv.name(),
        Backend::Vaapi { .. } => Kind::Vaapi.name(),
        Backend::NvdecDecodeOnly => Kind::Nvdec.name(),
    }
}

/// The decision and its reason (logged, and recorded in the Encoding log on fallbacks).
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub backend: Backend,
    /// The probed device it works on (CUDA index or render node), for logs.
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

/// Features a kind needs on one device for `codec`, and the family that provides them.
fn requirements(kind: Kind, codec: &str) -> Result<(Family, Vec<String>), String> {
    let stem = codec_stem(codec).ok_or_else(|| format!("no hardware encoder for codec {codec}"));
    let cuda = ["nvdec".to_owned(), "scale_cuda".to_owned()];
    Ok(match kind {
        // The planner sends VP9 on an NVENC choice to the decode offload; require what it uses.
        Kind::Nvenc if codec == "vp9" => return Err("NVENC has no VP9 encoder".into()),
        Kind::Nvenc => (
            Family::Nvidia,
            [&cuda[..], &[format!("{}_nvenc", stem?)]].concat(),
        ),
        Kind::Nvdec => (Family::Nvidia, cuda.to_vec()),
        Kind::Vaapi => (Family::Vaapi, vec![format!("{}_vaapi", stem?)]),
        Kind::Qsv => (Family::Qsv, vec![format!("{}_qsv", stem?)]),
    })
}

/// The first device of the right family on which every required feature works, or why none.
fn ready(caps: &Capabilities, kind: Kind, codec: &str) -> Result<String, String> {
    let (family, features) = requirements(kind, codec)?;
    let mut why = Vec::new();
    for report in caps.backends.iter().filter(|b| b.family == family) {
        let failed = features
            .iter()
            .find_map(|f| report.check(f).err().map(|e| (f, e)));
        match failed {
            None => return Ok(report.device.clone()),
            Some((feature, reason)) => {
                why.push(format!("{feature} on {}: {reason}", report.device))
            }
        }
    }
    if why.is_empty() {
        why.push(format!("{} not probed", family.as_str()));
    }
    Err(why.join("; "))
}

/// Picks the backend for one job. `auto`: nvenc > qsv > vaapi > nvdec decode-only > software;
/// a forced backend that does not work falls back (nvenc → nvdec decode-only → software,
/// vaapi/qsv → software) with the reason.
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
    choose(caps, hwaccel, codec, |k| {
        health.reason_by_name(k.name(), now)
    })
}

fn choose(
    caps: &Capabilities,
    hwaccel: HwAccel,
    codec: &str,
    avoid: impl Fn(Kind) -> Option<String>,
) -> Choice {
    let order: &[Kind] = match hwaccel {
        HwAccel::Software => return software("hwaccel=software".into()),
        HwAccel::Auto => &[Kind::Nvenc, Kind::Qsv, Kind::Vaapi, Kind::Nvdec],
        HwAccel::Nvenc => &[Kind::Nvenc, Kind::Nvdec],
        HwAccel::Vaapi => &[Kind::Vaapi],
        HwAccel::Qsv => &[Kind::Qsv],
    };
    let mut why = Vec::new();
    for &kind in order {
        let verdict = match avoid(kind) {
            Some(reason) => Err(reason),
            None => ready(caps, kind, codec),
        };
        match verdict {
            Ok(device) => {
                let mut reason = format!("{} works on {device}", kind.name());
                if !why.is_empty() {
                    reason = format!("{reason}; not used: {}", why.join("; "));
                }
                return Choice {
                    backend: kind.backend(&device),
                    device: Some(device),
                    reason,
                };
            }
            Err(reason) => why.push(format!("{}: {reason}", kind.name())),
        }
    }
    software(format!("software fallback: {}", why.join("; ")))
}

fn software(reason: String) -> Choice {
    Choice {
        backend: Backend::Software,
        device: None,
        reason,
    }
}

/// Backends that failed recently, avoided until their cooldown ends (pure: time is passed in).
#[derive(Debug, Clone)]
pub struct HealthBook {
    cooldown: Duration,
    failed: HashMap<&'static str, (Instant, String)>,
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
    pub fn mark_failed(&mut self, backend: &Backend, now: Instant, reason: impl Into<String>) {
        if *backend != Backend::Software {
            let until = now + self.cooldown;
            self.failed
                .insert(backend_name(backend), (until, reason.into()));
        }
    }

    /// A success proves the backend works again.
    pub fn mark_ok(&mut self, backend: &Backend) {
        self.failed.remove(backend_name(backend));
    }

    pub fn is_healthy(&self, backend: &Backend, now: Instant) -> bool {
        self.reason_by_name(backend_name(backend), now).is_none()
    }

    /// Why `backend` is avoided at `now`, if it is.
    pub fn unhealthy_reason(&self, backend: &Backend, now: Instant) -> Option<String> {
        self.reason_by_name(backend_name(backend), now)
    }

    fn reason_by_name(&self, name: &str, now: Instant) -> Option<String> {
        let (until, reason) = self.failed.get(name)?;
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
        book.mark_failed(&Backend::Nvenc, t0, "CUDA_ERROR_LAUNCH_FAILED");
        assert!(!book.is_healthy(&Backend::Nvenc, t0 + Duration::from_secs(59)));
        assert!(book.is_healthy(&Backend::Nvenc, t0 + Duration::from_secs(60)));
        assert!(book.is_healthy(&Backend::Qsv, t0));
        book.mark_failed(&Backend::Software, t0, "never avoided");
        assert!(book.is_healthy(&Backend::Software, t0));
        book.mark_ok(&Backend::Nvenc);
        assert!(book.is_healthy(&Backend::Nvenc, t0));
    }
}
