//! Label values, bounded: every label the catalogue exposes takes its value from a fixed list or
//! from a capped set, so no task id, file name or free text can explode the series count.

use std::collections::HashSet;
use std::sync::Mutex;

/// The value any unknown or overflowing label collapses to.
pub const OTHER: &str = "other";

/// The Celery task names the long worker serves (contract §0.1); anything else is `other`.
pub const TASKS: [&str; 7] = [
    "encode_media",
    "create_hls",
    "produce_sprite_from_video",
    "whisper_transcribe",
    "get_list_of_popular_media",
    "update_listings_thumbnails",
    "remove_media_file",
];

/// Encode backends (ARCHITECTURE decision 10); `auto` is resolved before anything is measured.
/// `nvdec` is the decode offload (NVDEC + CUDA scale, software encode) of GPUs without NVENC.
pub const BACKENDS: [&str; 5] = ["software", "nvenc", "vaapi", "qsv", "nvdec"];

/// Why a hardware job fell back to software, by class (never the raw error text).
pub const FALLBACK_REASONS: [&str; 5] = [
    "device_open",
    "encoder_init",
    "mid_encode",
    "unsupported_input",
    "session_limit",
];

/// How a task ended, as the `outcome` label (Celery result states plus our own dispositions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeLabel {
    Success,
    Failure,
    Retry,
    Revoked,
    /// Given back to the broker unfinished (drain deadline, lost lease).
    Requeued,
    /// Unknown task name re-published to `--forward-unknown-to`.
    Forwarded,
}

impl OutcomeLabel {
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeLabel::Success => "success",
            OutcomeLabel::Failure => "failure",
            OutcomeLabel::Retry => "retry",
            OutcomeLabel::Revoked => "revoked",
            OutcomeLabel::Requeued => "requeued",
            OutcomeLabel::Forwarded => "forwarded",
        }
    }
}

/// How an ffmpeg child ended, as the `status_class` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FfmpegExit {
    Ok,
    /// Non-zero exit status.
    Error,
    /// We killed it (cancel, revoke, time limit, drain deadline).
    Killed,
    /// A signal we did not send (OOM killer, codec crash).
    Signal,
    /// Exit status 0 but ffmpeg said "Output file is empty, nothing was encoded".
    EmptyOutput,
}

impl FfmpegExit {
    /// Classify a reaped child: `code` is the exit status (None when signalled).
    pub fn classify(code: Option<i32>, killed_by_us: bool) -> FfmpegExit {
        match (killed_by_us, code) {
            (true, _) => FfmpegExit::Killed,
            (false, Some(0)) => FfmpegExit::Ok,
            (false, Some(_)) => FfmpegExit::Error,
            (false, None) => FfmpegExit::Signal,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FfmpegExit::Ok => "ok",
            FfmpegExit::Error => "error",
            FfmpegExit::Killed => "killed",
            FfmpegExit::Signal => "signal",
            FfmpegExit::EmptyOutput => "empty_output",
        }
    }
}

/// `task` label: a known long-task name, or `other`. Celery task names may arrive fully
/// qualified (`files.tasks.encode_media`), so the last dotted component is what counts.
pub fn task(name: &str) -> &'static str {
    let short = name.rsplit('.').next().unwrap_or(name);
    TASKS
        .iter()
        .find(|t| **t == short)
        .copied()
        .unwrap_or(OTHER)
}

/// `backend` label: one of [`BACKENDS`], or `other`.
pub fn backend(name: &str) -> &'static str {
    pick(&BACKENDS, name)
}

/// `reason_class` label: one of [`FALLBACK_REASONS`], or `other`.
pub fn fallback_reason(name: &str) -> &'static str {
    pick(&FALLBACK_REASONS, name)
}

/// `reason` label of a dead letter: the class of decode failure, from the reason text the
/// codec (`DecodeError`'s messages) or the transport wrote; anything else is `other`.
pub fn dead_letter_reason(reason: &str) -> &'static str {
    const CLASSES: [(&str, &str); 8] = [
        ("envelope is not valid JSON", "json"),
        ("body is not valid base64", "base64"),
        ("missing or invalid field", "field"),
        ("body must be", "body"),
        ("unsupported content type", "content_type"),
        ("bad timestamp", "timestamp"),
        ("unreadable unacked entry", "unacked_entry"),
        ("not JSON", "json"),
    ];
    CLASSES
        .iter()
        .find(|(prefix, _)| reason.starts_with(prefix))
        .map_or(OTHER, |(_, class)| class)
}

/// `priority` label: kombu priorities are 0..=9; larger values are clamped to 9.
pub fn priority(p: u8) -> &'static str {
    const P: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    P[usize::from(p.min(9))]
}

fn pick(list: &[&'static str], name: &str) -> &'static str {
    list.iter().find(|v| **v == name).copied().unwrap_or(OTHER)
}

/// A label whose values come from configuration or the database (queue names, encode profile
/// names): bounded by admitting at most `cap` distinct well-formed values, then `other`.
pub struct CappedLabel {
    cap: usize,
    seen: Mutex<HashSet<String>>,
}

/// Longest admitted value; profile names like `h264-1080` and queue names are far shorter.
const MAX_LEN: usize = 48;

impl CappedLabel {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// The label value to use for `raw`: itself if well-formed and admitted, else `other`.
    pub fn get(&self, raw: &str) -> String {
        if !well_formed(raw) {
            return OTHER.to_owned();
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(raw) {
            return raw.to_owned();
        }
        if seen.len() < self.cap {
            seen.insert(raw.to_owned());
            return raw.to_owned();
        }
        OTHER.to_owned()
    }
}

/// Short, printable, no spaces or quotes: a name, not a sentence or a path.
fn well_formed(raw: &str) -> bool {
    !raw.is_empty()
        && raw.len() <= MAX_LEN
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_decode_error_has_its_own_dead_letter_reason() {
        use crate::celery::message::DecodeError as E;
        let errors = [
            E::Json("eof".into()),
            E::Base64("bad".into()),
            E::Field("id"),
            E::Body("2 elements".into()),
            E::ContentType("pickle".into()),
            E::Time {
                field: "eta",
                value: "x".into(),
            },
        ];
        let classes: HashSet<&str> = errors
            .iter()
            .map(|e| dead_letter_reason(&e.to_string()))
            .collect();
        assert_eq!(classes.len(), errors.len(), "{classes:?}");
        assert!(!classes.contains(OTHER));
        assert_eq!(dead_letter_reason("a task id of 2 KB"), OTHER);
    }

    #[test]
    fn task_names_collapse_to_known_or_other() {
        assert_eq!(task("encode_media"), "encode_media");
        assert_eq!(task("files.tasks.create_hls"), "create_hls");
        assert_eq!(task("chunkize_media"), OTHER);
        assert_eq!(task("3f2b9c1e-0000-4000-8000-000000000000"), OTHER);
    }

    #[test]
    fn fixed_lists_and_priorities_are_bounded() {
        assert_eq!(backend("nvenc"), "nvenc");
        assert_eq!(backend("amf"), OTHER);
        assert_eq!(fallback_reason("mid_encode"), "mid_encode");
        assert_eq!(fallback_reason("CUDA_ERROR_OUT_OF_MEMORY at 0x7f"), OTHER);
        assert_eq!(priority(3), "3");
        assert_eq!(priority(200), "9");
    }

    #[test]
    fn ffmpeg_exit_classes() {
        assert_eq!(FfmpegExit::classify(Some(0), false), FfmpegExit::Ok);
        assert_eq!(FfmpegExit::classify(Some(1), false), FfmpegExit::Error);
        assert_eq!(FfmpegExit::classify(None, false), FfmpegExit::Signal);
        assert_eq!(FfmpegExit::classify(None, true), FfmpegExit::Killed);
    }

    #[test]
    fn capped_label_admits_cap_values_then_other() {
        let l = CappedLabel::new(2);
        assert_eq!(l.get("h264-720"), "h264-720");
        assert_eq!(l.get("h264-1080"), "h264-1080");
        assert_eq!(l.get("vp9-720"), OTHER);
        assert_eq!(l.get("h264-720"), "h264-720");
        assert_eq!(l.get("/home/x/media file.mp4"), OTHER);
        assert_eq!(l.get(&"x".repeat(100)), OTHER);
    }
}
