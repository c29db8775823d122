//! Rows `chunkize_media` creates (§2.10): the chunk Encodings of every (profile, chunk), and the
//! plain pending Encodings of its fallback when the original could not be segmented.

use super::encoding::{insert_encoding, NewEncoding};
use super::{encoding_from_row, Result, Store, ENCODING_COLS};
use crate::mediacms::model::Encoding;

/// One chunk Encoding to insert (`status='pending'`, `chunk=true`).
#[derive(Debug, Clone)]
pub struct NewChunk<'a> {
    pub profile_id: i32,
    /// Absolute path of the source `.mkv` chunk.
    pub chunk_file_path: &'a str,
    /// md5 of that chunk.
    pub md5sum: &'a str,
}

impl Store {
    /// Inserts the chunk rows in the given order (profile-major, chunk-minor) in one transaction,
    /// every NOT NULL column supplied. `add_date` is the insert's clock time, so the rows keep
    /// MediaCMS's distinct, increasing `add_date`s (the concatenation order).
    pub async fn insert_chunk_encodings(
        &self,
        media_id: i32,
        chunks_info: &str,
        rows: &[NewChunk<'_>],
    ) -> Result<Vec<Encoding>> {
        let sql = format!(
            "INSERT INTO files_encoding (add_date, commands, chunk, chunk_file_path, chunks_info, \
               logs, md5sum, media_file, progress, update_date, retries, size, status, temp_file, \
               task_id, total_run_time, worker, media_id, profile_id) \
             VALUES (clock_timestamp(), '', true, $1, $2, '', $3, '', 0, clock_timestamp(), 0, '', \
               'pending', '', '', 0, '', $4, $5) RETURNING {ENCODING_COLS}"
        );
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let row = tx
                .query_one(
                    &sql,
                    &[
                        &r.chunk_file_path,
                        &chunks_info,
                        &r.md5sum,
                        &media_id,
                        &r.profile_id,
                    ],
                )
                .await?;
            out.push(encoding_from_row(&row));
        }
        tx.commit().await?;
        Ok(out)
    }

    /// A plain `pending` Encoding (the `Encoding(media, profile).save()` of the fallback).
    pub async fn insert_pending_encoding(
        &self,
        media_id: i32,
        profile_id: i32,
    ) -> Result<Encoding> {
        let c = self.conn().await?;
        let new = NewEncoding {
            media_id,
            profile_id,
            ..NewEncoding::default()
        };
        insert_encoding(&c, &new).await
    }
}
