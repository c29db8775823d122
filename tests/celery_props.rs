//! Property tests of the Celery codec: no input panics it, and what we encode decodes back
//! unchanged. They live here, not in `src/celery`, because they need only the codec's public
//! API (so they also prove that surface is enough) and their hundreds of cases stay out of
//! the quick `cargo test --lib` loop.

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{Map, Value};

use mediacms_worker::celery::args::bind;
use mediacms_worker::celery::envelope::{
    decode_amqp, decode_redis, delivery_tag, encode_amqp_body, encode_redis, mark_redelivered,
    v2_headers,
};
use mediacms_worker::celery::message::OutgoingTask;

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        // Decimal floats (1.5, -0.125, 7200.0): serde_json without its `float_roundtrip`
        // feature may parse 17-digit values one ULP off, which is not a codec property.
        (any::<i32>(), 0u32..7).prop_map(|(m, k)| Value::from(f64::from(m) / 10f64.powi(k as i32))),
        ".{0,12}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((".{0,6}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn json_map() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec(("[a-z_]{1,8}", json_value()), 0..4)
        .prop_map(|kv| kv.into_iter().collect())
}

/// Envelopes shaped like kombu's, with any field possibly replaced by arbitrary JSON.
fn envelope() -> impl Strategy<Value = Vec<u8>> {
    let real = include_str!("../proto/golden/celery-5.4.0_kombu-5.7.0/encode_media-p9.json");
    let paths: Vec<Vec<&'static str>> = vec![
        vec!["body"],
        vec!["content-type"],
        vec!["headers"],
        vec!["headers", "task"],
        vec!["headers", "id"],
        vec!["headers", "eta"],
        vec!["headers", "expires"],
        vec!["headers", "retries"],
        vec!["headers", "timelimit"],
        vec!["headers", "root_id"],
        vec!["properties"],
        vec!["properties", "priority"],
        vec!["properties", "delivery_info"],
        vec!["properties", "body_encoding"],
    ];
    (prop::sample::select(paths), json_value()).prop_map(move |(path, value)| {
        let mut env: Value = serde_json::from_str(real).expect("golden is JSON");
        let (last, parents) = path.split_last().expect("non-empty path");
        let mut at = &mut env;
        for key in parents {
            at = &mut at[*key];
        }
        if let Value::Object(obj) = at {
            obj.insert((*last).to_owned(), value);
        }
        serde_json::to_vec(&env).expect("serializable")
    })
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    // Microsecond precision: the wire format has no more.
    (0i64..4_102_444_800_000_000).prop_map(|us| Utc.timestamp_micros(us).unwrap())
}

fn limit() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        Just(None),
        (0u32..100_000).prop_map(|s| Some(f64::from(s))),
        (0u32..10_000_000).prop_map(|ms| Some(f64::from(ms) / 1000.0)),
    ]
}

fn outgoing() -> impl Strategy<Value = OutgoingTask> {
    (
        ("[a-z_]{1,20}", "[a-z_]{1,12}"),
        (prop::collection::vec(json_value(), 0..5), json_map()),
        (any::<u8>(), prop::option::of(instant()), 0u32..5),
        (limit(), limit(), prop::option::of("[a-f0-9-]{36}")),
    )
        .prop_map(
            |((name, queue), (args, kwargs), (priority, eta, retries), (hard, soft, parent))| {
                let mut t = OutgoingTask::new(&name, &queue, args, kwargs);
                t.priority = priority;
                t.eta = eta;
                t.retries = retries;
                t.time_limit = (hard, soft);
                t.parent_id = parent;
                t
            },
        )
}

proptest! {
    #[test]
    fn decode_never_panics_on_bytes(raw in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_redis(&raw);
        let _ = delivery_tag(&raw);
        let _ = mark_redelivered(&raw);
    }

    #[test]
    fn decode_and_bind_never_panic_on_envelopes(raw in envelope()) {
        if let Ok(msg) = decode_redis(&raw) {
            let _ = bind(&msg);
        }
    }

    #[test]
    fn bind_never_panics(
        name in prop::sample::select(vec!["encode_media", "create_hls", "whisper_transcribe",
            "remove_media_file", "chunkize_media", "get_list_of_popular_media", "x"]),
        args in prop::collection::vec(json_value(), 0..8),
        kwargs in json_map(),
    ) {
        let mut task = OutgoingTask::new(name, "long_tasks", args, kwargs);
        task.retries = 0;
        let msg = decode_redis(&encode_redis(&task, "tag", "reply")).unwrap();
        let _ = bind(&msg);
    }

    #[test]
    fn encode_then_decode_round_trips(task in outgoing()) {
        let raw = encode_redis(&task, "tag-1", "reply-1");
        let msg = decode_redis(&raw).unwrap();
        prop_assert_eq!(&msg.name, &task.name);
        prop_assert_eq!(&msg.id, &task.id);
        prop_assert_eq!(&msg.args, &task.args);
        prop_assert_eq!(&msg.kwargs, &task.kwargs);
        prop_assert_eq!(msg.priority, task.priority);
        prop_assert_eq!(msg.eta, task.eta);
        prop_assert_eq!(msg.retries, task.retries);
        prop_assert_eq!(msg.time_limit, task.time_limit);
        prop_assert_eq!(&msg.root_id, &task.root_id);
        prop_assert_eq!(&msg.parent_id, &task.parent_id);
        prop_assert_eq!(&msg.routing_key, &task.queue);
        let amqp = decode_amqp(&encode_amqp_body(&task), v2_headers(&task), &task.queue, None)
            .unwrap();
        prop_assert_eq!(&amqp.args, &task.args);
        prop_assert_eq!(amqp.eta, task.eta);
    }
}
