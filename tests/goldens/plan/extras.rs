//! gif, sprites, concat, HLS and the final-error test, as literal argv/text.

use mediacms_worker::plan::hls::H264_MAIN_L42_CODEC;
use mediacms_worker::plan::{
    concat_list, ffmpeg_error_is_final, ffmpeg_reported_empty, gif_seek_past_end, hls_variant_dirs,
    iframe_playlist, iframe_rates, master_playlist, plan_concat, plan_gif, plan_gif_from_start,
    plan_hls, plan_sprite_frames, plan_sprite_strip, sprite_frame_count, HlsInput, IframeEntry,
};

use super::common::sv;

#[test]
fn gif_matches_section_2_2() {
    let expected = "ffmpeg -y -ss 3 -i /m/orig.mp4 -hide_banner -vf scale=344:-1:flags=lanczos,fps=1 -t 25 -f gif /tmp/tmpab.gif";
    assert_eq!(plan_gif("/m/orig.mp4", "/tmp/tmpab.gif"), sv(expected));
}

/// Regression (issue 15): MediaCMS's `-ss 3` left clips of 3 s or less without a preview.
#[test]
fn no_preview_gif_for_clips_shorter_than_the_3s_seek_plan() {
    let expected = "ffmpeg -y -i /m/orig.mp4 -hide_banner -vf scale=344:-1:flags=lanczos,fps=1 -t 25 -f gif /tmp/tmpab.gif";
    assert_eq!(
        plan_gif_from_start("/m/orig.mp4", "/tmp/tmpab.gif"),
        sv(expected)
    );
    for short in [0.4, 2.0, 3.0] {
        assert!(gif_seek_past_end(Some(short)), "{short}");
    }
    // MediaCMS's argv stays wherever it can work, and when the duration is unknown.
    for other in [Some(3.04), Some(8.0), Some(0.0), None] {
        assert!(!gif_seek_past_end(other), "{other:?}");
    }
    assert!(ffmpeg_reported_empty(
        "Output file is empty, nothing was encoded (check -ss / -t / -frames parameters if used)"
    ));
    assert!(!ffmpeg_reported_empty("video:37kB audio:0kB"));
}

#[test]
fn sprite_frames_match_section_5_2() {
    let expected = [
        "ffmpeg",
        "-i",
        "/m/orig.mp4",
        "-f",
        "image2",
        "-vf",
        "fps=1/10, scale=160:90",
        "/tmp/d/img%03d.jpg",
    ];
    assert_eq!(
        plan_sprite_frames("/m/orig.mp4", "/tmp/d/img%03d.jpg", 10),
        expected
    );
}

#[test]
fn sprite_strip_tiles_exactly_the_frames_fps_emits() {
    // The 310 s reference media: 31 frames, MediaCMS's strip was 160x2790.
    let n = sprite_frame_count(310.0, 10);
    assert_eq!(n, 31);
    let expected = "ffmpeg -y -i /m/long.mp4 -vf fps=1/10,scale=160:90,tile=1x31 -frames:v 1 -update 1 -q:v 2 /tmp/d/sprites.jpg";
    assert_eq!(
        plan_sprite_strip("/m/long.mp4", "/tmp/d/sprites.jpg", 10, n),
        sv(expected)
    );
    // The 8 s reference media and a 12 s clip both give one frame (not ceil(12/10) = 2).
    assert_eq!(
        (sprite_frame_count(8.0, 10), sprite_frame_count(12.0, 10)),
        (1, 1)
    );
}

#[test]
fn concat_matches_section_2_6() {
    let expected = "ffmpeg -y -f concat -safe 0 -i /tmp/x/tmpl.txt -c copy -pix_fmt yuv420p -movflags faststart /tmp/x/tmpo.mp4";
    assert_eq!(
        plan_concat("/tmp/x/tmpl.txt", "/tmp/x/tmpo.mp4"),
        sv(expected)
    );
    let chunks = [
        "/m/encoded/23/u/h.00_x_h.a.mkv.mp4".to_string(),
        "/m/encoded/23/u/h.01_x_h.a.mkv.mp4".to_string(),
    ];
    assert_eq!(
        concat_list(&chunks),
        "file /m/encoded/23/u/h.00_x_h.a.mkv.mp4\nfile /m/encoded/23/u/h.01_x_h.a.mkv.mp4\n"
    );
}

fn rendition(path: &str, w: u32, h: u32, peak: u64, avg: u64) -> HlsInput {
    HlsInput {
        path: path.into(),
        width: w,
        height: h,
        bandwidth: peak,
        average_bandwidth: avg,
        video_codec: H264_MAIN_L42_CODEC.into(),
        has_audio: true,
        iframes: None,
    }
}

#[test]
fn hls_commands_and_master_follow_the_bento4_layout() {
    let inputs = [
        rendition("/m/e/23/a.mp4", 256, 144, 250000, 200000),
        rendition("/m/e/10/a.mp4", 1280, 720, 3900000, 2900000),
    ];
    let out = "/m/hls/41905ce2087146cdba79c28a24c33a9a";
    let cmds = plan_hls(&inputs, out);
    let expected = |n: usize, input: &str| {
        sv(&format!("ffmpeg -y -i {input} -map 0:v:0 -map 0:a:0? -c copy -f hls -hls_time 4 -hls_playlist_type vod -hls_list_size 0 -hls_segment_type mpegts -hls_segment_filename {out}/media-{n}/segment-%d.ts {out}/media-{n}/stream.m3u8"))
    };
    assert_eq!(
        cmds,
        vec![expected(1, "/m/e/23/a.mp4"), expected(2, "/m/e/10/a.mp4")]
    );
    assert_eq!(
        hls_variant_dirs(&inputs, out),
        [format!("{out}/media-1"), format!("{out}/media-2")]
    );
    let master = "#EXTM3U\n#EXT-X-VERSION:4\n\
        #EXT-X-STREAM-INF:BANDWIDTH=250000,AVERAGE-BANDWIDTH=200000,CODECS=\"avc1.4d402a,mp4a.40.2\",RESOLUTION=256x144\nmedia-1/stream.m3u8\n\
        #EXT-X-STREAM-INF:BANDWIDTH=3900000,AVERAGE-BANDWIDTH=2900000,CODECS=\"avc1.4d402a,mp4a.40.2\",RESOLUTION=1280x720\nmedia-2/stream.m3u8\n";
    assert_eq!(master_playlist(&inputs), master);
}

#[test]
fn only_the_three_real_ffmpeg_errors_are_final() {
    let tail =
        "[mp4 @ 0x1] moov atom not found\n/m/x.mp4: Invalid data found when processing input\n";
    assert!(ffmpeg_error_is_final(tail));
    assert!(ffmpeg_error_is_final(
        "Output file is empty, nothing was encoded (check -ss / -t / -frames parameters if used)"
    ));
    assert!(ffmpeg_error_is_final(
        "[NULL @ 0x1] Unable to find a suitable output format for '/tmp/x.zzz'"
    ));
    assert!(!ffmpeg_error_is_final(
        "Error while opening encoder for output stream #0:0"
    ));
}

/// Regression (issue 15): `hls_info` had no `<res>_iframe` keys (Bento4 writes I-frame playlists).
#[test]
fn hls_info_had_no_iframe_playlists() {
    let entries = [
        IframeEntry {
            segment: "segment-0.ts".into(),
            offset: 564,
            length: 20304,
            duration: 4.0,
        },
        IframeEntry {
            segment: "segment-1.ts".into(),
            offset: 376,
            length: 18236,
            duration: 3.5,
        },
    ];
    assert_eq!(
        iframe_playlist(&entries),
        "#EXTM3U\n#EXT-X-VERSION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-I-FRAMES-ONLY\n\
         #EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:0\n\
         #EXTINF:4.000000,\n#EXT-X-BYTERANGE:20304@564\nsegment-0.ts\n\
         #EXTINF:3.500000,\n#EXT-X-BYTERANGE:18236@376\nsegment-1.ts\n#EXT-X-ENDLIST\n"
    );
    assert_eq!(iframe_rates(&entries), (41683, 41110));
    let mut input = rendition("/m/e/23/a.mp4", 256, 144, 250000, 200000);
    input.iframes = Some(iframe_rates(&entries));
    let master = master_playlist(&[input]);
    assert!(master.ends_with(
        "media-1/stream.m3u8\n#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=41683,AVERAGE-BANDWIDTH=41110,CODECS=\"avc1.4d402a\",RESOLUTION=256x144,URI=\"media-1/iframes.m3u8\"\n"
    ), "{master}");
}
