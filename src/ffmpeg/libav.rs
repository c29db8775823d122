//! In-process libav setup: one-time init, libav's log routed to `tracing`, and per-thread capture
//! of log lines so a failed device open can report libav's own reason.

use std::cell::RefCell;
use std::sync::Once;

use ffmpeg_next::ffi;

thread_local! {
    static CAPTURE: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// Initialises libav once: registers formats, quiets logging to errors, installs the log router.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // An init failure only means a codec/format table could not be registered; probing then
        // fails per file with a clear error, so there is nothing better to do here.
        let _ = ffmpeg_next::init();
        // SAFETY: plain setters of libav's global log state, called once.
        unsafe {
            ffi::av_log_set_level(ffi::AV_LOG_ERROR);
            install_callback();
        }
    });
}

/// Runs `f`, returning what it returned plus the libav log lines (warnings and worse) it caused
/// on this thread. Used around device opens, whose error codes alone say little.
pub fn capture_log<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    init();
    CAPTURE.with(|c| *c.borrow_mut() = Some(Vec::new()));
    let out = f();
    let lines = CAPTURE.with(|c| c.borrow_mut().take()).unwrap_or_default();
    (out, lines)
}

/// libav's text for an AVERROR code.
pub fn error_text(code: i32) -> String {
    ffmpeg_next::Error::from(code).to_string()
}

/// Drops libav's `[AVHWDeviceContext @ 0x55d1…] ` prefix: the address changes every run.
fn strip_context(line: &str) -> &str {
    match (line.starts_with('['), line.find("] ")) {
        (true, Some(end)) if line[..end].contains(" @ 0x") => &line[end + 2..],
        _ => line,
    }
}

#[cfg(target_arch = "x86_64")]
unsafe fn install_callback() {
    ffi::av_log_set_callback(Some(log_callback));
}

// The va_list ABI differs per architecture; elsewhere libav keeps its default stderr logger.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn install_callback() {}

#[cfg(target_arch = "x86_64")]
unsafe extern "C" fn log_callback(
    avcl: *mut libc::c_void,
    level: libc::c_int,
    fmt: *const libc::c_char,
    vl: *mut ffi::__va_list_tag,
) {
    let capturing = CAPTURE.with(|c| c.try_borrow().map(|c| c.is_some()).unwrap_or(false));
    let wanted = if capturing {
        ffi::AV_LOG_WARNING
    } else {
        ffi::av_log_get_level()
    };
    if level > wanted {
        return;
    }
    let mut buf = [0 as libc::c_char; 1024];
    let mut prefix: libc::c_int = 1;
    ffi::av_log_format_line2(avcl, level, fmt, vl, buf.as_mut_ptr(), 1024, &mut prefix);
    let text = std::ffi::CStr::from_ptr(buf.as_ptr()).to_string_lossy();
    let line = strip_context(text.trim()).to_owned();
    if line.is_empty() {
        return;
    }
    let captured = CAPTURE.with(|c| match c.try_borrow_mut() {
        Ok(mut guard) => guard.as_mut().map(|v| v.push(line.clone())).is_some(),
        Err(_) => false,
    });
    if !captured {
        tracing::warn!(target: "libav", "{line}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn context_prefix_is_stripped() {
        let line = "[AVHWDeviceContext @ 0x7fc620000d40] Cannot load libcuda.so.1";
        assert_eq!(super::strip_context(line), "Cannot load libcuda.so.1");
        assert_eq!(super::strip_context("[plain] text"), "[plain] text");
    }
}
