//! Capability probe on the machine at hand. On a GPU-less machine every hardware feature must
//! report why it does not work and every choice must land on software with a reason; where a
//! GPU exists the same test only checks that each feature has a verdict.

use mediacms_worker::config::HwAccel;
use mediacms_worker::ffmpeg::caps::{choose_backend, report_text, Backend, Capabilities, Family};

fn has_nvidia() -> bool {
    std::path::Path::new("/dev/nvidiactl").exists()
}

fn has_dri() -> bool {
    std::path::Path::new("/dev/dri").exists()
}

#[tokio::test]
async fn every_feature_has_a_verdict_and_json_round_trips() {
    let caps = Capabilities::probe("ffmpeg", HwAccel::Auto, None).await;
    assert!(
        caps.ffmpeg_version.starts_with("ffmpeg version"),
        "{}",
        caps.ffmpeg_version
    );
    for family in [Family::Nvidia, Family::Vaapi, Family::Qsv] {
        assert!(
            caps.backends.iter().any(|b| b.family == family),
            "{family:?} missing"
        );
    }
    for b in &caps.backends {
        assert_eq!(b.features[0].name, "device");
        for f in &b.features {
            assert!(
                f.works || f.reason.as_deref().is_some_and(|r| !r.is_empty()),
                "{f:?}"
            );
        }
    }
    let json = serde_json::to_value(&caps).unwrap();
    assert_eq!(json["hwaccel"], "auto");
    assert!(json["backends"].as_array().unwrap().len() >= 3);
    let text = report_text(&caps);
    assert!(text.contains("backend per codec"), "{text}");
    eprintln!("{text}");
}

#[tokio::test]
async fn gpu_less_machine_falls_back_to_software_with_reasons() {
    if has_nvidia() || has_dri() {
        eprintln!("skipped: this machine has GPU device nodes");
        return;
    }
    let caps = Capabilities::probe("ffmpeg", HwAccel::Auto, None).await;
    for b in &caps.backends {
        assert!(b.features.iter().all(|f| !f.works), "{b:?}");
    }
    let nvidia = caps
        .backends
        .iter()
        .find(|b| b.family == Family::Nvidia)
        .unwrap();
    let device = nvidia.check("device").unwrap_err();
    assert!(device.contains("cuda"), "{device}");
    assert!(nvidia.check("h264_nvenc").unwrap_err().contains("device"));

    let auto = choose_backend(&caps, HwAccel::Auto, "h264");
    assert_eq!(auto.backend, Backend::Software);
    assert!(
        auto.reason.contains("nvenc") && auto.reason.contains("vaapi"),
        "{}",
        auto.reason
    );
    let vaapi = choose_backend(&caps, HwAccel::Vaapi, "h264");
    assert_eq!(vaapi.backend, Backend::Software);
    assert!(
        vaapi.reason.starts_with("software fallback: vaapi:"),
        "{}",
        vaapi.reason
    );
    assert!(vaapi.reason.contains("renderD"), "{}", vaapi.reason);
}

#[tokio::test]
async fn software_config_probes_nothing() {
    let caps = Capabilities::probe("ffmpeg", HwAccel::Software, None).await;
    assert!(caps
        .backends
        .iter()
        .all(|b| b.features.len() == 1 && !b.features[0].works));
    let choice = choose_backend(&caps, HwAccel::Software, "h264");
    assert_eq!(
        (choice.backend, choice.reason.as_str()),
        (Backend::Software, "hwaccel=software")
    );
}

#[tokio::test]
async fn missing_ffmpeg_is_reported_not_fatal() {
    let caps = Capabilities::probe("/nonexistent/ffmpeg", HwAccel::Software, None).await;
    assert!(
        caps.ffmpeg_version
            .starts_with("unusable: cannot run ffmpeg"),
        "{}",
        caps.ffmpeg_version
    );
}
