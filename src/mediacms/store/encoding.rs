//! The `files_encoding` state machine (contract §2.1-§2.6, §6.2): start-of-task claim with the
//! force/dedup deletions, progress (whose 0-row result is the cancellation signal), commands,
//! success, failure, deletions, and the full-column INSERT.

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::{encoding_from_row, media_from_row, profile_from_row, Result, Store, ENCODING_COLS};
use super::{EncodingPeek, MEDIA_SELECT, PROFILE_SELECT};
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
    /// Another task's decode-once ladder claimed the row (running or finished; its status):
    /// left alone, the task succeeds with whether that row is a success.
    ClaimedByLadder(String),
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
    /// §2.1 in one transaction: existence and ladder-claim check (one read), media/profile lookup, dedup or force
    /// deletion, then `status='running'`, `task_id`, `worker`, `retries`, `update_date`.
    /// All rows of (media, profile) are locked in id order first, so two tasks racing on the
    /// same pair serialise instead of deadlocking; the loser finds its row gone (`Missing`).
    pub async fn start_encoding(&self, req: &StartRequest<'_>) -> Result<StartOutcome> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // The one read of the row before the claim: gone (cancelled), another task's ladder
        // has it, or it is ours to start.
        match super::ladder::peek_in(&tx, req.encoding_id, req.task_id).await? {
            EncodingPeek::Missing => return Ok(StartOutcome::Missing),
            EncodingPeek::ClaimedByLadder(status) => {
                return Ok(StartOutcome::ClaimedByLadder(status))
            }
            EncodingPeek::Free => {}
        }
        let (media, profile) = match lookup(&tx, req).await? {
            Ok(found) => found,
            Err(reason) => {
                let deleted = delete_where(&tx, "id = $1", &[&req.encoding_id]).await?;
                tx.commit().await?;
                return Ok(StartOutcome::Dropped { reason, deleted });
            }
        };
        let Some(same) = lock_same_rows(&tx, req, media.id, profile.id).await? else {
            return Ok(StartOutcome::Missing);
        };
        if !req.force && !same.is_empty() {
            let deleted = delete_where(&tx, "id = $1", &[&req.encoding_id]).await?;
            tx.commit().await?;
            let reason = DropReason::Duplicate;
            return Ok(StartOutcome::Dropped { reason, deleted });
        }
        let replaced = delete_where(&tx, "id = ANY($1)", &[&same]).await?;
        let sql = format!(
            "UPDATE files_encoding SET status = 'running', task_id = $2, worker = $3, \
             retries = $4, update_date = now() WHERE id = $1 RETURNING {ENCODING_COLS}"
        );
        let params: [&(dyn ToSql + Sync); 4] =
            [&req.encoding_id, &req.task_id, &req.worker, &req.retries];
        let row = tx.query_one(&sql, &params).await?;
        tx.commit().await?;
        let encoding = encoding_from_row(&row);
        let started = Started {
            media,
            profile,
            encoding,
            replaced,
        };
        Ok(StartOutcome::Started(Box::new(started)))
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

    /// A run that was stopped to be re-run later (shutdown abort, requeued): the row goes back
    /// from `running` to `pending`, as it was before the claim, so it never stays `running`
    /// with nothing running it. `false` when the row was not `running`.
    pub async fn mark_pending(&self, encoding_id: i32) -> Result<bool> {
        let n = self
            .conn()
            .await?
            .execute(
                "UPDATE files_encoding SET status = 'pending', progress = 0, update_date = now() \
                 WHERE id = $1 AND status = 'running'",
                &[&encoding_id],
            )
            .await?;
        Ok(n > 0)
    }

    /// Deletes one Encoding, returning it for its post_delete side effects.
    pub async fn delete_encoding(&self, encoding_id: i32) -> Result<Option<Encoding>> {
        let c = self.conn().await?;
        Ok(delete_where(&c, "id = $1", &[&encoding_id]).await?.pop())
    }

    /// Revoke handling (§2.8): deletes the Encodings that carry this Celery task id.
    /// MediaCMS's `task_revoked` (`Encoding WHERE task_id = <id>` deleted), kept to the revoked
    /// task's own media. A decode-once ladder also writes its task id on other media's rows it
    /// borrowed (playable-first); those are not what the operator revoked: finished ones stay,
    /// unfinished ones go back to `pending` for their own messages. Returns the deleted rows.
    pub async fn revoke_task_encodings(
        &self,
        task_id: &str,
        media_id: i32,
    ) -> Result<Vec<Encoding>> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "UPDATE files_encoding SET status = 'pending', progress = 0, update_date = now() \
             WHERE task_id = $1 AND task_id <> '' AND media_id <> $2 AND status = 'running'",
            &[&task_id, &media_id],
        )
        .await?;
        let deleted = delete_where(
            &tx,
            "task_id = $1 AND task_id <> '' AND media_id = $2",
            &[&task_id, &media_id],
        )
        .await?;
        tx.commit().await?;
        Ok(deleted)
    }
}

/// §2.1 step 2: the message's media and profile, or why the task must drop its row.
async fn lookup<C: GenericClient>(
    c: &C,
    req: &StartRequest<'_>,
) -> Result<std::result::Result<(Media, EncodeProfile), DropReason>> {
    let media_sql = format!("{MEDIA_SELECT} WHERE m.friendly_token = $1");
    let media = c.query_opt(&media_sql, &[&req.friendly_token]).await?;
    let Some(media) = media.map(|r| media_from_row(&r)) else {
        return Ok(Err(DropReason::MediaMissing));
    };
    let profile_sql = format!("{PROFILE_SELECT} WHERE id = $1");
    let profile = c.query_opt(&profile_sql, &[&req.profile_id]).await?;
    match profile.map(|r| profile_from_row(&r)) {
        Some(profile) => Ok(Ok((media, profile))),
        None => Ok(Err(DropReason::ProfileMissing)),
    }
}

/// Locks every row of (media, profile) plus the task's own, in id order, and returns the ids
/// of the *other* rows Python counts as duplicates: same (media, profile), and for a chunk task
/// the same `chunk_file_path`. `None` when the task's own row vanished while we waited.
async fn lock_same_rows<C: GenericClient>(
    c: &C,
    req: &StartRequest<'_>,
    media_id: i32,
    profile_id: i32,
) -> Result<Option<Vec<i32>>> {
    let lock = "SELECT id, chunk_file_path FROM files_encoding \
         WHERE (media_id = $1 AND profile_id = $2) OR id = $3 ORDER BY id FOR UPDATE";
    let rows = c
        .query(lock, &[&media_id, &profile_id, &req.encoding_id])
        .await?;
    if !rows.iter().any(|r| r.get::<_, i32>(0) == req.encoding_id) {
        return Ok(None);
    }
    let same = rows
        .iter()
        .filter(|r| match req.chunk_file_path {
            Some(path) => r.get::<_, &str>(1) == path,
            None => true,
        })
        .map(|r| r.get::<_, i32>(0))
        .filter(|id| *id != req.encoding_id)
        .collect();
    Ok(Some(same))
}

/// `DELETE … RETURNING` every column, so files of the removed rows can be cleaned up.
pub(crate) async fn delete_where<C: GenericClient>(
    c: &C,
    predicate: &str,
    params: &[&(dyn ToSql + Sync)],
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
