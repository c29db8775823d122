//! Hardware backends, literal argv for h264-720, h265-1080 and vp9-480 (plain 1080p30 source,
//! 120 s, audio) on each backend, plus the interlaced, two-pass and fallback cases.

use super::common::*;
use mediacms_worker::plan::{Backend, MediaInfo};

const KF: &str = "-force_key_frames expr:gte(t,n_forced*4)";
const NVDEC: &str = "ffmpeg -y -hwaccel cuda -hwaccel_device 0 -hwaccel_output_format cuda -i IN";

fn vaapi() -> Backend {
    Backend::Vaapi {
        device: "/dev/dri/renderD128".into(),
    }
}

fn nvenc() -> Backend {
    Backend::Nvenc { device: "0".into() }
}

fn nvdec() -> Backend {
    Backend::NvdecDecodeOnly { device: "0".into() }
}

fn qsv() -> Backend {
    Backend::Qsv {
        device: "/dev/dri/renderD128".into(),
    }
}

/// The one hardware argv, checking the plan really used `backend`.
fn hw(info: &MediaInfo, codec: &str, res: i32, backend: &Backend) -> Vec<String> {
    let plan = encode(info, codec, res, false, backend).unwrap();
    assert_eq!(&plan.backend, backend);
    assert_eq!(plan.passes.len(), 1);
    plan.passes.into_iter().next().unwrap()
}

#[test]
fn nvenc_goldens() {
    let b = nvenc();
    let h264 = format!("{NVDEC} -c:v h264_nvenc -gpu 0 -filter:v scale_cuda=1280:720:interp_algo=lanczos:format=nv12,fps=fps=30 -preset p5 -rc vbr -b:v 2500k -maxrate 3750k -bufsize 3750k -c:a aac -b:a 128k -ac 2 -g 240 -forced-idr 1 {KF} -profile:v main -level 4.2 -strict -2 OUT.mp4");
    assert_eq!(hw(&plain_1080(), "h264", 720, &b), sv(&h264));
    let h265 = format!("{NVDEC} -c:v hevc_nvenc -gpu 0 -filter:v scale_cuda=1920:1080:interp_algo=lanczos:format=nv12,fps=fps=30 -preset p5 -rc vbr -b:v 1800k -maxrate 2700k -bufsize 2700k -c:a aac -b:a 128k -ac 2 -g 240 -forced-idr 1 {KF} -profile:v main -strict -2 OUT.mp4");
    assert_eq!(hw(&plain_1080(), "h265", 1080, &b), sv(&h265));
    // No VP9 NVENC: NVDEC still decodes and scales, libvpx-vp9 encodes (the decode offload).
    let plan = encode(&plain_1080(), "vp9", 480, false, &b).unwrap();
    assert_eq!(plan.backend, nvdec());
    assert_eq!(plan.route.encode, mediacms_worker::plan::Place::Software);
    assert_eq!(
        plan.passes,
        encode(&plain_1080(), "vp9", 480, false, &nvdec())
            .unwrap()
            .passes
    );
}

#[test]
fn nvenc_interlaced_uses_yadif_cuda_and_table_60() {
    let expected = format!("{NVDEC} -c:v h264_nvenc -gpu 0 -filter:v yadif_cuda,scale_cuda=1920:1080:interp_algo=lanczos:format=nv12,fps=fps=60000/1001 -preset p5 -rc vbr -b:v 7500k -maxrate 11250k -bufsize 11250k -c:a aac -b:a 128k -ac 2 -g 478 -forced-idr 1 {KF} -profile:v main -level 4.2 -strict -2 OUT.mp4");
    assert_eq!(
        hw(&interlaced_5994(), "h264", 1080, &nvenc()),
        sv(&expected)
    );
}

#[test]
fn nvenc_short_source_is_one_pass() {
    let expected = format!("{NVDEC} -c:v h264_nvenc -gpu 0 -filter:v scale_cuda=426:240:interp_algo=lanczos:format=nv12,fps=fps=30 -preset p5 -rc vbr -b:v 300k -maxrate 450k -bufsize 450k -c:a aac -b:a 128k -ac 2 -g 240 -forced-idr 1 {KF} -profile:v main -level 4.2 -strict -2 OUT.mp4");
    assert_eq!(hw(&short_15(), "h264", 240, &nvenc()), sv(&expected));
}

#[test]
fn vaapi_goldens() {
    let b = vaapi();
    let pre = "ffmpeg -y -vaapi_device /dev/dri/renderD128 -i IN";
    let h264 = format!("{pre} -c:v h264_vaapi -filter:v fps=fps=30,format=nv12,hwupload,scale_vaapi=w=1280:h=720 -rc_mode VBR -b:v 2500k -maxrate 3750k -bufsize 3750k -c:a aac -b:a 128k -ac 2 -g 240 {KF} -profile:v main -strict -2 OUT.mp4");
    assert_eq!(hw(&plain_1080(), "h264", 720, &b), sv(&h264));
    let h265 = format!("{pre} -c:v hevc_vaapi -filter:v fps=fps=30,format=nv12,hwupload,scale_vaapi=w=1920:h=1080 -rc_mode VBR -b:v 1800k -maxrate 2700k -bufsize 2700k -c:a aac -b:a 128k -ac 2 -g 240 {KF} -profile:v main -strict -2 OUT.mp4");
    assert_eq!(hw(&plain_1080(), "h265", 1080, &b), sv(&h265));
    let vp9 = format!("{pre} -c:v vp9_vaapi -filter:v fps=fps=30,format=nv12,hwupload,scale_vaapi=w=852:h=480 -rc_mode VBR -b:v 500k -maxrate 750k -bufsize 750k -c:a libopus -b:a 96k -ac 2 -g 120 {KF} -strict -2 OUT.webm");
    assert_eq!(hw(&plain_1080(), "vp9", 480, &b), sv(&vp9));
}

#[test]
fn vaapi_interlaced_deinterlaces_before_upload_and_chunk_keeps_faststart() {
    let plan = encode(&interlaced_5994(), "h264", 720, true, &vaapi()).unwrap();
    let expected = "ffmpeg -y -vaapi_device /dev/dri/renderD128 -i IN -c:v h264_vaapi -filter:v yadif,fps=fps=60000/1001,format=nv12,hwupload,scale_vaapi=w=1280:h=720 -rc_mode VBR -b:v 3500k -maxrate 5250k -bufsize 5250k -c:a aac -b:a 128k -ac 2 -g 478 -force_key_frames expr:gte(t,n_forced*4) -profile:v main -strict -2 -movflags +faststart OUT.mp4";
    assert_eq!(plan.passes, vec![sv(expected)]);
}

#[test]
fn qsv_goldens() {
    let b = qsv();
    let pre = "ffmpeg -y -init_hw_device vaapi=va:/dev/dri/renderD128 -init_hw_device qsv=hw@va -filter_hw_device hw -i IN";
    let up = "fps=fps=30,format=nv12,hwupload=extra_hw_frames=64";
    let h264 = format!("{pre} -c:v h264_qsv -filter:v {up},scale_qsv=w=1280:h=720 -preset medium -b:v 2500k -maxrate 3750k -bufsize 3750k -c:a aac -b:a 128k -ac 2 -g 240 -forced_idr 1 {KF} -profile:v main -strict -2 OUT.mp4");
    assert_eq!(hw(&plain_1080(), "h264", 720, &b), sv(&h264));
    let h265 = format!("{pre} -c:v hevc_qsv -filter:v {up},scale_qsv=w=1920:h=1080 -preset medium -b:v 1800k -maxrate 2700k -bufsize 2700k -c:a aac -b:a 128k -ac 2 -g 240 -forced_idr 1 {KF} -profile:v main -strict -2 OUT.mp4");
    assert_eq!(hw(&plain_1080(), "h265", 1080, &b), sv(&h265));
    let vp9 = format!("{pre} -c:v vp9_qsv -filter:v {up},scale_qsv=w=852:h=480 -preset medium -b:v 500k -maxrate 750k -bufsize 750k -c:a libopus -b:a 96k -ac 2 -g 120 -forced_idr 1 {KF} -strict -2 OUT.webm");
    assert_eq!(hw(&plain_1080(), "vp9", 480, &b), sv(&vp9));
}

#[test]
fn nvdec_decode_only_goldens() {
    let b = nvdec();
    let down = "interp_algo=lanczos:format=nv12,hwdownload,format=nv12,format=yuv420p,fps=fps=30 -pix_fmt yuv420p";
    let h264 = format!("{NVDEC} -c:v libx264 -filter:v scale_cuda=1280:720:{down} -crf 23 -c:a aac -b:a 128k -ac 2 -maxrate 3750k -bufsize 3750k {KF} -x264-params keyint=240:keyint_min=120 -preset medium -profile:v main -level 4.2 -strict -2 OUT.mp4");
    assert_eq!(hw(&plain_1080(), "h264", 720, &b), sv(&h264));
    let h265 = format!("{NVDEC} -c:v libx265 -filter:v scale_cuda=1920:1080:{down} -crf 28 -c:a aac -b:a 128k -ac 2 {KF} -x265-params vbv-maxrate=2700:vbv-bufsize=2700:keyint=240:keyint_min=120 -preset medium -profile:v main -strict -2 OUT.mp4");
    assert_eq!(hw(&plain_1080(), "h265", 1080, &b), sv(&h265));
    let vp9 = format!("{NVDEC} -c:v libvpx-vp9 -filter:v scale_cuda=852:480:{down} -crf 32 -b:v 500k -c:a libopus -b:a 96k -ac 2 -g 120 -keyint_min 120 -maxrate 750k -minrate 250k -bufsize 750k -speed 2 -strict -2 OUT.webm");
    assert_eq!(hw(&plain_1080(), "vp9", 480, &b), sv(&vp9));
}

#[test]
fn nvdec_decode_only_keeps_two_pass() {
    let plan = encode(&short_15(), "h264", 240, false, &nvdec()).unwrap();
    let common = format!("{NVDEC} -c:v libx264 -filter:v scale_cuda=426:240:interp_algo=lanczos:format=nv12,hwdownload,format=nv12,format=yuv420p,fps=fps=30 -pix_fmt yuv420p -b:v 300k -c:a aac -b:a 128k -ac 2 -maxrate 450k -bufsize 450k {KF} -x264-params keyint=240:keyint_min=120 -preset medium -profile:v main -level 4.2 -passlogfile PASS");
    let expected = vec![
        sv(&format!(
            "{common} -pass 1 -strict -2 -an -f null /dev/null"
        )),
        sv(&format!("{common} -pass 2 -strict -2 OUT.mp4")),
    ];
    assert_eq!(plan.passes, expected);
    assert_eq!(plan.backend, nvdec());
}

#[test]
fn rotated_or_dimensionless_sources_fall_back_where_needed() {
    let rotated = MediaInfo::from_json(
        r#"{"video_duration": 120.0, "video_frame_rate_n": "30", "video_frame_rate_d": "1", "video_width": 1920, "video_height": 1080, "has_audio": true, "video_codec": "h264", "video_info": {"pix_fmt": "yuv420p", "tags": {"rotate": "90"}}}"#,
    );
    // Decode offload without NVENC gains nothing once decode is on the CPU: software.
    let plan = encode(&rotated, "h264", 720, false, &nvdec()).unwrap();
    assert_eq!(plan.backend, Backend::Software);
    assert_eq!(plan.passes[0], sw(&rotated, "h264", 720, false));
    assert!(plan.route.why.contains("rotated"), "{:?}", plan.route);
    // NVENC: software decode auto-rotates, then the portrait frames go up to scale_cuda.
    let argv = hw(&rotated, "h264", 720, &nvenc());
    assert!(
        argv.contains(&"fps=fps=30,format=nv12,hwupload_cuda=device=0,scale_cuda=720:1280:interp_algo=lanczos:format=nv12".to_string()),
        "{argv:?}"
    );
    assert!(!argv.contains(&"-hwaccel".to_string()), "{argv:?}");
    // Software decode auto-rotates, so VAAPI scales into the portrait box.
    let argv = hw(&rotated, "h264", 720, &vaapi());
    assert!(
        argv.contains(&"fps=fps=30,format=nv12,hwupload,scale_vaapi=w=720:h=1280".to_string()),
        "{argv:?}"
    );
    let no_dims = MediaInfo::from_json(r#"{"video_duration": 120.0, "video_height": 1080}"#);
    for b in [nvenc(), qsv(), vaapi(), nvdec()] {
        assert_eq!(
            encode(&no_dims, "h264", 720, false, &b).unwrap().backend,
            Backend::Software
        );
    }
}
