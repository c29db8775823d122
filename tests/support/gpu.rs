//! The GPU rig of `tests/gpu_fallback.rs`: one encode site (database, Redis DB, media root)
//! whose FFMPEG_COMMAND is `tests/fake_gpu_ffmpeg.py` in a chosen failure mode, with the
//! capabilities of a probed NVIDIA node, plus readers for what the fake saw and what the job left.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::db::TestDb;
use super::env::{job_ctx, real_message, run_task, task_env, EnvOptions};
use super::redis::TestRedis;
use mediacms_worker::config::HwAccel;
use mediacms_worker::ffmpeg::caps::{BackendReport, Capabilities, Family, FeatureReport};
use mediacms_worker::plan::Backend;
use mediacms_worker::tasks::accel::Accel;
use mediacms_worker::tasks::encode_media::EncodeMedia;
use mediacms_worker::tasks::env::TaskEnv;
use mediacms_worker::tasks::Outcome;

pub const UID: &str = "41905ce2087146cdba79c28a24c33a9a";
const FAKE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fake_gpu_ffmpeg.py");

/// What the original upload is.
#[derive(Clone, Copy, PartialEq)]
pub enum Source {
    Avc8Bit,
    High10,
    /// The first third of an mp4 whose `moov` is at the end: unreadable by any demuxer.
    Truncated,
}

/// One encode site: its own database, Redis DB, media root, fake ffmpeg and call log.
pub struct Rig {
    pub db: TestDb,
    redis: TestRedis,
    pub root: tempfile::TempDir,
    pub env: Arc<TaskEnv>,
    pub calls: PathBuf,
}

/// An NVIDIA node whose probe passed on every listed CUDA device (a `-` suffix: no NVENC on
/// it, like an H100).
pub fn nvidia_caps(devices: &[&str]) -> Capabilities {
    let probed = |name: &str, works: bool| FeatureReport {
        name: name.into(),
        works,
        reason: (!works).then(|| "No capable devices found".into()),
    };
    let features = ["device", "nvdec", "scale_cuda", "yadif_cuda", "h264_nvenc"];
    Capabilities {
        ffmpeg: FAKE.into(),
        ffmpeg_version: "ffmpeg version 5.1.9-0+deb12u1 (fake GPU)".into(),
        hwaccel: HwAccel::Nvenc,
        backends: devices
            .iter()
            .map(|d| {
                let nvenc = !d.ends_with('-');
                BackendReport {
                    family: Family::Nvidia,
                    device: d.trim_end_matches('-').to_string(),
                    features: features
                        .iter()
                        .map(|f| probed(f, nvenc || !f.ends_with("_nvenc")))
                        .collect(),
                }
            })
            .collect(),
        probe_ms: 0,
    }
}

pub fn nvenc(device: &str) -> Backend {
    Backend::Nvenc {
        device: device.into(),
    }
}

fn make_original(root: &Path, source: Source) {
    let dir = root.join("original/user/refuser");
    std::fs::create_dir_all(&dir).unwrap();
    let target = dir.join(format!("{UID}.reference_720p.mp4"));
    let pix_fmt = match source {
        Source::High10 => "yuv420p10le",
        _ => "yuv420p",
    };
    let args: Vec<String> = [
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100",
        "-t",
        "2",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        pix_fmt,
        "-c:a",
        "aac",
        "-ac",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([target.to_string_lossy().into_owned()])
    .collect();
    super::media::ffmpeg(&args);
    if source == Source::Truncated {
        let bytes = std::fs::read(&target).unwrap();
        std::fs::write(&target, &bytes[..bytes.len() / 3]).unwrap();
    }
}

/// `sh` wrapper so each test has its own mode and call log (tests share one process env).
fn fake_ffmpeg(dir: &Path, mode: &str, calls: &Path, sw_delay: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("ffmpeg");
    let script = format!(
        "#!/bin/sh\nFAKE_GPU_MODE={mode} FAKE_GPU_LOG='{}' FAKE_GPU_SW_DELAY={sw_delay} \
         exec python3 '{FAKE}' \"$@\"\n",
        calls.display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

pub async fn rig(mode: &str, source: Source, devices: &[&str], hwaccel: HwAccel) -> Rig {
    let db = TestDb::with_upload_example().await;
    let redis = TestRedis::claim();
    let root = tempfile::tempdir().unwrap();
    db.rebase_media_root(root.path()).await;
    make_original(root.path(), source);
    if source == Source::High10 {
        // What MediaCMS's ffprobe stores for a High 10 upload.
        db.client()
            .await
            .execute(
                "UPDATE files_media SET media_info = jsonb_set(jsonb_set(media_info::jsonb, \
                 '{video_info,pix_fmt}', '\"yuv420p10le\"'), '{video_info,profile}', \
                 '\"High 10\"')::text WHERE friendly_token = '2SJorQ1Qe'",
                &[],
            )
            .await
            .unwrap();
    }
    let calls = root.path().join("ffmpeg-calls.jsonl");
    let program = fake_ffmpeg(root.path(), mode, &calls, "1");
    let temp = root.path().join("tmp");
    let opts = EnvOptions::default();
    let mut env = task_env(&db.config(), root.path(), &temp, opts).await;
    env.ffmpeg.program = program.to_string_lossy().into_owned();
    if hwaccel != HwAccel::Software {
        env.accel = Accel::new(nvidia_caps(devices), hwaccel, 1, Duration::from_secs(600));
    }
    Rig {
        db,
        redis,
        root,
        env: Arc::new(env),
        calls,
    }
}

/// Every ffmpeg call the fake saw: (hardware?, argv joined).
pub fn calls(rig: &Rig) -> Vec<(bool, String)> {
    let text = std::fs::read_to_string(&rig.calls).unwrap_or_default();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let argv: Vec<String> = serde_json::from_value(v["argv"].clone()).unwrap();
            (v["hardware"].as_bool().unwrap(), argv.join(" "))
        })
        .collect()
}

/// Runs `encode_media-1` (h264-144, Encoding 1); while it runs, records the free slots on
/// GPU 0 as soon as a software ffmpeg call has started (the fake holds it for 1 s).
pub async fn encode(rig: &Rig) -> (Outcome, Option<usize>) {
    let handler = EncodeMedia {
        env: rig.env.clone(),
    };
    let task = real_message("encode_media-1.json");
    let done = AtomicBool::new(false);
    let run = async {
        let outcome = run_task(&handler, &task, job_ctx(None), &rig.redis.url).await;
        done.store(true, Ordering::SeqCst);
        outcome
    };
    let watch = async {
        while !done.load(Ordering::SeqCst) {
            if calls(rig).iter().any(|(hw, _)| !hw) {
                return Some(rig.env.accel.free_slots("0"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    };
    tokio::join!(run, watch)
}

/// The Encoding row: (status, logs, commands).
pub async fn row(rig: &Rig) -> (String, String, String) {
    let r = rig
        .db
        .client()
        .await
        .query_one(
            "SELECT status, logs, commands FROM files_encoding WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

pub fn fallbacks(rig: &Rig) -> Vec<String> {
    rig.env
        .metrics
        .encode_text()
        .lines()
        .filter(|l| l.starts_with("mediacms_worker_hw_fallbacks_total{"))
        .map(String::from)
        .collect()
}
