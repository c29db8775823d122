//! The Encoding log's account of a hardware run that failed and was re-run in software (pure).

use crate::ffmpeg::backend::{backend_name, HwFailure};
use crate::plan::Backend;

/// Lines of the hardware run's stderr kept in the Encoding log.
const HW_TAIL_LINES: usize = 20;

/// The Encoding log's account of a hardware attempt re-run in software: backend, device, class
/// and the hardware run's own stderr tail; the software run's log follows it.
pub(super) fn fallback_note(backend: &Backend, failure: HwFailure, tail: &str) -> String {
    let name = backend_name(backend);
    let device = backend.device().unwrap_or("-");
    let what = match failure {
        HwFailure::UnsupportedInput => "this input cannot take the hardware path",
        HwFailure::Device { .. } => "device failure: the device is avoided for a while",
        HwFailure::Other => "no hardware cause found: the software run decides",
    };
    let lines: Vec<&str> = tail.lines().collect();
    let kept = lines[lines.len().saturating_sub(HW_TAIL_LINES)..].join("\n");
    format!(
        "[mediacms-worker] {name} on device {device} failed ({}: {what}); re-ran in software. \
         Hardware stderr tail:\n{kept}\n[mediacms-worker] software run:\n",
        failure.reason_class()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn note_names_backend_device_class_and_keeps_the_last_lines() {
        let tail: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let gpu = Backend::Nvenc { device: "1".into() };
        let note = fallback_note(&gpu, HwFailure::UnsupportedInput, &tail);
        assert!(note.starts_with(
            "[mediacms-worker] nvenc on device 1 failed (unsupported_input: this input cannot \
             take the hardware path); re-ran in software."
        ));
        assert!(
            note.contains("line 11\n") && note.contains("line 30\n"),
            "{note}"
        );
        assert!(
            !note.contains("line 10\n"),
            "only the last {HW_TAIL_LINES} lines: {note}"
        );
        assert!(note.ends_with("[mediacms-worker] software run:\n"));
    }
}
