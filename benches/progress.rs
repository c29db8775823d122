//! Criterion micro bench of `ffmpeg::progress`: parsing the `-progress` key=value blocks of a
//! 30 s encode (one block per 0.5 s, as ffmpeg writes them) and the percentage.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use mediacms_worker::ffmpeg::progress::{percent, ProgressParser};
use std::time::Duration;

/// The 60 blocks ffmpeg 5.1 writes for a 30 s 1080p encode with `-progress pipe:1`.
fn blocks() -> Vec<String> {
    (1..=60)
        .map(|i| {
            let us = i * 500_000;
            let end = if i == 60 { "end" } else { "continue" };
            format!(
                "frame={f}\nfps=24.75\nstream_0_0_q=28.0\nbitrate=1234.5kbits/s\n\
                 total_size={sz}\nout_time_us={us}\nout_time_ms={us}\n\
                 out_time=00:00:{s:02}.{ms:06}\ndup_frames=0\ndrop_frames=0\nspeed=0.826x\n\
                 progress={end}\n",
                f = i * 15,
                sz = i * 77_000,
                s = us / 1_000_000,
                ms = us % 1_000_000,
            )
        })
        .collect()
}

fn bench_progress(c: &mut Criterion) {
    let text = blocks().concat();
    c.bench_function("progress/parse_30s_encode_60_blocks", |b| {
        b.iter(|| {
            let mut parser = ProgressParser::new();
            let mut last = None;
            for line in black_box(&text).lines() {
                if let Some(p) = parser.push_line(line) {
                    last = Some(p);
                }
            }
            last.expect("blocks parse")
        })
    });
    c.bench_function("progress/percent", |b| {
        b.iter(|| percent(black_box(Duration::from_millis(17_500)), black_box(30.0)))
    });
}

criterion_group!(benches, bench_progress);
criterion_main!(benches);
