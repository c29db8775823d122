//! Unit tests of the pure dispatch decisions.

use super::*;
use crate::broker::memory::test_task;
use crate::celery::message::DecodeError;
use crate::celery::result::TaskState;
use serde_json::json;
use std::time::Duration;

fn now() -> DateTime<Utc> {
    "2026-11-27T02:47:12Z".parse().unwrap()
}

fn delivery(task: Result<TaskMessage, DecodeError>) -> Delivery {
    Delivery {
        tag: "t".into(),
        lease: "t#1".into(),
        queue: "long_tasks".into(),
        raw: vec![],
        message: task,
        redelivered: false,
    }
}

#[test]
fn classify_covers_every_disposition() {
    let poison = delivery(Err(DecodeError::Field("id")));
    assert!(
        matches!(classify(&poison, true, false, now()), Triage::DeadLetter(r) if r.contains("id"))
    );
    let t = test_task("encode_media", "a");
    assert_eq!(
        classify(&delivery(Ok(t.clone())), false, false, now()),
        Triage::Unknown("encode_media".into())
    );
    assert_eq!(
        classify(&delivery(Ok(t.clone())), true, true, now()),
        Triage::Revoked
    );
    assert_eq!(
        classify(&delivery(Ok(t.clone())), true, false, now()),
        Triage::Run
    );
    let expired = TaskMessage {
        expires: Some(now() - chrono::Duration::seconds(1)),
        ..t.clone()
    };
    assert_eq!(
        classify(&delivery(Ok(expired)), true, false, now()),
        Triage::Expired
    );
    let eta = now() + chrono::Duration::seconds(10);
    let later = TaskMessage {
        eta: Some(eta),
        ..t.clone()
    };
    assert_eq!(
        classify(&delivery(Ok(later)), true, false, now()),
        Triage::Hold(eta)
    );
    let past = TaskMessage {
        eta: Some(now() - chrono::Duration::seconds(10)),
        ..t
    };
    assert_eq!(
        classify(&delivery(Ok(past)), true, false, now()),
        Triage::Run
    );
}

#[test]
fn success_writes_result_unless_ignored() {
    let t = test_task("x", "a");
    let s = settle(Outcome::Success(json!(true)), None, &t, now());
    assert_eq!(s.action, Action::Ack);
    assert_eq!(s.result.unwrap().state, TaskState::Success);
    let mut quiet = t.clone();
    quiet.headers.insert("ignore_result".into(), json!(true));
    let s = settle(Outcome::Success(json!(true)), None, &quiet, now());
    assert_eq!((s.result, s.action), (None, Action::Ack));
}

#[test]
fn retry_republishes_same_id_with_retries_plus_one_and_eta() {
    let t = TaskMessage {
        priority: 9,
        ..test_task("encode_media", "a")
    };
    let err = TaskError::new("VideoEncodingError", "files.backends", "boom");
    let s = settle(
        Outcome::Retry {
            countdown: Duration::from_secs(5),
            error: err,
        },
        None,
        &t,
        now(),
    );
    let p = s.publish.unwrap();
    assert_eq!((p.id.as_str(), p.retries, p.priority), ("a", 1, 9));
    assert_eq!(p.eta, Some(now() + chrono::Duration::seconds(5)));
    assert_eq!(p.parent_id.as_deref(), Some("a"));
    assert_eq!(p.queue, "long_tasks");
    let r = s.result.unwrap();
    assert_eq!(r.state, TaskState::Retry);
    assert_eq!(r.result["exc_message"], json!(["boom"]));
    assert_eq!(s.action, Action::Ack);
}

#[test]
fn cancel_reasons_override_outcomes() {
    let t = test_task("x", "a");
    let term = settle(
        Outcome::Failure(soft_time_limit_error()),
        Some(CancelReason::Terminated),
        &t,
        now(),
    );
    let r = term.result.unwrap();
    assert_eq!(r.state, TaskState::Revoked);
    assert_eq!(r.result["exc_message"], json!(["terminated"]));
    let aborted = settle(
        Outcome::Failure(soft_time_limit_error()),
        Some(CancelReason::Abort),
        &t,
        now(),
    );
    assert_eq!((aborted.result, aborted.action), (None, Action::Requeue));
    let finished = settle(
        Outcome::Success(json!(1)),
        Some(CancelReason::Abort),
        &t,
        now(),
    );
    assert_eq!(finished.action, Action::Ack);
    let soft = settle(
        Outcome::Aborted,
        Some(CancelReason::SoftTimeLimit),
        &t,
        now(),
    );
    let r = soft.result.unwrap();
    assert_eq!(r.state, TaskState::Failure);
    assert_eq!(
        r.result,
        json!({"exc_type": "SoftTimeLimitExceeded", "exc_message": [], "exc_module": "billiard.exceptions"})
    );
    let plain_abort = settle(Outcome::Aborted, None, &t, now());
    assert_eq!(plain_abort.action, Action::Requeue);
}

#[test]
fn a_lost_lease_settles_nothing_whatever_the_outcome() {
    let t = test_task("x", "a");
    for outcome in [
        Outcome::Success(json!(true)),
        Outcome::Aborted,
        Outcome::Failure(soft_time_limit_error()),
    ] {
        let s = settle(outcome, Some(CancelReason::LeaseLost), &t, now());
        assert_eq!(
            (s.publish, s.result, s.action),
            (None, None, Action::Abandon)
        );
    }
}

#[test]
fn not_registered_and_revoked_documents() {
    let r = not_registered_result("id1", "no_such_task", now());
    assert_eq!(r.state, TaskState::Failure);
    assert_eq!(
        r.result,
        json!({"exc_type": "NotRegistered", "exc_message": ["no_such_task"], "exc_module": "celery.exceptions"})
    );
    let r = revoked_result("id1", "expired", now());
    assert_eq!(r.result["exc_type"], "TaskRevokedError");
    assert_eq!(r.result["exc_message"], json!(["expired"]));
}

#[test]
fn what_a_job_sends_goes_out_as_ours_unless_it_names_its_producer() {
    let mut t = test_task("encode_media", "a");
    let retry = |t: &TaskMessage| {
        let error = TaskError::new("E", "m", "");
        let countdown = Duration::from_secs(5);
        settle(Outcome::Retry { countdown, error }, None, t, now())
    };
    let follow_up = OutgoingTask::new("create_hls", "long_tasks", vec![], Default::default());
    let mut s = retry(&t).with_follow_ups(vec![follow_up]);
    s.stamp_origin("gen1@ours");
    assert_eq!(
        s.publish.unwrap().origin,
        "gen1@ours",
        "no origin header: ours"
    );
    assert_eq!(s.follow_ups[0].origin, "gen1@ours");
    t.headers.insert("origin".into(), json!("gen9@theirs"));
    let mut s = retry(&t);
    s.stamp_origin("gen1@ours");
    assert_eq!(
        s.publish.unwrap().origin,
        "gen9@theirs",
        "a retry keeps the request's"
    );
}

#[test]
fn arguments_that_do_not_bind_are_pythons_type_error() {
    let mut t = test_task("encode_media", "a");
    t.args = vec![json!(1)];
    let e = crate::celery::args::bind(&t).unwrap_err();
    let Outcome::Failure(err) = bad_args(&e) else {
        panic!("not a failure")
    };
    let exc = (err.exc_type.as_str(), err.exc_module.as_str());
    assert_eq!(exc, ("TypeError", "builtins"));
    assert!(err.message.contains("encode_media"), "{}", err.message);
}
