//! The real `mediacms-worker run` binary as a child process of an end-to-end test: a [`Site`]
//! (private Redis DB + fresh Postgres DB + media root and temp dir) and a [`Worker`] started
//! against it, with its log captured to a file, `/metrics` scraping, signals, ffmpeg child
//! discovery in `/proc`, and polling helpers. Also the fixture edits the e2e tests share:
//! extra media/encoding rows, publishing `encode_media`, reading results and lists.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use mediacms_worker::celery::envelope;
use mediacms_worker::celery::message::{OutgoingTask, TaskMessage};
use serde_json::{Map, Value};

use super::db::{TestDb, FIXTURE_MEDIA_ROOT};
use super::redis::TestRedis;

/// The worker binary Cargo built for this test run.
pub const WORKER_BIN: &str = env!("CARGO_BIN_EXE_mediacms-worker");
/// The queue MediaCMS's messages are routed to (each test has its own Redis DB, so the real
/// name can be used without collisions).
pub const QUEUE: &str = "long_tasks";
/// kombu's list for priority 9 of [`QUEUE`].
pub const QUEUE_P9: &str = "long_tasks\x06\x169";

/// Media 1 of the reference upload (8 s 1280x720).
pub const MEDIA1_UID: &str = "41905ce2087146cdba79c28a24c33a9a";
pub const MEDIA1_TOKEN: &str = "2SJorQ1Qe";
pub const MEDIA1_FILE: &str =
    "original/user/refuser/41905ce2087146cdba79c28a24c33a9a.reference_720p.mp4";
/// Media 2 of the reference upload (310 s 640x360, chunked).
pub const MEDIA2_UID: &str = "5af382d5f37447fa99853daeea4622fb";
pub const MEDIA2_TOKEN: &str = "emp3s0aau";

/// Everything a worker runs against: private Redis DB, fresh DB, media root, temp dir.
pub struct Site {
    pub redis: TestRedis,
    pub db: TestDb,
    /// Holds `media/` (MEDIA_ROOT) and `tmp/` (TEMP_DIRECTORY); removed on drop.
    pub dir: tempfile::TempDir,
}

impl Site {
    /// The reference upload (`upload_example.sql`) with its absolute paths rebased onto this
    /// site's media root. No media files exist yet.
    pub async fn upload_example() -> Site {
        let redis = TestRedis::claim();
        let db = TestDb::with_upload_example().await;
        let dir = tempfile::Builder::new()
            .prefix("mcw-e2e-")
            .tempdir()
            .expect("temp dir");
        let site = Site { redis, db, dir };
        std::fs::create_dir_all(site.media_root().join("original/user/refuser")).unwrap();
        std::fs::create_dir_all(site.temp_dir()).unwrap();
        site.db.rebase_media_root(&site.media_root()).await;
        site
    }

    pub fn media_root(&self) -> PathBuf {
        self.dir.path().join("media")
    }

    pub fn temp_dir(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    /// `<media root>/<rel>`.
    pub fn media_path(&self, rel: &str) -> PathBuf {
        self.media_root().join(rel)
    }

    /// Start a worker on this site; waits until `/readyz` answers 200.
    pub async fn worker(&self, opts: WorkerOpts) -> Worker {
        let w = Worker::spawn(self, opts);
        w.wait_ready(Duration::from_secs(90)).await;
        w
    }

    /// A real MediaCMS message file with the fixture media root rewritten to ours — in the
    /// headers (`kwargsrepr`) and inside the base64 body (chunk paths) — other bytes untouched.
    pub fn real_message(&self, file: &str) -> Vec<u8> {
        let path = super::db::shared_dir().join("mediacms/messages").join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let ours = format!("{}/", self.media_root().display());
        rewrite_message(&text, FIXTURE_MEDIA_ROOT, &ours).into_bytes()
    }

    /// LPUSH raw envelope bytes on a list (what a producer does).
    pub fn lpush(&self, list: &str, raw: &[u8]) {
        let _: () = redis::cmd("LPUSH")
            .arg(list)
            .arg(raw)
            .query(&mut self.redis.conn())
            .expect("LPUSH");
    }

    /// Publish `encode_media(token, profile, encoding)` (kwargs `force: true`) on [`QUEUE`],
    /// as MediaCMS's `Media.encode()` does; returns the task id.
    pub fn publish_encode(&self, token: &str, profile_id: i32, encoding_id: i32) -> String {
        let mut kwargs = Map::new();
        kwargs.insert("force".into(), Value::Bool(true));
        let mut task = OutgoingTask::new(
            "encode_media",
            QUEUE,
            vec![token.into(), profile_id.into(), encoding_id.into()],
            kwargs,
        );
        task.time_limit = (None, Some(7200.0));
        let tag = uuid::Uuid::new_v4().to_string();
        let raw = envelope::encode_redis(&task, &tag, &uuid::Uuid::new_v4().to_string());
        self.lpush(QUEUE, &raw);
        task.id
    }

    /// Every entry of a Redis list, oldest (next to be popped) last, decoded.
    pub fn list(&self, list: &str) -> Vec<TaskMessage> {
        let raw: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(list)
            .arg(0)
            .arg(-1)
            .query(&mut self.redis.conn())
            .expect("LRANGE");
        raw.iter()
            .map(|r| envelope::decode_redis(r).expect("decodable list entry"))
            .collect()
    }

    pub fn llen(&self, list: &str) -> usize {
        redis::cmd("LLEN")
            .arg(list)
            .query(&mut self.redis.conn())
            .expect("LLEN")
    }

    /// Number of held (unacked) deliveries in kombu's `unacked` hash.
    pub fn unacked(&self) -> usize {
        redis::cmd("HLEN")
            .arg("unacked")
            .query(&mut self.redis.conn())
            .expect("HLEN unacked")
    }

    /// Messages waiting in both priority lists of [`QUEUE`] we use.
    pub fn queued(&self) -> usize {
        self.llen(QUEUE) + self.llen(QUEUE_P9)
    }

    /// Nothing queued and nothing held: every task (follow-ups included) has finished.
    pub fn idle(&self) -> bool {
        self.queued() == 0 && self.unacked() == 0
    }

    /// The `celery-task-meta-<id>` document, if stored.
    pub fn result(&self, task_id: &str) -> Option<Value> {
        let raw: Option<String> = redis::cmd("GET")
            .arg(format!("celery-task-meta-{task_id}"))
            .query(&mut self.redis.conn())
            .expect("GET result");
        raw.map(|r| serde_json::from_str(&r).expect("result document is JSON"))
    }

    /// Status of one Encoding row (`None`: the row is gone).
    pub async fn encoding_status(&self, id: i32) -> Option<String> {
        self.db
            .client()
            .await
            .query_opt("SELECT status FROM files_encoding WHERE id = $1", &[&id])
            .await
            .expect("encoding status")
            .map(|r| r.get(0))
    }

    /// Replace media 1's file (`2SJorQ1Qe`) by a generated 1280x720 30 fps clip with AAC audio
    /// of `seconds`, and set its `duration`/`media_info` duration to match.
    pub async fn media1_clip(&self, seconds: u32) {
        let path = self.media_path(MEDIA1_FILE);
        let arg = |a: &str| a.to_owned();
        super::media::ffmpeg(&[
            arg("-f"),
            arg("lavfi"),
            arg("-i"),
            arg("testsrc2=size=1280x720:rate=30"),
            arg("-f"),
            arg("lavfi"),
            arg("-i"),
            arg("sine=frequency=440"),
            arg("-t"),
            seconds.to_string(),
            arg("-c:v"),
            arg("libx264"),
            arg("-preset"),
            arg("ultrafast"),
            arg("-pix_fmt"),
            arg("yuv420p"),
            arg("-c:a"),
            arg("aac"),
            path.to_string_lossy().into_owned(),
        ]);
        let secs = seconds as i32;
        self.db
            .client()
            .await
            .execute(
                "UPDATE files_media SET duration = $1, \
                 media_info = replace(media_info, '\"video_duration\": 8.0', \
                                      '\"video_duration\": ' || $1::int || '.0') WHERE id = 1",
                &[&secs],
            )
            .await
            .unwrap();
    }

    /// A copy of media 1 (`2SJorQ1Qe`) as a new Media `id`/`token` whose file is
    /// `original/user/refuser/<uid>.<name>`; `media_info`/`duration` as given. Returns the
    /// relative media file path.
    pub async fn add_media(
        &self,
        id: i32,
        token: &str,
        name: &str,
        media_info: &str,
        duration: i32,
    ) -> String {
        let uid = uuid::Uuid::new_v4();
        let rel = format!("original/user/refuser/{}.{name}", uid.simple());
        let c = self.db.client().await;
        c.batch_execute(
            "CREATE TEMP TABLE IF NOT EXISTS e2e_media AS SELECT * FROM files_media LIMIT 0",
        )
        .await
        .unwrap();
        c.batch_execute(
            "TRUNCATE e2e_media; INSERT INTO e2e_media SELECT * FROM files_media WHERE id = 1",
        )
        .await
        .unwrap();
        c.execute(
            "UPDATE e2e_media SET id = $1, friendly_token = $2, uid = $3, media_file = $4, \
             media_info = $5, duration = $6, title = $2, encoding_status = 'pending', \
             listable = false, preview_file_path = ''",
            &[&id, &token, &uid, &rel, &media_info, &duration],
        )
        .await
        .unwrap();
        c.batch_execute("INSERT INTO files_media SELECT * FROM e2e_media")
            .await
            .unwrap();
        rel
    }

    /// A pending non-chunk Encoding `id` of (`media_id`, `profile_id`), shaped like the rows
    /// `Media.encode()` inserts (copied from fixture row 1, every other column reset).
    pub async fn add_encoding(&self, id: i32, media_id: i32, profile_id: i32) {
        let c = self.db.client().await;
        c.batch_execute(
            "CREATE TEMP TABLE IF NOT EXISTS e2e_enc AS SELECT * FROM files_encoding LIMIT 0",
        )
        .await
        .unwrap();
        c.batch_execute(
            "TRUNCATE e2e_enc; INSERT INTO e2e_enc SELECT * FROM files_encoding WHERE id = 1",
        )
        .await
        .unwrap();
        c.execute(
            "UPDATE e2e_enc SET id = $1, media_id = $2, profile_id = $3, status = 'pending', \
             progress = 0, add_date = now(), update_date = now()",
            &[&id, &media_id, &profile_id],
        )
        .await
        .unwrap();
        c.batch_execute("INSERT INTO files_encoding SELECT * FROM e2e_enc")
            .await
            .unwrap();
    }
}

/// Replace `from` by `to` in a kombu envelope: in the JSON text and inside the base64 body.
pub fn rewrite_message(text: &str, from: &str, to: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let envelope: Value = serde_json::from_str(text).expect("envelope JSON");
    let body = envelope["body"].as_str().expect("base64 body").to_owned();
    let decoded = String::from_utf8(b64.decode(&body).expect("base64")).expect("UTF-8 body");
    let new_body = b64.encode(decoded.replace(from, to));
    // `from`/`to` never occur in base64 text, so the order of the two replaces does not matter.
    text.replace(&body, &new_body).replace(from, to)
}

/// How to start a worker.
#[derive(Debug, Clone)]
pub struct WorkerOpts {
    pub concurrency: usize,
    pub lease_secs: u64,
    pub drain_secs: u64,
    /// FFMPEG_DEFAULT_PRESET: `ultrafast` unless a test checks MediaCMS's exact argv.
    pub preset: String,
    pub extra_args: Vec<String>,
}

impl Default for WorkerOpts {
    fn default() -> Self {
        Self {
            concurrency: 1,
            lease_secs: 30,
            drain_secs: 30,
            preset: "ultrafast".into(),
            extra_args: vec![],
        }
    }
}

/// A running `mediacms-worker run`; SIGKILLed (with its ffmpeg children) on drop.
pub struct Worker {
    child: Child,
    pub pid: u32,
    pub hostname: String,
    pub http: SocketAddr,
    /// stdout + stderr of the worker.
    pub log: PathBuf,
    /// ffmpeg processes seen as children, killed on drop in case the worker died before them.
    orphans: Vec<u32>,
}

/// The last 40 lines of a worker's captured log under a `--- title ---` header, for panic
/// messages (both worker wrappers, here and in `fault`).
pub fn log_tail(log: &Path, title: &str) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(40);
    format!("--- {title} ---\n{}", lines[from..].join("\n"))
}

/// A free local TCP port (bound then released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// The worker's command line for `site` (also used by config tests that expect it to fail).
pub fn worker_command(site: &Site, opts: &WorkerOpts, hostname: &str, http: SocketAddr) -> Command {
    let mut cmd = Command::new(WORKER_BIN);
    cmd.arg("run")
        .args(["-Q", QUEUE])
        .args(["-c", &opts.concurrency.to_string()])
        .args(["-n", hostname])
        .args(["--http-addr", &http.to_string()])
        .args(["--lease-secs", &opts.lease_secs.to_string()])
        .args(["--drain-secs", &opts.drain_secs.to_string()])
        .args(["--allow-root", "true", "--hwaccel", "software"])
        .args(&opts.extra_args);
    // Nothing from the developer's environment (BROKER_URL, WORKER_*, …) may leak in.
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("REDIS_LOCATION", &site.redis.url)
        .env("POSTGRES_HOST", &site.db.host)
        .env("POSTGRES_PORT", site.db.port.to_string())
        .env("POSTGRES_USER", &site.db.user)
        .env("POSTGRES_PASSWORD", &site.db.password)
        .env("POSTGRES_NAME", &site.db.dbname)
        .env("MEDIA_ROOT", format!("{}/", site.media_root().display()))
        .env("TEMP_DIRECTORY", site.temp_dir())
        .env("FFMPEG_DEFAULT_PRESET", &opts.preset)
        // The e2e tests act on one Encoding's own ffmpeg (delete its row, revoke it, drain
        // it) and replay the reference run's per-message rows: they pin the one-by-one path.
        // The decode-once default is tested in tests/ladder.rs; `--decode-once` in
        // `extra_args` turns it back on.
        .env("WORKER_DECODE_ONCE", "false")
        .stdin(Stdio::null());
    cmd
}

impl Worker {
    /// Start without waiting for readiness.
    pub fn spawn(site: &Site, opts: WorkerOpts) -> Worker {
        let hostname = format!("e2e-{}@test", uuid::Uuid::new_v4().simple());
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = site.dir.path().join(format!("worker-{hostname}.log"));
        let out = std::fs::File::create(&log).expect("worker log");
        let err = out.try_clone().unwrap();
        let child = worker_command(site, &opts, &hostname, http)
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {WORKER_BIN}: {e}"));
        Worker {
            pid: child.id(),
            child,
            hostname,
            http,
            log,
            orphans: vec![],
        }
    }

    /// The captured log (for assertion messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the log, for panic messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log, &format!("worker {} log tail", self.hostname))
    }

    /// Poll `f` every 250 ms until it returns `Some`; panic naming `what` (with the worker's
    /// log tail) after `timeout`, or at once if the worker exited.
    pub async fn until<T, F, Fut>(&mut self, timeout: Duration, what: &str, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let start = Instant::now();
        loop {
            if let Some(v) = f().await {
                return v;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "worker exited ({status}) while waiting for {what}\n{}",
                    self.log_tail()
                );
            }
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn wait_ready(&self, timeout: Duration) {
        let start = Instant::now();
        loop {
            if let Ok((200, _)) = http_get(self.http, "/readyz") {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "worker not ready after {timeout:?}\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        match http_get(self.http, "/metrics") {
            Ok((200, body)) => body,
            other => panic!("GET /metrics: {other:?}\n{}", self.log_tail()),
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid as i32, sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid);
    }

    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Kill the ffmpeg processes a SIGKILLed worker left behind; returns how many were alive.
    /// How many of the dead worker's ffmpeg children are still alive.
    pub fn orphans_alive(&self) -> usize {
        self.orphans
            .iter()
            .filter(|pid| process(**pid).is_some_and(|p| p.comm == "ffmpeg"))
            .count()
    }

    pub fn kill_orphans(&mut self) -> usize {
        let mut alive = 0;
        for pid in self.orphans.drain(..) {
            if process(pid).is_some_and(|p| p.comm == "ffmpeg") {
                alive += 1;
                // SAFETY: kill(2) of a process we identified as our orphaned ffmpeg.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        alive
    }

    /// SIGKILL the worker. Its ffmpeg children are in their own process group; the kernel kills
    /// them through PR_SET_PDEATHSIG (they are remembered, to check that, and killed on drop).
    /// Reaps it.
    pub fn sigkill(&mut self) {
        self.orphans.extend(self.ffmpeg_children());
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// Wait for the process to exit on its own.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                start.elapsed() < timeout,
                "worker did not exit within {timeout:?}\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Pids of live processes named `ffmpeg` whose parent is the worker.
    pub fn ffmpeg_children(&self) -> Vec<u32> {
        processes()
            .into_iter()
            .filter(|p| p.ppid == self.pid && p.comm == "ffmpeg")
            .map(|p| p.pid)
            .collect()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.orphans.extend(self.ffmpeg_children());
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in &self.orphans {
            // Only if that pid is still an ffmpeg (not reused by something else).
            if process(*pid).is_some_and(|p| p.comm == "ffmpeg") {
                // SAFETY: kill(2) of a process we identified as our orphaned ffmpeg.
                unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
            }
        }
    }
}

/// One `/proc/<pid>/stat` entry.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    /// `Z` for a zombie (exited, not yet reaped).
    pub state: char,
}

/// Parse `/proc/<pid>/stat`: `pid (comm) state ppid …` (comm may hold spaces and parens).
pub fn process(pid: u32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    let mut rest = stat[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some(Proc {
        pid,
        ppid,
        comm,
        state,
    })
}

/// Every live (non-zombie) process.
pub fn processes() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(process)
        .filter(|p| p.state != 'Z')
        .collect()
}

/// Minimal HTTP/1.0 GET (no chunked encoding): `(status, body)`.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of the sample `name{labels…}` in Prometheus text (labels in any order), summed
/// over every sample whose labels include all of `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric_name, label_text) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric_name != name {
            continue;
        }
        let has_all = labels
            .iter()
            .all(|(k, v)| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        if has_all {
            *found.get_or_insert(0.0) += value.parse::<f64>().unwrap_or(f64::NAN);
        }
    }
    found
}

/// Poll `f` every 250 ms until `Some`, panicking naming `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `ffprobe` of the first video stream and the format: codec, profile, pix_fmt, size.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub codec: String,
    pub profile: String,
    pub pix_fmt: String,
    pub width: i64,
    pub height: i64,
    pub audio_codec: Option<String>,
    pub duration: f64,
}

/// Run the ffprobe CLI (the reference run's tool) on `path`.
pub fn ffprobe(path: &Path) -> Probe {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
        ])
        .arg(path)
        .output()
        .expect("ffprobe must be installed");
    assert!(
        out.status.success(),
        "ffprobe {path:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("ffprobe JSON");
    let streams = v["streams"].as_array().cloned().unwrap_or_default();
    let of = |kind: &str| streams.iter().find(|s| s["codec_type"] == kind).cloned();
    let video = of("video").unwrap_or_else(|| panic!("{path:?} has no video stream"));
    let s = |x: &Value| x.as_str().unwrap_or_default().to_owned();
    Probe {
        codec: s(&video["codec_name"]),
        profile: s(&video["profile"]),
        pix_fmt: s(&video["pix_fmt"]),
        width: video["width"].as_i64().unwrap_or(0),
        height: video["height"].as_i64().unwrap_or(0),
        audio_codec: of("audio").map(|a| s(&a["codec_name"])),
        duration: v["format"]["duration"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0.0),
    }
}

/// Files (relative paths) under `dir`, recursively, sorted. Symlinked directories are listed,
/// not followed (the security cases plant links that point outside the media root).
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = vec![];
    walk(dir, dir, &mut out);
    out.sort();
    out
}
