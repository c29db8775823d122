//! `mediacms-worker transcode`: MediaCMS's ladder for one local file, with no services — the same
//! planner and runner the worker uses, a progress line per profile, a summary of the renditions.
//! Without an input it makes its own clip first, so `make run` shows the whole job on a fresh machine.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use tokio_util::sync::CancellationToken;

use crate::ffmpeg::probe;
use crate::ffmpeg::progress::percent;
use crate::ffmpeg::run::{self, RunSpec};
use crate::plan::{self, Backend, EncodeIo, EncodeSettings, MediaInfo, ProfileSpec};

/// MediaCMS's default encode profiles (contract §3.4): id, name, extension, resolution, codec,
/// active by default.
/// (id, name, extension, resolution, codec, active)
pub type ProfileRow = (
    i32,
    &'static str,
    &'static str,
    Option<i32>,
    Option<&'static str>,
    bool,
);

pub const DEFAULT_PROFILES: [ProfileRow; 23] = [
    (1, "preview", "gif", None, None, true),
    (23, "h264-144", "mp4", Some(144), Some("h264"), true),
    (2, "h264-240", "mp4", Some(240), Some("h264"), true),
    (3, "h264-360", "mp4", Some(360), Some("h264"), true),
    (13, "h264-480", "mp4", Some(480), Some("h264"), true),
    (10, "h264-720", "mp4", Some(720), Some("h264"), true),
    (7, "h264-1080", "mp4", Some(1080), Some("h264"), true),
    (4, "h264-1440", "mp4", Some(1440), Some("h264"), false),
    (19, "h264-2160", "mp4", Some(2160), Some("h264"), false),
    (21, "h265-240", "mp4", Some(240), Some("h265"), false),
    (18, "h265-360", "mp4", Some(360), Some("h265"), false),
    (15, "h265-480", "mp4", Some(480), Some("h265"), false),
    (12, "h265-720", "mp4", Some(720), Some("h265"), false),
    (9, "h265-1080", "mp4", Some(1080), Some("h265"), false),
    (6, "h265-1440", "mp4", Some(1440), Some("h265"), false),
    (16, "h265-2160", "mp4", Some(2160), Some("h265"), false),
    (20, "vp9-240", "webm", Some(240), Some("vp9"), false),
    (17, "vp9-360", "webm", Some(360), Some("vp9"), false),
    (14, "vp9-480", "webm", Some(480), Some("vp9"), false),
    (11, "vp9-720", "webm", Some(720), Some("vp9"), false),
    (8, "vp9-1080", "webm", Some(1080), Some("vp9"), false),
    (5, "vp9-1440", "webm", Some(1440), Some("vp9"), false),
    (22, "vp9-2160", "webm", Some(2160), Some("vp9"), false),
];

/// One requested profile.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedProfile {
    pub name: &'static str,
    pub spec: ProfileSpec,
}

/// Profiles by name or id; none requested = MediaCMS's active defaults.
pub fn select_profiles(wanted: &[String]) -> anyhow::Result<Vec<NamedProfile>> {
    let all = DEFAULT_PROFILES
        .iter()
        .map(|&(id, name, ext, res, codec, active)| {
            let spec = ProfileSpec {
                id,
                extension: ext.into(),
                resolution: res,
                codec: codec.map(Into::into),
            };
            (NamedProfile { name, spec }, active)
        });
    if wanted.is_empty() {
        return Ok(all.filter(|(_, active)| *active).map(|(p, _)| p).collect());
    }
    let all: Vec<NamedProfile> = all.map(|(p, _)| p).collect();
    wanted
        .iter()
        .map(|w| {
            all.iter()
                .find(|p| p.name == w || p.spec.id.to_string() == *w)
                .cloned()
                .with_context(|| format!("unknown profile `{w}`"))
        })
        .collect()
}

/// The clip `transcode` makes when it is given none: 8 s of 1280x720 test pattern with a tone,
/// like the uploads the tests use, so every default rung up to 720p is exercised.
pub async fn make_demo_clip(dir: &Path, ffmpeg: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let clip = dir.join("demo-clip.mp4");
    let argv = [
        "ffmpeg",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "8",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-shortest",
    ]
    .into_iter()
    .map(String::from)
    .chain([s(&clip)])
    .collect();
    eprintln!(
        "no input given: making an 8 s 1280x720 test clip, {}",
        clip.display()
    );
    run_with_bar("demo clip", ffmpeg, argv, 8.0).await?;
    eprintln!();
    Ok(clip)
}

/// One line of the summary printed after a transcode.
#[derive(Debug, Clone, PartialEq)]
pub struct RenditionRow {
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    pub duration: f64,
    pub bytes: u64,
}

/// Facts of each written file for the summary (a file that cannot be probed shows as 0x0).
pub fn describe(written: &[PathBuf]) -> Vec<RenditionRow> {
    written
        .iter()
        .map(|path| {
            let facts = probe::probe_summary(path).ok();
            RenditionRow {
                path: path.clone(),
                width: facts.as_ref().map_or(0, |f| f.width),
                height: facts.as_ref().map_or(0, |f| f.height),
                duration: facts.as_ref().map_or(0.0, |f| f.duration),
                bytes: std::fs::metadata(path).map_or(0, |m| m.len()),
            }
        })
        .collect()
}

/// The summary table: size, duration, average bitrate and path of every rendition.
pub fn summary_table(rows: &[RenditionRow]) -> String {
    let mut out = format!(
        "{:>9}  {:>6}  {:>9}  {:>8}  path\n",
        "size", "secs", "kbit/s", "bytes"
    );
    for r in rows {
        let kbps = if r.duration > 0.0 {
            r.bytes as f64 * 8.0 / r.duration / 1000.0
        } else {
            0.0
        };
        let size = format!("{}x{}", r.width, r.height);
        out += &format!(
            "{size:>9}  {:>6.2}  {kbps:>9.0}  {:>8}  {}\n",
            r.duration,
            r.bytes,
            r.path.display()
        );
    }
    out
}

/// Encode `input` with every selected profile into `out`; returns the files written.
pub async fn transcode(
    input: &Path,
    out: &Path,
    profiles: &[NamedProfile],
    ffmpeg: &str,
    settings: &EncodeSettings,
) -> anyhow::Result<Vec<PathBuf>> {
    let info_json = probe::media_file_info(input, false);
    if info_json.get("is_video").and_then(|v| v.as_bool()) != Some(true) {
        bail!(
            "{} is not a video MediaCMS would encode: {info_json}",
            input.display()
        );
    }
    let info = MediaInfo::from_json(&info_json.to_string());
    let duration = info.video_duration.unwrap_or(0.0);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let work = tempfile::tempdir_in(out).context("scratch directory")?;
    let mut written = Vec::new();
    for p in profiles {
        let target = out.join(format!("{}.{}", p.name, p.spec.extension));
        let passes = if p.spec.extension == "gif" {
            vec![plan::plan_gif(&s(input), &s(&target))]
        } else {
            let io = EncodeIo {
                input: &s(input),
                output: &s(&target),
                pass_file: &s(&work.path().join(p.name)),
                chunk: false,
            };
            match plan::plan_encode(&io, &info, &p.spec, settings, &Backend::Software) {
                Ok(plan) => plan.passes,
                Err(skip) => {
                    eprintln!("{:>10}: skipped ({skip})", p.name);
                    continue;
                }
            }
        };
        for argv in passes {
            run_with_bar(p.name, ffmpeg, argv, duration).await?;
        }
        eprintln!();
        written.push(target);
    }
    Ok(written)
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

async fn run_with_bar(
    name: &str,
    ffmpeg: &str,
    argv: Vec<String>,
    duration: f64,
) -> anyhow::Result<()> {
    let spec = RunSpec::ffmpeg(ffmpeg, argv);
    let never = CancellationToken::new();
    // A redrawn bar on a terminal; in a log (CI, `make run | tee`) only the final line.
    let live = std::io::stderr().is_terminal();
    let mut line = String::new();
    run::run(spec, &never, |p| {
        let pct = percent(p.out_time, duration);
        let speed = p.speed.map(|x| format!("{x:.2}x")).unwrap_or_default();
        line = format!("{name:>10}: {pct:>3}% {speed:>8}");
        if live {
            eprint!("\r{line}");
            let _ = std::io::stderr().flush();
        }
    })
    .await
    .with_context(|| format!("profile {name}"))?;
    if !live {
        eprint!("{line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_mediacms_active_profiles() {
        let names: Vec<&str> = select_profiles(&[])
            .unwrap()
            .iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(
            names,
            [
                "preview",
                "h264-144",
                "h264-240",
                "h264-360",
                "h264-480",
                "h264-720",
                "h264-1080"
            ]
        );
    }

    #[test]
    fn summary_shows_size_duration_and_bitrate() {
        let rows = [RenditionRow {
            path: "out/h264-240.mp4".into(),
            width: 426,
            height: 240,
            duration: 8.0,
            bytes: 300_000,
        }];
        let table = summary_table(&rows);
        let line = table.lines().nth(1).unwrap();
        assert!(line.contains("426x240"), "{table}");
        assert!(line.contains("8.00"), "{table}");
        // 300 000 bytes over 8 s = 300 kbit/s.
        assert!(line.contains(" 300 "), "{table}");
        assert!(line.ends_with("out/h264-240.mp4"), "{table}");
    }

    #[test]
    fn profiles_by_name_or_id() {
        let got = select_profiles(&["vp9-480".into(), "10".into()]).unwrap();
        assert_eq!(got[0].spec.id, 14);
        assert_eq!(got[1].name, "h264-720");
        assert!(select_profiles(&["h264-9999".into()]).is_err());
    }
}
