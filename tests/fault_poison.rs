//! Fault case 3: a poison corpus LPUSHed raw into a private Redis DB in front of one real
//! worker binary. Every malformed class of celery-wire §2.2 (and more) must get its deliberate
//! disposition — dead-letter list, FAILURE NotRegistered, FAILURE TypeError, REVOKED expired,
//! ETA held then given back at shutdown — asserted from Redis state, and the worker must stay
//! up and run a good task queued behind them all.

mod support;

use std::time::Duration;

use base64::Engine as _;
use chrono::Utc;
use mediacms_worker::celery::envelope;
use mediacms_worker::celery::message::OutgoingTask;
use serde_json::{json, Map, Value};
use support::db::TestDb;
use support::fault::{
    envelope_of, lpush, result_doc, task_id, wait_until, Case, Endpoints, WorkerProc, DEAD_LETTER,
    QUEUE,
};
use support::redis::TestRedis;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// encode_media for an Encoding id that does not exist: one SQL read, result `false`.
fn cheap_encode() -> Vec<u8> {
    let mut kw = Map::new();
    kw.insert("force".into(), json!(true));
    envelope_of(
        "encode_media",
        vec![json!("NoSuchTok"), json!(23), json!(999_999)],
        kw,
        0,
    )
}

/// `raw` re-serialised after `edit` changed its JSON.
fn edited(raw: &[u8], edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(raw).unwrap();
    edit(&mut v);
    serde_json::to_vec(&v).unwrap()
}

/// Replace the base64 body by `body` (JSON).
fn with_body(raw: &[u8], body: Value) -> Vec<u8> {
    edited(raw, |v| {
        v["body"] = json!(B64.encode(serde_json::to_vec(&body).unwrap()));
    })
}

/// The dead-letter class: name, raw bytes, a fragment its recorded reason must contain.
fn dead_letter_corpus() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let good = cheap_encode;
    vec![
        (
            "bad_json",
            b"{\"body\": \"W10=\", oops".to_vec(),
            "not valid JSON",
        ),
        ("not_an_object", b"[1, 2, 3]".to_vec(), "not a JSON object"),
        (
            "binary_garbage",
            vec![0xff, 0xfe, 0x00, 0x80, 0x7b],
            "not valid JSON",
        ),
        (
            "bad_base64",
            edited(&good(), |v| v["body"] = json!("%%%not-base64%%%")),
            "base64",
        ),
        (
            "body_two_elements",
            with_body(&good(), json!([["t", 23, 1], {}])),
            "2 elements",
        ),
        (
            "body_not_array",
            with_body(&good(), json!({"args": []})),
            "not a JSON array",
        ),
        (
            "missing_delivery_info",
            edited(&good(), |v| {
                v["properties"]
                    .as_object_mut()
                    .unwrap()
                    .remove("delivery_info");
            }),
            "delivery_info",
        ),
        (
            "missing_task_header",
            edited(&good(), |v| {
                v["headers"].as_object_mut().unwrap().remove("task");
            }),
            "headers.task",
        ),
        (
            "missing_id_header",
            edited(&good(), |v| {
                v["headers"].as_object_mut().unwrap().remove("id");
            }),
            "headers.id",
        ),
        (
            "pickle_content_type",
            edited(&good(), |v| {
                v["content-type"] = json!("application/x-python-serialize")
            }),
            "content type",
        ),
        (
            "priority_out_of_range",
            edited(&good(), |v| v["properties"]["priority"] = json!(300)),
            "properties.priority",
        ),
        (
            "garbage_eta",
            edited(&good(), |v| v["headers"]["eta"] = json!("next tuesday")),
            "eta",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_poison_class_gets_its_disposition_and_the_worker_stays_up() {
    let case = Case::new("poison_corpus");
    let redis = TestRedis::claim();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let ep = Endpoints::in_dir(&redis.url, db.config(), dir.path());
    let mut r = redis.conn();

    let dead = dead_letter_corpus();
    for (_, raw, _) in &dead {
        lpush(&mut r, QUEUE, raw);
    }
    // Arguments that do not fit encode_media's signature: Python raises TypeError.
    let wrong_types = envelope_of(
        "encode_media",
        vec![json!(["not", "a", "token"]), json!("23"), json!(null)],
        Map::new(),
        0,
    );
    let too_many = envelope_of(
        "encode_media",
        (0..9).map(|i| json!(i)).collect(),
        Map::new(),
        0,
    );
    let unknown_kw = {
        let mut kw = Map::new();
        kw.insert("frobnicate".into(), json!(true));
        envelope_of("encode_media", vec![json!("t"), json!(1), json!(1)], kw, 0)
    };
    // 1 MB friendly_token: binds (it is a string), finds no Encoding, returns false.
    let huge = envelope_of(
        "encode_media",
        vec![json!("x".repeat(1 << 20)), json!(23), json!(999_998)],
        Map::new(),
        0,
    );
    let unknown = envelope_of("no_such_task", vec![], Map::new(), 0);
    let expired = edited(&cheap_encode(), |v| {
        v["headers"]["expires"] = json!("2020-01-01T00:00:00+00:00");
    });
    let eta = {
        let mut t = OutgoingTask::new(
            "encode_media",
            QUEUE,
            vec![json!("NoSuchTok"), json!(23), json!(999_997)],
            Map::new(),
        );
        t.eta = Some(Utc::now() + chrono::Duration::days(2));
        envelope::encode_redis(&t, &uuid::Uuid::new_v4().to_string(), "fault-suite")
    };
    let good = cheap_encode();
    for raw in [
        &wrong_types,
        &too_many,
        &unknown_kw,
        &huge,
        &unknown,
        &expired,
        &eta,
        &good,
    ] {
        lpush(&mut r, QUEUE, raw);
    }

    let log = dir.path().join("worker.log");
    let mut w = WorkerProc::spawn(&ep, &log, &["--lease-secs", "10"], &[]);
    let good_id = task_id(&good);
    let good_result = wait_until(Duration::from_secs(90), "the good task's result", || {
        assert!(w.alive(), "worker died\n{}", w.log_tail());
        result_doc(&mut r, &good_id)
    });
    assert_eq!(good_result["status"], "SUCCESS", "{good_result}");
    assert_eq!(good_result["result"], json!(false));
    assert!(
        w.alive(),
        "worker must survive the corpus\n{}",
        w.log_tail()
    );

    // Dead-letter list: one record per undecodable entry, raw bytes kept, reason named.
    let records: Vec<String> = redis::cmd("LRANGE")
        .arg(DEAD_LETTER)
        .arg(0)
        .arg(-1)
        .query(&mut r)
        .unwrap();
    let records: Vec<Value> = records
        .iter()
        .map(|s| serde_json::from_str(s).expect("dead-letter record is JSON"))
        .collect();
    assert_eq!(records.len(), dead.len(), "{records:#?}");
    for (name, raw, reason) in &dead {
        let raw_text = String::from_utf8_lossy(raw);
        let rec = records
            .iter()
            .find(|r| r["raw"] == *raw_text)
            .unwrap_or_else(|| panic!("{name}: no dead-letter record with its raw bytes"));
        let why = rec["reason"].as_str().unwrap();
        assert!(
            why.to_lowercase().contains(&reason.to_lowercase()),
            "{name}: reason {why:?} should mention {reason:?}"
        );
        assert_eq!(rec["queue"], QUEUE, "{name}");
    }

    for (name, raw) in [
        ("wrong_types", &wrong_types),
        ("too_many", &too_many),
        ("unknown_kw", &unknown_kw),
    ] {
        let doc = result_doc(&mut r, &task_id(raw)).unwrap_or_else(|| panic!("{name}: no result"));
        assert_eq!(doc["status"], "FAILURE", "{name}: {doc}");
        assert_eq!(doc["result"]["exc_type"], "TypeError", "{name}: {doc}");
    }
    let doc = result_doc(&mut r, &task_id(&huge)).expect("huge: result");
    assert_eq!(
        (doc["status"].clone(), doc["result"].clone()),
        (json!("SUCCESS"), json!(false))
    );
    let doc = result_doc(&mut r, &task_id(&unknown)).expect("unknown: result");
    assert_eq!(doc["status"], "FAILURE");
    assert_eq!(doc["result"]["exc_type"], "NotRegistered");
    assert_eq!(doc["result"]["exc_message"], json!(["no_such_task"]));
    let doc = result_doc(&mut r, &task_id(&expired)).expect("expired: result");
    assert_eq!(doc["status"], "REVOKED", "{doc}");
    assert!(doc.to_string().contains("expired"), "{doc}");

    // The ETA task is held: unacked, not run, no result.
    let eta_id = task_id(&eta);
    assert!(
        result_doc(&mut r, &eta_id).is_none(),
        "ETA task must not run early"
    );
    let held: Vec<String> = redis::cmd("HVALS").arg("unacked").query(&mut r).unwrap();
    assert_eq!(held.len(), 1, "only the ETA task is held: {held:?}");
    assert!(held[0].contains(&eta_id));
    let queued: usize = redis::cmd("LLEN").arg(QUEUE).query(&mut r).unwrap();
    assert_eq!(queued, 0, "everything else was consumed");

    // Shutdown gives the held ETA delivery back to the front of its queue, marked redelivered.
    w.sigterm();
    let status = w
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no exit after SIGTERM\n{}", w.log_tail()));
    assert!(status.success(), "exit {status}\n{}", w.log_tail());
    let back: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg(QUEUE)
        .arg(0)
        .arg(-1)
        .query(&mut r)
        .unwrap();
    assert_eq!(back.len(), 1, "the ETA task is back in {QUEUE}");
    let msg = envelope::decode_redis(&back[0]).unwrap();
    assert_eq!(msg.id, eta_id);
    assert!(msg.redelivered());
    let unacked: usize = redis::cmd("HLEN").arg("unacked").query(&mut r).unwrap();
    assert_eq!(unacked, 0);
    case.survived();
}
