//! Chunk sets (§2.6, §2.10): the rows of one (media, profile, chunks_info), the lock that lets
//! exactly one worker concatenate them, the final/aggregate Encoding and the chunk-row
//! deletions — each multi-row change in one transaction.
//!
//! Lock: a *session* advisory lock `pg_advisory_lock(media_id, profile_id)` held on a dedicated
//! pooled connection for the whole concatenation (check → ffmpeg → finalise). A second worker
//! that also saw the set complete blocks, then re-checks and finds the chunk rows gone. If the
//! holder dies, Postgres drops the session and the lock with it. MediaCMS itself takes no
//! advisory locks, so the (media_id, profile_id) key space is ours.

use deadpool_postgres::{GenericClient, Object};

use super::encoding::{delete_where, insert_encoding, NewEncoding};
use super::{encoding_from_row, Result, Store, ENCODING_COLS};
use crate::mediacms::model::Encoding;

/// Identifies one chunk set: the chunk rows of (media, profile) with this exact `chunks_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkKey {
    pub media_id: i32,
    pub profile_id: i32,
    pub chunks_info: String,
}

/// Outcome of [`ChunkLock::finalise`] / [`Store::fail_chunk_set`].
#[derive(Debug, Clone)]
pub struct Finalised {
    /// The inserted non-chunk Encoding (success after a concat, fail after a chunk failure).
    pub encoding: Encoding,
    /// Every other Encoding of (media, profile) that was deleted; their files must go.
    pub deleted: Vec<Encoding>,
    /// No Encoding with this `chunks_info` is left (any profile): the source `.mkv` chunks can
    /// be deleted.
    pub sources_orphaned: bool,
}

/// Aggregate row details for a failed chunk set (fix of quirk §9.1).
#[derive(Debug, Clone)]
pub struct ChunkSetFailed<'a> {
    pub failed_encoding_id: i32,
    pub logs: &'a str,
}

/// The held chunk-set lock. Call [`ChunkLock::release`]; if it is dropped instead (panic,
/// early return) the connection is detached from the pool and closed, which releases the lock
/// server-side, so a pooled connection never keeps a stray lock.
pub struct ChunkLock {
    conn: Option<Object>,
    pub key: ChunkKey,
}

impl Store {
    /// The chunk rows of a set, in `add_date` order (the concat order).
    pub async fn chunk_rows(&self, key: &ChunkKey) -> Result<Vec<Encoding>> {
        let c = self.conn().await?;
        chunk_rows(&c, key).await
    }

    /// Blocks until this worker holds the set's lock.
    pub async fn lock_chunk_set(&self, key: &ChunkKey) -> Result<ChunkLock> {
        let c = self.conn().await?;
        c.execute(
            "SELECT pg_advisory_lock($1, $2)",
            &[&key.media_id, &key.profile_id],
        )
        .await?;
        Ok(ChunkLock {
            conn: Some(c),
            key: key.clone(),
        })
    }

    /// Chunk failure (quirk §9.1 fixed): under the set's lock, insert an aggregate `fail`
    /// Encoding for (media, profile) and delete every other Encoding of that pair (the other
    /// chunks' encodes notice through their progress/success update hitting no row). `None`
    /// when the failed chunk row is already gone (a concurrent finalisation won).
    pub async fn fail_chunk_set(
        &self,
        key: &ChunkKey,
        f: &ChunkSetFailed<'_>,
    ) -> Result<Option<Finalised>> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, $2)",
            &[&key.media_id, &key.profile_id],
        )
        .await?;
        let still = tx
            .query_opt(
                "SELECT id FROM files_encoding WHERE id = $1",
                &[&f.failed_encoding_id],
            )
            .await?;
        if still.is_none() {
            return Ok(None);
        }
        let rows = chunk_rows(&tx, key).await?;
        let new = NewEncoding {
            media_id: key.media_id,
            profile_id: key.profile_id,
            status: "fail".into(),
            progress: 100,
            logs: f.logs.to_owned(),
            worker: workers_json(&rows),
            total_run_time: span_seconds(&rows),
            ..NewEncoding::default()
        };
        let done = replace_set(&tx, key, &new).await?;
        tx.commit().await?;
        Ok(Some(done))
    }
}

impl ChunkLock {
    fn conn(&self) -> &Object {
        self.conn.as_ref().expect("ChunkLock used after release")
    }

    /// The set's rows as they are now (re-check completeness under the lock).
    pub async fn rows(&self) -> Result<Vec<Encoding>> {
        chunk_rows(self.conn(), &self.key).await
    }

    /// After a successful concat with the file in place: insert the final Encoding, delete
    /// every other Encoding of (media, profile), report whether the sources are orphaned.
    /// `new.worker`/`total_run_time` are filled from the chunk rows when left empty/zero.
    pub async fn finalise(&mut self, mut new: NewEncoding) -> Result<Finalised> {
        let key = self.key.clone();
        let c = self.conn.as_mut().expect("ChunkLock used after release");
        let tx = c.transaction().await?;
        let rows = chunk_rows(&tx, &key).await?;
        if new.worker.is_empty() {
            new.worker = workers_json(&rows);
        }
        if new.total_run_time == 0 {
            new.total_run_time = span_seconds(&rows);
        }
        let done = replace_set(&tx, &key, &new).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// Releases the lock and returns the connection to the pool.
    pub async fn release(mut self) -> Result<()> {
        let Some(c) = self.conn.take() else {
            return Ok(());
        };
        let key = &self.key;
        let unlock = "SELECT pg_advisory_unlock($1, $2)";
        match c.execute(unlock, &[&key.media_id, &key.profile_id]).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // Unknown lock state: never hand this session back to the pool.
                drop(Object::take(c));
                Err(e.into())
            }
        }
    }
}

impl Drop for ChunkLock {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            // Closing the session is the only synchronous way to drop a session lock.
            drop(Object::take(c));
        }
    }
}

async fn chunk_rows<C: GenericClient>(c: &C, key: &ChunkKey) -> Result<Vec<Encoding>> {
    let sql = format!(
        "SELECT {ENCODING_COLS} FROM files_encoding WHERE media_id = $1 AND profile_id = $2 \
         AND chunks_info = $3 AND chunk ORDER BY add_date, id"
    );
    let rows = c
        .query(&sql, &[&key.media_id, &key.profile_id, &key.chunks_info])
        .await?;
    Ok(rows.iter().map(encoding_from_row).collect())
}

/// Insert the aggregate row, delete the rest of (media, profile), check for orphaned sources.
async fn replace_set<C: GenericClient>(
    c: &C,
    key: &ChunkKey,
    new: &NewEncoding,
) -> Result<Finalised> {
    let encoding = insert_encoding(c, new).await?;
    let deleted = delete_where(
        c,
        "media_id = $1 AND profile_id = $2 AND id <> $3",
        &[&key.media_id, &key.profile_id, &encoding.id],
    )
    .await?;
    let left = c
        .query_one(
            "SELECT COUNT(*) FROM files_encoding WHERE chunks_info = $1",
            &[&key.chunks_info],
        )
        .await?;
    let left: i64 = left.get(0);
    Ok(Finalised {
        encoding,
        deleted,
        sources_orphaned: left == 0,
    })
}

/// `json.dumps({"workers": [distinct chunk workers]})` with Python's default separators.
pub(crate) fn workers_json(rows: &[Encoding]) -> String {
    let mut workers: Vec<&str> = rows
        .iter()
        .map(|r| r.worker.as_str())
        .filter(|w| !w.is_empty())
        .collect();
    workers.sort_unstable();
    workers.dedup();
    let items: Vec<String> = workers
        .iter()
        .map(|w| serde_json::to_string(w).unwrap_or_default())
        .collect();
    format!("{{\"workers\": [{}]}}", items.join(", "))
}

/// max(update_date) − min(add_date) of the chunk rows, whole seconds (no daily wrap).
pub(crate) fn span_seconds(rows: &[Encoding]) -> i32 {
    let first = rows.iter().map(|r| r.add_date).min();
    let last = rows.iter().map(|r| r.update_date).max();
    match (first, last) {
        (Some(a), Some(b)) => i32::try_from((b - a).num_seconds().max(0)).unwrap_or(i32::MAX),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn row(worker: &str, add: i64, upd: i64) -> Encoding {
        Encoding {
            id: 1,
            add_date: Utc.timestamp_opt(add, 0).unwrap(),
            commands: String::new(),
            chunk: true,
            chunk_file_path: String::new(),
            chunks_info: String::new(),
            logs: String::new(),
            md5sum: None,
            media_id: 1,
            media_file: String::new(),
            profile_id: 1,
            progress: 0,
            update_date: Utc.timestamp_opt(upd, 0).unwrap(),
            retries: 0,
            size: String::new(),
            status: "success".into(),
            temp_file: String::new(),
            task_id: String::new(),
            total_run_time: 0,
            worker: worker.into(),
        }
    }

    #[test]
    fn workers_json_is_python_shaped() {
        let rows = [row("localhost", 0, 0), row("localhost", 0, 0)];
        assert_eq!(workers_json(&rows), r#"{"workers": ["localhost"]}"#);
        let rows = [row("b@h", 0, 0), row("a@h", 0, 0)];
        assert_eq!(workers_json(&rows), r#"{"workers": ["a@h", "b@h"]}"#);
    }

    #[test]
    fn span_is_last_update_minus_first_add() {
        let rows = [row("w", 100, 150), row("w", 90, 400)];
        assert_eq!(span_seconds(&rows), 310);
        assert_eq!(span_seconds(&[]), 0);
    }
}
