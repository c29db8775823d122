//! Every default profile (contract §3.4) × every source scenario, against a second statement of
//! §3.2 written as argv templates and literal tables (independent of `src/plan`).

use super::common::*;
use mediacms_worker::plan::{Backend, MediaInfo, PlanSkip};

/// (profile id, codec, resolution, box long side, kbit/s table "25", table "60" or 0 = absent).
const PROFILES: [(i32, &str, i32, u32, u32, u32); 22] = [
    (23, "h264", 144, 256, 150, 0),
    (2, "h264", 240, 427, 300, 0),
    (3, "h264", 360, 640, 500, 0),
    (13, "h264", 480, 853, 1000, 0),
    (10, "h264", 720, 1280, 2500, 3500),
    (7, "h264", 1080, 1920, 4500, 7500),
    (4, "h264", 1440, 2560, 9000, 18000),
    (19, "h264", 2160, 3840, 18000, 40000),
    (21, "h265", 240, 427, 150, 0),
    (18, "h265", 360, 640, 275, 0),
    (15, "h265", 480, 853, 500, 0),
    (12, "h265", 720, 1280, 1024, 1800),
    (9, "h265", 1080, 1920, 1800, 3000),
    (6, "h265", 1440, 2560, 4500, 8000),
    (16, "h265", 2160, 3840, 10000, 18000),
    (20, "vp9", 240, 427, 150, 0),
    (17, "vp9", 360, 640, 275, 0),
    (14, "vp9", 480, 853, 500, 0),
    (11, "vp9", 720, 1280, 1024, 1800),
    (8, "vp9", 1080, 1920, 1800, 3000),
    (5, "vp9", 1440, 2560, 4500, 8000),
    (22, "vp9", 2160, 3840, 10000, 18000),
];

struct Scenario {
    name: &'static str,
    info: fn() -> MediaInfo,
    source_height: i32,
    fps: &'static str,
    kd: u32,
    table_60: bool,
    yadif: bool,
    two_pass: bool,
    chunk: bool,
}

const SCENARIOS: [Scenario; 6] = [
    Scenario {
        name: "plain",
        info: plain_1080,
        source_height: 1080,
        fps: "30",
        kd: 120,
        table_60: false,
        yadif: false,
        two_pass: false,
        chunk: false,
    },
    Scenario {
        name: "interlaced 59.94",
        info: interlaced_5994,
        source_height: 1080,
        fps: "60000/1001",
        kd: 239,
        table_60: true,
        yadif: true,
        two_pass: false,
        chunk: false,
    },
    Scenario {
        name: "120 fps",
        info: fps_120,
        source_height: 1080,
        fps: "60",
        kd: 240,
        table_60: true,
        yadif: false,
        two_pass: false,
        chunk: false,
    },
    Scenario {
        name: "1.5 s",
        info: short_15,
        source_height: 1080,
        fps: "30",
        kd: 120,
        table_60: false,
        yadif: false,
        two_pass: true,
        chunk: false,
    },
    Scenario {
        name: "chunk",
        info: plain_1080,
        source_height: 1080,
        fps: "30",
        kd: 120,
        table_60: false,
        yadif: false,
        two_pass: false,
        chunk: true,
    },
    Scenario {
        name: "plain 2160p",
        info: plain_2160,
        source_height: 2160,
        fps: "30",
        kd: 120,
        table_60: false,
        yadif: false,
        two_pass: false,
        chunk: false,
    },
];

const H264: &str = "ffmpeg -y -i IN -c:v libx264 -filter:v {VF} -pix_fmt yuv420p {RATE} -c:a aac -b:a 128k -ac 2 -maxrate {MAX}k -bufsize {MAX}k -force_key_frames expr:gte(t,n_forced*4) -x264-params keyint={K2}:keyint_min={K} -preset medium -profile:v main -level {LEVEL} {PASSLOG} -strict -2 {TAIL}";
const H265: &str = "ffmpeg -y -i IN -c:v libx265 -filter:v {VF} -pix_fmt yuv420p {RATE} -c:a aac -b:a 128k -ac 2 -force_key_frames expr:gte(t,n_forced*4) -x265-params vbv-maxrate={MAX}:vbv-bufsize={MAX}:keyint={K2}:keyint_min={K}{STATS} -preset medium -profile:v main -strict -2 {TAIL}";
const VP9: &str = "ffmpeg -y -i IN -c:v libvpx-vp9 -filter:v {VF} -pix_fmt yuv420p {RATE} -c:a libopus -b:a 96k -ac 2 -g {K} -keyint_min {K} -maxrate {MAX}k -minrate {MIN}k -bufsize {MAX}k -speed {SPEED} {PASSLOG} -strict -2 {TAIL}";
const VF: &str = r"{YADIF}scale=if(lt(iw\,ih)\,{RES}\,{BOX}):if(lt(iw\,ih)\,{BOX}\,{RES}):force_original_aspect_ratio=decrease:force_divisible_by=2:flags=lanczos,fps=fps={FPS}";

fn fill(template: &str, values: &[(&str, String)]) -> String {
    values.iter().fold(template.to_string(), |acc, (k, v)| {
        acc.replace(&format!("{{{k}}}"), v)
    })
}

/// `text` when `cond`, else "".
fn when(cond: bool, text: String) -> String {
    if cond {
        text
    } else {
        String::new()
    }
}

fn expected_filter(sc: &Scenario, res: i32, boxw: u32) -> String {
    let values = [
        ("YADIF", when(sc.yadif, "yadif,".into())),
        ("RES", res.to_string()),
        ("BOX", boxw.to_string()),
        ("FPS", sc.fps.to_string()),
    ];
    fill(VF, &values)
}

/// `pass`: 0 = the CRF command, 1/2 = two-pass.
fn expected_argv(sc: &Scenario, row: &(i32, &str, i32, u32, u32, u32), pass: u32) -> Vec<String> {
    let &(_, codec, res, boxw, r25, r60) = row;
    let rate = if sc.table_60 && r60 > 0 { r60 } else { r25 };
    let (template, crf, output) = match codec {
        "h264" => (H264, "-crf 23".to_string(), "OUT.mp4"),
        "h265" => (H265, "-crf 28".to_string(), "OUT.mp4"),
        _ => (VP9, format!("-crf 32 -b:v {rate}k"), "OUT.webm"),
    };
    let faststart = when(
        sc.chunk && output.ends_with("mp4"),
        "-movflags +faststart ".into(),
    );
    let two_pass = pass > 0;
    let values = [
        ("VF", expected_filter(sc, res, boxw)),
        (
            "RATE",
            if two_pass {
                format!("-b:v {rate}k")
            } else {
                crf
            },
        ),
        ("MAX", ((rate as f64 * 1.5) as u32).to_string()),
        ("MIN", ((rate as f64 * 0.5) as u32).to_string()),
        ("K2", (2 * sc.kd).to_string()),
        ("K", sc.kd.to_string()),
        ("LEVEL", if res <= 1080 { "4.2" } else { "5.2" }.to_string()),
        (
            "PASSLOG",
            when(two_pass, format!("-passlogfile PASS -pass {pass}")),
        ),
        ("STATS", when(two_pass, format!(":stats=PASS:pass={pass}"))),
        ("SPEED", if pass == 1 { "4" } else { "2" }.to_string()),
        (
            "TAIL",
            if pass == 1 {
                "-an -f null /dev/null".into()
            } else {
                format!("{faststart}{output}")
            },
        ),
    ];
    sv(&fill(template, &values))
}

#[test]
fn every_default_profile_in_every_scenario_equals_mediacms() {
    let (mut planned, mut skipped) = (0, 0);
    for sc in &SCENARIOS {
        for row in &PROFILES {
            let (id, codec, res, ..) = *row;
            let got = encode(&(sc.info)(), codec, res, sc.chunk, &Backend::Software);
            if sc.source_height < res && res != 144 && res != 240 {
                assert_eq!(
                    got,
                    Err(PlanSkip::SourceTooSmall {
                        source_height: sc.source_height.into(),
                        resolution: res
                    }),
                    "{} / profile {id}",
                    sc.name
                );
                skipped += 1;
                continue;
            }
            let passes: &[u32] = if sc.two_pass { &[1, 2] } else { &[0] };
            let expected: Vec<Vec<String>> =
                passes.iter().map(|&p| expected_argv(sc, row, p)).collect();
            assert_eq!(
                got.expect("planned").passes,
                expected,
                "{} / profile {id}",
                sc.name
            );
            planned += 1;
        }
    }
    // Five 1080p scenarios skip the six 1440/2160 profiles; the 2160p source plans all 22.
    assert_eq!((planned, skipped), (5 * 16 + 22, 5 * 6));
}

#[test]
fn the_reasons_mediacms_returns_false_or_raises() {
    let info = plain_1080();
    let b = Backend::Software;
    assert_eq!(
        encode(&info, "av1", 720, false, &b),
        Err(PlanSkip::UnknownCodec(Some("av1".into())))
    );
    assert!(matches!(
        encode(&info, "h264", 1000, false, &b),
        Err(PlanSkip::NoBitrate {
            resolution: Some(1000),
            ..
        })
    ));
    // h265/vp9 have a 144 row in the table even though no default profile uses it.
    assert!(encode(&info, "vp9", 144, false, &b).is_ok());
    // Minimum resolutions are produced from any source, upscaling included.
    let tiny = media("30", "1", 160, 90, 10.0, false);
    assert!(encode(&tiny, "h264", 240, false, &b).is_ok());
    assert!(matches!(
        encode(&tiny, "h264", 360, false, &b),
        Err(PlanSkip::SourceTooSmall { .. })
    ));
}

#[test]
fn malformed_media_info_is_reported_where_mediacms_would_raise() {
    let b = Backend::Software;
    let invalid = [
        ("{}", "video_height"),
        (
            r#"{"video_height": 720, "video_frame_rate_n": "30", "video_frame_rate_d": "0", "video_duration": 9.0}"#,
            "video_frame_rate_n/d",
        ),
        (
            r#"{"video_height": 720, "video_frame_rate_n": "29.97", "video_frame_rate_d": "1", "video_duration": 9.0}"#,
            "video_frame_rate_n/d",
        ),
        (r#"{"video_height": 720}"#, "video_duration"),
    ];
    for (json, field) in invalid {
        assert_eq!(
            encode(&MediaInfo::from_json(json), "h264", 240, false, &b),
            Err(PlanSkip::InvalidMediaInfo(field)),
            "{json}"
        );
    }
    // Absent fps keys default to 30.
    let no_fps = MediaInfo::from_json(r#"{"video_height": 720, "video_duration": 9.0}"#);
    let plan = encode(&no_fps, "h264", 240, false, &b).unwrap();
    assert!(plan.passes[0].iter().any(|t| t.ends_with(",fps=fps=30")));
    assert!(
        !plan.passes[0].contains(&"-c:a".to_string()),
        "no audio args without has_audio"
    );
}
