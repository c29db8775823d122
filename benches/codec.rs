//! Criterion micro benches of the Celery Redis envelope codec: decoding MediaCMS's real
//! `encode_media` message and encoding an outgoing task (the retry / `create_hls` path).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use mediacms_worker::celery::envelope::{decode_redis, encode_redis};
use mediacms_worker::celery::message::OutgoingTask;
use serde_json::{json, Map, Value};

mod common;

fn bench_decode(c: &mut Criterion) {
    let raw = common::message("encode_media-1.json");
    // Fail loudly before timing if the capture no longer decodes.
    decode_redis(&raw).expect("encode_media-1.json decodes");
    c.bench_function("decode_redis/encode_media-1", |b| {
        b.iter(|| decode_redis(black_box(&raw)).expect("decodes"))
    });
    let chunk = common::message("encode_media-chunk-1.json");
    decode_redis(&chunk).expect("encode_media-chunk-1.json decodes");
    c.bench_function("decode_redis/encode_media-chunk-1", |b| {
        b.iter(|| decode_redis(black_box(&chunk)).expect("decodes"))
    });
}

fn bench_encode(c: &mut Criterion) {
    let mut kwargs = Map::new();
    kwargs.insert("force".to_owned(), Value::Bool(true));
    let task = OutgoingTask::new(
        "encode_media",
        "long_tasks",
        vec![json!("2SJorQ1Qe"), json!(3), json!(3)],
        kwargs,
    );
    let hls = OutgoingTask::new(
        "create_hls",
        "long_tasks",
        vec![json!("2SJorQ1Qe")],
        Map::new(),
    );
    let tag = "4b0c7a4e-6a43-4a39-9e0b-0d1c6d1e2f3a";
    let reply_to = "8f3b6c2e-1d2a-3b4c-5d6e-7f8091a2b3c4";
    c.bench_function("encode_redis/encode_media", |b| {
        b.iter(|| encode_redis(black_box(&task), black_box(tag), black_box(reply_to)))
    });
    c.bench_function("encode_redis/create_hls", |b| {
        b.iter(|| encode_redis(black_box(&hls), black_box(tag), black_box(reply_to)))
    });
}

criterion_group!(benches, bench_decode, bench_encode);
criterion_main!(benches);
