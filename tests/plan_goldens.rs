//! Goldens for the pure planner: MediaCMS's exact argv (contract §3.3 examples and the real
//! reference run, as literal strings), the full profile × source matrix against a second,
//! table-driven statement of the rules, every hardware backend, and the extra commands.

#[path = "goldens/plan/common.rs"]
mod common;
#[path = "goldens/plan/eligibility.rs"]
mod eligibility;
#[path = "goldens/plan/extras.rs"]
mod extras;
#[path = "goldens/plan/hw.rs"]
mod hw;
#[path = "goldens/plan/matrix.rs"]
mod matrix;

use common::*;
use mediacms_worker::plan::{commands_repr, plan_encode, Backend, EncodeIo, MediaInfo, PlanSkip};

// ---- §3.3 verified examples, literally (30 fps 1080p source, 120 s, audio, progressive) ----

const H264_720: &str = r"ffmpeg -y -i IN -c:v libx264 -filter:v scale=if(lt(iw\,ih)\,720\,1280):if(lt(iw\,ih)\,1280\,720):force_original_aspect_ratio=decrease:force_divisible_by=2:flags=lanczos,fps=fps=30 -pix_fmt yuv420p -crf 23 -c:a aac -b:a 128k -ac 2 -maxrate 3750k -bufsize 3750k -force_key_frames expr:gte(t,n_forced*4) -x264-params keyint=240:keyint_min=120 -preset medium -profile:v main -level 4.2 -strict -2 OUT.mp4";

#[test]
fn h264_720_matches_section_3_3() {
    assert_eq!(sw(&plain_1080(), "h264", 720, false), sv(H264_720));
}

#[test]
fn h264_720_chunk_adds_faststart_before_output() {
    let expected = H264_720.replace(
        "-strict -2 OUT.mp4",
        "-strict -2 -movflags +faststart OUT.mp4",
    );
    assert_eq!(sw(&plain_1080(), "h264", 720, true), sv(&expected));
}

#[test]
fn h265_1080_matches_section_3_3() {
    let expected = r"ffmpeg -y -i IN -c:v libx265 -filter:v scale=if(lt(iw\,ih)\,1080\,1920):if(lt(iw\,ih)\,1920\,1080):force_original_aspect_ratio=decrease:force_divisible_by=2:flags=lanczos,fps=fps=30 -pix_fmt yuv420p -crf 28 -c:a aac -b:a 128k -ac 2 -force_key_frames expr:gte(t,n_forced*4) -x265-params vbv-maxrate=2700:vbv-bufsize=2700:keyint=240:keyint_min=120 -preset medium -profile:v main -strict -2 OUT.mp4";
    assert_eq!(sw(&plain_1080(), "h265", 1080, false), sv(expected));
}

pub const VP9_480: &str = r"ffmpeg -y -i IN -c:v libvpx-vp9 -filter:v scale=if(lt(iw\,ih)\,480\,853):if(lt(iw\,ih)\,853\,480):force_original_aspect_ratio=decrease:force_divisible_by=2:flags=lanczos,fps=fps=30 -pix_fmt yuv420p -crf 32 -b:v 500k -c:a libopus -b:a 96k -ac 2 -g 120 -keyint_min 120 -maxrate 750k -minrate 250k -bufsize 750k -speed 2 -strict -2 OUT.webm";

#[test]
fn vp9_480_matches_section_3_3() {
    assert_eq!(sw(&plain_1080(), "vp9", 480, false), sv(VP9_480));
}

#[test]
fn interlaced_5994_h264_1080_matches_section_3_3() {
    let expected = r"ffmpeg -y -i IN -c:v libx264 -filter:v yadif,scale=if(lt(iw\,ih)\,1080\,1920):if(lt(iw\,ih)\,1920\,1080):force_original_aspect_ratio=decrease:force_divisible_by=2:flags=lanczos,fps=fps=60000/1001 -pix_fmt yuv420p -crf 23 -c:a aac -b:a 128k -ac 2 -maxrate 11250k -bufsize 11250k -force_key_frames expr:gte(t,n_forced*4) -x264-params keyint=478:keyint_min=239 -preset medium -profile:v main -level 4.2 -strict -2 OUT.mp4";
    assert_eq!(sw(&interlaced_5994(), "h264", 1080, false), sv(expected));
}

#[test]
fn fps_120_h264_360_matches_section_3_3() {
    let expected = r"ffmpeg -y -i IN -c:v libx264 -filter:v scale=if(lt(iw\,ih)\,360\,640):if(lt(iw\,ih)\,640\,360):force_original_aspect_ratio=decrease:force_divisible_by=2:flags=lanczos,fps=fps=60 -pix_fmt yuv420p -crf 23 -c:a aac -b:a 128k -ac 2 -maxrate 750k -bufsize 750k -force_key_frames expr:gte(t,n_forced*4) -x264-params keyint=480:keyint_min=240 -preset medium -profile:v main -level 4.2 -strict -2 OUT.mp4";
    assert_eq!(sw(&fps_120(), "h264", 360, false), sv(expected));
}

#[test]
fn two_pass_h264_240_matches_section_3_3() {
    let common = r"ffmpeg -y -i IN -c:v libx264 -filter:v scale=if(lt(iw\,ih)\,240\,427):if(lt(iw\,ih)\,427\,240):force_original_aspect_ratio=decrease:force_divisible_by=2:flags=lanczos,fps=fps=30 -pix_fmt yuv420p -b:v 300k -c:a aac -b:a 128k -ac 2 -maxrate 450k -bufsize 450k -force_key_frames expr:gte(t,n_forced*4) -x264-params keyint=240:keyint_min=120 -preset medium -profile:v main -level 4.2 -passlogfile PASS";
    let plan = encode(&short_15(), "h264", 240, false, &Backend::Software).unwrap();
    assert_eq!(plan.passes.len(), 2);
    assert_eq!(
        plan.passes[0],
        sv(&format!(
            "{common} -pass 1 -strict -2 -an -f null /dev/null"
        ))
    );
    assert_eq!(
        plan.passes[1],
        sv(&format!("{common} -pass 2 -strict -2 OUT.mp4"))
    );
}

#[test]
fn two_pass_h265_puts_stats_inside_x265_params() {
    let plan = encode(&short_15(), "h265", 240, false, &Backend::Software).unwrap();
    let expected = r"ffmpeg -y -i IN -c:v libx265 -filter:v scale=if(lt(iw\,ih)\,240\,427):if(lt(iw\,ih)\,427\,240):force_original_aspect_ratio=decrease:force_divisible_by=2:flags=lanczos,fps=fps=30 -pix_fmt yuv420p -b:v 150k -c:a aac -b:a 128k -ac 2 -force_key_frames expr:gte(t,n_forced*4) -x265-params vbv-maxrate=225:vbv-bufsize=225:keyint=240:keyint_min=120:stats=PASS:pass=1 -preset medium -profile:v main -strict -2 -an -f null /dev/null";
    assert_eq!(plan.passes[0], sv(expected));
    assert!(plan.passes[1].contains(
        &"vbv-maxrate=225:vbv-bufsize=225:keyint=240:keyint_min=120:stats=PASS:pass=2".to_string()
    ));
}

#[test]
fn two_pass_vp9_repr_has_bare_ints() {
    let plan = encode(&short_15(), "vp9", 240, false, &Backend::Software).unwrap();
    let repr = commands_repr(&plan.passes);
    assert!(
        repr.contains("'-speed', 4, '-passlogfile', 'PASS', '-pass', 1, '-strict', '-2', '-an'"),
        "{repr}"
    );
    assert!(
        repr.contains(
            "'-speed', 2, '-passlogfile', 'PASS', '-pass', 2, '-strict', '-2', 'OUT.webm']]"
        ),
        "{repr}"
    );
    assert!(repr.contains("'-b:v', '150k', '-c:a', 'libopus'"), "{repr}");
}

#[test]
fn threads_are_added_only_when_configured() {
    let settings = mediacms_worker::plan::EncodeSettings {
        ffmpeg_threads: 3,
        ..Default::default()
    };
    let io = EncodeIo {
        input: "IN",
        output: "OUT.mp4",
        pass_file: "PASS",
        chunk: false,
    };
    let plan = plan_encode(
        &io,
        &plain_1080(),
        &profile("h264", 720),
        &settings,
        &Backend::Software,
    )
    .unwrap();
    let expected = H264_720.replace("-strict -2 OUT.mp4", "-threads 3 -strict -2 OUT.mp4");
    assert_eq!(plan.passes, vec![sv(&expected)]);
}

// ---- the real reference run (python-reference-run.md, media 1 `2SJorQ1Qe`) ----

const REFERENCE_ROW_1: &str = r"[['ffmpeg', '-y', '-i', '<MEDIA_ROOT>/original/user/refuser/41905ce2087146cdba79c28a24c33a9a.reference_720p.mp4', '-c:v', 'libx264', '-filter:v', 'scale=if(lt(iw\\,ih)\\,144\\,256):if(lt(iw\\,ih)\\,256\\,144):force_original_aspect_ratio=decrease:force_divisible_by=2:flags=lanczos,fps=fps=30', '-pix_fmt', 'yuv420p', '-crf', '23', '-c:a', 'aac', '-b:a', '128k', '-ac', '2', '-maxrate', '225k', '-bufsize', '225k', '-force_key_frames', 'expr:gte(t,n_forced*4)', '-x264-params', 'keyint=240:keyint_min=120', '-preset', 'medium', '-profile:v', 'main', '-level', '4.2', '-strict', '-2', '<TEMP_DIRECTORY>/tmpe1egagh7/tmp64x0jnz_.mp4']]";
const REFERENCE_INPUT: &str =
    "<MEDIA_ROOT>/original/user/refuser/41905ce2087146cdba79c28a24c33a9a.reference_720p.mp4";

fn reference_media_1() -> MediaInfo {
    MediaInfo::from_json(&fixture("media_info_2SJorQ1Qe.json"))
}

fn reference_commands(profile_id: i32, resolution: i32, output: &str) -> Result<String, PlanSkip> {
    let io = EncodeIo {
        input: REFERENCE_INPUT,
        output,
        pass_file: "<TEMP_DIRECTORY>/p.mp4",
        chunk: false,
    };
    let mut p = profile("h264", resolution);
    p.id = profile_id;
    let plan = plan_encode(
        &io,
        &reference_media_1(),
        &p,
        &Default::default(),
        &Backend::Software,
    )?;
    Ok(commands_repr(&plan.passes))
}

#[test]
fn reference_run_row_1_commands_text_is_reproduced_exactly() {
    let out = "<TEMP_DIRECTORY>/tmpe1egagh7/tmp64x0jnz_.mp4";
    assert_eq!(reference_commands(23, 144, out).unwrap(), REFERENCE_ROW_1);
}

#[test]
fn reference_run_other_rows_differ_only_in_scale_and_maxrate() {
    let out = "<TEMP_DIRECTORY>/tmpe1egagh7/tmp64x0jnz_.mp4";
    // python-reference-run.md: maxrate 225k, 450k, 750k, 1500k, 3750k for 144–720, and
    // commands lengths 628, 628, 628, 630, 632 (so +0, +0, +0, +2, +4 against row 1).
    for (id, res, box_w, max, extra_len) in [
        (2, 240, 427, "450k", 0),
        (3, 360, 640, "750k", 0),
        (13, 480, 853, "1500k", 2),
        (10, 720, 1280, "3750k", 4),
    ] {
        let expected = REFERENCE_ROW_1
            .replace("144\\\\,256", &format!("{res}\\\\,{box_w}"))
            .replace("256\\\\,144", &format!("{box_w}\\\\,{res}"))
            .replace("225k", max);
        let got = reference_commands(id, res, out).unwrap();
        assert_eq!(got, expected);
        assert_eq!(got.len(), REFERENCE_ROW_1.len() + extra_len);
    }
    // 1080 was not queued for this 720p upload: the planner refuses it the same way.
    assert_eq!(
        reference_commands(7, 1080, out),
        Err(PlanSkip::SourceTooSmall {
            source_height: 720,
            resolution: 1080
        })
    );
}

#[test]
fn reference_fixtures_equal_the_shared_messages_readme() {
    let readme = shared_file("mediacms/messages/README.md");
    for name in ["media_info_2SJorQ1Qe.json", "media_info_emp3s0aau.json"] {
        let fixture = fixture(name);
        assert!(
            readme.contains(&format!("```json\n{}\n```", fixture.trim_end())),
            "{name}"
        );
    }
}

#[test]
fn reference_row_1_literal_equals_the_shared_reference_run() {
    let run = shared_file("mediacms/python-reference-run.md");
    assert!(run.contains(&format!("`{REFERENCE_ROW_1}`")));
}

#[test]
fn reference_media_2_chunk_encode_is_faststart_crf_at_25_fps() {
    let info = MediaInfo::from_json(&fixture("media_info_emp3s0aau.json"));
    let chunk = "/home/mediacms.io/mediacms/media_files/original/user/refuser/00_EdwGGQKxk_5af382d5f37447fa99853daeea4622fb.reference_long_360p.mp4.mkv";
    let io = EncodeIo {
        input: chunk,
        output: "/tmp/x/o.mp4",
        pass_file: "/tmp/x/p.mp4",
        chunk: true,
    };
    let plan = plan_encode(
        &io,
        &info,
        &profile("h264", 360),
        &Default::default(),
        &Backend::Software,
    )
    .unwrap();
    let expected = format!(
        r"ffmpeg -y -i {chunk} -c:v libx264 -filter:v scale=if(lt(iw\,ih)\,360\,640):if(lt(iw\,ih)\,640\,360):force_original_aspect_ratio=decrease:force_divisible_by=2:flags=lanczos,fps=fps=25 -pix_fmt yuv420p -crf 23 -c:a aac -b:a 128k -ac 2 -maxrate 750k -bufsize 750k -force_key_frames expr:gte(t,n_forced*4) -x264-params keyint=200:keyint_min=100 -preset medium -profile:v main -level 4.2 -strict -2 -movflags +faststart /tmp/x/o.mp4"
    );
    assert_eq!(plan.passes, vec![sv(&expected)]);
    // 480 is skipped for this 360p source, 144/240 are minimum resolutions (upscaling allowed).
    assert!(matches!(
        plan_encode(
            &io,
            &info,
            &profile("h264", 480),
            &Default::default(),
            &Backend::Software
        ),
        Err(PlanSkip::SourceTooSmall {
            source_height: 360,
            resolution: 480
        })
    ));
}
