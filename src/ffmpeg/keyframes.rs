//! Where the keyframes of a packaged HLS segment lie: byte range and time of each, read
//! in-process (libav demux only, no decode) to write I-frame playlists without Bento4.

use std::path::Path;

use ffmpeg_next::media::Type;

use super::probe::{open, ProbeError};

/// One keyframe of the video stream of a file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Keyframe {
    /// Byte offset of the packet (in MPEG-TS: its first TS packet).
    pub offset: u64,
    /// Bytes up to the next video packet, or to the end of the file.
    pub length: u64,
    /// Presentation time in seconds.
    pub secs: f64,
}

/// The video keyframes of `path` in file order; empty when it has no video stream.
pub fn video_keyframes(path: &Path) -> Result<Vec<Keyframe>, ProbeError> {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut input = open(path)?;
    let Some(video) = input.streams().best(Type::Video) else {
        return Ok(Vec::new());
    };
    let (index, tb) = (video.index(), video.time_base());
    let secs = |ts: i64| ts as f64 * f64::from(tb.numerator()) / f64::from(tb.denominator());
    let mut frames: Vec<Keyframe> = Vec::new();
    let mut open_frame: Option<usize> = None; // a keyframe still waiting for its end offset
    for (stream, packet) in input.packets() {
        if stream.index() != index || packet.position() < 0 {
            continue;
        }
        let pos = packet.position() as u64;
        if let Some(i) = open_frame.take() {
            frames[i].length = pos.saturating_sub(frames[i].offset);
        }
        if packet.is_key() {
            let ts = packet.pts().or(packet.dts()).unwrap_or(0);
            frames.push(Keyframe {
                offset: pos,
                length: size.saturating_sub(pos),
                secs: secs(ts),
            });
            open_frame = Some(frames.len() - 1);
        }
    }
    Ok(frames)
}
