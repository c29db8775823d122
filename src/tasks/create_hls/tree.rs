//! The packaged tree on disk: the inputs fingerprint, per-variant bandwidths from the written
//! segments, the codec tag from the first segment, modes, and the atomic directory swap.

use std::path::{Path, PathBuf};

use super::{Packaged, H264_MAIN_L42_CODEC, LAYOUT_VERSION};
use crate::mediacms::layout::LayoutError;
use crate::plan;

pub(super) fn mtime_ns(meta: &std::fs::Metadata) -> i128 {
    use std::os::unix::fs::MetadataExt;
    i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec())
}

/// md5 of the layout version and every input's path, size and mtime, in input order.
pub(super) fn fingerprint(inputs: &[Packaged]) -> String {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    h.update(LAYOUT_VERSION.as_bytes());
    for i in inputs {
        h.update(format!("\n{}\t{}\t{}", i.path.display(), i.size, i.mtime_ns).as_bytes());
    }
    hex::encode(h.finalize())
}

/// Bits per second of one packaged variant: the peak over its segments (HLS `BANDWIDTH`) and
/// the whole-stream average (`AVERAGE-BANDWIDTH`), from segment sizes and `#EXTINF` durations.
pub(super) struct Rates {
    pub peak: u64,
    pub average: u64,
}

pub(super) fn variant_rates(variant: &Path) -> Result<Rates, String> {
    let playlist = variant.join("stream.m3u8");
    let text =
        std::fs::read_to_string(&playlist).map_err(|e| format!("{}: {e}", playlist.display()))?;
    let mut peak = 0.0_f64;
    let (mut bytes, mut secs) = (0u64, 0.0_f64);
    let mut duration = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("#EXTINF:") {
            duration = rest
                .split(',')
                .next()
                .and_then(|d| d.trim().parse::<f64>().ok());
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let size = std::fs::metadata(variant.join(line.trim()))
                .map_err(|e| format!("segment {line}: {e}"))?
                .len();
            let d = duration.take().filter(|d| *d > 0.0).unwrap_or(1.0);
            peak = peak.max(size as f64 * 8.0 / d);
            bytes += size;
            secs += d;
        }
    }
    if secs == 0.0 {
        return Err(format!("{} lists no segment", playlist.display()));
    }
    Ok(Rates {
        peak: crate::plan::hls::ceil_u64(peak),
        average: crate::plan::hls::ceil_u64(bytes as f64 * 8.0 / secs),
    })
}

/// `avc1.PPCCLL` from the first SPS in the first segment (MPEG-TS carries Annex B, and the SPS
/// sits in the first video packet), else x264's main-profile tag MediaCMS encodes produce.
pub(super) fn video_codec(first_segment: &Path) -> String {
    use std::io::Read;
    let mut head = Vec::new();
    let read =
        std::fs::File::open(first_segment).and_then(|f| f.take(64 * 1024).read_to_end(&mut head));
    read.ok()
        .and_then(|_| plan::avc1_codec_from_avcc(&head))
        .unwrap_or_else(|| H264_MAIN_L42_CODEC.into())
}

pub(super) fn write_file(path: &Path, text: &str) -> Result<(), LayoutError> {
    std::fs::write(path, text).map_err(|e| LayoutError::io("write", path, e))?;
    set_mode(path, 0o644)
}

/// Temp dirs are created 0700; the served tree must be readable by the web server.
pub(super) fn set_mode(path: &Path, mode: u32) -> Result<(), LayoutError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| LayoutError::io("chmod", path, e))
}

/// Puts `new` at `dest`. Afterwards `new` holds the previous tree (exchange), or nothing.
pub(super) fn swap_into_place(new: &Path, dest: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    match std::fs::rename(new, dest) {
        Ok(()) => return Ok(()),
        // A non-empty directory is in the way: exchange with it.
        Err(e) if dest.is_dir() => tracing::debug!(error = %e, "HLS dir exists; exchanging"),
        Err(e) => return Err(e),
    }
    let c_new = std::ffi::CString::new(new.as_os_str().as_bytes())?;
    let c_dest = std::ffi::CString::new(dest.as_os_str().as_bytes())?;
    // SAFETY: two valid NUL-terminated paths; renameat2 has no other preconditions.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_new.as_ptr(),
            libc::AT_FDCWD,
            c_dest.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if !matches!(
        err.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
    ) {
        return Err(err);
    }
    // No exchange on this filesystem: aside, into place, delete the old one.
    let mut aside = new.as_os_str().to_owned();
    aside.push("-old");
    let aside = PathBuf::from(aside);
    std::fs::rename(dest, &aside)?;
    std::fs::rename(new, dest)?;
    let _ = std::fs::remove_dir_all(&aside);
    Ok(())
}

/// The I-frames of one packaged variant, in playlist order: byte ranges from the segments'
/// keyframe packets, each shown until the next (the last until the end of the stream).
pub(super) fn iframe_entries(variant: &Path) -> Result<Vec<plan::IframeEntry>, String> {
    let playlist = variant.join("stream.m3u8");
    let text =
        std::fs::read_to_string(&playlist).map_err(|e| format!("{}: {e}", playlist.display()))?;
    let mut found = Vec::new(); // (segment, keyframe)
    let mut total = 0.0_f64;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("#EXTINF:") {
            total += rest
                .split(',')
                .next()
                .and_then(|d| d.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let segment = line.trim().to_owned();
            let frames = crate::ffmpeg::keyframes::video_keyframes(&variant.join(&segment))
                .map_err(|e| e.to_string())?;
            found.extend(frames.into_iter().map(|k| (segment.clone(), k)));
        }
    }
    let end = found.first().map_or(0.0, |(_, k)| k.secs) + total;
    let entries = found
        .iter()
        .enumerate()
        .map(|(i, (segment, k))| {
            let next = found.get(i + 1).map_or(end, |(_, n)| n.secs);
            plan::IframeEntry {
                segment: segment.clone(),
                offset: k.offset,
                length: k.length,
                duration: (next - k.secs).max(0.0),
            }
        })
        .collect();
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_exchanges_with_an_existing_tree() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("h");
        let new = root.path().join(".h.new");
        std::fs::create_dir_all(dest.join("media-9")).unwrap();
        std::fs::write(dest.join("master.m3u8"), "old").unwrap();
        std::fs::create_dir(&new).unwrap();
        std::fs::write(new.join("master.m3u8"), "new").unwrap();
        swap_into_place(&new, &dest).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("master.m3u8")).unwrap(),
            "new"
        );
        assert!(
            !dest.join("media-9").exists(),
            "no stale file survives the swap"
        );
        assert_eq!(
            std::fs::read_to_string(new.join("master.m3u8")).unwrap(),
            "old"
        );
    }

    #[test]
    fn swap_renames_when_nothing_is_there() {
        let root = tempfile::tempdir().unwrap();
        let (new, dest) = (root.path().join("n"), root.path().join("d"));
        std::fs::create_dir(&new).unwrap();
        swap_into_place(&new, &dest).unwrap();
        assert!(dest.is_dir() && !new.exists());
    }
}
