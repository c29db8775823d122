//! Real Python Celery 5.4 `inspect`/`control` against our pidbox on a private Redis DB: ping,
//! active (args as the argsrepr string), terminate, and the worker events on `celeryev`.

use futures::StreamExt;
use mediacms_worker::broker::pidbox::Pidbox;
use redis::AsyncCommands;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::support::redis::{python, TestRedis};

const HOST: &str = "rust@test";

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
    // A missing venv or Redis fails the test (TestRedis panics naming what is missing).
    assert!(
        python().exists(),
        "no Python venv at {}",
        python().display()
    );
    let db = TestRedis::claim();
    let url = db.url.clone();
    let client = || redis::Client::open(url.as_str()).expect("valid url");
    let mut events = client().get_async_pubsub().await.unwrap();
    events
        .psubscribe(format!("/{}.celeryev/worker.*", db.db))
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
    let pidbox = tokio::spawn(Pidbox::new(client(), run.state.clone()).run(stop.clone()));
    let mut conn = client().get_multiplexed_async_connection().await.unwrap();
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
    // No settling sleep: the worker subscribes before it adds the binding, so the binding
    // being visible means a ping now reaches it.

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
}
