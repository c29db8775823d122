//! The `files_encoding` state machine (contract §2.1-§2.6, §6.2): start-of-task claim with the
//! force/dedup deletions, progress (whose 0-row result is the cancellation signal), commands,
//! success, failure, deletions, and the full-column INSERT.

use deadpool_postgres::GenericClient;

use super::{encoding_from_row, media_from_row, profile_from_row, Result, Store, ENCODING_COLS};
use super::{MEDIA_SELECT, PROFILE_SELECT};
use crate::mediacms::model::{status, EncodeProfile, Encoding, Media};

/// Arguments of `encode_media` plus the task identity written at start (§2.1 step 4).
#[derive(Debug, Clone)]
pub struct StartRequest<'a> {
    pub encoding_id: i32,
    pub friendly_token: &'a str,
    pub profile_id: i32,
    pub force: bool,
    /// `Some(chunk_file_path)` for `chunk=True` messages.
    pub chunk_file_path: Option<&'a str>,
    pub task_id: &'a str,
    /// Written to `files_encoding.worker` (MediaCMS writes the literal `localhost`).
    pub worker: &'a str,
    pub retries: i32,
}

/// Why the task's own Encoding was deleted instead of started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    MediaMissing,
    ProfileMissing,
    /// Another Encoding of the same (media, profile[, chunk]) exists and `force` is false.
    Duplicate,
}

/// Result of [`Store::start_encoding`]. Every `deleted`/`replaced` row still needs its
/// post_delete side effects (`signals::Signals::encoding_deleted`).
#[derive(Debug, Clone)]
pub enum StartOutcome {
    /// No such Encoding: it was deleted before we started (cancellation). Task returns false.
    Missing,
    /// The task's Encoding was deleted (§2.1 steps 2-3). Task returns false.
    Dropped {
        reason: DropReason,
        deleted: Vec<Encoding>,
    },
    /// The Encoding is now `running` with our task id.
    Started(Box<Started>),
}

/// The claimed task: fresh rows to encode from, and the rows force/dedup deleted.
#[derive(Debug, Clone)]
pub struct Started {
    pub media: Media,
    pub profile: EncodeProfile,
    pub encoding: Encoding,
    pub replaced: Vec<Encoding>,
}

/// Final columns of a successful encode (§2.6), written in one UPDATE.
#[derive(Debug, Clone)]
pub struct SuccessUpdate<'a> {
    /// Relative path actually used by `layout::place_file`.
    pub media_file: &'a str,
    pub size_bytes: u64,
    pub logs: &'a str,
    /// Real run time of this task in seconds (not Python's queue-wait-inclusive value).
    pub total_run_time: i32,
}

/// A row to INSERT; every NOT NULL column is supplied (Django sets no DB defaults).
#[derive(Debug, Clone, Default)]
pub struct NewEncoding {
    pub media_id: i32,
    pub profile_id: i32,
    pub status: String,
    pub progress: i16,
    pub logs: String,
    pub worker: String,
    pub total_run_time: i32,
    pub media_file: String,
    pub size: String,
}

impl Store {
    /// §2.1 in one transaction: existence check, media/profile lookup, dedup or force
    /// deletion, then `status='running'`, `task_id`, `worker`, `retries`, `update_date`.
    /// All rows of (media, profile) are locked in id order first, so two tasks racing on the
    /// same pair serialise instead of deadlocking; the loser finds its row gone (`Missing`).
    pub async fn start_encoding(&self, req: &StartRequest<'_>) -> Result<StartOutcome> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let exists = tx
            .query_opt(
                "SELECT id FROM files_encoding WHERE id = $1",
                &[&req.encoding_id],
            )
            .await?;
        if exists.is_none() {
            return Ok(StartOutcome::Missing);
        }
        let media_sql = format!("{MEDIA_SELECT} WHERE m.friendly_token = $1");
        let media = tx
            .query_opt(&media_sql, &[&req.friendly_token])
            .await?
            .map(|r| media_from_row(&r));
        let profile_sql = format!("{PROFILE_SELECT} WHERE id = $1");
        let profile = tx
            .query_opt(&profile_sql, &[&req.profile_id])
            .await?
            .map(|r| profile_from_row(&r));
        let (media, profile) = match (media, profile) {
            (Some(m), Some(p)) => (m, p),
            (m, _) => {
                let reason = if m.is_none() {
                    DropReason::MediaMissing
                } else {
                    DropReason::ProfileMissing
                };
                let deleted = delete_where(&tx, "id = $1", &[&req.encoding_id]).await?;
                tx.commit().await?;
                return Ok(StartOutcome::Dropped { reason, deleted });
            }
        };
        let lock = "SELECT id, chunk, chunk_file_path FROM files_encoding \
             WHERE (media_id = $1 AND profile_id = $2) OR id = $3 ORDER BY id FOR UPDATE";
        let rows = tx
            .query(lock, &[&media.id, &profile.id, &req.encoding_id])
            .await?;
        if !rows
            .iter()
            .any(|r| r.get::<_, i32>("id") == req.encoding_id)
        {
            return Ok(StartOutcome::Missing);
        }
        // Python counts rows of the same (media, profile[, chunk_file_path]), its own included.
        let same: Vec<i32> = rows
            .iter()
            .filter(|r| match req.chunk_file_path {
                Some(path) => r.get::<_, &str>("chunk_file_path") == path,
                None => true,
            })
            .map(|r| r.get::<_, i32>("id"))
            .filter(|id| *id != req.encoding_id)
            .collect();
        if !req.force && !same.is_empty() {
            let deleted = delete_where(&tx, "id = $1", &[&req.encoding_id]).await?;
            tx.commit().await?;
            return Ok(StartOutcome::Dropped {
                reason: DropReason::Duplicate,
                deleted,
            });
        }
        let replaced = delete_where(&tx, "id = ANY($1)", &[&same]).await?;
        let sql = format!(
            "UPDATE files_encoding SET status = 'running', task_id = $2, worker = $3, \
             retries = $4, update_date = now() WHERE id = $1 RETURNING {ENCODING_COLS}"
        );
        let row = tx
            .query_one(
                &sql,
                &[&req.encoding_id, &req.task_id, &req.worker, &req.retries],
            )
            .await?;
        tx.commit().await?;
        let encoding = encoding_from_row(&row);
        Ok(StartOutcome::Started(Box::new(Started {
            media,
            profile,
            encoding,
            replaced,
        })))
    }

    /// `progress` (0-100) and `update_date`. `false` when no row was hit: the Encoding was
    /// deleted (media deleted, trim, forced re-encode) and the encode must be cancelled.
    pub async fn update_progress(&self, encoding_id: i32, progress: i16) -> Result<bool> {
        let c = self.conn().await?;
        let n = c
            .execute(
                "UPDATE files_encoding SET progress = $2, update_date = now() WHERE id = $1",
                &[&encoding_id, &progress.clamp(0, 100)],
            )
            .await?;
        Ok(n == 1)
    }

    /// `temp_file` and `commands` before ffmpeg runs (§2.3; no `update_date` bump, as
    /// MediaCMS). `false` = row deleted.
    pub async fn set_commands(
        &self,
        encoding_id: i32,
        temp_file: &str,
        commands: &str,
    ) -> Result<bool> {
        let c = self.conn().await?;
        let n = c
            .execute(
                "UPDATE files_encoding SET temp_file = $2, commands = $3 WHERE id = $1",
                &[&encoding_id, &temp_file, &commands],
            )
            .await?;
        Ok(n == 1)
    }

    /// Final success (§2.6): status, logs, progress 100, relative `media_file`, `size`
    /// `"X.YMB"`, `total_run_time`, `update_date`. `None` = the row was deleted meanwhile (the
    /// caller removes the file it placed).
    pub async fn mark_success(
        &self,
        encoding_id: i32,
        up: &SuccessUpdate<'_>,
    ) -> Result<Option<Encoding>> {
        let c = self.conn().await?;
        let size = crate::mediacms::layout::size_label(up.size_bytes);
        let sql = format!(
            "UPDATE files_encoding SET status = 'success', logs = $2, progress = 100, \
             media_file = $3, size = $4, total_run_time = $5, update_date = now() \
             WHERE id = $1 RETURNING {ENCODING_COLS}"
        );
        let row = c
            .query_opt(
                &sql,
                &[
                    &encoding_id,
                    &up.logs,
                    &up.media_file,
                    &size,
                    &up.total_run_time,
                ],
            )
            .await?;
        Ok(row.map(|r| encoding_from_row(&r)))
    }

    /// `status='fail'` and, when given, `logs` (§2.5 step 3, §2.3 no-commands case, on_failure).
    /// `None` = the row was deleted meanwhile.
    pub async fn mark_failed(
        &self,
        encoding_id: i32,
        logs: Option<&str>,
    ) -> Result<Option<Encoding>> {
        let c = self.conn().await?;
        let sql = format!(
            "UPDATE files_encoding SET status = 'fail', logs = COALESCE($2, logs), \
             update_date = now() WHERE id = $1 RETURNING {ENCODING_COLS}"
        );
        let row = c.query_opt(&sql, &[&encoding_id, &logs]).await?;
        Ok(row.map(|r| encoding_from_row(&r)))
    }

    /// Deletes one Encoding, returning it for its post_delete side effects.
    pub async fn delete_encoding(&self, encoding_id: i32) -> Result<Option<Encoding>> {
        let c = self.conn().await?;
        Ok(delete_where(&c, "id = $1", &[&encoding_id]).await?.pop())
    }

    /// Revoke handling (§2.8): deletes the Encodings that carry this Celery task id.
    pub async fn delete_encodings_by_task(&self, task_id: &str) -> Result<Vec<Encoding>> {
        let c = self.conn().await?;
        delete_where(&c, "task_id = $1 AND task_id <> ''", &[&task_id]).await
    }
}

/// `DELETE … RETURNING` every column, so files of the removed rows can be cleaned up.
pub(crate) async fn delete_where<C: GenericClient>(
    c: &C,
    predicate: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Encoding>> {
    let sql = format!("DELETE FROM files_encoding WHERE {predicate} RETURNING {ENCODING_COLS}");
    let rows = c.query(&sql, params).await?;
    Ok(rows.iter().map(encoding_from_row).collect())
}

/// INSERT with every NOT NULL column; `add_date`/`update_date` = now(), chunk fields empty.
pub(crate) async fn insert_encoding<C: GenericClient>(c: &C, e: &NewEncoding) -> Result<Encoding> {
    let sql = format!(
        "INSERT INTO files_encoding (add_date, commands, chunk, chunk_file_path, chunks_info, \
           logs, md5sum, media_file, progress, update_date, retries, size, status, temp_file, \
           task_id, total_run_time, worker, media_id, profile_id) \
         VALUES (now(), '', false, '', '', $1, NULL, $2, $3, now(), 0, $4, $5, '', '', $6, $7, $8, $9) \
         RETURNING {ENCODING_COLS}"
    );
    let status = if e.status.is_empty() {
        status::PENDING
    } else {
        e.status.as_str()
    };
    let row = c
        .query_one(
            &sql,
            &[
                &e.logs,
                &e.media_file,
                &e.progress,
                &e.size,
                &status,
                &e.total_run_time,
                &e.worker,
                &e.media_id,
                &e.profile_id,
            ],
        )
        .await?;
    Ok(encoding_from_row(&row))
}
