//! Test media made with the real ffmpeg CLI from lavfi sources: tiny clips of a chosen shape,
//! plus the bad inputs MediaCMS meets (empty, truncated, audio-only, still image, very short).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Shape of a generated clip. `codec`: `h264` (mp4), `h265` (mp4), `vp9` (webm), `mpeg2` (mpg).
#[derive(Debug, Clone)]
pub struct ClipSpec {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub seconds: f64,
    pub audio: bool,
    pub interlaced: bool,
    pub codec: &'static str,
}

impl Default for ClipSpec {
    fn default() -> Self {
        Self {
            width: 320,
            height: 240,
            fps: 25,
            seconds: 2.0,
            audio: true,
            interlaced: false,
            codec: "h264",
        }
    }
}

/// Runs `ffmpeg -v error -y <args>` and panics with its stderr if it fails.
pub fn ffmpeg(args: &[String]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg must be installed for these tests");
    assert!(
        out.status.success(),
        "ffmpeg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| (*a).to_owned()).collect()
}

fn codec_args(spec: &ClipSpec) -> (Vec<String>, &'static str) {
    match spec.codec {
        "h264" => {
            let mut a = s(&[
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-pix_fmt",
                "yuv420p",
            ]);
            if spec.interlaced {
                a.extend(s(&[
                    "-flags",
                    "+ildct+ilme",
                    "-x264-params",
                    "interlaced=1",
                ]));
            }
            (a, "mp4")
        }
        "h265" => (
            s(&[
                "-c:v",
                "libx265",
                "-preset",
                "ultrafast",
                "-x265-params",
                "log-level=error",
            ]),
            "mp4",
        ),
        "vp9" => (
            s(&[
                "-c:v",
                "libvpx-vp9",
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
                "-b:v",
                "200k",
            ]),
            "webm",
        ),
        "mpeg2" => {
            let mut a = s(&["-c:v", "mpeg2video"]);
            if spec.interlaced {
                a.extend(s(&["-flags", "+ildct+ilme", "-top", "1"]));
            }
            (a, "mpg")
        }
        other => panic!("unknown test codec {other}"),
    }
}

/// Generates a clip into `dir` and returns its path (name encodes the shape, so it is unique
/// per spec within one directory).
pub fn clip(dir: &Path, spec: &ClipSpec) -> PathBuf {
    let (codec, ext) = codec_args(spec);
    let name = format!(
        "clip_{}x{}_{}fps_{}s_{}{}{}.{ext}",
        spec.width,
        spec.height,
        spec.fps,
        spec.seconds,
        spec.codec,
        if spec.audio { "_a" } else { "" },
        if spec.interlaced { "_i" } else { "" },
    );
    let out = dir.join(name);
    let video = format!(
        "testsrc2=size={}x{}:rate={}",
        spec.width, spec.height, spec.fps
    );
    let mut args = s(&["-f", "lavfi", "-i", &video]);
    if spec.audio {
        args.extend(s(&[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
        ]));
    }
    args.extend(s(&["-t", &spec.seconds.to_string()]));
    if spec.interlaced {
        args.extend(s(&["-vf", "setfield=tff"]));
    }
    args.extend(codec);
    if spec.audio {
        let audio = match ext {
            "webm" => "libopus",
            "mpg" => "mp2",
            _ => "aac",
        };
        args.extend(s(&["-c:a", audio, "-ac", "2"]));
    }
    args.push(out.to_string_lossy().into_owned());
    ffmpeg(&args);
    out
}

/// A small clip (320x180, 1 s) uploaded as the reference user's: written under
/// `root/original/user/refuser/`; returns its `media_file` path relative to `root` and its
/// `media_info` JSON.
pub fn small_upload(root: &Path) -> (String, String) {
    let originals = root.join("original/user/refuser");
    std::fs::create_dir_all(&originals).unwrap();
    let spec = ClipSpec {
        width: 320,
        height: 180,
        seconds: 1.0,
        ..ClipSpec::default()
    };
    let made = clip(&originals, &spec);
    let rel = format!(
        "original/user/refuser/{}",
        made.file_name().unwrap().to_str().unwrap()
    );
    let info = mediacms_worker::ffmpeg::probe::media_file_info(&made, false).to_string();
    (rel, info)
}

/// An empty file with a video extension.
pub fn zero_byte(dir: &Path) -> PathBuf {
    let out = dir.join("empty.mp4");
    std::fs::write(&out, b"").unwrap();
    out
}

/// The first third of an mp4 whose `moov` atom sits at the end: unreadable by any demuxer.
pub fn truncated_mp4(dir: &Path) -> PathBuf {
    let whole = clip(dir, &ClipSpec::default());
    let bytes = std::fs::read(&whole).unwrap();
    let out = dir.join("truncated.mp4");
    std::fs::write(&out, &bytes[..bytes.len() / 3]).unwrap();
    out
}

/// Random-looking bytes with an mp4 name: "Invalid data found when processing input".
pub fn garbage(dir: &Path) -> PathBuf {
    let out = dir.join("garbage.mp4");
    let bytes: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&out, bytes).unwrap();
    out
}

/// 2 s of AAC stereo in an m4a.
pub fn audio_only(dir: &Path) -> PathBuf {
    let out = dir.join("audio.m4a");
    ffmpeg(&s(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100",
        "-t",
        "2",
        "-c:a",
        "aac",
        "-ac",
        "2",
        &out.to_string_lossy(),
    ]));
    out
}

/// One 320x240 JPEG frame.
pub fn still_image(dir: &Path) -> PathBuf {
    let out = dir.join("still.jpg");
    ffmpeg(&s(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240",
        "-frames:v",
        "1",
        &out.to_string_lossy(),
    ]));
    out
}

/// A 0.4 s clip with audio (shorter than one second: progress and sprites edge cases).
pub fn very_short(dir: &Path) -> PathBuf {
    clip(
        dir,
        &ClipSpec {
            seconds: 0.4,
            ..ClipSpec::default()
        },
    )
}
