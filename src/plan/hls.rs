//! HLS without Bento4 (ARCHITECTURE decision 9): ffmpeg's HLS muxer in stream-copy mode, laid out
//! like `mp4hls --segment-duration=4` (contract §4.4) so MediaCMS's `hls_info` parses it.
//!
//! Layout under the output dir: `master.m3u8`, and per input N (from 1, in input order)
//! `media-N/stream.m3u8` + `media-N/segment-K.ts` (K from 0). One ffmpeg per rendition: each
//! run is a cheap remux, failures stay isolated to one rendition, and the argv stays simple.
//! ffmpeg (5.1) does not create `media-N/` itself: create [`hls_variant_dirs`] first.
//! Like Bento4, each variant also gets `media-N/iframes.m3u8`, an I-frame playlist of byte ranges
//! into its segments ([`iframe_playlist`]), listed in the master with `EXT-X-I-FRAME-STREAM-INF`
//! so MediaCMS's `hls_info` has its `<res>_iframe` keys.

use super::software::push;

/// The AAC-LC codec tag every MediaCMS h264 rendition carries.
pub const AAC_LC_CODEC: &str = "mp4a.40.2";
/// `avc1` tag of x264 main profile, level 4.2 (MediaCMS's h264 ≤ 1080 at preset medium), for
/// when the real stream's configuration record is not at hand.
pub const H264_MAIN_L42_CODEC: &str = "avc1.4d402a";

/// One encoded h264 MP4 to package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HlsInput {
    /// Absolute path of the MP4.
    pub path: String,
    pub width: u32,
    pub height: u32,
    /// Peak bits per second (`BANDWIDTH`).
    pub bandwidth: u64,
    /// Average bits per second (`AVERAGE-BANDWIDTH`), e.g. file size × 8 / duration.
    pub average_bandwidth: u64,
    /// RFC 6381 video codec, e.g. from [`avc1_codec_from_avcc`].
    pub video_codec: String,
    pub has_audio: bool,
    /// `(BANDWIDTH, AVERAGE-BANDWIDTH)` of its I-frame playlist, when it has one.
    pub iframes: Option<(u64, u64)>,
}

/// One I-frame of a variant: a byte range of one of its segments, shown for `duration` seconds
/// (until the next I-frame).
#[derive(Debug, Clone, PartialEq)]
pub struct IframeEntry {
    /// Segment file name relative to the playlist, e.g. `segment-0.ts`.
    pub segment: String,
    pub offset: u64,
    pub length: u64,
    pub duration: f64,
}

/// `media-N/iframes.m3u8` as Bento4 lays it out: `EXT-X-I-FRAMES-ONLY`, one `EXTINF` +
/// `EXT-X-BYTERANGE:length@offset` + segment URI per I-frame.
pub fn iframe_playlist(entries: &[IframeEntry]) -> String {
    let target = entries
        .iter()
        .map(|e| ceil_u64(e.duration))
        .max()
        .unwrap_or(0)
        .max(1);
    let mut out = format!(
        "#EXTM3U\n#EXT-X-VERSION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-I-FRAMES-ONLY\n\
         #EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:0\n"
    );
    for e in entries {
        out.push_str(&format!(
            "#EXTINF:{:.6},\n#EXT-X-BYTERANGE:{}@{}\n{}\n",
            e.duration, e.length, e.offset, e.segment
        ));
    }
    out.push_str("#EXT-X-ENDLIST\n");
    out
}

/// `(peak, average)` bits per second of an I-frame playlist, as for a media playlist.
pub fn iframe_rates(entries: &[IframeEntry]) -> (u64, u64) {
    let peak = entries
        .iter()
        .filter(|e| e.duration > 0.0)
        .map(|e| e.length as f64 * 8.0 / e.duration)
        .fold(0.0_f64, f64::max);
    let secs: f64 = entries.iter().map(|e| e.duration).sum();
    let bytes: u64 = entries.iter().map(|e| e.length).sum();
    let avg = if secs > 0.0 {
        bytes as f64 * 8.0 / secs
    } else {
        0.0
    };
    (ceil_u64(peak), ceil_u64(avg))
}

fn variant_dir(out_dir: &str, n: usize) -> String {
    format!("{}/media-{n}", out_dir.trim_end_matches('/'))
}

/// The directories that must exist before [`plan_hls`]'s commands run, in input order.
pub fn hls_variant_dirs(inputs: &[HlsInput], out_dir: &str) -> Vec<String> {
    (1..=inputs.len())
        .map(|n| variant_dir(out_dir, n))
        .collect()
}

/// One stream-copy remux per input into `media-N/`. Cuts fall on the encodes' keyframes, which
/// MediaCMS forces every 4 s. `out_dir` must not contain `%` (segment pattern).
pub fn plan_hls(inputs: &[HlsInput], out_dir: &str) -> Vec<Vec<String>> {
    inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let dir = variant_dir(out_dir, i + 1);
            let segments = format!("{dir}/segment-%d.ts");
            let playlist = format!("{dir}/stream.m3u8");
            let mut a = Vec::new();
            push(&mut a, &["ffmpeg", "-y", "-i", &input.path]);
            push(&mut a, &["-map", "0:v:0", "-map", "0:a:0?", "-c", "copy"]);
            push(
                &mut a,
                &["-f", "hls", "-hls_time", "4", "-hls_playlist_type", "vod"],
            );
            push(
                &mut a,
                &["-hls_list_size", "0", "-hls_segment_type", "mpegts"],
            );
            push(&mut a, &["-hls_segment_filename", &segments, &playlist]);
            a
        })
        .collect()
}

/// `master.m3u8` text: version 4 like Bento4, one `EXT-X-STREAM-INF` per input with
/// `RESOLUTION=WxH` (what MediaCMS's `hls_info` keys on) and a URI relative to the master's dir.
/// Line endings are `\n` (Bento4 writes CRLF; both parse).
pub fn master_playlist(inputs: &[HlsInput]) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:4\n");
    for (i, input) in inputs.iter().enumerate() {
        let codecs = if input.has_audio {
            format!("{},{AAC_LC_CODEC}", input.video_codec)
        } else {
            input.video_codec.clone()
        };
        out.push_str(&format!(
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{codecs}\",RESOLUTION={}x{}\n",
            input.bandwidth, input.average_bandwidth, input.width, input.height
        ));
        out.push_str(&format!("media-{}/stream.m3u8\n", i + 1));
    }
    for (i, input) in inputs.iter().enumerate() {
        if let Some((peak, avg)) = input.iframes {
            out.push_str(&format!(
                "#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH={peak},AVERAGE-BANDWIDTH={avg},CODECS=\"{}\",RESOLUTION={}x{},URI=\"media-{}/iframes.m3u8\"\n",
                input.video_codec, input.width, input.height, i + 1
            ));
        }
    }
    out
}

/// `avc1.PPCCLL` from H.264 extradata: an `avcC` record (MP4) or Annex B bytes with an SPS.
pub fn avc1_codec_from_avcc(extradata: &[u8]) -> Option<String> {
    let triple = match extradata {
        [1, p, c, l, ..] => [*p, *c, *l],
        _ => annexb_sps_triple(extradata)?,
    };
    Some(format!(
        "avc1.{:02x}{:02x}{:02x}",
        triple[0], triple[1], triple[2]
    ))
}

/// The profile/constraints/level bytes following the first SPS NAL header (type 7).
fn annexb_sps_triple(bytes: &[u8]) -> Option<[u8; 3]> {
    let start = bytes
        .windows(4)
        .position(|w| w[..3] == [0, 0, 1] && w[3] & 0x1f == 7)?;
    let sps = bytes.get(start + 4..start + 7)?;
    Some([sps[0], sps[1], sps[2]])
}

/// Seconds or bits per second rounded up, as playlists state them (`as` saturates; NaN → 0).
#[allow(clippy::cast_possible_truncation)]
pub(crate) fn ceil_u64(x: f64) -> u64 {
    x.ceil().max(0.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_tags_from_extradata() {
        assert_eq!(
            avc1_codec_from_avcc(&[1, 0x4d, 0x40, 0x2a, 0xff]).as_deref(),
            Some(H264_MAIN_L42_CODEC)
        );
        let annexb = [0, 0, 0, 1, 0x67, 0x64, 0x00, 0x1f, 0xac, 0, 0, 1, 0x68];
        assert_eq!(
            avc1_codec_from_avcc(&annexb).as_deref(),
            Some("avc1.64001f")
        );
        assert_eq!(avc1_codec_from_avcc(&[0, 0, 1]), None);
        assert_eq!(avc1_codec_from_avcc(&[]), None);
    }

    #[test]
    fn variant_dirs_follow_input_order() {
        let input = HlsInput {
            path: "/a.mp4".into(),
            width: 640,
            height: 360,
            bandwidth: 1,
            average_bandwidth: 1,
            video_codec: H264_MAIN_L42_CODEC.into(),
            has_audio: false,
            iframes: None,
        };
        assert_eq!(
            hls_variant_dirs(&[input.clone(), input], "/h/"),
            ["/h/media-1", "/h/media-2"]
        );
    }
}
