//! The hardware paths of `encode_media` without a GPU: `tests/fake_gpu_ffmpeg.py` stands in for
//! FFMPEG_COMMAND, failing hardware argv exactly as FFmpeg 5.1.9 does for each failure mode (or,
//! in mode `works`, running them as software on the real ffmpeg, with NVDEC's real input limit
//! kept), while real Postgres, Redis and ffmpeg do the rest. The capabilities are those of a
//! probed NVIDIA node (no probe can pass here). Asserts the Encoding row, its log, the device's
//! health, the hardware slots and the fallback metric for every failure class.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mediacms_worker::config::HwAccel;
use mediacms_worker::ffmpeg::caps::{BackendReport, Capabilities, Family, FeatureReport};
use mediacms_worker::plan::Backend;
use mediacms_worker::tasks::encode_media::EncodeMedia;
use mediacms_worker::tasks::env::{Accel, TaskEnv};
use mediacms_worker::tasks::{Outcome, TaskHandler};
use serde_json::json;
use support::db::TestDb;
use support::env::{job_ctx, real_message, task_env, EnvOptions};
use support::redis::TestRedis;

const UID: &str = "41905ce2087146cdba79c28a24c33a9a";
const FAKE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fake_gpu_ffmpeg.py");

/// What the original upload is.
#[derive(Clone, Copy, PartialEq)]
enum Source {
    Avc8Bit,
    High10,
    /// The first third of an mp4 whose `moov` is at the end: unreadable by any demuxer.
    Truncated,
}

/// One encode site: its own database, Redis DB, media root, fake ffmpeg and call log.
struct Rig {
    db: TestDb,
    _redis: TestRedis,
    root: tempfile::TempDir,
    env: Arc<TaskEnv>,
    calls: PathBuf,
}

/// An NVIDIA node whose probe passed on every listed CUDA device.
fn nvidia_caps(devices: &[&str]) -> Capabilities {
    let works = |name: &str| FeatureReport {
        name: name.into(),
        works: true,
        reason: None,
    };
    let features = ["device", "nvdec", "scale_cuda", "yadif_cuda", "h264_nvenc"];
    Capabilities {
        ffmpeg: FAKE.into(),
        ffmpeg_version: "ffmpeg version 5.1.9-0+deb12u1 (fake GPU)".into(),
        hwaccel: HwAccel::Nvenc,
        backends: devices
            .iter()
            .map(|d| BackendReport {
                family: Family::Nvidia,
                device: d.to_string(),
                features: features.iter().map(|f| works(f)).collect(),
            })
            .collect(),
        probe_ms: 0,
    }
}

fn nvenc(device: &str) -> Backend {
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
    support::media::ffmpeg(&args);
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

async fn rig(mode: &str, source: Source, devices: &[&str], hwaccel: HwAccel) -> Rig {
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
    let mut env = task_env(&db.config(), &redis.url, root.path(), &temp, opts).await;
    env.ffmpeg.program = program.to_string_lossy().into_owned();
    if hwaccel != HwAccel::Software {
        env.accel = Accel::new(nvidia_caps(devices), hwaccel, 1, Duration::from_secs(600));
    }
    Rig {
        db,
        _redis: redis,
        root,
        env: Arc::new(env),
        calls,
    }
}

/// Every ffmpeg call the fake saw: (hardware?, argv joined).
fn calls(rig: &Rig) -> Vec<(bool, String)> {
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
async fn encode(rig: &Rig) -> (Outcome, Option<usize>) {
    let handler = EncodeMedia {
        env: rig.env.clone(),
    };
    let task = real_message("encode_media-1.json");
    let done = AtomicBool::new(false);
    let run = async {
        let outcome = handler.run(&task, job_ctx(None)).await;
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
async fn row(rig: &Rig) -> (String, String, String) {
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

fn fallbacks(rig: &Rig) -> Vec<String> {
    rig.env
        .metrics
        .encode_text()
        .lines()
        .filter(|l| l.starts_with("mediacms_worker_hw_fallbacks_total{"))
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_10_on_a_working_nvenc_uploads_and_succeeds_with_no_health_change() {
    let rig = rig("works", Source::High10, &["0"], HwAccel::Nvenc).await;
    let (outcome, _) = encode(&rig).await;
    assert_eq!(outcome, Outcome::Success(json!(true)));
    let (status, logs, commands) = row(&rig).await;
    assert_eq!(status, "success", "{logs}");
    assert!(!logs.contains("[mediacms-worker]"), "no fallback: {logs}");
    assert!(commands.contains("'h264_nvenc'"), "{commands}");
    assert!(commands.contains("hwupload_cuda=device=0"), "{commands}");
    assert!(
        !commands.contains("-hwaccel"),
        "software decode: {commands}"
    );
    // One ffmpeg call, the hardware one: NVDEC was never asked to decode High 10.
    let calls = calls(&rig);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].0 && calls[0].1.contains("-gpu 0"), "{calls:?}");
    assert_eq!(rig.env.accel.unhealthy_reason(&nvenc("0")), None);
    assert_eq!(rig.env.accel.free_slots("0"), 1, "the slot is back");
    assert!(fallbacks(&rig).is_empty(), "{:?}", fallbacks(&rig));
    assert!(rig
        .root
        .path()
        .join(format!(
            "encoded/23/refuser/{UID}.{UID}.reference_720p.mp4.mp4"
        ))
        .is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_unsupported_upload_does_not_lock_the_gpu_out_or_keep_its_slot() {
    let rig = rig("unsupported_input", Source::Avc8Bit, &["0"], HwAccel::Nvenc).await;
    let (outcome, free_during_software) = encode(&rig).await;
    assert_eq!(outcome, Outcome::Success(json!(true)));
    let (status, logs, commands) = row(&rig).await;
    assert_eq!(status, "success", "{logs}");
    assert!(
        logs.contains("nvenc on device 0 failed (unsupported_input: this input cannot take the hardware path)"),
        "{logs}"
    );
    assert!(
        logs.contains("Impossible to convert between the formats"),
        "hardware tail kept: {logs}"
    );
    assert!(
        commands.contains("'libx264'"),
        "the row shows the command that ran: {commands}"
    );
    assert_eq!(
        free_during_software,
        Some(1),
        "slot released before the software run"
    );
    assert_eq!(
        rig.env.accel.unhealthy_reason(&nvenc("0")),
        None,
        "no lockout"
    );
    assert_eq!(rig.env.accel.grant("h264").choice.backend, nvenc("0"));
    assert_eq!(
        fallbacks(&rig),
        vec![
            r#"mediacms_worker_hw_fallbacks_total{backend="nvenc",reason_class="unsupported_input"} 1"#
        ]
    );
    let calls = calls(&rig);
    assert_eq!(
        calls.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![true, false]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_level_failures_lock_out_only_the_failed_gpu() {
    for (mode, marker) in [
        ("device_open", "CUDA_ERROR_NO_DEVICE"),
        ("session_limit", "OpenEncodeSessionEx failed"),
        ("mid_encode", "CUDA_ERROR_ILLEGAL_ADDRESS"),
    ] {
        let rig = rig(mode, Source::Avc8Bit, &["0", "1"], HwAccel::Nvenc).await;
        let (outcome, free_during_software) = encode(&rig).await;
        assert_eq!(outcome, Outcome::Success(json!(true)), "{mode}");
        let (status, logs, _) = row(&rig).await;
        assert_eq!(status, "success", "{mode}: {logs}");
        assert!(
            logs.contains(&format!("nvenc on device 0 failed ({mode}: device failure")),
            "{mode}: {logs}"
        );
        assert!(logs.contains(marker), "{mode}: {logs}");
        assert_eq!(
            free_during_software,
            Some(1),
            "{mode}: slot released before the re-run"
        );
        let why = rig.env.accel.unhealthy_reason(&nvenc("0"));
        assert!(why.is_some_and(|w| w.contains("unhealthy for")), "{mode}");
        assert_eq!(rig.env.accel.unhealthy_reason(&nvenc("1")), None, "{mode}");
        // The next job goes to the other GPU.
        assert_eq!(
            rig.env.accel.grant("h264").choice.backend,
            nvenc("1"),
            "{mode}"
        );
        assert_eq!(
            fallbacks(&rig),
            vec![format!(
                r#"mediacms_worker_hw_fallbacks_total{{backend="nvenc",reason_class="{mode}"}} 1"#
            )]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_data_from_a_hardware_run_gets_the_software_outcome_and_no_lockout() {
    let hw = rig("works", Source::Truncated, &["0"], HwAccel::Nvenc).await;
    let (outcome, _) = encode(&hw).await;
    let (status, logs, _) = row(&hw).await;
    let sw = rig("works", Source::Truncated, &["0"], HwAccel::Software).await;
    let (sw_outcome, _) = encode(&sw).await;
    let (sw_status, sw_logs, _) = row(&sw).await;
    assert_eq!(
        (outcome, status.as_str()),
        (sw_outcome, sw_status.as_str()),
        "{logs}\n---\n{sw_logs}"
    );
    assert_eq!(status, "fail");
    assert!(
        logs.contains("nvenc on device 0 failed (other: no hardware cause found"),
        "{logs}"
    );
    assert_eq!(hw.env.accel.unhealthy_reason(&nvenc("0")), None);
    // "Invalid data found" from the hardware run no longer ends the job: software re-ran it.
    let kinds: Vec<bool> = calls(&hw).iter().map(|c| c.0).collect();
    assert_eq!(kinds, vec![true, false]);
    assert_eq!(
        fallbacks(&hw),
        vec![r#"mediacms_worker_hw_fallbacks_total{backend="nvenc",reason_class="other"} 1"#]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_spread_across_gpus_one_slot_pool_each() {
    let rig = rig("works", Source::Avc8Bit, &["0", "1"], HwAccel::Nvenc).await;
    let a = rig.env.accel.grant("h264");
    let b = rig.env.accel.grant("h264");
    let c = rig.env.accel.grant("h264");
    assert_eq!(a.choice.backend, nvenc("0"));
    assert_eq!(b.choice.backend, nvenc("1"));
    assert_eq!(
        c.choice.backend,
        Backend::Software,
        "one slot per GPU: both busy"
    );
    assert!(
        c.choice.reason.contains("all hardware slots busy"),
        "{}",
        c.choice.reason
    );
    drop(a);
    assert_eq!(rig.env.accel.grant("h264").choice.backend, nvenc("0"));
}
