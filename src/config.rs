//! Configuration: flags > environment (MediaCMS's names first) > optional TOML file > defaults,
//! resolved into one validated [`Config`] before anything starts. A bad value is a
//! [`ConfigError`] naming the field; `main` exits 64 (EX_USAGE) with it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;

/// Hardware acceleration choice, per node (ARCHITECTURE decision 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HwAccel {
    #[default]
    Auto,
    Software,
    Nvenc,
    Vaapi,
    Qsv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// Every option of `run`. All optional here so a TOML file can fill what flags/env leave unset.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// Broker URL (`redis://` or `amqp://`); defaults to REDIS_LOCATION.
    #[arg(long, env = "BROKER_URL")]
    pub broker_url: Option<String>,
    /// Redis for results and the Django cache (MediaCMS's REDIS_LOCATION).
    #[arg(long, env = "REDIS_LOCATION")]
    pub redis_location: Option<String>,
    /// Result backend URL; defaults to REDIS_LOCATION.
    #[arg(long, env = "CELERY_RESULT_BACKEND")]
    pub result_backend: Option<String>,
    #[arg(long, env = "POSTGRES_HOST")]
    pub postgres_host: Option<String>,
    #[arg(long, env = "POSTGRES_PORT")]
    pub postgres_port: Option<u16>,
    #[arg(long, env = "POSTGRES_NAME")]
    pub postgres_name: Option<String>,
    #[arg(long, env = "POSTGRES_USER")]
    pub postgres_user: Option<String>,
    #[arg(long, env = "POSTGRES_PASSWORD", hide_env_values = true)]
    pub postgres_password: Option<String>,
    /// MediaCMS's MEDIA_ROOT; absolute paths in the DB are rooted here.
    #[arg(long, env = "MEDIA_ROOT")]
    pub media_root: Option<PathBuf>,
    /// Scratch space for ffmpeg outputs before they are moved into MEDIA_ROOT.
    #[arg(long, env = "TEMP_DIRECTORY")]
    pub temp_directory: Option<PathBuf>,
    #[arg(long, env = "FFMPEG_COMMAND")]
    pub ffmpeg_command: Option<String>,
    /// Queues to consume, comma-separated (Celery's `-Q`).
    #[arg(
        short = 'Q',
        long = "queues",
        env = "WORKER_QUEUES",
        value_delimiter = ','
    )]
    #[serde(rename = "queues")]
    pub queues: Option<Vec<String>>,
    /// Job slots (Celery's `-c`).
    #[arg(short = 'c', long = "concurrency", env = "WORKER_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Celery hostname (`-n`); `%h` expands to the host name.
    #[arg(short = 'n', long = "hostname", env = "WORKER_HOSTNAME")]
    pub hostname: Option<String>,
    /// error | warn | info | debug | trace (Celery's upper-case names are accepted).
    #[arg(short = 'l', long = "loglevel", env = "WORKER_LOGLEVEL")]
    pub loglevel: Option<String>,
    #[arg(long, value_enum, env = "WORKER_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Deliveries held beyond running jobs, per slot (Celery's `--prefetch-multiplier`).
    #[arg(long, env = "WORKER_PREFETCH_MULTIPLIER")]
    pub prefetch_multiplier: Option<usize>,
    /// Celery's `-O` optimisation; only `fair` (and `default`) are accepted, both mean the same here.
    #[arg(short = 'O', env = "WORKER_OPTIMIZATION")]
    #[serde(rename = "optimization")]
    pub optimization: Option<String>,
    /// Seconds a dead worker's deliveries stay claimed before another instance restores them.
    #[arg(long, env = "WORKER_LEASE_SECS")]
    pub lease_secs: Option<u64>,
    /// Seconds running jobs may take to finish after the first SIGTERM.
    #[arg(long, env = "WORKER_DRAIN_SECS")]
    pub drain_secs: Option<u64>,
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    #[arg(long, env = "WORKER_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Re-publish unknown task names to this queue instead of failing them.
    #[arg(long, env = "WORKER_FORWARD_UNKNOWN_TO")]
    pub forward_unknown_to: Option<String>,
    #[arg(long, value_enum, env = "WORKER_HWACCEL")]
    pub hwaccel: Option<HwAccel>,
    /// Hardware device(s), comma-separated (e.g. `/dev/dri/renderD128` or CUDA indices `0,1`);
    /// unset: every CUDA device and render node the probe finds.
    #[arg(long, env = "WORKER_HW_DEVICE")]
    pub hw_device: Option<String>,
    /// Hardware job slots (encoder sessions) per device, separate from CPU slots.
    #[arg(long, env = "WORKER_HW_CONCURRENCY")]
    pub hw_concurrency: Option<usize>,
    /// `-threads` passed to each ffmpeg (0 = ffmpeg's choice, as MediaCMS).
    #[arg(long, env = "FFMPEG_THREADS")]
    pub ffmpeg_threads: Option<u32>,
    /// Niceness of ffmpeg children (0..=19).
    #[arg(long, env = "FFMPEG_NICE")]
    pub ffmpeg_nice: Option<i32>,
    /// MediaCMS FFMPEG_DEFAULT_PRESET.
    #[arg(long, env = "FFMPEG_DEFAULT_PRESET")]
    pub ffmpeg_default_preset: Option<String>,
    /// MediaCMS MINIMUM_RESOLUTIONS_TO_ENCODE, comma-separated.
    #[arg(long, env = "MINIMUM_RESOLUTIONS_TO_ENCODE", value_delimiter = ',')]
    pub minimum_resolutions_to_encode: Option<Vec<i32>>,
    /// MediaCMS SPRITE_NUM_SECS (the frontend assumes 10).
    #[arg(long, env = "SPRITE_NUM_SECS")]
    pub sprite_num_secs: Option<u32>,
    /// MediaCMS CELERY_SOFT_TIME_LIMIT: per-task time limit for encodes, seconds.
    #[arg(long, env = "CELERY_SOFT_TIME_LIMIT")]
    pub celery_soft_time_limit: Option<u64>,
    /// MediaCMS WHISPER_MODEL.
    #[arg(long, env = "WHISPER_MODEL")]
    pub whisper_model: Option<String>,
    /// The whisper CLI: a name looked up on PATH when the task runs, or a path.
    #[arg(long, env = "WHISPER_COMMAND")]
    pub whisper_command: Option<String>,
    /// Also run `chunkize_media` (a short_tasks task): consume `short_tasks` too (`-Q`) to use it.
    #[arg(long, env = "WORKER_CHUNKIZE")]
    pub chunkize: Option<bool>,
    /// Run as root even though the worker refuses to by default. A plain flag (`--allow-root`);
    /// `--allow-root true|false` and WORKER_ALLOW_ROOT=true|false are accepted too.
    #[arg(long, env = "WORKER_ALLOW_ROOT", num_args = 0..=1, default_missing_value = "true")]
    pub allow_root: Option<bool>,
    /// Decode-once ladder (on by default): one `encode_media` claims the media's other pending
    /// video Encodings and encodes them all from one decode. `--decode-once=false` (or
    /// WORKER_DECODE_ONCE=false) runs every message one by one, as MediaCMS does.
    #[arg(long, env = "WORKER_DECODE_ONCE", num_args = 0..=1, default_missing_value = "true")]
    pub decode_once: Option<bool>,
    /// Dead letters kept at most (the oldest go first).
    #[arg(long, env = "WORKER_DEAD_LETTER_MAX_COUNT")]
    pub dead_letter_max_count: Option<u64>,
    /// Bytes of dead-letter records kept at most (MediaCMS's Redis also holds its cache).
    #[arg(long, env = "WORKER_DEAD_LETTER_MAX_BYTES")]
    pub dead_letter_max_bytes: Option<u64>,
    /// The dead-letter list expires this long after its last record.
    #[arg(long, env = "WORKER_DEAD_LETTER_TTL_SECS")]
    pub dead_letter_ttl_secs: Option<u64>,
}

/// Bounds of the dead-letter list: it lives in the Redis DB MediaCMS shares with its cache and
/// sessions, so a flood of junk must not fill it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterCaps {
    pub max_count: u64,
    pub max_bytes: u64,
    pub ttl: Duration,
}

impl Default for DeadLetterCaps {
    fn default() -> Self {
        DeadLetterCaps {
            max_count: defaults::DEAD_LETTER_MAX_COUNT,
            max_bytes: defaults::DEAD_LETTER_MAX_BYTES,
            ttl: Duration::from_secs(defaults::DEAD_LETTER_TTL_SECS),
        }
    }
}

/// The validated configuration every component is built from (in `app`). Its `Debug` (what
/// `check-config` prints) redacts the password of every URL and of Postgres.
#[derive(Clone, PartialEq)]
pub struct Config {
    pub broker_url: String,
    pub redis_location: String,
    pub result_backend: String,
    pub postgres: PostgresConfig,
    pub media_root: PathBuf,
    pub temp_directory: PathBuf,
    pub ffmpeg_command: String,
    pub queues: Vec<String>,
    pub concurrency: usize,
    pub hostname: String,
    pub log_filter: String,
    pub log_format: LogFormat,
    pub prefetch_multiplier: usize,
    pub lease: Duration,
    pub drain: Duration,
    pub http_addr: SocketAddr,
    pub forward_unknown_to: Option<String>,
    pub hwaccel: HwAccel,
    pub hw_device: Option<String>,
    pub hw_concurrency: usize,
    pub ffmpeg_threads: u32,
    pub ffmpeg_nice: i32,
    pub ffmpeg_default_preset: String,
    pub minimum_resolutions_to_encode: Vec<i32>,
    pub sprite_num_secs: u32,
    pub soft_time_limit: Duration,
    pub whisper_model: String,
    pub whisper_command: String,
    pub chunkize: bool,
    pub allow_root: bool,
    pub decode_once: bool,
    pub dead_letters: DeadLetterCaps,
}

impl std::fmt::Debug for Config {
    // Credentials never reach logs or `check-config` output: URLs carry them in userinfo.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("broker_url", &redact_url(&self.broker_url))
            .field("redis_location", &redact_url(&self.redis_location))
            .field("result_backend", &redact_url(&self.result_backend))
            .field("postgres", &self.postgres)
            .field("media_root", &self.media_root)
            .field("temp_directory", &self.temp_directory)
            .field("ffmpeg_command", &self.ffmpeg_command)
            .field("queues", &self.queues)
            .field("concurrency", &self.concurrency)
            .field("hostname", &self.hostname)
            .field("log_filter", &self.log_filter)
            .field("log_format", &self.log_format)
            .field("prefetch_multiplier", &self.prefetch_multiplier)
            .field("lease", &self.lease)
            .field("drain", &self.drain)
            .field("http_addr", &self.http_addr)
            .field("forward_unknown_to", &self.forward_unknown_to)
            .field("hwaccel", &self.hwaccel)
            .field("hw_device", &self.hw_device)
            .field("hw_concurrency", &self.hw_concurrency)
            .field("ffmpeg_threads", &self.ffmpeg_threads)
            .field("ffmpeg_nice", &self.ffmpeg_nice)
            .field("ffmpeg_default_preset", &self.ffmpeg_default_preset)
            .field(
                "minimum_resolutions_to_encode",
                &self.minimum_resolutions_to_encode,
            )
            .field("sprite_num_secs", &self.sprite_num_secs)
            .field("soft_time_limit", &self.soft_time_limit)
            .field("whisper_model", &self.whisper_model)
            .field("whisper_command", &self.whisper_command)
            .field("allow_root", &self.allow_root)
            .field("dead_letters", &self.dead_letters)
            .finish()
    }
}

/// `scheme://user:password@host/…` → `scheme://user:<redacted>@host/…` (also with an empty
/// user); URLs without a password are returned unchanged.
pub fn redact_url(url: &str) -> String {
    // A password may also ride in the query (`redis://host/1?password=…`, redis-py's form).
    let (url, query) = match url.split_once('?') {
        Some((base, q)) => (base, Some(redact_query(q))),
        None => (url, None),
    };
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    let Some((scheme, rest)) = url.split_once("://") else {
        return format!("{url}{query}");
    };
    // userinfo ends at the last '@' before the first '/' (passwords may contain '@').
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return format!("{url}{query}");
    };
    match rest[..at].split_once(':') {
        Some((user, _password)) => {
            format!("{scheme}://{user}:<redacted>{}{query}", &rest[at..])
        }
        None => format!("{url}{query}"),
    }
}

/// `password=…` (and other secret-looking keys) in a query string, values redacted.
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _))
                if ["password", "pass", "pwd", "secret", "token"]
                    .contains(&k.to_ascii_lowercase().as_str()) =>
            {
                format!("{k}=<redacted>")
            }
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[derive(Clone, PartialEq)]
pub struct PostgresConfig {
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for PostgresConfig {
    // Credentials never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A configuration problem, naming the field (flag name) at fault.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid configuration: `{field}`: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

fn bad(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        reason: reason.into(),
    }
}

/// Defaults are MediaCMS's (docker-compose of 7.3, `cms/settings.py`).
pub mod defaults {
    /// Decode-once is the default since issue 18: rows still read as MediaCMS leaves them
    /// (per-row `commands`), at a fraction of the decodes.
    pub const DECODE_ONCE: bool = true;
    pub const REDIS_LOCATION: &str = "redis://redis:6379/1";
    pub const POSTGRES_HOST: &str = "db";
    pub const POSTGRES_PORT: u16 = 5432;
    pub const POSTGRES_NAME: &str = "mediacms";
    pub const POSTGRES_USER: &str = "mediacms";
    pub const POSTGRES_PASSWORD: &str = "mediacms";
    pub const MEDIA_ROOT: &str = "/home/mediacms.io/mediacms/media_files/";
    pub const TEMP_DIRECTORY: &str = "/tmp";
    pub const FFMPEG_COMMAND: &str = "ffmpeg";
    pub const QUEUE: &str = "long_tasks";
    pub const HOSTNAME: &str = "long@%h";
    pub const LEASE_SECS: u64 = 90;
    pub const DRAIN_SECS: u64 = 600;
    pub const HTTP_ADDR: &str = "0.0.0.0:9808";
    pub const PRESET: &str = "medium";
    pub const MINIMUM_RESOLUTIONS: [i32; 2] = [144, 240];
    pub const SPRITE_NUM_SECS: u32 = 10;
    pub const SOFT_TIME_LIMIT_SECS: u64 = 7200;
    pub const WHISPER_MODEL: &str = "base";
    pub const WHISPER_COMMAND: &str = "whisper";
    pub const DEAD_LETTER_MAX_COUNT: u64 = 1000;
    pub const DEAD_LETTER_MAX_BYTES: u64 = 16 * 1024 * 1024;
    pub const DEAD_LETTER_TTL_SECS: u64 = 7 * 86_400;
}

impl RawConfig {
    /// Fill every field this one leaves unset from `lower` (flags/env over TOML).
    pub fn or(self, lower: RawConfig) -> RawConfig {
        macro_rules! pick {
            ($($f:ident),*) => { RawConfig { $($f: self.$f.or(lower.$f)),* } };
        }
        pick!(
            broker_url,
            redis_location,
            result_backend,
            postgres_host,
            postgres_port,
            postgres_name,
            postgres_user,
            postgres_password,
            media_root,
            temp_directory,
            ffmpeg_command,
            queues,
            concurrency,
            hostname,
            loglevel,
            log_format,
            prefetch_multiplier,
            optimization,
            lease_secs,
            drain_secs,
            http_addr,
            forward_unknown_to,
            hwaccel,
            hw_device,
            hw_concurrency,
            ffmpeg_threads,
            ffmpeg_nice,
            ffmpeg_default_preset,
            minimum_resolutions_to_encode,
            sprite_num_secs,
            celery_soft_time_limit,
            whisper_model,
            whisper_command,
            chunkize,
            allow_root,
            decode_once,
            dead_letter_max_count,
            dead_letter_max_bytes,
            dead_letter_ttl_secs
        )
    }

    /// Parse a TOML file whose keys are the long flag names with underscores.
    pub fn from_toml(text: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|e| bad("config", e.to_string()))
    }

    /// Apply defaults and validate. `host` expands `%h` in the hostname.
    pub fn resolve(self, host: &str) -> Result<Config, ConfigError> {
        let redis_location = self
            .redis_location
            .unwrap_or_else(|| defaults::REDIS_LOCATION.into());
        check_url("redis_location", &redis_location, &["redis", "rediss"])?;
        let broker_url = self.broker_url.unwrap_or_else(|| redis_location.clone());
        check_url(
            "broker_url",
            &broker_url,
            &["redis", "rediss", "amqp", "pyamqp"],
        )?;
        let result_backend = self
            .result_backend
            .unwrap_or_else(|| redis_location.clone());
        check_url("result_backend", &result_backend, &["redis", "rediss"])?;
        let queues = self.queues.unwrap_or_else(|| vec![defaults::QUEUE.into()]);
        if queues.is_empty() || queues.iter().any(|q| q.trim().is_empty()) {
            return Err(bad("queues", "needs at least one non-empty queue name"));
        }
        let concurrency = positive("concurrency", self.concurrency.unwrap_or(1))?;
        let prefetch_multiplier = self.prefetch_multiplier.unwrap_or(1);
        if let Some(o) = &self.optimization {
            if o != "fair" && o != "default" {
                return Err(bad("optimization", format!("`{o}` is not fair|default")));
            }
        }
        let media_root = absolute("media_root", self.media_root, defaults::MEDIA_ROOT)?;
        let temp_directory = absolute(
            "temp_directory",
            self.temp_directory,
            defaults::TEMP_DIRECTORY,
        )?;
        let lease_secs = self.lease_secs.unwrap_or(defaults::LEASE_SECS);
        // A lease is a fence, not a timer: a short one costs renewals, never correctness (the
        // fault suite runs 2-3 s leases); production keeps the 90 s default.
        if !(2..=3600).contains(&lease_secs) {
            return Err(bad("lease_secs", "must be between 2 and 3600 seconds"));
        }
        let ffmpeg_nice = self.ffmpeg_nice.unwrap_or(0);
        if !(0..=19).contains(&ffmpeg_nice) {
            return Err(bad("ffmpeg_nice", "must be between 0 and 19"));
        }
        let sprite_num_secs = positive("sprite_num_secs", self.sprite_num_secs.unwrap_or(10))?;
        let dead_letters = DeadLetterCaps {
            max_count: positive(
                "dead_letter_max_count",
                self.dead_letter_max_count
                    .unwrap_or(defaults::DEAD_LETTER_MAX_COUNT),
            )?,
            max_bytes: self
                .dead_letter_max_bytes
                .unwrap_or(defaults::DEAD_LETTER_MAX_BYTES),
            ttl: Duration::from_secs(
                self.dead_letter_ttl_secs
                    .unwrap_or(defaults::DEAD_LETTER_TTL_SECS),
            ),
        };
        if dead_letters.max_bytes < 4096 {
            return Err(bad("dead_letter_max_bytes", "must be at least 4096"));
        }
        if dead_letters.ttl.is_zero() {
            return Err(bad("dead_letter_ttl_secs", "must be positive"));
        }
        let http_addr = match self.http_addr {
            Some(a) => a,
            None => defaults::HTTP_ADDR.parse().expect("default address parses"),
        };
        Ok(Config {
            broker_url,
            redis_location,
            result_backend,
            postgres: PostgresConfig {
                host: self
                    .postgres_host
                    .unwrap_or_else(|| defaults::POSTGRES_HOST.into()),
                port: self.postgres_port.unwrap_or(defaults::POSTGRES_PORT),
                dbname: self
                    .postgres_name
                    .unwrap_or_else(|| defaults::POSTGRES_NAME.into()),
                user: self
                    .postgres_user
                    .unwrap_or_else(|| defaults::POSTGRES_USER.into()),
                password: self
                    .postgres_password
                    .unwrap_or_else(|| defaults::POSTGRES_PASSWORD.into()),
            },
            media_root,
            temp_directory,
            ffmpeg_command: self
                .ffmpeg_command
                .unwrap_or_else(|| defaults::FFMPEG_COMMAND.into()),
            queues,
            concurrency,
            hostname: self
                .hostname
                .unwrap_or_else(|| defaults::HOSTNAME.into())
                .replace("%h", host),
            log_filter: log_filter(self.loglevel.as_deref().unwrap_or("info"))?,
            log_format: self.log_format.unwrap_or_default(),
            prefetch_multiplier,
            lease: Duration::from_secs(lease_secs),
            drain: Duration::from_secs(self.drain_secs.unwrap_or(defaults::DRAIN_SECS)),
            http_addr,
            forward_unknown_to: self.forward_unknown_to.filter(|q| !q.is_empty()),
            hwaccel: self.hwaccel.unwrap_or_default(),
            hw_device: self.hw_device,
            hw_concurrency: self.hw_concurrency.unwrap_or(1),
            ffmpeg_threads: self.ffmpeg_threads.unwrap_or(0),
            ffmpeg_nice,
            ffmpeg_default_preset: self
                .ffmpeg_default_preset
                .unwrap_or_else(|| defaults::PRESET.into()),
            minimum_resolutions_to_encode: self
                .minimum_resolutions_to_encode
                .unwrap_or_else(|| defaults::MINIMUM_RESOLUTIONS.to_vec()),
            sprite_num_secs,
            soft_time_limit: Duration::from_secs(
                self.celery_soft_time_limit
                    .unwrap_or(defaults::SOFT_TIME_LIMIT_SECS),
            ),
            whisper_model: self
                .whisper_model
                .unwrap_or_else(|| defaults::WHISPER_MODEL.into()),
            whisper_command: self
                .whisper_command
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| defaults::WHISPER_COMMAND.into()),
            chunkize: self.chunkize.unwrap_or(false),
            allow_root: self.allow_root.unwrap_or(false),
            decode_once: self.decode_once.unwrap_or(defaults::DECODE_ONCE),
            dead_letters,
        })
    }
}

fn check_url(field: &'static str, url: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let scheme = url.split("://").next().unwrap_or_default();
    if !(url.contains("://") && schemes.contains(&scheme)) {
        return Err(bad(field, format!("expected a {} URL", schemes.join("|"))));
    }
    match url_port(url) {
        Some(port) if port.parse::<u16>().is_err() => Err(bad(
            field,
            format!(
                "port `{port}` is not a number from 0 to 65535 (in {})",
                redact_url(url)
            ),
        )),
        _ => Ok(()),
    }
}

/// The port text of a URL's authority, if it names one (`host:port`, `[v6]:port`).
fn url_port(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let after_host = match host_port.rfind(']') {
        Some(close) => &host_port[close + 1..],
        None => host_port,
    };
    after_host.split_once(':').map(|(_, p)| p)
}

fn positive<N: PartialEq + Default>(field: &'static str, n: N) -> Result<N, ConfigError> {
    if n == N::default() {
        Err(bad(field, "must be at least 1"))
    } else {
        Ok(n)
    }
}

fn absolute(
    field: &'static str,
    given: Option<PathBuf>,
    default: &str,
) -> Result<PathBuf, ConfigError> {
    let path = given.unwrap_or_else(|| PathBuf::from(default));
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(bad(field, format!("`{}` is not absolute", path.display())))
    }
}

/// Celery's `--loglevel` names (any case) → a tracing filter.
fn log_filter(level: &str) -> Result<String, ConfigError> {
    let lower = level.to_ascii_lowercase();
    let mapped = match lower.as_str() {
        "critical" | "fatal" | "error" => "error",
        "warning" | "warn" => "warn",
        "info" => "info",
        "debug" => "debug",
        "trace" => "trace",
        _ => return Err(bad("loglevel", format!("unknown level `{level}`"))),
    };
    Ok(mapped.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_mediacms_defaults() {
        let c = RawConfig::default().resolve("box").unwrap();
        assert_eq!(c.broker_url, "redis://redis:6379/1");
        assert_eq!(c.result_backend, c.redis_location);
        assert_eq!(c.postgres.host, "db");
        assert_eq!(c.postgres.dbname, "mediacms");
        assert_eq!(
            c.media_root,
            PathBuf::from("/home/mediacms.io/mediacms/media_files/")
        );
        assert_eq!(c.queues, vec!["long_tasks".to_string()]);
        assert_eq!(c.hostname, "long@box");
        assert_eq!(c.minimum_resolutions_to_encode, vec![144, 240]);
        assert_eq!(c.soft_time_limit, Duration::from_secs(7200));
    }

    #[test]
    fn broker_url_overrides_redis_location_for_the_broker_only() {
        let raw = RawConfig {
            redis_location: Some("redis://r:6379/1".into()),
            broker_url: Some("amqp://guest:guest@mq:5672//".into()),
            ..Default::default()
        };
        let c = raw.resolve("h").unwrap();
        assert_eq!(c.broker_url, "amqp://guest:guest@mq:5672//");
        assert_eq!(c.result_backend, "redis://r:6379/1");
    }

    #[test]
    fn flags_win_over_toml() {
        let toml = RawConfig::from_toml("concurrency = 4\nqueues = [\"a\", \"b\"]\n").unwrap();
        let flags = RawConfig {
            concurrency: Some(2),
            ..Default::default()
        };
        let c = flags.or(toml).resolve("h").unwrap();
        assert_eq!(c.concurrency, 2);
        assert_eq!(c.queues, vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn invalid_values_name_their_field() {
        let cases: Vec<(RawConfig, &str)> = vec![
            (
                RawConfig {
                    concurrency: Some(0),
                    ..Default::default()
                },
                "concurrency",
            ),
            (
                RawConfig {
                    broker_url: Some("http://x".into()),
                    ..Default::default()
                },
                "broker_url",
            ),
            (
                RawConfig {
                    media_root: Some("relative/dir".into()),
                    ..Default::default()
                },
                "media_root",
            ),
            (
                RawConfig {
                    loglevel: Some("loud".into()),
                    ..Default::default()
                },
                "loglevel",
            ),
            (
                RawConfig {
                    optimization: Some("turbo".into()),
                    ..Default::default()
                },
                "optimization",
            ),
        ];
        for (raw, field) in cases {
            assert_eq!(raw.resolve("h").unwrap_err().field, field);
        }
    }

    #[test]
    fn unknown_toml_keys_are_rejected() {
        let err = RawConfig::from_toml("concurency = 3").unwrap_err();
        assert_eq!(err.field, "config");
    }

    #[test]
    fn password_is_redacted_in_debug() {
        let c = RawConfig {
            postgres_password: Some("s3cret".into()),
            ..Default::default()
        }
        .resolve("h")
        .unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    /// Regression: `check-config` printed `redis://user:password@…` URLs in full.
    #[test]
    fn check_config_redacts_url_passwords() {
        let c = RawConfig {
            redis_location: Some("redis://default:r3d@is-pw@cache:6379/1".into()),
            broker_url: Some("amqp://guest:mq-pw@mq:5672//".into()),
            ..Default::default()
        }
        .resolve("h")
        .unwrap();
        let shown = format!("{c:#?}");
        assert!(
            !shown.contains("is-pw") && !shown.contains("mq-pw"),
            "{shown}"
        );
        assert!(
            shown.contains("redis://default:<redacted>@cache:6379/1"),
            "{shown}"
        );
        assert_eq!(redact_url("redis://cache:6379/1"), "redis://cache:6379/1");
        assert_eq!(redact_url("redis://:pw@c/0"), "redis://:<redacted>@c/0");
    }

    /// Regression: `--allow-root` alone was rejected (only `--allow-root true` parsed), although
    /// the README documents it as a flag.
    #[test]
    fn allow_root_is_a_plain_flag() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            raw: RawConfig,
        }
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.raw.allow_root);
        assert_eq!(parse(&["w", "--allow-root"]).unwrap(), Some(true));
        assert_eq!(
            parse(&["w", "--allow-root", "-Q", "q"]).unwrap(),
            Some(true)
        );
        assert_eq!(parse(&["w", "--allow-root", "true"]).unwrap(), Some(true));
        assert_eq!(parse(&["w", "--allow-root", "false"]).unwrap(), Some(false));
        assert_eq!(parse(&["w"]).unwrap(), None);
    }

    /// Issue 18: decode-once is on unless asked off; `--decode-once` alone still parses.
    #[test]
    fn decode_once_is_on_by_default_and_can_be_turned_off() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            raw: RawConfig,
        }
        let resolve = |args: &[&str]| Cli::try_parse_from(args).unwrap().raw.resolve("h");
        assert!(resolve(&["w"]).unwrap().decode_once);
        assert!(resolve(&["w", "--decode-once"]).unwrap().decode_once);
        assert!(!resolve(&["w", "--decode-once=false"]).unwrap().decode_once);
        assert!(
            !resolve(&["w", "--decode-once", "false"])
                .unwrap()
                .decode_once
        );
    }

    #[test]
    fn check_config_redacts_a_password_in_the_query_string() {
        let c = RawConfig {
            redis_location: Some("redis://cache:6379/1?password=q-pw-1&db=1".into()),
            ..Default::default()
        }
        .resolve("h")
        .unwrap();
        let shown = format!("{c:#?}");
        assert!(!shown.contains("q-pw-1"), "{shown}");
        assert!(
            shown.contains("redis://cache:6379/1?password=<redacted>&db=1"),
            "{shown}"
        );
    }

    #[test]
    fn a_port_that_is_not_a_number_is_rejected() {
        for (field, url) in [
            ("redis_location", "redis://default:pw@cache:notaport/1"),
            ("redis_location", "redis://cache:70000/1"),
            ("broker_url", "amqp://guest:guest@mq:56x2//"),
        ] {
            let raw = match field {
                "broker_url" => RawConfig {
                    broker_url: Some(url.into()),
                    ..Default::default()
                },
                _ => RawConfig {
                    redis_location: Some(url.into()),
                    ..Default::default()
                },
            };
            let err = raw.resolve("h").unwrap_err();
            assert_eq!(err.field, field, "{url}");
            assert!(!err.reason.contains("pw@"), "{}", err.reason);
        }
        for ok in [
            "redis://cache/1",
            "redis://cache:6379/1",
            "redis://[::1]:6379/0",
        ] {
            let raw = RawConfig {
                redis_location: Some(ok.into()),
                ..Default::default()
            };
            assert!(raw.resolve("h").is_ok(), "{ok}");
        }
    }
}
