//! Fault-suite helpers: the `FAULT-CASE` verdict line, private Redis and Postgres servers that a
//! test may kill and restart (the shared ones must never be touched), the real worker binary
//! against explicit endpoints, `/proc` process-tree sampling, and MediaCMS row/message builders.
//!
//! `tests/support/worker.rs` (e2e) drives the binary against a `Site` on the shared services;
//! the helpers here exist because fault tests need endpoints they own (restartable servers,
//! several workers on one DB), not a second copy of that runner.

use super::worker::{free_port, log_tail};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mediacms_worker::celery::envelope;
use mediacms_worker::celery::message::OutgoingTask;
use mediacms_worker::config::PostgresConfig;
use serde_json::{Map, Value};

/// The worker binary Cargo built for this test run.
pub const WORKER_BIN: &str = env!("CARGO_BIN_EXE_mediacms-worker");
pub const QUEUE: &str = "long_tasks";
pub const DEAD_LETTER: &str = "mediacms-worker.dead-letter";
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// One fault case's verdict. Prints `FAULT-CASE <name> survived` when [`Case::survived`] was
/// reached, `FAULT-CASE <name> lost` otherwise (the test panicked first): the suite script
/// counts these lines, so a failing assertion is reported as a loss, never silently skipped.
pub struct Case {
    name: String,
    ok: bool,
}

impl Case {
    pub fn new(name: &str) -> Case {
        Case {
            name: name.to_owned(),
            ok: false,
        }
    }

    pub fn survived(mut self) {
        self.ok = true;
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        let verdict = if self.ok { "survived" } else { "lost" };
        println!("FAULT-CASE {} {verdict}", self.name);
    }
}

/// Poll `f` every 100 ms until it returns `Some`; panic naming `what` after `timeout`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `(mode 0755 dir)` owned by `postgres`, so a server run as that user can write into it.
fn dir_for_postgres(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
    let ok = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .expect("chown");
    assert!(ok.success(), "chown postgres {path:?}");
}

/// A private `redis-server` (no persistence) on a free port; killed on drop. Restartable on
/// the same port, like a Redis container that is recreated.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let mut s = RedisServer {
            port: free_port(),
            child: None,
        };
        s.up();
        s
    }

    /// `redis://127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: u8) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    pub fn conn(&self, db: u8) -> redis::Connection {
        redis::Client::open(self.url(db))
            .and_then(|c| c.get_connection())
            .expect("connect to the private redis-server")
    }

    /// Start (again) on the same port and wait until it answers PING.
    pub fn up(&mut self) {
        assert!(self.child.is_none(), "redis-server already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        self.child = Some(child);
        let url = self.url(0);
        wait_until(Duration::from_secs(20), "redis-server PING", || {
            let mut c = redis::Client::open(url.as_str())
                .ok()?
                .get_connection()
                .ok()?;
            redis::cmd("PING").query::<String>(&mut c).ok()
        });
    }

    /// SIGKILL it (a crash, not a clean shutdown): every key is gone, as with no persistence.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private Postgres 15 cluster (initdb into a temp dir, trust auth, run as `postgres`
/// because initdb refuses root) on a free port; stopped and removed on drop.
pub struct PgCluster {
    pub port: u16,
    dir: tempfile::TempDir,
    running: bool,
}

fn as_postgres(program: &str, args: &[&str]) -> std::process::Output {
    let bin = format!("{PG_BIN}/{program}");
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--", &bin])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("runuser");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl PgCluster {
    pub fn start() -> PgCluster {
        let dir = tempfile::Builder::new()
            .prefix("mcw-fault-pg-")
            .tempdir()
            .unwrap();
        dir_for_postgres(dir.path());
        let data = dir.path().join("data");
        as_postgres(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        let mut pg = PgCluster {
            port: free_port(),
            dir,
            running: false,
        };
        pg.up();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Start (again) on the same port; returns once it accepts connections.
    pub fn up(&mut self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("pg.log").display().to_string();
        as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "start"],
        );
        self.running = true;
    }

    /// `pg_ctl stop -m immediate`: every backend is killed without a clean shutdown, as when
    /// the database container dies.
    pub fn crash(&mut self) {
        as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
        self.running = false;
    }

    pub fn config(&self, dbname: &str) -> PostgresConfig {
        PostgresConfig {
            host: "127.0.0.1".into(),
            port: self.port,
            dbname: dbname.into(),
            user: "postgres".into(),
            password: String::new(),
        }
    }

    /// `psql` against this cluster; panics with stderr on failure.
    pub fn psql(&self, dbname: &str, args: &[&str]) {
        let out = Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", dbname])
            .args(args)
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A database with MediaCMS's schema and the reference upload, paths rebased onto
    /// `media_root` (as `TestDb::rebase_media_root` does for the shared server).
    pub fn upload_example_db(&self, dbname: &str, media_root: &Path) {
        self.psql("postgres", &["-c", &format!("CREATE DATABASE {dbname}")]);
        let fx = super::db::shared_dir().join("mediacms");
        let schema = fx.join("schema.sql").display().to_string();
        let data = fx.join("upload_example.sql").display().to_string();
        self.psql(dbname, &["-1", "-f", &schema, "-f", &data]);
        let new = format!("{}/", media_root.display());
        let old = super::db::FIXTURE_MEDIA_ROOT;
        let sql = format!(
            "UPDATE files_encoding SET chunk_file_path = replace(chunk_file_path, '{old}', '{new}'), \
             chunks_info = replace(chunks_info, '{old}', '{new}'); \
             UPDATE files_media SET media_info = replace(media_info, '{old}', '{new}');"
        );
        self.psql(dbname, &["-c", &sql]);
    }

    /// A synchronous query returning the first column of every row as text.
    pub fn query(&self, dbname: &str, sql: &str) -> Vec<String> {
        let out = Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-h", "127.0.0.1"])
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", dbname])
            .args(["-c", sql])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--", &format!("{PG_BIN}/pg_ctl")])
                .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

/// Where a spawned worker points.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub redis_url: String,
    pub pg: PostgresConfig,
    pub media_root: PathBuf,
    pub temp_dir: PathBuf,
}

impl Endpoints {
    /// Media root `<dir>/media` (created) and temp dir `<dir>/tmp`.
    pub fn in_dir(redis_url: &str, pg: PostgresConfig, dir: &Path) -> Endpoints {
        let ep = Endpoints {
            redis_url: redis_url.to_owned(),
            pg,
            media_root: dir.join("media"),
            temp_dir: dir.join("tmp"),
        };
        std::fs::create_dir_all(&ep.media_root).unwrap();
        ep
    }
}

/// A `mediacms-worker run` child with its stderr/stdout in a log file; it and every process
/// below it (ffmpeg runs in its own process group, so it would outlive the worker) are
/// SIGKILLed on drop.
pub struct WorkerProc {
    child: Child,
    pub pid: u32,
    pub log: PathBuf,
    /// Descendants seen at `sigkill`, killed on drop.
    orphans: Vec<u32>,
}

impl WorkerProc {
    /// `run -Q long_tasks --allow-root true --hwaccel software --http-addr 127.0.0.1:0 <args>`
    /// (`-Q long_tasks` only when `args` names no `-Q` of its own)
    /// with only the given endpoints in the environment (nothing leaks in from the caller's).
    pub fn spawn(ep: &Endpoints, log: &Path, args: &[&str], env: &[(&str, &str)]) -> WorkerProc {
        let mut cmd = Command::new(WORKER_BIN);
        cmd.arg("run");
        if !args.contains(&"-Q") {
            cmd.args(["-Q", QUEUE]);
        }
        cmd.args(["--allow-root", "true", "--hwaccel", "software"])
            .args(["--http-addr", "127.0.0.1:0"])
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("REDIS_LOCATION", &ep.redis_url)
            .env("POSTGRES_HOST", &ep.pg.host)
            .env("POSTGRES_PORT", ep.pg.port.to_string())
            .env("POSTGRES_USER", &ep.pg.user)
            .env("POSTGRES_PASSWORD", &ep.pg.password)
            .env("POSTGRES_NAME", &ep.pg.dbname)
            .env("MEDIA_ROOT", &ep.media_root)
            .env("TEMP_DIRECTORY", &ep.temp_dir)
            .env("FFMPEG_DEFAULT_PRESET", "ultrafast")
            // These tests act on one Encoding's own ffmpeg (kill it, lose its lease, restart
            // it): they pin the one-by-one path. The decode-once default is tested in
            // tests/ladder.rs; `env` or `args` may turn it back on.
            .env("WORKER_DECODE_ONCE", "false")
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        let out = std::fs::File::create(log).expect("worker log");
        let err = out.try_clone().unwrap();
        let child = cmd
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {WORKER_BIN}: {e}"));
        WorkerProc {
            pid: child.id(),
            child,
            log: log.to_owned(),
            orphans: vec![],
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 40 log lines, for assertion messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log, &self.log.display().to_string())
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Wait until the log contains `needle` (panics with the log tail after `timeout`, or at
    /// once if the worker exited).
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            if self.log_text().contains(needle) {
                return;
            }
            assert!(
                self.alive(),
                "worker exited waiting for {needle:?}\n{}",
                self.log_tail()
            );
            assert!(
                start.elapsed() < timeout,
                "no {needle:?} in the worker log after {timeout:?}\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The HTTP address the worker logged (it binds port 0).
    pub fn http_addr(&mut self) -> std::net::SocketAddr {
        self.wait_log("serving /metrics", Duration::from_secs(30));
        let log = self.log_text();
        let line = log
            .lines()
            .find(|l| l.contains("serving /metrics"))
            .unwrap();
        let addr = line.split("addr=").nth(1).expect("addr= in the log line");
        addr.split_whitespace().next().unwrap().parse().unwrap()
    }

    /// The value of a counter without labels on `/metrics` (0 when absent or unreachable).
    pub fn metric(&mut self, name: &str) -> f64 {
        let addr = self.http_addr();
        let probe = mediacms_worker::telemetry::http::probe;
        let Ok((200, text)) = probe(addr, "/metrics", Duration::from_secs(5)) else {
            return 0.0;
        };
        let prefix = format!("mediacms_worker_{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Until the worker logged that it consumes.
    pub fn wait_consuming(&mut self) {
        self.wait_log("consuming", Duration::from_secs(60));
    }

    /// `kill -9` the worker only; its descendants are remembered and killed on drop.
    pub fn sigkill(&mut self) {
        self.orphans.extend(descendants(self.pid));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn sigterm(&self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
    }

    /// Wait for exit; `None` after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        let mut pids = descendants(self.pid);
        pids.append(&mut self.orphans);
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in pids {
            // Only processes we saw below our worker; a recycled pid is a risk we accept for
            // the few milliseconds between the scan and the kill.
            if std::fs::metadata(format!("/proc/{pid}")).is_ok() {
                // SAFETY: kill(2) of a process that was a descendant of our worker.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

/// `(pid, ppid, comm)` of every live process.
pub fn processes() -> Vec<(u32, u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (open, close) = (stat.find('(')?, stat.rfind(')')?);
            let mut rest = stat[close + 1..].split_whitespace();
            let state = rest.next()?;
            let ppid = rest.next()?.parse().ok()?;
            (state != "Z").then(|| (pid, ppid, stat[open + 1..close].to_owned()))
        })
        .collect()
}

/// Every live process below `root` (children, grandchildren, …).
pub fn descendants(root: u32) -> Vec<u32> {
    let all = processes();
    let mut out = vec![];
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (pid, ppid, _) in &all {
            if *ppid == p && !out.contains(pid) {
                out.push(*pid);
                frontier.push(*pid);
            }
        }
    }
    out
}

/// Resident set size of one process in KiB (`VmRSS`), 0 when gone.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// RSS of `root` plus all its descendants, KiB.
pub fn tree_rss_kib(root: u32) -> u64 {
    rss_kib(root) + descendants(root).into_iter().map(rss_kib).sum::<u64>()
}

/// A kombu Redis list entry for `name(args, kwargs)` as Celery 5.4 publishes it.
pub fn envelope_of(name: &str, args: Vec<Value>, kwargs: Map<String, Value>, prio: u8) -> Vec<u8> {
    let mut t = OutgoingTask::new(name, QUEUE, args, kwargs);
    t.priority = prio;
    envelope::encode_redis(&t, &uuid::Uuid::new_v4().to_string(), "fault-suite")
}

/// kombu's list for `priority` on [`QUEUE`].
pub fn list_for(priority: u8) -> String {
    match mediacms_worker::broker::priority_step(priority) {
        0 => QUEUE.to_owned(),
        s => format!("{QUEUE}\x06\x16{s}"),
    }
}

/// The task id inside an envelope.
pub fn task_id(raw: &[u8]) -> String {
    envelope::decode_redis(raw).expect("decodable").id
}

/// `celery-task-meta-<id>` as JSON, if stored.
pub fn result_doc(c: &mut redis::Connection, id: &str) -> Option<Value> {
    let raw: Option<String> = redis::cmd("GET")
        .arg(format!("celery-task-meta-{id}"))
        .query(c)
        .expect("GET result");
    raw.map(|r| serde_json::from_str(&r).expect("result JSON"))
}

pub fn lpush(c: &mut redis::Connection, list: &str, raw: &[u8]) {
    let _: () = redis::cmd("LPUSH").arg(list).arg(raw).query(c).unwrap();
}

/// Write a small shell script (mode 0755).
pub fn script(path: &Path, body: &str) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(body.as_bytes()).unwrap();
    drop(f);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A software-only [`TaskEnv`](mediacms_worker::tasks::env::TaskEnv) with the default options.
pub async fn task_env(
    pg: &PostgresConfig,
    media_root: &Path,
    temp_root: &Path,
) -> mediacms_worker::tasks::env::TaskEnv {
    super::env::task_env(pg, media_root, temp_root, Default::default()).await
}

/// An `encode_media(token, profile, encoding)` task message (kwargs `force: true`).
pub fn encode_task(
    token: &str,
    profile: i32,
    encoding: i32,
) -> mediacms_worker::celery::message::TaskMessage {
    let mut kw = Map::new();
    kw.insert("force".into(), Value::Bool(true));
    let raw = envelope_of(
        "encode_media",
        vec![token.into(), profile.into(), encoding.into()],
        kw,
        0,
    );
    envelope::decode_redis(&raw).unwrap()
}

/// Insert Media `id`/`token` copied from reference media 1, with `media_file` (relative or
/// absolute, stored as given), `media_info` JSON and `duration`, and one pending Encoding with
/// the same `id` for (`id`, `profile_id`). The Encoding stays staged in the session's temp
/// table `fault_enc` (insert more copies from it).
pub async fn insert_media_and_encoding(
    c: &tokio_postgres::Client,
    id: i32,
    token: &str,
    media_file: &str,
    media_info: &str,
    duration: i32,
    profile_id: i32,
) {
    let uid = uuid::Uuid::new_v4();
    c.batch_execute(
        "CREATE TEMP TABLE IF NOT EXISTS fault_media AS SELECT * FROM files_media LIMIT 0; \
         CREATE TEMP TABLE IF NOT EXISTS fault_enc AS SELECT * FROM files_encoding LIMIT 0; \
         TRUNCATE fault_media, fault_enc; \
         INSERT INTO fault_media SELECT * FROM files_media WHERE id = 1; \
         INSERT INTO fault_enc SELECT * FROM files_encoding WHERE id = 1;",
    )
    .await
    .unwrap();
    c.execute(
        "UPDATE fault_media SET id = $1, friendly_token = $2, uid = $3, media_file = $4, \
         media_info = $5, duration = $6, title = $2, encoding_status = 'pending', \
         listable = false, preview_file_path = ''",
        &[&id, &token, &uid, &media_file, &media_info, &duration],
    )
    .await
    .unwrap();
    c.execute(
        "UPDATE fault_enc SET id = $1, media_id = $2, profile_id = $3, status = 'pending', \
         progress = 0, add_date = now(), update_date = now()",
        &[&id, &id, &profile_id],
    )
    .await
    .unwrap();
    c.batch_execute(
        "INSERT INTO files_media SELECT * FROM fault_media; \
         INSERT INTO files_encoding SELECT * FROM fault_enc;",
    )
    .await
    .unwrap();
}

/// `(status, logs)` of an Encoding, `None` when the row is gone.
pub async fn encoding_row(c: &tokio_postgres::Client, id: i32) -> Option<(String, String)> {
    c.query_opt(
        "SELECT status, logs FROM files_encoding WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap()
    .map(|r| (r.get(0), r.get(1)))
}

impl WorkerProc {
    /// `kill -9` the worker and, right after, everything below it: a container that dies
    /// takes its ffmpeg children with it.
    pub fn kill_tree(&mut self) {
        let below = descendants(self.pid);
        self.sigkill();
        for pid in below {
            // SAFETY: kill(2) of a process that was below our worker a moment ago.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}
