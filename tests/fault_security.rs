//! Fault case 8: security. Paths from the DB are confined to MEDIA_ROOT (a `..` path or a
//! symlink escaping the root fails the encode with a readable log; nothing outside is read or
//! written), `remove_media_file` refuses `..`/symlink/absolute-elsewhere paths, the binary
//! refuses to run as root unless told to, and credentials never reach logs or `check-config`.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mediacms_worker::mediacms::layout::{self, LayoutError};
use mediacms_worker::tasks::encode_media::EncodeMedia;
use mediacms_worker::tasks::remove_media_file::RemoveMediaFile;
use mediacms_worker::tasks::Outcome;
use serde_json::json;
use support::db::TestDb;
use support::env::{job_ctx, run_task};
use support::fault::{
    encode_task, encoding_row, insert_media_and_encoding, lpush, result_doc, task_env, task_id,
    wait_until, Case, Endpoints, WorkerProc, QUEUE, WORKER_BIN,
};
use support::media::{clip, ClipSpec};
use support::redis::TestRedis;
use support::worker::files_under;

/// One encode whose Media.media_file is `media_file`: the outcome, the row, and proof that
/// the encoded/ tree stayed empty.
async fn encode_with_media_file(
    db: &TestDb,
    redis: &TestRedis,
    root: &Path,
    media_file: &str,
    id: i32,
) -> (Outcome, Option<(String, String)>) {
    let c = db.client().await;
    let info: String = c
        .query_one("SELECT media_info FROM files_media WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    let token = format!("Esc{id}");
    insert_media_and_encoding(&c, id, &token, media_file, &info, 8, 23).await;
    let env = task_env(&db.config(), root, &root.join("tmp")).await;
    let handler = EncodeMedia {
        env: std::sync::Arc::new(env),
    };
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        run_task(
            &handler,
            &encode_task(&token, 23, id),
            job_ctx(None),
            &redis.url,
        ),
    )
    .await
    .expect("a refused path must not hang");
    (outcome, encoding_row(&c, id).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_paths_escaping_media_root_fail_readably_and_touch_nothing_outside() {
    let case = Case::new("security_db_path_confinement");
    let db = TestDb::with_upload_example().await;
    let redis = TestRedis::claim();
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("media");
    let outside = base.path().join("outside");
    std::fs::create_dir_all(root.join("original/user/refuser")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    // A real, encodable video outside the root: if confinement failed, the encode would work.
    let secret = clip(&outside, &ClipSpec::default());
    let link = root.join("original/user/refuser/link.mp4");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let before = files_under(&outside);

    let cases = [
        (
            101,
            "../outside/".to_owned() + secret.file_name().unwrap().to_str().unwrap(),
        ),
        (102, "../../../../../../etc/passwd".to_owned()),
        (103, "original/user/refuser/link.mp4".to_owned()),
        (104, secret.display().to_string()),
    ];
    for (id, media_file) in &cases {
        let (outcome, row) = encode_with_media_file(&db, &redis, &root, media_file, *id).await;
        let Outcome::Failure(err) = &outcome else {
            panic!("{media_file}: expected a failure, got {outcome:?}");
        };
        assert!(
            err.message.contains("outside MEDIA_ROOT"),
            "{media_file}: unreadable error {err:?}"
        );
        let (status, logs) = row.unwrap_or_else(|| panic!("{media_file}: row vanished"));
        assert_eq!(
            status, "fail",
            "{media_file}: the Encoding must not stay {status}"
        );
        assert!(
            logs.contains("outside MEDIA_ROOT"),
            "{media_file}: the Encoding log must say why: {logs:?}"
        );
    }
    assert_eq!(
        files_under(&outside),
        before,
        "nothing written outside the root"
    );
    let encoded = files_under(&root.join("encoded"));
    assert!(
        encoded.is_empty(),
        "nothing encoded from outside: {encoded:?}"
    );
    case.survived();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_media_file_refuses_escapes_and_symlinks() {
    let case = Case::new("security_remove_media_file");
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("media");
    let outside = base.path().join("outside");
    std::fs::create_dir_all(root.join("encoded")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let victim = outside.join("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    let inside = root.join("encoded/inside.mp4");
    std::fs::write(&inside, "inside").unwrap();
    std::os::unix::fs::symlink(&victim, root.join("encoded/escape.mp4")).unwrap();
    std::os::unix::fs::symlink(&inside, root.join("encoded/inner-link.mp4")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("dirlink")).unwrap();

    let refused = [
        "../outside/victim.txt".to_owned(),
        "encoded/../../outside/victim.txt".to_owned(),
        victim.display().to_string(),
        "encoded/escape.mp4".to_owned(),
        "dirlink/victim.txt".to_owned(),
        // A link to a file inside the root is refused too: a planted link never redirects.
        "encoded/inner-link.mp4".to_owned(),
        "encoded".to_owned(),
    ];
    // The task handler, as the worker runs a `remove_media_file` message: refused → `false`.
    let db = TestDb::new().await;
    let redis = TestRedis::claim();
    let env = task_env(&db.config(), &root, &base.path().join("tmp")).await;
    let handler = RemoveMediaFile {
        env: std::sync::Arc::new(env),
    };
    let task = |p: &str| {
        let raw = support::fault::envelope_of(
            "remove_media_file",
            vec![json!(p)],
            serde_json::Map::new(),
            0,
        );
        mediacms_worker::celery::envelope::decode_redis(&raw).unwrap()
    };
    for p in &refused {
        match layout::remove_media_file(&root, Path::new(p)) {
            Err(LayoutError::Escapes { .. }) | Err(LayoutError::NotRegularFile(_)) => {}
            other => panic!("{p}: expected a refusal, got {other:?}"),
        }
        let outcome = run_task(&handler, &task(p), job_ctx(None), &redis.url).await;
        assert_eq!(outcome, Outcome::Success(json!(false)), "{p}");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    assert!(
        inside.is_file(),
        "the link's target inside the root survives"
    );
    // The legitimate delete still works.
    let outcome = run_task(
        &handler,
        &task("encoded/inside.mp4"),
        job_ctx(None),
        &redis.url,
    )
    .await;
    assert_eq!(outcome, Outcome::Success(json!(true)));
    assert!(!inside.exists());
    case.survived();
}

#[test]
fn run_as_root_is_refused_unless_allowed() {
    let case = Case::new("security_root_refusal");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(WORKER_BIN)
        .args(["run", "--http-addr", "127.0.0.1:0"])
        .env_clear()
        .env("REDIS_LOCATION", "redis://127.0.0.1:1/0")
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let stderr = || std::fs::read_to_string(log.path()).unwrap_or_default();
    if root {
        let status = wait_until(Duration::from_secs(30), "exit", || {
            child.try_wait().unwrap()
        });
        assert_eq!(status.code(), Some(64), "{}", stderr());
        assert!(
            stderr().contains("allow_root"),
            "must name the field: {}",
            stderr()
        );
    } else {
        // Not root: the refusal does not apply; the run gets past config and waits for the
        // unreachable broker instead (start-up waits), never naming allow_root.
        wait_until(Duration::from_secs(30), "a broker wait", || {
            stderr().contains("waiting for the broker").then_some(())
        });
        let _ = child.kill();
        let _ = child.wait();
        assert!(!stderr().contains("allow_root"), "{}", stderr());
    }
    case.survived();
}

const PG_SECRET: &str = "s3cret-xyz";
const REDIS_SECRET: &str = "r3dis-pw-xyz";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_reach_logs_or_check_config() {
    let case = Case::new("security_credentials_redacted");
    let redis = TestRedis::claim();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    // Redis's default user has `nopass`, so any password authenticates: a password-bearing
    // URL that works against the shared test server.
    let url = redis
        .url
        .replace("redis://", &format!("redis://default:{REDIS_SECRET}@"));
    let mut pg = db.config();
    pg.password = PG_SECRET.into();
    let ep = Endpoints::in_dir(&url, pg, dir.path());
    let mut r = redis.conn();
    let raw = support::fault::envelope_of(
        "encode_media",
        vec![json!("NoSuchTok"), json!(23), json!(424_242)],
        serde_json::Map::new(),
        0,
    );
    lpush(&mut r, QUEUE, &raw);
    let log = dir.path().join("worker.log");
    let mut w = WorkerProc::spawn(&ep, &log, &["-l", "trace"], &[]);
    let id = task_id(&raw);
    let doc = wait_until(Duration::from_secs(60), "the task's result", || {
        assert!(w.alive(), "{}", w.log_tail());
        result_doc(&mut r, &id)
    });
    assert_eq!(doc["status"], "SUCCESS");
    w.sigterm();
    assert!(w.wait_exit(Duration::from_secs(30)).is_some());
    let text = w.log_text();
    assert!(text.len() > 1000, "trace logging produced output");
    for secret in [PG_SECRET, REDIS_SECRET] {
        assert!(!text.contains(secret), "{secret} leaked into the log");
    }

    // check-config, and a URL that fails to parse (its error quotes the URL).
    let bad_url = format!("redis://default:{REDIS_SECRET}@127.0.0.1:notaport/0");
    for (sub, redis_url) in [("check-config", url.as_str()), ("run", bad_url.as_str())] {
        let out = Command::new(WORKER_BIN)
            .args([sub, "--allow-root", "true", "--http-addr", "127.0.0.1:0"])
            .env_clear()
            .env("REDIS_LOCATION", redis_url)
            .env("POSTGRES_PASSWORD", PG_SECRET)
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(all.contains("redacted"), "{sub}: {all}");
        for secret in [PG_SECRET, REDIS_SECRET] {
            assert!(!all.contains(secret), "{sub}: {secret} leaked: {all}");
        }
    }
    case.survived();
}
