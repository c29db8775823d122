//! Pure backend decisions: which backend a job uses given probed capabilities, the config and
//! recent failures ([`HealthBook`]), and whether an ffmpeg failure looks like a hardware fault.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::caps::{Capabilities, Family};
pub use super::hwfail::{classify_hw_failure, HwFailure};
use crate::backoff::Backoff;
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
        let device = device.to_owned();
        match self {
            Self::Nvenc => Backend::Nvenc { device },
            Self::Qsv => Backend::Qsv { device },
            Self::Vaapi => Backend::Vaapi { device },
            Self::Nvdec => Backend::NvdecDecodeOnly { device },
        }
    }
}

/// Short name of a backend for logs, metrics labels and reasons.
pub fn backend_name(backend: &Backend) -> &'static str {
    match backend {
        Backend::Software => "software",
        Backend::Nvenc { .. } => Kind::Nvenc.name(),
        Backend::Qsv { .. } => Kind::Qsv.name(),
        Backend::Vaapi { .. } => Kind::Vaapi.name(),
        Backend::NvdecDecodeOnly { .. } => Kind::Nvdec.name(),
    }
}

/// The decision and its reason (logged, and recorded in the Encoding log on fallbacks).
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub backend: Backend,
    /// The probed device it works on (CUDA index or render node), for logs.
    pub device: Option<String>,
    pub reason: String,
    /// Every healthy device the chosen kind works on, `backend` first: the job may take any of
    /// them (the caller spreads jobs across their slot pools).
    pub candidates: Vec<Backend>,
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

/// Every device of the right family on which every required feature works and that `avoid`
/// does not rule out, or why none.
fn ready(
    caps: &Capabilities,
    kind: Kind,
    codec: &str,
    avoid: &impl Fn(&Backend) -> Option<String>,
) -> Result<Vec<String>, String> {
    let (family, features) = requirements(kind, codec)?;
    let mut why = Vec::new();
    let mut devices = Vec::new();
    for report in caps.backends.iter().filter(|b| b.family == family) {
        let failed = features
            .iter()
            .find_map(|f| {
                report
                    .check(f)
                    .err()
                    .map(|e| format!("{f} on {}: {e}", report.device))
            })
            .or_else(|| {
                avoid(&kind.backend(&report.device)).map(|r| format!("{}: {r}", report.device))
            });
        match failed {
            None => devices.push(report.device.clone()),
            Some(reason) => why.push(reason),
        }
    }
    if why.is_empty() && devices.is_empty() {
        why.push(format!("{} not probed", family.as_str()));
    }
    match devices.is_empty() {
        true => Err(why.join("; ")),
        false => Ok(devices),
    }
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
    choose(caps, hwaccel, codec, |b| health.unhealthy_reason(b, now))
}

fn choose(
    caps: &Capabilities,
    hwaccel: HwAccel,
    codec: &str,
    avoid: impl Fn(&Backend) -> Option<String>,
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
        match ready(caps, kind, codec, &avoid) {
            Ok(devices) => {
                let mut reason = format!("{} works on {}", kind.name(), devices.join(", "));
                if !why.is_empty() {
                    reason = format!("{reason}; not used: {}", why.join("; "));
                }
                let candidates: Vec<Backend> = devices.iter().map(|d| kind.backend(d)).collect();
                return Choice {
                    backend: candidates[0].clone(),
                    device: Some(devices[0].clone()),
                    reason,
                    candidates,
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
        candidates: Vec::new(),
    }
}

/// Hardware devices that failed at the device level, avoided with exponential backoff (pure:
/// time is passed in). Keyed by backend *and* device, so one bad GPU does not idle the others.
#[derive(Debug, Clone)]
pub struct HealthBook {
    first: Duration,
    longest: Duration,
    failed: HashMap<Backend, Strikes>,
}

#[derive(Debug, Clone)]
struct Strikes {
    until: Instant,
    reason: String,
    count: u32,
}

/// The other backends that run on `backend`'s device (NVENC ↔ NVDEC offload on one GPU,
/// VAAPI ↔ QSV on one render node).
fn same_device(backend: &Backend) -> Vec<Backend> {
    let device = backend.device().unwrap_or_default().to_owned();
    match backend {
        Backend::Nvenc { .. } => vec![Backend::NvdecDecodeOnly { device }],
        Backend::NvdecDecodeOnly { .. } => vec![Backend::Nvenc { device }],
        Backend::Vaapi { .. } => vec![Backend::Qsv { device }],
        Backend::Qsv { .. } => vec![Backend::Vaapi { device }],
        Backend::Software => Vec::new(),
    }
}

impl Default for HealthBook {
    fn default() -> Self {
        Self::new(Duration::from_secs(600))
    }
}

impl HealthBook {
    /// Backoff from 30 s (or `longest` if shorter), doubling per consecutive failure, capped at
    /// `longest`.
    pub fn new(longest: Duration) -> Self {
        Self {
            first: Duration::from_secs(30).min(longest),
            longest,
            failed: HashMap::new(),
        }
    }

    /// Records a device-level failure of `backend` at `now`; later jobs avoid that device for
    /// the backoff, which doubles with each failure until a success resets it.
    pub fn mark_failed(&mut self, backend: &Backend, now: Instant, reason: impl Into<String>) {
        if *backend == Backend::Software {
            return;
        }
        let count = self.failed.get(backend).map_or(0, |s| s.count) + 1;
        let cooldown = Backoff::new(self.first, self.longest).delay(count);
        let strikes = Strikes {
            until: now + cooldown,
            reason: reason.into(),
            count,
        };
        self.failed.insert(backend.clone(), strikes);
    }

    /// Records a hardware failure by its class: nothing for an input-level one; the failed
    /// backend for an encoder-level one (`session_limit`, `encoder_init`: the same GPU's NVDEC
    /// offload still works); every backend on that device when the device itself failed
    /// (`device_open`, `mid_encode`).
    pub fn record(&mut self, backend: &Backend, failure: HwFailure, now: Instant, reason: &str) {
        if !failure.locks_out_device() {
            return;
        }
        self.mark_failed(backend, now, reason);
        if matches!(failure.reason_class(), "device_open" | "mid_encode") {
            for sibling in same_device(backend) {
                self.mark_failed(&sibling, now, reason);
            }
        }
    }

    /// A success proves the device works again.
    pub fn mark_ok(&mut self, backend: &Backend) {
        self.failed.remove(backend);
    }

    pub fn is_healthy(&self, backend: &Backend, now: Instant) -> bool {
        self.unhealthy_reason(backend, now).is_none()
    }

    /// Why `backend` is avoided at `now`, if it is.
    pub fn unhealthy_reason(&self, backend: &Backend, now: Instant) -> Option<String> {
        let s = self.failed.get(backend)?;
        (now < s.until).then(|| {
            let left = s.until.saturating_duration_since(now).as_secs();
            format!("unhealthy for {left} s more after: {}", s.reason)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_book_backs_off_per_device() {
        let mut book = HealthBook::new(Duration::from_secs(600));
        let gpu0 = Backend::Nvenc { device: "0".into() };
        let gpu1 = Backend::Nvenc { device: "1".into() };
        let t0 = Instant::now();
        book.mark_failed(&gpu0, t0, "CUDA_ERROR_LAUNCH_FAILED");
        assert!(!book.is_healthy(&gpu0, t0 + Duration::from_secs(29)));
        assert!(book.is_healthy(&gpu0, t0 + Duration::from_secs(30)));
        assert!(book.is_healthy(&gpu1, t0), "another GPU stays usable");
        // A second failure doubles the backoff; it never exceeds the ceiling.
        let t1 = t0 + Duration::from_secs(30);
        book.mark_failed(&gpu0, t1, "again");
        assert!(!book.is_healthy(&gpu0, t1 + Duration::from_secs(59)));
        assert!(book.is_healthy(&gpu0, t1 + Duration::from_secs(60)));
        for _ in 0..10 {
            book.mark_failed(&gpu0, t1, "again");
        }
        assert!(!book.is_healthy(&gpu0, t1 + Duration::from_secs(599)));
        assert!(book.is_healthy(&gpu0, t1 + Duration::from_secs(600)));
        book.mark_failed(&Backend::Software, t0, "never avoided");
        assert!(book.is_healthy(&Backend::Software, t0));
        book.mark_ok(&gpu0);
        assert!(book.is_healthy(&gpu0, t1));
    }

    #[test]
    fn a_device_failure_locks_the_whole_device_an_encoder_failure_only_the_encoder() {
        let t0 = Instant::now();
        let nvenc = Backend::Nvenc { device: "0".into() };
        let offload = Backend::NvdecDecodeOnly { device: "0".into() };
        let mut book = HealthBook::default();
        let session = HwFailure::Device {
            class: "session_limit",
        };
        book.record(&nvenc, session, t0, "OpenEncodeSessionEx failed");
        assert!(!book.is_healthy(&nvenc, t0));
        assert!(book.is_healthy(&offload, t0), "NVDEC still decodes");
        let mut book = HealthBook::default();
        let lost = HwFailure::Device {
            class: "device_open",
        };
        book.record(&nvenc, lost, t0, "CUDA_ERROR_NO_DEVICE");
        assert!(!book.is_healthy(&offload, t0));
        let mut book = HealthBook::default();
        book.record(&nvenc, HwFailure::UnsupportedInput, t0, "High 10");
        book.record(&nvenc, HwFailure::Other, t0, "Invalid data found");
        assert!(book.is_healthy(&nvenc, t0) && book.is_healthy(&offload, t0));
    }
}
