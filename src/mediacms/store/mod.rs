//! The Postgres adapter: every SQL statement of the worker lives under this module
//! (deadpool-postgres + tokio-postgres). Reads return fresh rows; writes are targeted UPDATEs
//! (never a column written back from a stale read); multi-row changes run in one transaction.
//!
//! Submodules group statements by table family: `encoding` (the Encoding state machine and
//! the §2.1 deletions), `media` (post_encode_actions, hls/sprites, whisper rows), `chunks`
//! (chunk-set locking and finalisation), `beat` (popular media, listings thumbnails).

mod beat;
mod chunkize;
mod chunks;
mod encoding;
mod ladder;
mod media;

pub use beat::ListingsUpdated;
pub use chunkize::NewChunk;
pub use chunks::{ChunkKey, ChunkLock, ChunkSetFailed, Finalised};
pub use encoding::{DropReason, NewEncoding, StartOutcome, StartRequest, Started, SuccessUpdate};
pub use ladder::{EncodingPeek, FirstPlayableClaim, LadderClaim, LADDER_NOTE_PREFIX};
pub use media::{PostEncodeResult, PostEncodeUpdate, PreviewChange};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{NoTls, Row};

use super::model::{EncodeProfile, Encoding, Media, User};
use super::Disposition;
use crate::config::PostgresConfig;

/// A store failure, classified for the task layer by [`StoreError::disposition`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("postgres pool setup: {0}")]
    Build(String),
    #[error("postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// A row whose content breaks MediaCMS's invariants (e.g. unparsable `chunks_info`).
    #[error("inconsistent MediaCMS data: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Connection loss, pool exhaustion, deadlocks and serialization failures are transient;
    /// constraint violations, bad data and SQL errors are not.
    pub fn disposition(&self) -> Disposition {
        match self {
            Self::Pool(_) => Disposition::Retry,
            Self::Db(e) => match e.code() {
                None => Disposition::Retry,
                Some(code) => {
                    let c = code.code();
                    // 40xxx: transaction rollback (deadlock, serialization); 08xxx: connection;
                    // 57Pxx: admin shutdown / crash recovery; 53xxx: insufficient resources.
                    if c.starts_with("40")
                        || c.starts_with("08")
                        || c.starts_with("57P")
                        || c.starts_with("53")
                    {
                        Disposition::Retry
                    } else {
                        Disposition::Fail
                    }
                }
            },
            Self::Build(_) | Self::Corrupt(_) => Disposition::Fail,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Handle on MediaCMS's database. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("status", &self.pool.status())
            .finish()
    }
}

/// Opening a Postgres connection (TCP + startup) longer than this fails.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// A job waits at most this long for a free pooled connection.
const POOL_WAIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Checking a pooled connection before reuse.
const RECYCLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Store {
    /// Builds the pool (connections open lazily). `max_size` should cover job slots plus the
    /// connections held by in-progress chunk concatenations.
    pub fn connect(cfg: &PostgresConfig, max_size: usize) -> Result<Self> {
        let mut pg = tokio_postgres::Config::new();
        pg.host(&cfg.host)
            .port(cfg.port)
            .dbname(&cfg.dbname)
            .user(&cfg.user)
            .application_name("mediacms-worker")
            .connect_timeout(CONNECT_TIMEOUT);
        if !cfg.password.is_empty() {
            pg.password(&cfg.password);
        }
        let mgr = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // Bounded waits everywhere: a hung database makes calls fail (and the task requeue),
        // never wait forever holding a job slot.
        let pool = Pool::builder(mgr)
            .max_size(max_size.max(2))
            .wait_timeout(Some(POOL_WAIT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(RECYCLE_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Build(e.to_string()))?;
        Ok(Self { pool })
    }

    pub(crate) async fn conn(&self) -> Result<Object> {
        Ok(self.pool.get().await?)
    }

    /// `SELECT 1`: readiness probe.
    pub async fn ping(&self) -> Result<()> {
        self.conn().await?.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// The media with this friendly token, with its owner's username.
    pub async fn media_by_token(&self, friendly_token: &str) -> Result<Option<Media>> {
        let c = self.conn().await?;
        let sql = format!("{MEDIA_SELECT} WHERE m.friendly_token = $1");
        Ok(c.query_opt(&sql, &[&friendly_token])
            .await?
            .map(|r| media_from_row(&r)))
    }

    pub async fn media_by_id(&self, media_id: i32) -> Result<Option<Media>> {
        let c = self.conn().await?;
        let sql = format!("{MEDIA_SELECT} WHERE m.id = $1");
        Ok(c.query_opt(&sql, &[&media_id])
            .await?
            .map(|r| media_from_row(&r)))
    }

    pub async fn profile(&self, profile_id: i32) -> Result<Option<EncodeProfile>> {
        let c = self.conn().await?;
        let sql = format!("{PROFILE_SELECT} WHERE id = $1");
        Ok(c.query_opt(&sql, &[&profile_id])
            .await?
            .map(|r| profile_from_row(&r)))
    }

    pub async fn encoding(&self, encoding_id: i32) -> Result<Option<Encoding>> {
        let c = self.conn().await?;
        let sql = format!("SELECT {ENCODING_COLS} FROM files_encoding WHERE id = $1");
        Ok(c.query_opt(&sql, &[&encoding_id])
            .await?
            .map(|r| encoding_from_row(&r)))
    }

    /// Every Encoding of a media, in id order.
    pub async fn encodings_of_media(&self, media_id: i32) -> Result<Vec<Encoding>> {
        let c = self.conn().await?;
        let sql =
            format!("SELECT {ENCODING_COLS} FROM files_encoding WHERE media_id = $1 ORDER BY id");
        let rows = c.query(&sql, &[&media_id]).await?;
        Ok(rows.iter().map(encoding_from_row).collect())
    }

    /// Inputs of `create_hls` (§4.4): non-chunk h264 mp4 successes with a file, in id order.
    pub async fn hls_inputs(&self, media_id: i32) -> Result<Vec<Encoding>> {
        let c = self.conn().await?;
        let sql = format!(
            "SELECT {ENCODING_COLS_E} FROM files_encoding e \
             JOIN files_encodeprofile p ON p.id = e.profile_id \
             WHERE e.media_id = $1 AND p.extension = 'mp4' AND p.codec = 'h264' \
               AND e.status = 'success' AND NOT e.chunk AND e.media_file <> '' ORDER BY e.id"
        );
        let rows = c.query(&sql, &[&media_id]).await?;
        Ok(rows.iter().map(encoding_from_row).collect())
    }

    pub async fn user(&self, user_id: i32) -> Result<Option<User>> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                "SELECT id, username, media_count FROM users_user WHERE id = $1",
                &[&user_id],
            )
            .await?;
        Ok(row.map(|r| User {
            id: r.get("id"),
            username: r.get("username"),
            media_count: r.get("media_count"),
        }))
    }
}

const MEDIA_SELECT: &str = "SELECT m.id, m.uid, m.friendly_token, m.title, m.user_id, \
     u.username, m.media_file, m.media_type, m.encoding_status, m.state, m.is_reviewed, \
     m.listable, m.duration, m.video_height, m.media_info, m.preview_file_path, m.hls_file, \
     m.sprites, m.thumbnail, m.poster, m.uploaded_thumbnail \
     FROM files_media m JOIN users_user u ON u.id = m.user_id";

const PROFILE_SELECT: &str =
    "SELECT id, name, extension, resolution, codec, active FROM files_encodeprofile";

pub(crate) const ENCODING_COLS: &str = "id, add_date, commands, chunk, chunk_file_path, \
     chunks_info, logs, md5sum, media_id, media_file, profile_id, progress, update_date, \
     retries, size, status, temp_file, task_id, total_run_time, worker";

const ENCODING_COLS_E: &str = "e.id, e.add_date, e.commands, e.chunk, e.chunk_file_path, \
     e.chunks_info, e.logs, e.md5sum, e.media_id, e.media_file, e.profile_id, e.progress, \
     e.update_date, e.retries, e.size, e.status, e.temp_file, e.task_id, e.total_run_time, \
     e.worker";

pub(crate) fn media_from_row(r: &Row) -> Media {
    Media {
        id: r.get("id"),
        uid: r.get("uid"),
        friendly_token: r.get("friendly_token"),
        title: r.get("title"),
        user_id: r.get("user_id"),
        username: r.get("username"),
        media_file: r.get("media_file"),
        media_type: r.get("media_type"),
        encoding_status: r.get("encoding_status"),
        state: r.get("state"),
        is_reviewed: r.get("is_reviewed"),
        listable: r.get("listable"),
        duration: r.get("duration"),
        video_height: r.get("video_height"),
        media_info: r.get("media_info"),
        preview_file_path: r.get("preview_file_path"),
        hls_file: r.get("hls_file"),
        sprites: r.get("sprites"),
        thumbnail: r.get("thumbnail"),
        poster: r.get("poster"),
        uploaded_thumbnail: r.get("uploaded_thumbnail"),
    }
}

pub(crate) fn profile_from_row(r: &Row) -> EncodeProfile {
    EncodeProfile {
        id: r.get("id"),
        name: r.get("name"),
        extension: r.get("extension"),
        resolution: r.get("resolution"),
        codec: r.get("codec"),
        active: r.get("active"),
    }
}

pub(crate) fn encoding_from_row(r: &Row) -> Encoding {
    Encoding {
        id: r.get("id"),
        add_date: r.get("add_date"),
        commands: r.get("commands"),
        chunk: r.get("chunk"),
        chunk_file_path: r.get("chunk_file_path"),
        chunks_info: r.get("chunks_info"),
        logs: r.get("logs"),
        md5sum: r.get("md5sum"),
        media_id: r.get("media_id"),
        media_file: r.get("media_file"),
        profile_id: r.get("profile_id"),
        progress: r.get("progress"),
        update_date: r.get("update_date"),
        retries: r.get("retries"),
        size: r.get("size"),
        status: r.get("status"),
        temp_file: r.get("temp_file"),
        task_id: r.get("task_id"),
        total_run_time: r.get("total_run_time"),
        worker: r.get("worker"),
    }
}
