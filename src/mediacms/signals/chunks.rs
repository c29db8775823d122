//! The chunk half of Encoding post_save (§2.6): completeness, the locked concatenation
//! hand-off to the caller's ffmpeg, the final Encoding, chunk-row/file cleanup, source `.mkv`
//! removal, and the aggregate `fail` row on a chunk failure (fix of quirk §9.1: MediaCMS raises
//! a `ValueError` instead, leaving the media `pending`/`running` and the chunk files behind).
//!
//! Handler sequence after a chunk success whose [`super::Saved::concat`] is `Some(key)`:
//! `begin_concat(&key)` → `None`: someone else did it; `Some(job)` → run
//! `ffmpeg -f concat -safe 0 -i <list of job.parts> -c copy -movflags faststart <tmp>.<ext>` →
//! `finish_concat(job, output)` (or `job.abandon()` when ffmpeg failed).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{EncodeAction, FollowUp, Result, Signals};
use crate::mediacms::layout::{self, LayoutError};
use crate::mediacms::model::{EncodeProfile, Encoding, Media};
use crate::mediacms::store::{ChunkKey, ChunkLock, ChunkSetFailed, Finalised, NewEncoding};
use crate::plan::repr::py_str_repr;

/// A chunk set this worker holds the lock for and must concatenate.
pub struct ConcatJob {
    lock: ChunkLock,
    pub media: Media,
    pub profile: EncodeProfile,
    /// Absolute paths of the encoded chunks, in `add_date` order (the concat list order).
    pub parts: Vec<PathBuf>,
    chunk_logs: Vec<String>,
}

impl ConcatJob {
    /// Gives the set up (ffmpeg failed): releases the lock, changes nothing. A later chunk
    /// retry or re-run re-triggers the concatenation.
    pub async fn abandon(self) -> Result<()> {
        Ok(self.lock.release().await?)
    }
}

/// The caller's concat result: the output temp file (same filesystem as MEDIA_ROOT ideally)
/// and ffmpeg's stderr (kept in the final row's `logs`).
#[derive(Debug, Clone, Copy)]
pub struct ConcatOutput<'a> {
    pub temp_file: &'a Path,
    pub ffmpeg_stderr: &'a str,
}

/// The finished concatenation.
#[derive(Debug, Clone)]
pub struct Concatenated {
    /// The new non-chunk `success` Encoding.
    pub encoding: Encoding,
    /// Exactly one `create_hls` for an h264 profile (MediaCMS publishes two).
    pub follow_ups: Vec<FollowUp>,
}

/// §2.6 step 3: complete iff every chunk path named in `chunks_info` has a row and every row
/// is a success with a file. `None` when `chunks_info` is not a JSON object.
pub fn chunk_set_complete(chunks_info: &str, rows: &[Encoding]) -> Option<bool> {
    let info: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(chunks_info).ok()?;
    let have: HashSet<&str> = rows.iter().map(|r| r.chunk_file_path.as_str()).collect();
    let all_named = info.keys().all(|k| have.contains(k.as_str()));
    let all_done = rows
        .iter()
        .all(|r| r.is_success() && !r.media_file.is_empty());
    Some(!info.is_empty() && all_named && all_done)
}

impl Signals {
    /// Takes the set's lock (waiting for a concurrent finaliser), re-checks completeness under
    /// it and returns the job, or `None` when the set is no longer complete (already
    /// concatenated by another worker, or failed).
    pub async fn begin_concat(&self, key: &ChunkKey) -> Result<Option<ConcatJob>> {
        // Read media/profile *before* locking: a lock holder then never waits for a second
        // pooled connection, so lock holders cannot exhaust the pool and deadlock.
        let media = self.store().media_by_id(key.media_id).await?;
        let profile = self.store().profile(key.profile_id).await?;
        let (Some(media), Some(profile)) = (media, profile) else {
            return Ok(None);
        };
        let lock = self.store().lock_chunk_set(key).await?;
        let rows = lock.rows().await?;
        if chunk_set_complete(&key.chunks_info, &rows) != Some(true) {
            lock.release().await?;
            return Ok(None);
        }
        let mut parts = Vec::with_capacity(rows.len());
        for r in &rows {
            // Paths from the DB are confined before ffmpeg reads them.
            parts.push(layout::confine(
                self.media_root(),
                Path::new(&r.media_file),
            )?);
        }
        let chunk_logs = rows.iter().map(|r| r.logs.clone()).collect();
        Ok(Some(ConcatJob {
            lock,
            media,
            profile,
            parts,
            chunk_logs,
        }))
    }

    /// Places the concatenated file under the media's final name, then in one transaction
    /// inserts the final Encoding and deletes every other Encoding of (media, profile); removes
    /// their files, the source chunks once no profile needs them, and runs
    /// `post_encode_actions(add)` once.
    pub async fn finish_concat(
        &self,
        job: ConcatJob,
        out: ConcatOutput<'_>,
    ) -> Result<Concatenated> {
        let ConcatJob {
            mut lock,
            media,
            profile,
            parts,
            chunk_logs,
        } = job;
        let name = layout::encoding_output_name(&media.media_file, &profile.extension);
        let wanted =
            layout::encoded_relative_path(profile.id, &media.username, &media.uid_hex(), &name)?;
        let size_bytes = std::fs::metadata(out.temp_file)
            .map_err(|e| LayoutError::io("stat", out.temp_file, e))?
            .len();
        let placed = layout::place_file_async(self.media_root(), &wanted, out.temp_file).await?;
        let new = NewEncoding {
            media_id: media.id,
            profile_id: profile.id,
            status: "success".into(),
            progress: 100,
            logs: concat_logs(&parts, out.ffmpeg_stderr, &chunk_logs),
            media_file: placed.clone(),
            size: layout::size_label(size_bytes),
            ..NewEncoding::default()
        };
        let done = match lock.finalise(new).await {
            Ok(done) => done,
            Err(e) => {
                self.remove_quietly(&placed);
                return Err(e.into());
            }
        };
        let key = lock.key.clone();
        // The work is committed; a failed unlock only costs the connection (Drop closes it).
        if let Err(e) = lock.release().await {
            tracing::warn!(error = %e, "chunk-set unlock failed; connection discarded");
        }
        self.cleanup_after_replace(&key, &done).await?;
        let follow_ups = self
            .post_encode_actions(media.id, Some(&done.encoding), EncodeAction::Add)
            .await?;
        Ok(Concatenated {
            encoding: done.encoding,
            follow_ups,
        })
    }

    /// Final failure of a chunk: aggregate `fail` Encoding for (media, profile) replacing all its
    /// rows, files removed, media status recomputed (a media with no other mp4/webm success
    /// becomes `fail` instead of staying `pending`/`running`).
    pub async fn chunk_failed(&self, enc: &Encoding) -> Result<Vec<FollowUp>> {
        let key = ChunkKey {
            media_id: enc.media_id,
            profile_id: enc.profile_id,
            chunks_info: enc.chunks_info.clone(),
        };
        let logs = format!("chunk {} failed:\n{}", enc.chunk_file_path, enc.logs);
        let f = ChunkSetFailed {
            failed_encoding_id: enc.id,
            logs: &logs,
        };
        let Some(done) = self.store().fail_chunk_set(&key, &f).await? else {
            return Ok(vec![]);
        };
        self.cleanup_after_replace(&key, &done).await?;
        self.post_encode_actions(enc.media_id, Some(&done.encoding), EncodeAction::Add)
            .await
    }

    /// post_delete for the replaced rows (chunk outputs and older encodings), then the source
    /// `.mkv` chunks when orphaned.
    async fn cleanup_after_replace(&self, key: &ChunkKey, done: &Finalised) -> Result<()> {
        for row in &done.deleted {
            if row.chunk {
                // Chunk rows: file only; the final row's post_encode_actions covers the media.
                if !row.media_file.is_empty() {
                    self.remove_quietly(&row.media_file);
                }
            } else {
                self.encoding_deleted(row).await?;
            }
        }
        if done.sources_orphaned {
            if let Ok(info) =
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&key.chunks_info)
            {
                for source in info.keys() {
                    self.remove_quietly(source);
                }
            }
        }
        Ok(())
    }
}

/// MediaCMS's concat-row log: `<list of chunk paths>\n<{'out': '', 'error': stderr}>\n<chunk logs>`
/// (Python reprs; free text for admins).
fn concat_logs(parts: &[PathBuf], stderr: &str, chunk_logs: &[String]) -> String {
    let list: Vec<String> = parts
        .iter()
        .map(|p| py_str_repr(&p.to_string_lossy()))
        .collect();
    format!(
        "[{}]\n{{'out': '', 'error': {}}}\n{}",
        list.join(", "),
        py_str_repr(stderr),
        chunk_logs.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn py_repr_matches_python() {
        assert_eq!(py_str_repr("a"), "'a'");
        assert_eq!(py_str_repr("it's"), "\"it's\"");
        assert_eq!(py_str_repr("a\nb\\"), "'a\\nb\\\\'");
        assert_eq!(py_str_repr("'\""), "'\\'\"'");
    }

    #[test]
    fn concat_logs_shape() {
        let parts = vec![PathBuf::from("/m/a.mp4"), PathBuf::from("/m/b.mp4")];
        let logs = concat_logs(&parts, "moov", &["l1".into(), "l2".into()]);
        assert_eq!(
            logs,
            "['/m/a.mp4', '/m/b.mp4']\n{'out': '', 'error': 'moov'}\nl1\nl2"
        );
    }
}
