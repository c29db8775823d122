//! In-process probe against real files made by ffmpeg: MediaCMS's `media_info` keys, order and
//! values (golden: the reference upload of `mediacms/messages/README.md`, regenerated
//! byte-identically), bad inputs per contract §5.7, output validation and the CLI summary.

mod support;

use std::path::Path;

use mediacms_worker::ffmpeg::probe::{
    md5_file, media_file_info, probe_summary, validate_output, OutputKind, ProbeError,
};
use serde_json::Value;
use support::media::{self, ClipSpec};

/// `files_media.media_info` of media 1 as the real MediaCMS 8.3.2 stored it.
const REFERENCE_720P: &str = r#"{"filename": "/home/mediacms.io/mediacms/media_files/original/user/refuser/41905ce2087146cdba79c28a24c33a9a.reference_720p.mp4", "file_size": 3096337, "video_duration": 8.0, "video_frame_rate_n": "30", "video_frame_rate_d": "1", "video_bitrate": 2946.23, "video_width": 1280, "video_height": 720, "video_codec": "h264", "has_video": true, "has_audio": true, "color_range": null, "color_space": null, "color_transfer": null, "color_primaries": null, "interlaced": false, "display_aspect_ratio": "16:9", "sample_aspect_ratio": "1:1", "audio_duration": 8.0, "audio_sample_rate": "44100", "audio_codec": "aac", "audio_bitrate": 67.72, "audio_channels": 1, "video_info": {"index": 0, "codec_name": "h264", "codec_long_name": "H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10", "profile": "High", "codec_type": "video", "codec_tag_string": "avc1", "codec_tag": "0x31637661", "width": 1280, "height": 720, "coded_width": 1280, "coded_height": 720, "closed_captions": 0, "film_grain": 0, "has_b_frames": 2, "sample_aspect_ratio": "1:1", "display_aspect_ratio": "16:9", "pix_fmt": "yuv420p", "level": 31, "chroma_location": "left", "field_order": "progressive", "refs": 1, "is_avc": "true", "nal_length_size": "4", "id": "0x1", "r_frame_rate": "30/1", "avg_frame_rate": "30/1", "time_base": "1/15360", "start_pts": 0, "start_time": "0.000000", "duration_ts": 122880, "duration": "8.000000", "bit_rate": "3016942", "bits_per_raw_sample": "8", "nb_frames": "240", "extradata_size": 47, "disposition": {"default": 1, "dub": 0, "original": 0, "comment": 0, "lyrics": 0, "karaoke": 0, "forced": 0, "hearing_impaired": 0, "visual_impaired": 0, "clean_effects": 0, "attached_pic": 0, "timed_thumbnails": 0, "captions": 0, "descriptions": 0, "metadata": 0, "dependent": 0, "still_image": 0}, "tags": {"language": "und", "handler_name": "VideoHandler", "vendor_id": "[0][0][0][0]", "encoder": "Lavc59.37.100 libx264"}}, "audio_info": {"index": 1, "codec_name": "aac", "codec_long_name": "AAC (Advanced Audio Coding)", "profile": "LC", "codec_type": "audio", "codec_tag_string": "mp4a", "codec_tag": "0x6134706d", "sample_fmt": "fltp", "sample_rate": "44100", "channels": 1, "channel_layout": "mono", "bits_per_sample": 0, "id": "0x2", "r_frame_rate": "0/0", "avg_frame_rate": "0/0", "time_base": "1/44100", "start_pts": 0, "start_time": "0.000000", "duration_ts": 352800, "duration": "8.000000", "bit_rate": "69344", "nb_frames": "346", "extradata_size": 5, "disposition": {"default": 1, "dub": 0, "original": 0, "comment": 0, "lyrics": 0, "karaoke": 0, "forced": 0, "hearing_impaired": 0, "visual_impaired": 0, "clean_effects": 0, "attached_pic": 0, "timed_thumbnails": 0, "captions": 0, "descriptions": 0, "metadata": 0, "dependent": 0, "still_image": 0}, "tags": {"language": "und", "handler_name": "SoundHandler", "vendor_id": "[0][0][0][0]"}}, "is_video": true, "md5sum": "bc434f97e9b0458efaaf75271d504588"}"#;

/// ffprobe keys the in-process probe leaves out (they need an opened decoder; documented in
/// `stream_info.rs`).
const SKIPPED_STREAM_KEYS: [&str; 7] = [
    "coded_width",
    "coded_height",
    "closed_captions",
    "film_grain",
    "refs",
    "is_avc",
    "nal_length_size",
];

fn keys(v: &Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn reference_upload_matches_mediacms_media_info() {
    let dir = tempdir();
    let path = dir.path().join("reference_720p.mp4");
    // The exact command of messages/README.md; Debian's ffmpeg 5.1 reproduces the bytes.
    media::ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440",
            "-t",
            "8",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            &path.to_string_lossy(),
        ]
        .map(String::from),
    );
    let mut expected: Value = serde_json::from_str(REFERENCE_720P).unwrap();
    let got = media_file_info(&path, true);
    assert_eq!(
        got["md5sum"], expected["md5sum"],
        "regenerated file differs from the reference"
    );
    expected["filename"] = Value::String(path.to_string_lossy().into_owned());
    assert_eq!(keys(&got), keys(&expected), "top-level keys and order");
    for (key, want) in expected.as_object().unwrap() {
        if key == "video_info" || key == "audio_info" {
            continue;
        }
        assert_eq!(&got[key], want, "media_info.{key}");
    }
    for section in ["video_info", "audio_info"] {
        let want = expected[section].as_object().unwrap();
        let have = got[section].as_object().unwrap();
        let want_keys: Vec<&String> = want
            .keys()
            .filter(|k| !SKIPPED_STREAM_KEYS.contains(&k.as_str()))
            .collect();
        let have_keys: Vec<&String> = have.keys().collect();
        assert_eq!(have_keys, want_keys, "{section} keys and order");
        for (k, v) in have {
            assert_eq!(v, &want[k], "{section}.{k}");
        }
    }
}

#[test]
fn small_clip_has_expected_values_and_md5() {
    let dir = tempdir();
    let path = media::clip(dir.path(), &ClipSpec::default());
    let info = media_file_info(&path, true);
    assert_eq!(info["filename"], path.to_string_lossy().as_ref());
    assert_eq!(info["file_size"], std::fs::metadata(&path).unwrap().len());
    assert_eq!(info["video_duration"], 2.0);
    assert_eq!(info["video_frame_rate_n"], "25");
    assert_eq!(info["video_frame_rate_d"], "1");
    assert_eq!(
        (info["video_width"].clone(), info["video_height"].clone()),
        (320.into(), 240.into())
    );
    assert_eq!(info["video_codec"], "h264");
    assert_eq!(info["has_audio"], true);
    assert_eq!(info["interlaced"], false);
    assert_eq!(info["audio_channels"], 2);
    assert_eq!(info["audio_sample_rate"], "44100");
    assert_eq!(info["audio_codec"], "aac");
    assert!(info["video_bitrate"].as_f64().unwrap() > 0.0);
    assert_eq!(info["is_video"], true);
    let cli = std::process::Command::new("md5sum")
        .arg(&path)
        .output()
        .unwrap();
    let cli = String::from_utf8(cli.stdout).unwrap();
    assert_eq!(info["md5sum"], cli.split_whitespace().next().unwrap());
    assert_eq!(md5_file(&path).unwrap(), info["md5sum"]);
    assert_eq!(
        media_file_info(&path, false)["md5sum"],
        "",
        "md5 is optional for outputs"
    );
}

#[test]
fn interlaced_and_silent_clips() {
    let dir = tempdir();
    let spec = ClipSpec {
        interlaced: true,
        audio: false,
        ..ClipSpec::default()
    };
    let info = media_file_info(&media::clip(dir.path(), &spec), false);
    assert_eq!(info["interlaced"], true);
    assert_eq!(info["video_info"]["field_order"], "tt");
    assert_eq!(info["has_audio"], false);
    assert!(
        info.get("audio_duration").is_none(),
        "audio_* keys only with audio"
    );
    assert_eq!(info["audio_info"], serde_json::json!({}));
    let mpeg2 = ClipSpec {
        interlaced: true,
        codec: "mpeg2",
        ..ClipSpec::default()
    };
    let summary = probe_summary(&media::clip(dir.path(), &mpeg2)).unwrap();
    assert!(summary.interlaced);
    assert!(summary.has_audio);
}

#[test]
fn webm_duration_from_tags_and_bitrate_from_packets() {
    let dir = tempdir();
    let spec = ClipSpec {
        codec: "vp9",
        ..ClipSpec::default()
    };
    let info = media_file_info(&media::clip(dir.path(), &spec), false);
    assert_eq!(info["video_codec"], "vp9");
    assert!(
        info["video_info"].get("duration").is_none(),
        "webm streams carry no duration"
    );
    let d = info["video_duration"].as_f64().unwrap();
    assert!((d - 2.0).abs() < 0.1, "duration from the DURATION tag: {d}");
    assert!(
        info["video_bitrate"].as_f64().unwrap() > 0.0,
        "bitrate from packet sizes"
    );
    assert_eq!(info["audio_codec"], "opus");
}

#[test]
fn audio_only_reports_audio_like_mediacms() {
    let dir = tempdir();
    let info = media_file_info(&media::audio_only(dir.path()), true);
    assert_eq!(keys(&info), ["is_video", "is_audio", "audio_info"]);
    assert_eq!(info["is_video"], false);
    assert_eq!(info["is_audio"], true);
    assert_eq!(info["audio_info"]["codec_name"], "aac");
    assert_eq!(info["audio_info"]["channels"], 2);
}

#[test]
fn bad_inputs_fail_like_mediacms() {
    let dir = tempdir();
    let d = dir.path();
    let fail = serde_json::json!({"fail": true});
    for path in [
        media::zero_byte(d),
        media::truncated_mp4(d),
        media::garbage(d),
        media::still_image(d),
        d.join("missing.mp4"),
        d.to_path_buf(),
    ] {
        assert_eq!(media_file_info(&path, true), fail, "{}", path.display());
    }
    let short = media_file_info(&media::very_short(d), false);
    assert_eq!(short["is_video"], true);
    assert!((short["video_duration"].as_f64().unwrap() - 0.4).abs() < 0.05);
}

#[test]
fn validate_output_accepts_video_and_audio_only() {
    let dir = tempdir();
    let d = dir.path();
    assert_eq!(
        validate_output(&media::clip(d, &ClipSpec::default())).unwrap(),
        OutputKind::Video
    );
    assert_eq!(
        validate_output(&media::audio_only(d)).unwrap(),
        OutputKind::Audio
    );
    assert!(matches!(
        validate_output(&media::zero_byte(d)),
        Err(ProbeError::Empty { .. })
    ));
    assert!(matches!(
        validate_output(&media::truncated_mp4(d)),
        Err(ProbeError::Unreadable { .. })
    ));
    assert!(matches!(
        validate_output(&media::still_image(d)),
        Err(ProbeError::NotMedia { .. })
    ));
    assert!(matches!(
        validate_output(Path::new("/nonexistent.mp4")),
        Err(ProbeError::Missing { .. })
    ));
}

#[test]
fn summary_reports_shape_rate_and_rotation() {
    let dir = tempdir();
    let d = dir.path();
    let spec = ClipSpec {
        width: 256,
        height: 144,
        fps: 30,
        ..ClipSpec::default()
    };
    let clip = media::clip(d, &spec);
    let s = probe_summary(&clip).unwrap();
    assert_eq!(
        (s.width, s.height, s.has_video, s.has_audio),
        (256, 144, true, true)
    );
    assert_eq!(s.fps, Some(30.0));
    assert!((s.duration - 2.0).abs() < 0.1, "{}", s.duration);
    assert_eq!((s.interlaced, s.rotation), (false, 0));
    let rotated = d.join("rotated.mp4");
    media::ffmpeg(
        &[
            "-i",
            &clip.to_string_lossy(),
            "-c",
            "copy",
            "-metadata:s:v:0",
            "rotate=90",
            &rotated.to_string_lossy(),
        ]
        .map(String::from),
    );
    let r = probe_summary(&rotated).unwrap();
    // Same angle convention as the ffmpeg CLI's autorotate; coded size stays unrotated.
    assert!(
        r.rotation == 90 || r.rotation == 270,
        "rotation {}",
        r.rotation
    );
    assert_eq!((r.width, r.height), (256, 144));
    let audio = probe_summary(&media::audio_only(d)).unwrap();
    assert_eq!(
        (audio.has_video, audio.has_audio, audio.width),
        (false, true, 0)
    );
}
