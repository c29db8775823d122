//! A private Redis database per test (DB 2..=14, claimed on DB 0 with a 15-minute key) and a
//! runner for the Python Celery scripts in `tests/py` (venv python, env vars, timeout).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const REDIS_HOST: &str = "redis://127.0.0.1:6379";
const CLAIM_TTL_SECS: u64 = 900;
const CLAIM_WAIT: Duration = Duration::from_secs(120);

/// A claimed, flushed Redis database; released (flushed, claim deleted) on drop.
pub struct TestRedis {
    pub db: u8,
    pub url: String,
    token: String,
}

fn claim_key(db: u8) -> String {
    format!("mediacms-worker-test:db{db}")
}

fn sync_conn(db: u8) -> redis::Connection {
    redis::Client::open(format!("{REDIS_HOST}/{db}"))
        .and_then(|c| c.get_connection())
        .expect("Redis on 127.0.0.1:6379 (the integration tests need it)")
}

impl TestRedis {
    /// Claim a free DB index in 2..=14 (waiting while all are taken) and FLUSHDB it.
    pub fn claim() -> TestRedis {
        let token = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
        let mut db0 = sync_conn(0);
        let start = Instant::now();
        loop {
            for db in 2..=14u8 {
                let won: Option<String> = redis::cmd("SET")
                    .arg(claim_key(db))
                    .arg(&token)
                    .arg("NX")
                    .arg("EX")
                    .arg(CLAIM_TTL_SECS)
                    .query(&mut db0)
                    .expect("claim a test DB");
                if won.is_some() {
                    let _: () = redis::cmd("FLUSHDB").query(&mut sync_conn(db)).unwrap();
                    let url = format!("{REDIS_HOST}/{db}");
                    return TestRedis { db, url, token };
                }
            }
            assert!(
                start.elapsed() < CLAIM_WAIT,
                "no free test Redis DB in 2..=14"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A synchronous connection to this test's DB, for setting up and inspecting keys.
    pub fn conn(&self) -> redis::Connection {
        sync_conn(self.db)
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _: redis::RedisResult<()> = redis::cmd("FLUSHDB").query(&mut self.conn());
        // Release only our own claim (it may have expired and been taken by someone else).
        let release = redis::Script::new(
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0",
        );
        let _: redis::RedisResult<i64> = release
            .key(claim_key(self.db))
            .arg(&self.token)
            .invoke(&mut sync_conn(0));
    }
}

/// The venv interpreter: `$MEDIACMS_WORKER_PY`, else `<crate>/.venv/bin/python`.
pub fn python() -> PathBuf {
    std::env::var_os("MEDIACMS_WORKER_PY")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

/// `tests/py`, the working directory of every Python run (so `-A tiny_app` imports).
pub fn py_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py")
}

fn py_command(args: &[&str], env: &HashMap<&str, String>) -> Command {
    let mut cmd = Command::new(python());
    cmd.args(args)
        .current_dir(py_dir())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null());
    cmd
}

/// Run `python <args…>` in `tests/py` with `env`; kill it after `timeout`. Any exit status.
pub fn run_py_raw(args: &[&str], env: &HashMap<&str, String>, timeout: Duration) -> Output {
    let mut child = py_command(args, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", python().display()));
    let start = Instant::now();
    while child.try_wait().expect("wait for python").is_none() {
        if start.elapsed() > timeout {
            let _ = child.kill();
            let out = child.wait_with_output().expect("reap python");
            panic!(
                "python {args:?} timed out after {timeout:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect python output")
}

/// Run a script and return its stdout; panics (with stderr) unless it exits 0.
pub fn run_py(args: &[&str], env: &HashMap<&str, String>, timeout: Duration) -> String {
    let out = run_py_raw(args, env, timeout);
    assert!(
        out.status.success(),
        "python {args:?} failed ({}); stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("python stdout is UTF-8")
}

/// A long-running Python process (e.g. a Celery worker), killed and reaped on drop.
pub struct PyChild {
    child: Child,
}

impl PyChild {
    /// Start `python <args…>` in `tests/py`; its output goes to `log`.
    pub fn spawn(args: &[&str], env: &HashMap<&str, String>, log: &Path) -> PyChild {
        let out = std::fs::File::create(log).expect("create python log");
        let err = out.try_clone().expect("dup python log");
        let child = py_command(args, env)
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", python().display()));
        PyChild { child }
    }
}

impl Drop for PyChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
