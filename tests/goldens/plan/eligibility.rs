//! Per-input hardware eligibility (`plan::eligibility`) as the plan shows it: the route
//! (decode / scale / encode on hardware or software) of every input class on every hardware
//! backend, and literal argv for the routes that change the command (software decode + upload,
//! odd sizes scaled on the CPU).

use super::common::*;
use mediacms_worker::plan::{Backend, MediaInfo, Place};

const KF: &str = "-force_key_frames expr:gte(t,n_forced*4)";

/// A 120 s 30 fps source with audio, described as ffprobe does in `media_info`.
fn source(codec: &str, profile: &str, pix_fmt: &str, (w, h): (i64, i64), extra: &str) -> MediaInfo {
    MediaInfo::from_json(&format!(
        r#"{{"video_duration": 120.0, "video_frame_rate_n": "30", "video_frame_rate_d": "1",
            "video_width": {w}, "video_height": {h}, "has_video": true, "has_audio": true,
            "video_codec": "{codec}", {extra}
            "video_info": {{"codec_name": "{codec}", "profile": "{profile}", "pix_fmt": "{pix_fmt}"{rot}}}}}"#,
        extra = if extra == "interlaced" {
            r#""interlaced": true,"#
        } else {
            ""
        },
        rot = if extra == "rotated" {
            r#", "tags": {"rotate": "90"}"#
        } else {
            ""
        },
    ))
}

const HD: (i64, i64) = (1920, 1080);

/// (label, codec, profile, pix_fmt, size, extra): one input class of the matrix.
type Input = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    (i64, i64),
    &'static str,
);

const INPUTS: [Input; 17] = [
    ("h264 8-bit", "h264", "High", "yuv420p", HD, ""),
    ("h264 High 10", "h264", "High 10", "yuv420p10le", HD, ""),
    ("h264 4:2:2", "h264", "High 4:2:2", "yuv422p", HD, ""),
    (
        "h264 4:4:4",
        "h264",
        "High 4:4:4 Predictive",
        "yuv444p",
        HD,
        "",
    ),
    ("hevc 8-bit", "hevc", "Main", "yuv420p", HD, ""),
    ("hevc 10-bit", "hevc", "Main 10", "yuv420p10le", HD, ""),
    ("hevc 4:2:2 10-bit", "hevc", "Rext", "yuv422p10le", HD, ""),
    ("hevc 4:4:4", "hevc", "Rext", "yuv444p", HD, ""),
    ("prores", "prores", "HQ", "yuv422p10le", HD, ""),
    ("mjpeg", "mjpeg", "Baseline", "yuvj422p", HD, ""),
    ("av1", "av1", "Main", "yuv420p", HD, ""),
    ("vp9 8-bit", "vp9", "Profile 0", "yuv420p", HD, ""),
    ("vp9 10-bit", "vp9", "Profile 2", "yuv420p10le", HD, ""),
    (
        "h264 interlaced",
        "h264",
        "High",
        "yuv420p",
        HD,
        "interlaced",
    ),
    ("h264 rotated", "h264", "High", "yuv420p", HD, "rotated"),
    ("h264 odd size", "h264", "High", "yuv420p", (1921, 1081), ""),
    ("h264 8k", "h264", "High", "yuv420p", (7680, 4320), ""),
];

/// Expected `decode scale encode` per input on nvenc / nvdec-only / vaapi / qsv (h264-720).
const EXPECTED: [(&str, [&str; 4]); 17] = [
    (
        "h264 8-bit",
        ["hw hw hw", "hw hw sw", "sw hw hw", "sw hw hw"],
    ),
    (
        "h264 High 10",
        ["sw hw hw", "sw sw sw", "sw hw hw", "sw hw hw"],
    ),
    (
        "h264 4:2:2",
        ["sw hw hw", "sw sw sw", "sw hw hw", "sw hw hw"],
    ),
    (
        "h264 4:4:4",
        ["sw hw hw", "sw sw sw", "sw hw hw", "sw hw hw"],
    ),
    (
        "hevc 8-bit",
        ["hw hw hw", "hw hw sw", "sw hw hw", "sw hw hw"],
    ),
    (
        "hevc 10-bit",
        ["hw hw hw", "hw hw sw", "sw hw hw", "sw hw hw"],
    ),
    (
        "hevc 4:2:2 10-bit",
        ["sw hw hw", "sw sw sw", "sw hw hw", "sw hw hw"],
    ),
    (
        "hevc 4:4:4",
        ["sw hw hw", "sw sw sw", "sw hw hw", "sw hw hw"],
    ),
    ("prores", ["sw hw hw", "sw sw sw", "sw hw hw", "sw hw hw"]),
    ("mjpeg", ["sw hw hw", "sw sw sw", "sw hw hw", "sw hw hw"]),
    ("av1", ["sw hw hw", "sw sw sw", "sw hw hw", "sw hw hw"]),
    (
        "vp9 8-bit",
        ["hw hw hw", "hw hw sw", "sw hw hw", "sw hw hw"],
    ),
    (
        "vp9 10-bit",
        ["hw hw hw", "hw hw sw", "sw hw hw", "sw hw hw"],
    ),
    (
        "h264 interlaced",
        ["hw hw hw", "hw hw sw", "sw hw hw", "sw hw hw"],
    ),
    (
        "h264 rotated",
        ["sw hw hw", "sw sw sw", "sw hw hw", "sw hw hw"],
    ),
    (
        "h264 odd size",
        ["sw sw hw", "sw sw sw", "sw sw hw", "sw sw hw"],
    ),
    ("h264 8k", ["sw hw hw", "sw sw sw", "sw hw hw", "sw hw hw"]),
];

fn backends() -> [Backend; 4] {
    let node = "/dev/dri/renderD128".to_string();
    [
        Backend::Nvenc { device: "0".into() },
        Backend::NvdecDecodeOnly { device: "0".into() },
        Backend::Vaapi {
            device: node.clone(),
        },
        Backend::Qsv { device: node },
    ]
}

fn place(p: Place) -> &'static str {
    match p {
        Place::Hardware => "hw",
        Place::Software => "sw",
    }
}

#[test]
fn every_input_class_gets_its_route_on_every_backend() {
    let mut wrong = Vec::new();
    for ((label, codec, profile, pix_fmt, size, extra), (elabel, expected)) in
        INPUTS.iter().zip(EXPECTED.iter())
    {
        assert_eq!(label, elabel);
        let info = source(codec, profile, pix_fmt, *size, extra);
        for (backend, want) in backends().iter().zip(expected) {
            let plan = encode(&info, "h264", 720, false, backend).unwrap();
            let r = &plan.route;
            let got = format!("{} {} {}", place(r.decode), place(r.scale), place(r.encode));
            if got != *want {
                wrong.push(format!(
                    "{label} on {backend:?}: {got} (want {want}; {})",
                    r.why
                ));
            }
            // The argv agree with the route: CUDA decode exactly when decode is on the GPU,
            // software argv exactly when nothing is.
            let argv = plan.passes[0].join(" ");
            let cuda_decode = argv.contains("-hwaccel cuda");
            assert_eq!(cuda_decode, r.decode == Place::Hardware, "{label}: {argv}");
            if !r.uses_hardware() {
                assert_eq!(plan.backend, Backend::Software, "{label}");
                assert!(!r.why.is_empty(), "{label}: a software route says why");
            }
        }
    }
    assert!(wrong.is_empty(), "routes differ:\n{}", wrong.join("\n"));
}

#[test]
fn high_10_h264_on_nvenc_decodes_in_software_and_uploads() {
    let info = source("h264", "High 10", "yuv420p10le", HD, "");
    let plan = encode(
        &info,
        "h264",
        720,
        false,
        &Backend::Nvenc { device: "1".into() },
    )
    .unwrap();
    let expected = format!("ffmpeg -y -i IN -c:v h264_nvenc -gpu 1 -filter:v fps=fps=30,format=nv12,hwupload_cuda=device=1,scale_cuda=1280:720:interp_algo=lanczos:format=nv12 -preset p5 -rc vbr -b:v 2500k -maxrate 3750k -bufsize 3750k -c:a aac -b:a 128k -ac 2 -g 240 -forced-idr 1 {KF} -profile:v main -level 4.2 -strict -2 OUT.mp4");
    assert_eq!(plan.passes, vec![sv(&expected)]);
    assert_eq!(plan.backend, Backend::Nvenc { device: "1".into() });
    assert!(plan.route.why.contains("High 10"), "{:?}", plan.route);
}

#[test]
fn interlaced_uploads_deinterlace_on_the_cpu() {
    let info = source("prores", "HQ", "yuv422p10le", HD, "interlaced");
    let argv = encode(
        &info,
        "h265",
        720,
        false,
        &Backend::Nvenc { device: "0".into() },
    )
    .unwrap()
    .passes
    .remove(0);
    let filters = "yadif,fps=fps=30,format=nv12,hwupload_cuda=device=0,scale_cuda=1280:720:interp_algo=lanczos:format=nv12";
    assert!(argv.contains(&filters.to_string()), "{argv:?}");
}

#[test]
fn odd_sizes_are_scaled_on_the_cpu_before_the_upload() {
    let info = source("h264", "High", "yuv420p", (1279, 719), "");
    let vaapi = Backend::Vaapi {
        device: "/dev/dri/renderD129".into(),
    };
    let plan = encode(&info, "h264", 480, false, &vaapi).unwrap();
    let expected = format!("ffmpeg -y -vaapi_device /dev/dri/renderD129 -i IN -c:v h264_vaapi -filter:v fps=fps=30,scale=852:480,format=nv12,hwupload -rc_mode VBR -b:v 1000k -maxrate 1500k -bufsize 1500k -c:a aac -b:a 128k -ac 2 -g 240 {KF} -profile:v main -strict -2 OUT.mp4");
    assert_eq!(plan.passes, vec![sv(&expected)]);
    let nv = encode(
        &info,
        "h264",
        480,
        false,
        &Backend::Nvenc { device: "0".into() },
    )
    .unwrap();
    assert!(
        nv.passes[0]
            .contains(&"fps=fps=30,scale=852:480,format=nv12,hwupload_cuda=device=0".to_string()),
        "{:?}",
        nv.passes[0]
    );
}

#[test]
fn tiny_renditions_are_encoded_in_software() {
    // A 4:1 banner clip's 144p rendition is 256x64.
    let info = source("h264", "High", "yuv420p", (1920, 480), "");
    let nv = encode(
        &info,
        "h264",
        144,
        false,
        &Backend::Nvenc { device: "0".into() },
    )
    .unwrap();
    // NVDEC still decodes and scales; the 256x64 output goes to libx264.
    assert_eq!(nv.backend, Backend::NvdecDecodeOnly { device: "0".into() });
    assert!(nv.route.why.contains("below 96"), "{:?}", nv.route);
    let vaapi = Backend::Vaapi {
        device: "/dev/dri/renderD128".into(),
    };
    let plan = encode(&info, "h264", 144, false, &vaapi).unwrap();
    assert_eq!(plan.backend, Backend::Software);
    assert_eq!(plan.passes[0], sw(&info, "h264", 144, false));
}

#[test]
fn every_hardware_argv_names_its_device() {
    let info = source("h264", "High", "yuv420p", HD, "");
    let cases = [
        (
            Backend::Nvenc { device: "3".into() },
            vec!["-hwaccel_device 3", "-gpu 3"],
        ),
        (
            Backend::NvdecDecodeOnly { device: "2".into() },
            vec!["-hwaccel_device 2"],
        ),
        (
            Backend::Vaapi {
                device: "/dev/dri/renderD130".into(),
            },
            vec!["-vaapi_device /dev/dri/renderD130"],
        ),
        (
            Backend::Qsv {
                device: "/dev/dri/renderD131".into(),
            },
            vec!["-init_hw_device vaapi=va:/dev/dri/renderD131"],
        ),
    ];
    for (backend, needles) in cases {
        for codec in ["h264", "h265"] {
            for argv in encode(&info, codec, 720, false, &backend).unwrap().passes {
                let line = argv.join(" ");
                for needle in &needles {
                    assert!(line.contains(needle), "{backend:?} {codec}: {line}");
                }
            }
        }
    }
}
