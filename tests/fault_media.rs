//! Fault case 5: bad and odd media generated with the real ffmpeg, each encoded by the real
//! `encode_media` handler (library level, h264-144 with the ultrafast preset) against real
//! Postgres and Redis. Each must end in a correct encode or `fail` with a readable log, within
//! a bounded time (soft limit 60 s): never a hang, never a row left `running`.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mediacms_worker::ffmpeg::probe;
use mediacms_worker::plan::extras::ffmpeg_error_is_final;
use mediacms_worker::tasks::encode_media::EncodeMedia;
use mediacms_worker::tasks::Outcome;
use serde_json::json;
use support::db::TestDb;
use support::env::{job_ctx, run_task};
use support::fault::{encode_task, encoding_row, insert_media_and_encoding, task_env, Case};
use support::media::{self, clip, ffmpeg, ClipSpec};
use support::redis::TestRedis;
use support::worker::files_under;

/// h264-144: in MINIMUM_RESOLUTIONS_TO_ENCODE, so even tiny sources get a command.
const PROFILE: i32 = 23;
const SOFT_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Success,
    Fail,
    /// ffmpeg itself fails mid-way: `fail` + log, and the task is retried once unless the log
    /// shows an error retrying cannot fix (§2.5).
    FailOrRetry,
}

fn s(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

fn small() -> ClipSpec {
    ClipSpec {
        seconds: 1.0,
        ..ClipSpec::default()
    }
}

/// Frames at irregular times: 30 fps for the first 10 frames, then every third one.
fn vfr(dir: &Path) -> PathBuf {
    let out = dir.join("vfr.mp4");
    ffmpeg(&s(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=30",
        "-t",
        "2",
        "-vf",
        "select='lt(n\\,10)+not(mod(n\\,3))'",
        "-fps_mode",
        "vfr",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        &out.to_string_lossy(),
    ]));
    out
}

/// A display-matrix rotation of 90° on an otherwise normal clip (ffmpeg 5.1's way to write it).
fn rotated(dir: &Path) -> PathBuf {
    let base = clip(dir, &small());
    let out = dir.join("rotated.mp4");
    ffmpeg(&s(&[
        "-i",
        &base.to_string_lossy(),
        "-c",
        "copy",
        "-metadata:s:v",
        "rotate=90",
        &out.to_string_lossy(),
    ]));
    out
}

fn hevc_10bit(dir: &Path) -> PathBuf {
    let out = dir.join("hevc10.mp4");
    ffmpeg(&s(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25",
        "-t",
        "1",
        "-c:v",
        "libx265",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p10le",
        "-x265-params",
        "log-level=error",
        &out.to_string_lossy(),
    ]));
    out
}

/// Marker: [`truncated_stale`]'s media_info is taken before truncation.
const STALE: &str = "stale_";

fn truncated_stale(dir: &Path) -> PathBuf {
    let whole = clip(dir, &small());
    let out = dir.join(format!("{STALE}cut.mp4"));
    std::fs::copy(&whole, &out).unwrap();
    out
}

/// Cut `path` to its first third (after its media_info was read).
fn cut(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(path, &bytes[..bytes.len() / 3]).unwrap();
}

/// The corpus: name, generator, expected end state.
type Make = fn(&Path) -> PathBuf;
fn corpus() -> Vec<(&'static str, Make, Expect)> {
    vec![
        ("zero_byte", media::zero_byte as Make, Expect::Fail),
        ("truncated_mp4", media::truncated_mp4, Expect::Fail),
        ("audio_only", media::audio_only, Expect::Fail),
        // media_info of the whole clip, then the file loses its tail (a copy cut short):
        // the planner sees a valid video and ffmpeg meets the damage.
        (
            "truncated_with_stale_info",
            truncated_stale,
            Expect::FailOrRetry,
        ),
        ("still_image", media::still_image, Expect::Fail),
        (
            "video_without_audio",
            |d| {
                clip(
                    d,
                    &ClipSpec {
                        audio: false,
                        ..small()
                    },
                )
            },
            Expect::Success,
        ),
        (
            "odd_1279x719",
            |d| {
                // libx264 needs even sizes for 4:2:0; VP9 takes odd ones, as phones produce.
                clip(
                    d,
                    &ClipSpec {
                        width: 1279,
                        height: 719,
                        seconds: 1.0,
                        codec: "vp9",
                        ..ClipSpec::default()
                    },
                )
            },
            Expect::Success,
        ),
        ("very_short_0_4s", media::very_short, Expect::Success),
        ("variable_frame_rate", vfr, Expect::Success),
        ("rotated_90", rotated, Expect::Success),
        ("hevc_10bit", hevc_10bit, Expect::Success),
        (
            "interlaced",
            |d| {
                clip(
                    d,
                    &ClipSpec {
                        interlaced: true,
                        ..small()
                    },
                )
            },
            Expect::Success,
        ),
    ]
}

/// The first video stream's pixel format, by the ffprobe CLI.
fn pix_fmt(path: &Path) -> String {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args(["stream=pix_fmt", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_odd_media_end_in_success_or_a_readable_fail_never_a_hang() {
    let case = Case::new("bad_media_corpus");
    let db = TestDb::with_upload_example().await;
    let redis = TestRedis::claim();
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("media");
    let originals = root.join("original/user/refuser");
    std::fs::create_dir_all(&originals).unwrap();
    let scratch = base.path().join("gen");
    std::fs::create_dir_all(&scratch).unwrap();
    let env = Arc::new(task_env(&db.config(), &root, &base.path().join("tmp")).await);
    let handler = EncodeMedia { env };
    let c = db.client().await;

    let mut report = vec![];
    for (i, (name, make, expect)) in corpus().into_iter().enumerate() {
        let made = make(&scratch);
        let ext = made.extension().unwrap().to_str().unwrap().to_owned();
        let rel = format!("original/user/refuser/{name}.{ext}");
        std::fs::rename(&made, root.join(&rel)).unwrap();
        let info = probe::media_file_info(&root.join(&rel), false);
        if made
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(STALE)
        {
            cut(&root.join(&rel));
        }
        let duration = info["video_duration"]
            .as_f64()
            .or(info["audio_duration"].as_f64())
            .unwrap_or(0.0)
            .round() as i32;
        let (id, token) = (200 + i as i32, format!("Bad{i}"));
        insert_media_and_encoding(&c, id, &token, &rel, &info.to_string(), duration, PROFILE).await;

        let started = Instant::now();
        let task = encode_task(&token, PROFILE, id);
        let run = run_task(&handler, &task, job_ctx(Some(SOFT_LIMIT)), &redis.url);
        let outcome = tokio::time::timeout(SOFT_LIMIT + Duration::from_secs(30), run)
            .await
            .unwrap_or_else(|_| panic!("{name}: hung past the soft limit"));
        let took = started.elapsed();
        let (status, logs) = encoding_row(&c, id)
            .await
            .unwrap_or_else(|| panic!("{name}: Encoding row vanished"));
        report.push(format!(
            "{name}: {status} in {:.1}s, outcome {outcome:?}, log {:?}",
            took.as_secs_f64(),
            logs.chars()
                .rev()
                .take(100)
                .collect::<String>()
                .chars()
                .rev()
                .collect::<String>()
        ));
        match expect {
            Expect::Success => {
                assert_eq!(status, "success", "{name}: {logs}");
                assert_eq!(outcome, Outcome::Success(json!(true)), "{name}");
                let file: String = c
                    .query_one(
                        "SELECT media_file FROM files_encoding WHERE id = $1",
                        &[&id],
                    )
                    .await
                    .unwrap()
                    .get(0);
                let kind = probe::validate_output(&root.join(&file));
                assert!(
                    kind.is_ok(),
                    "{name}: output {file} does not probe: {kind:?}"
                );
                // Browsers need 8-bit 4:2:0 whatever the source (10-bit HEVC, 4:4:4, …).
                assert_eq!(pix_fmt(&root.join(&file)), "yuv420p", "{name}");
            }
            Expect::FailOrRetry => {
                assert_eq!(status, "fail", "{name}: outcome {outcome:?}");
                assert!(logs.trim().len() >= 10, "{name}: unreadable log {logs:?}");
                // §2.5 decides from the log tail the row keeps: an error retrying cannot fix
                // ends the task (the row says `fail`); any other is retried once.
                if ffmpeg_error_is_final(&logs) {
                    assert!(
                        matches!(outcome, Outcome::Success(_)),
                        "{name}: a final ffmpeg error ends the task, got {outcome:?}"
                    );
                } else {
                    assert!(
                        matches!(outcome, Outcome::Retry { .. }),
                        "{name}: a retryable ffmpeg error is retried once, got {outcome:?}"
                    );
                }
            }
            Expect::Fail => {
                assert_eq!(status, "fail", "{name}: outcome {outcome:?}");
                assert!(
                    logs.trim().len() >= 10,
                    "{name}: a fail needs a readable log, got {logs:?}"
                );
                // The task itself ends (no retry storm for bad input).
                assert!(
                    !matches!(outcome, Outcome::Retry { .. } | Outcome::Aborted),
                    "{name}: {outcome:?}"
                );
            }
        }
    }
    for line in &report {
        println!("bad media: {line}");
    }
    // No partial or stray files: only finished outputs, one per success.
    let encoded = files_under(&root.join("encoded"));
    assert!(
        encoded
            .iter()
            .all(|f| !f.contains(".part") && !f.starts_with('.')),
        "{encoded:?}"
    );
    assert!(
        files_under(&base.path().join("tmp")).is_empty(),
        "job dirs cleaned up"
    );
    case.survived();
}
