//! Criterion micro benches of the pure planner: the argv of MediaCMS's seven default profiles
//! for a 1080p30 source (six `plan_encode` + `plan_gif`), `MediaInfo::from_json`, and the
//! `files_encoding.commands` text (`commands_repr`).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use mediacms_worker::plan::{
    commands_repr, plan_encode, plan_gif, Backend, EncodeIo, EncodeSettings, MediaInfo, ProfileSpec,
};

mod common;

const INPUT: &str = "/home/mediacms.io/mediacms/media_files/original/user/refuser/41905ce2087146cdba79c28a24c33a9a.src.mp4";
const OUTPUT: &str = "/tmp/tmpe1egagh7/tmp64x0jnz_.mp4";
const PASS: &str = "/tmp/tmpe1egagh7/tmpa8d9c0b1.mp4";
const GIF: &str = "/tmp/tmpb435fl0c.gif";

/// The argv of one profile: `plan_encode` for video profiles, `plan_gif` for the preview.
fn plan_one(
    info: &MediaInfo,
    profile: &ProfileSpec,
    settings: &EncodeSettings,
) -> Vec<Vec<String>> {
    if profile.extension == "gif" {
        return vec![plan_gif(INPUT, GIF)];
    }
    let io = EncodeIo {
        input: INPUT,
        output: OUTPUT,
        pass_file: PASS,
        chunk: false,
    };
    plan_encode(&io, info, profile, settings, &Backend::Software)
        .expect("every default profile plans for a 1080p source")
        .passes
}

fn bench_plan(c: &mut Criterion) {
    let info = MediaInfo::from_json(common::MEDIA_INFO_1080P30);
    let profiles = common::default_profiles();
    let settings = EncodeSettings::default();

    c.bench_function("media_info/from_json", |b| {
        b.iter(|| MediaInfo::from_json(black_box(common::MEDIA_INFO_1080P30)))
    });
    c.bench_function("plan/default_profiles_7", |b| {
        b.iter(|| {
            profiles
                .iter()
                .map(|p| plan_one(black_box(&info), p, &settings))
                .collect::<Vec<_>>()
        })
    });
    let h264_1080 = profiles
        .iter()
        .find(|p| p.resolution == Some(1080))
        .expect("1080 profile");
    c.bench_function("plan/plan_encode_h264_1080", |b| {
        b.iter(|| plan_one(black_box(&info), black_box(h264_1080), &settings))
    });

    let passes = plan_one(&info, h264_1080, &settings);
    c.bench_function("plan/commands_repr_h264_1080", |b| {
        b.iter(|| commands_repr(black_box(&passes)))
    });
}

criterion_group!(benches, bench_plan);
criterion_main!(benches);
