//! Real Python Celery 5.4 `inspect`/`control` against our pidbox on a private Redis DB: ping,
//! active (args as the argsrepr string), terminate, and the worker events on `celeryev`.
//! Carries its own tiny private-DB helper until `tests/support/redis.rs` lands on main.

use std::path::PathBuf;

use futures::StreamExt;
use mediacms_worker::broker::pidbox::Pidbox;
use redis::AsyncCommands;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::*;

const REDIS: &str = "redis://127.0.0.1:6379";
const HOST: &str = "rust@test";

/// A Redis DB index claimed for this test (`SET mediacms-worker-test:db<n> <pid> NX EX 900` on
/// DB 0), flushed before use.
struct PrivateDb {
    index: u8,
}

impl PrivateDb {
    async fn claim() -> Option<Self> {
        let client = redis::Client::open(format!("{REDIS}/0")).ok()?;
        let mut db0 = client.get_multiplexed_async_connection().await.ok()?;
        for index in 2..=14u8 {
            let key = format!("mediacms-worker-test:db{index}");
            let opts = redis::SetOptions::default()
                .conditional_set(redis::ExistenceCheck::NX)
                .with_expiration(redis::SetExpiry::EX(900));
            let won: Option<String> = db0.set_options(&key, std::process::id(), opts).await.ok()?;
            if won.is_some() {
                let db = Self { index };
                let mut conn = db.client().get_multiplexed_async_connection().await.ok()?;
                let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.ok()?;
                return Some(db);
            }
        }
        None
    }

    fn url(&self) -> String {
        format!("{REDIS}/{}", self.index)
    }

    fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("valid url")
    }

    async fn release(self) {
        if let Ok(client) = redis::Client::open(format!("{REDIS}/0")) {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                let _: Result<(), _> = c
                    .del(format!("mediacms-worker-test:db{}", self.index))
                    .await;
            }
        }
    }
}

fn python() -> PathBuf {
    std::env::var_os("MEDIACMS_WORKER_PY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

/// `python -m celery -b <url> <args…>`: JSON stdout parsed, or all output on a non-zero exit.
async fn celery_try(url: &str, args: &[&str]) -> Result<Value, String> {
    let out = tokio::process::Command::new(python())
        .args(["-m", "celery", "-b", url])
        .args(args)
        .output()
        .await
        .expect("run python celery");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)));
    }
    let json_line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or("null");
    serde_json::from_str(json_line).map_err(|e| format!("{e}: {stdout}"))
}

async fn celery(url: &str, args: &[&str]) -> Value {
    celery_try(url, args)
        .await
        .unwrap_or_else(|e| panic!("celery {args:?} failed: {e}"))
}

#[tokio::test]
async fn python_celery_inspects_and_terminates_via_pidbox() {
    if !python().exists() {
        eprintln!("SKIP: no Python venv at {}", python().display());
        return;
    }
    let Some(db) = PrivateDb::claim().await else {
        eprintln!("SKIP: no Redis at {REDIS} or no free test DB");
        return;
    };
    let url = db.url();
    let mut events = db.client().get_async_pubsub().await.unwrap();
    events
        .psubscribe(format!("/{}.celeryev/worker.*", db.index))
        .await
        .unwrap();

    let broker = MemoryBroker::default();
    let mut t = task("py1", 0);
    t.headers
        .insert("argsrepr".into(), json!("('TOKEN', 3, 101)"));
    broker.push_task(Q, t);
    let handler = Fake::new(Outcome::Success(json!(true)), 60_000);
    let run = start(
        &broker,
        handler.clone(),
        PoolOptions {
            hostname: HOST.into(),
            ..options(1, 1)
        },
    );
    eventually("active", || run.state.snapshot().active.len() == 1).await;

    let stop = CancellationToken::new();
    let pidbox = tokio::spawn(Pidbox::new(db.client(), run.state.clone()).run(stop.clone()));
    let mut conn = db
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let member = mediacms_worker::broker::pidbox::pidbox_member(HOST);
    for _ in 0..100 {
        if conn
            .sismember("_kombu.binding.celery.pidbox", &member)
            .await
            .unwrap()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // PSUBSCRIBE follows the SADD

    let ping = celery(&url, &["inspect", "ping", "-d", HOST, "-j", "-t", "2"]).await;
    assert_eq!(ping, json!({HOST: {"ok": "pong"}}));
    let active = celery(&url, &["inspect", "active", "-d", HOST, "-j", "-t", "2"]).await;
    let job = &active[HOST][0];
    assert_eq!(
        (&job["id"], &job["name"]),
        (&json!("py1"), &json!("encode_media"))
    );
    assert_eq!(
        job["args"], "('TOKEN', 3, 101)",
        "argsrepr string for MediaCMS list_tasks"
    );
    assert!(job["time_start"].as_f64().unwrap() > 0.0);
    let other = celery_try(
        &url,
        &["inspect", "ping", "-d", "someone@else", "-j", "-t", "1"],
    )
    .await;
    let err = other.expect_err("a request for another node is ignored");
    assert!(err.contains("No nodes replied"), "{err}");

    celery(
        &url,
        &[
            "control",
            "terminate",
            "SIGTERM",
            "py1",
            "-d",
            HOST,
            "-j",
            "-t",
            "2",
        ],
    )
    .await;
    eventually("terminated", || broker.acked() == ["py1"]).await;
    let r = &broker.results()[0];
    assert_eq!(
        (r.state, &r.result["exc_message"]),
        (TaskState::Revoked, &json!(["terminated"]))
    );

    stop.cancel();
    pidbox.await.unwrap();
    run.drain().await;
    let mut seen = Vec::new();
    let mut stream = events.on_message();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(300), stream.next()).await
    {
        seen.push(
            msg.get_channel_name()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    drop(stream);
    for ev in ["worker.online", "worker.heartbeat", "worker.offline"] {
        assert!(seen.iter().any(|s| s == ev), "missing {ev} in {seen:?}");
    }
    let still_bound: bool = conn
        .sismember("_kombu.binding.celery.pidbox", &member)
        .await
        .unwrap();
    assert!(!still_bound, "binding removed at shutdown");
    db.release().await;
}
