//! The hardware paths of `encode_media` without a GPU: `tests/fake_gpu_ffmpeg.py` stands in for
//! FFMPEG_COMMAND, failing hardware argv exactly as FFmpeg 5.1.9 does for each failure mode (or,
//! in mode `works`, running them as software on the real ffmpeg, with NVDEC's real input limit
//! kept), while real Postgres, Redis and ffmpeg do the rest. The capabilities are those of a
//! probed NVIDIA node (no probe can pass here). Asserts the Encoding row, its log, the device's
//! health, the hardware slots and the fallback metric for every failure class.

mod support;

use mediacms_worker::config::HwAccel;
use mediacms_worker::plan::Backend;
use mediacms_worker::tasks::Outcome;
use serde_json::json;
use support::gpu::{calls, encode, fallbacks, nvenc, rig, row, Source, UID};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_10_on_a_gpu_without_nvenc_runs_in_software_without_holding_the_gpu() {
    let rig = rig("works", Source::High10, &["0-"], HwAccel::Nvenc).await;
    // Sanity: 8-bit uploads would get the decode offload on this GPU.
    let offload = Backend::NvdecDecodeOnly { device: "0".into() };
    assert_eq!(rig.env.accel.grant("h264").choice.backend, offload);
    let (outcome, free_during_run) = encode(&rig).await;
    assert_eq!(outcome, Outcome::Success(json!(true)));
    let (status, logs, commands) = row(&rig).await;
    assert_eq!(status, "success", "{logs}");
    assert!(!commands.contains("cuda"), "nothing on the GPU: {commands}");
    assert_eq!(
        free_during_run,
        Some(1),
        "the GPU slot is free for other jobs"
    );
    assert_eq!(rig.env.accel.unhealthy_reason(&offload), None);
    assert!(fallbacks(&rig).is_empty(), "{:?}", fallbacks(&rig));
}
