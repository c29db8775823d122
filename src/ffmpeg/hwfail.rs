//! Pure classification of a failed hardware ffmpeg run from its stderr tail: an input this path
//! cannot take (software for this job only), a device/driver/session failure (the device is
//! avoided with backoff), or nothing hardware-specific (a corrupt input: software decides the
//! outcome). Markers are FFmpeg 5.1.9's own messages (read from its source; not yet seen on a
//! GPU), matched case-insensitively.

/// How a hardware run failed, and so what happens next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HwFailure {
    /// This input cannot take this hardware path (format negotiation, decoder capabilities,
    /// encoder limits): software for this job only, the device stays healthy.
    UnsupportedInput,
    /// The device, its driver or an encoder session failed: the device is avoided with backoff.
    /// `class` is the metric's `reason_class`: `device_open`, `encoder_init`, `session_limit` or
    /// `mid_encode`.
    Device { class: &'static str },
    /// Nothing points at the hardware (a corrupt input, a full disk…): the job is re-run in
    /// software, whose result is the job's, and the device stays healthy.
    Other,
}

impl HwFailure {
    /// The `reason_class` label of `mediacms_worker_hw_fallbacks_total`.
    pub fn reason_class(self) -> &'static str {
        match self {
            HwFailure::UnsupportedInput => "unsupported_input",
            HwFailure::Device { class } => class,
            HwFailure::Other => "other",
        }
    }

    /// Whether the device is marked unhealthy: only a device-level failure locks it out.
    pub fn locks_out_device(self) -> bool {
        matches!(self, HwFailure::Device { .. })
    }
}

/// NVENC could not get an encoder session (consumer cards' session cap, GPU memory).
const SESSION: [&str; 1] = ["openencodesessionex failed"];

/// The device or its driver did not open.
const DEVICE_OPEN: [&str; 14] = [
    "device creation failed",
    "cuinit(0) failed",
    "cuda_error_no_device",
    "cannot load libcuda",
    "could not dynamically load cuda",
    "no device available for decoder",
    "device setup failed for decoder",
    "failed to initialise vaapi connection",
    "vagetdrivernamebyindex() failed",
    "failed to set value '/dev/dri",
    "error initializing an mfx session",
    "error creating a mfx session",
    "error initializing an internal mfx session",
    "failed to create a vaapi device",
];

/// The encoder's driver side is missing or too old, or the GPU has no such encoder.
const ENCODER_INIT: [&str; 8] = [
    "no nvenc capable devices found",
    "no capable devices found",
    "cannot load libnvidia-encode",
    "minimum required nvidia driver",
    "driver does not support the required nvenc api version",
    "provided device doesn't support required nvenc features",
    "no usable encoding entrypoint found",
    "error initializing the encoder",
];

/// The GPU failed while encoding (CUDA faults, lost device, failed submissions).
const MID_ENCODE: [&str; 6] = [
    "cuda_error_",
    "encodepicture failed",
    "failed locking bitstream buffer",
    "failed to end picture encode issue",
    "failed to sync surface",
    "gpu has fallen off the bus",
];

/// This input cannot take the path: software frames reaching a CUDA/VAAPI filter, a decoder or
/// encoder refusing this format or size.
const UNSUPPORTED_INPUT: [&str; 7] = [
    "impossible to convert between the formats",
    "hwaccel initialisation returned error",
    "failed setup for format cuda",
    "hardware is lacking required capabilities",
    "not within range from",
    "initializeencoder failed: invalid param",
    "no usable encoding profile found",
];

/// Classifies a failed hardware run by its stderr tail. Device markers win over input markers:
/// a lost device also breaks format negotiation, never the other way round.
pub fn classify_hw_failure(stderr_tail: &str) -> HwFailure {
    let text = stderr_tail.to_ascii_lowercase();
    let any = |markers: &[&str]| markers.iter().any(|m| text.contains(m));
    if any(&SESSION) {
        HwFailure::Device {
            class: "session_limit",
        }
    } else if any(&DEVICE_OPEN) {
        HwFailure::Device {
            class: "device_open",
        }
    } else if any(&ENCODER_INIT) {
        HwFailure::Device {
            class: "encoder_init",
        }
    } else if any(&MID_ENCODE) {
        HwFailure::Device {
            class: "mid_encode",
        }
    } else if any(&UNSUPPORTED_INPUT) {
        HwFailure::UnsupportedInput
    } else {
        HwFailure::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_10_on_scale_cuda_is_unsupported_input_and_keeps_the_gpu() {
        let tail = "[Parsed_scale_cuda_0 @ 0x5581] Impossible to convert between the formats \
                    supported by the filter 'graph 0 input from stream 0:0' and the filter \
                    'auto_scale_0'\nError reinitializing filters!\nFailed to inject frame into \
                    filter network: Function not implemented\nError while processing the \
                    decoded data for stream #0:0";
        let f = classify_hw_failure(tail);
        assert_eq!(f, HwFailure::UnsupportedInput);
        assert!(!f.locks_out_device());
        assert_eq!(f.reason_class(), "unsupported_input");
    }

    #[test]
    fn device_and_session_failures_lock_the_device_out() {
        let cases = [
            (
                "[AVHWDeviceContext @ 0x1] cu->cuInit(0) failed -> CUDA_ERROR_NO_DEVICE: no \
                 CUDA-capable device is detected\nDevice creation failed: -542398533.",
                "device_open",
            ),
            (
                "[h264_nvenc @ 0x55] OpenEncodeSessionEx failed: out of memory (10): (no details)",
                "session_limit",
            ),
            (
                "[h264_nvenc @ 0x55] Driver does not support the required nvenc API version. \
                 Required: 11.1 Found: 11.0",
                "encoder_init",
            ),
            (
                "[hwupload_cuda @ 0x9] cu->cuMemcpy2DAsync failed -> CUDA_ERROR_ILLEGAL_ADDRESS",
                "mid_encode",
            ),
        ];
        for (tail, class) in cases {
            let f = classify_hw_failure(tail);
            assert_eq!(f, HwFailure::Device { class }, "{tail}");
            assert!(f.locks_out_device());
        }
    }

    #[test]
    fn corrupt_input_is_not_a_hardware_failure() {
        for tail in [
            "[h264 @ 0x1] Invalid NAL unit size (1234 > 56).\nIN: Invalid data found when \
             processing input",
            "Output file is empty, nothing was encoded",
        ] {
            let f = classify_hw_failure(tail);
            assert_eq!(f, HwFailure::Other);
            assert!(!f.locks_out_device());
            assert_eq!(f.reason_class(), "other");
        }
    }
}
