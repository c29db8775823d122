//! SQL of the decode-once ladder: the atomic claim of a media's other pending video Encodings,
//! the check a later message runs before encoding ("already claimed by a ladder"), and the
//! ownership check before a ladder output is committed.
//!
//! Marker: a claimed row gets `task_id` = the claiming task's id and `logs` starting with
//! [`LADDER_NOTE_PREFIX`]. MediaCMS never writes that text, and a row's own message always
//! carries a different task id, so "non-chunk, task id not ours, logs start with the prefix"
//! identifies a row a ladder took over. `worker` stays the plain hostname, as one-by-one.

use tokio_postgres::types::ToSql;

use super::{encoding_from_row, Result, Store};
use crate::mediacms::model::Encoding;

/// First bytes of `logs` on every ladder-claimed row (kept on success, before the stderr tail).
pub const LADDER_NOTE_PREFIX: &str = "[mediacms-worker] decode-once ladder";

/// What [`Store::peek_encoding`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodingPeek {
    /// No such Encoding (deleted): MediaCMS's task returns False.
    Missing,
    /// Another task's ladder claimed it; the row's status.
    ClaimedByLadder(String),
    /// Its own message may start it.
    Free,
}

/// Who claims, for which media, and the note written into each claimed row's `logs`.
#[derive(Debug, Clone)]
pub struct LadderClaim<'a> {
    pub media_id: i32,
    /// The claiming task's own Encoding (already `running` through `start_encoding`).
    pub own_encoding_id: i32,
    pub task_id: &'a str,
    pub worker: &'a str,
    pub retries: i32,
    /// Must start with [`LADDER_NOTE_PREFIX`].
    pub note: &'a str,
    /// Also claim the media's pending preview GIF Encoding (its frames come from the same
    /// decode: `plan::gif_joins_ladder`).
    pub with_gif: bool,
}

/// A playable-first claim: the next other media's pending minimum-resolution Encodings.
#[derive(Debug, Clone)]
pub struct FirstPlayableClaim<'a> {
    /// Media not to take (the claimer's own and those it already took).
    pub exclude_media: &'a [i32],
    pub task_id: &'a str,
    pub worker: &'a str,
    /// Must start with [`LADDER_NOTE_PREFIX`].
    pub note: &'a str,
    /// `MINIMUM_RESOLUTIONS_TO_ENCODE`.
    pub minimum: &'a [i32],
    /// Only media whose `duration` column (whole seconds) is above this: MediaCMS encodes
    /// shorter sources in two passes, which a shared graph cannot replay.
    pub min_duration_secs: i32,
}

impl Store {
    /// Atomically claims the pending minimum-resolution video Encodings of ONE other media: the
    /// one whose oldest such row is oldest (upload order). Same marker and rules as
    /// [`Store::claim_ladder`]: only `pending` rows (or rows this very task claimed before: its
    /// re-run takes them back), non-chunk, alone for their (media, profile). A concurrent
    /// claimer or the row's own `start_encoding` blocks on the row lock and then sees it is no
    /// longer `pending`, so no row is ever claimed twice. Rows in id order; empty: none left.
    pub async fn claim_first_playable(
        &self,
        claim: &FirstPlayableClaim<'_>,
    ) -> Result<Vec<Encoding>> {
        let c = self.conn().await?;
        let free = |t: &str| {
            format!(
                "NOT {t}.chunk AND ({t}.status = 'pending' OR ({t}.status = 'running' \
                 AND {t}.task_id = $2 AND left({t}.logs, $6) = $5))"
            )
        };
        let sql = format!(
            "UPDATE files_encoding e SET status = 'running', task_id = $2, worker = $3, \
               retries = 0, logs = $4, update_date = now() \
             FROM files_encodeprofile p \
             WHERE p.id = e.profile_id AND p.extension IN ('mp4', 'webm') \
               AND p.resolution = ANY($7) AND {} \
               AND e.media_id = (SELECT o.media_id FROM files_encoding o \
                    JOIN files_encodeprofile op ON op.id = o.profile_id \
                    JOIN files_media om ON om.id = o.media_id \
                    WHERE o.media_id <> ALL($1) AND op.extension IN ('mp4', 'webm') \
                      AND om.duration > $8 \
                      AND op.resolution = ANY($7) AND {} ORDER BY o.id LIMIT 1) \
               AND NOT EXISTS (SELECT 1 FROM files_encoding d WHERE d.media_id = e.media_id \
                    AND d.profile_id = e.profile_id AND d.id <> e.id) \
             RETURNING e.*",
            free("e"),
            free("o")
        );
        let prefix_len = prefix_chars();
        let params: [&(dyn ToSql + Sync); 8] = [
            &claim.exclude_media,
            &claim.task_id,
            &claim.worker,
            &claim.note,
            &LADDER_NOTE_PREFIX,
            &prefix_len,
            &claim.minimum,
            &claim.min_duration_secs,
        ];
        let rows = c.query(&sql, &params).await?;
        let mut claimed: Vec<Encoding> = rows.iter().map(encoding_from_row).collect();
        claimed.sort_by_key(|e| e.id);
        Ok(claimed)
    }

    /// Atomically claims the media's other non-chunk video Encodings (and, `with_gif`, its
    /// preview GIF Encoding) that are `pending` (or
    /// still `running` under this very task's earlier ladder claim: a re-run after a shutdown
    /// abort or the Celery retry takes them back). One UPDATE: a concurrent claimer or a row's
    /// own `start_encoding` blocks on the row lock and then sees it is no longer `pending`.
    ///
    /// Only rows that are alone for their (media, profile) are taken: their own message (force
    /// or not) would delete nothing, so claiming skips no §2.1 deletion. Rows in id order.
    pub async fn claim_ladder(&self, claim: &LadderClaim<'_>) -> Result<Vec<Encoding>> {
        let c = self.conn().await?;
        let sql = "UPDATE files_encoding e SET status = 'running', task_id = $3, worker = $4, \
               retries = $5, logs = $6, update_date = now() \
             FROM files_encodeprofile p \
             WHERE p.id = e.profile_id AND e.media_id = $1 AND e.id <> $2 AND NOT e.chunk \
               AND ((p.extension IN ('mp4', 'webm') AND p.resolution IS NOT NULL) \
                    OR ($9 AND p.extension = 'gif')) \
               AND (e.status = 'pending' \
                    OR (e.status = 'running' AND e.task_id = $3 AND left(e.logs, $8) = $7)) \
               AND NOT EXISTS (SELECT 1 FROM files_encoding o WHERE o.media_id = e.media_id \
                    AND o.profile_id = e.profile_id AND o.id <> e.id) \
             RETURNING e.*";
        let prefix_len = prefix_chars();
        let params: [&(dyn ToSql + Sync); 9] = [
            &claim.media_id,
            &claim.own_encoding_id,
            &claim.task_id,
            &claim.worker,
            &claim.retries,
            &claim.note,
            &LADDER_NOTE_PREFIX,
            &prefix_len,
            &claim.with_gif,
        ];
        let rows = c.query(sql, &params).await?;
        let mut claimed: Vec<Encoding> = rows.iter().map(encoding_from_row).collect();
        claimed.sort_by_key(|e| e.id);
        Ok(claimed)
    }

    /// What a message about to start finds, in one prepared query (the hot path of every
    /// `encode_media`, and all of it for a deleted Encoding): no row, a row another task's
    /// ladder claimed (running or finished; its status), or a row that is its own to start.
    pub async fn peek_encoding(&self, encoding_id: i32, task_id: &str) -> Result<EncodingPeek> {
        let c = self.conn().await?;
        let stmt = c.prepare_cached(PEEK_SQL).await?;
        let prefix_len = prefix_chars();
        let params: [&(dyn ToSql + Sync); 4] =
            [&encoding_id, &task_id, &LADDER_NOTE_PREFIX, &prefix_len];
        Ok(peek_of(c.query_opt(&stmt, &params).await?))
    }

    /// Whether the Encoding still carries this task id. A row's own message that raced past its
    /// check just before the claim committed restarts it under its own id; the ladder then
    /// leaves that row to it (checked right before committing each output).
    pub async fn ladder_still_owns(&self, encoding_id: i32, task_id: &str) -> Result<bool> {
        let c = self.conn().await?;
        let sql = "SELECT 1 FROM files_encoding WHERE id = $1 AND task_id = $2";
        Ok(c.query_opt(sql, &[&encoding_id, &task_id]).await?.is_some())
    }
}

/// The peek: the row's status, and whether another task's ladder claimed it
/// (`$1` encoding id, `$2` the asking task's id, `$3`/`$4` the ladder note prefix and its length).
const PEEK_SQL: &str = "SELECT status, (NOT chunk AND task_id <> '' AND task_id <> $2 \
     AND status IN ('running', 'success', 'fail') AND left(logs, $4) = $3) \
     FROM files_encoding WHERE id = $1";

fn peek_of(row: Option<tokio_postgres::Row>) -> EncodingPeek {
    match row {
        None => EncodingPeek::Missing,
        Some(row) if row.get::<_, bool>(1) => EncodingPeek::ClaimedByLadder(row.get(0)),
        Some(_) => EncodingPeek::Free,
    }
}

/// The peek inside the start transaction: the one read of the Encoding row before it is
/// claimed (it was read twice before, once here and once as an existence check).
pub(super) async fn peek_in(
    tx: &deadpool_postgres::Transaction<'_>,
    encoding_id: i32,
    task_id: &str,
) -> Result<EncodingPeek> {
    let prefix_len = prefix_chars();
    let params: [&(dyn ToSql + Sync); 4] =
        [&encoding_id, &task_id, &LADDER_NOTE_PREFIX, &prefix_len];
    Ok(peek_of(tx.query_opt(PEEK_SQL, &params).await?))
}

/// Length of `LADDER_NOTE_PREFIX` in characters, as SQL's `left(text, n)` counts them.
fn prefix_chars() -> i32 {
    i32::try_from(LADDER_NOTE_PREFIX.chars().count()).unwrap_or(i32::MAX)
}
