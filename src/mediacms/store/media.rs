//! `files_media` and its dependants: the SQL half of `post_encode_actions` (§2.7: status,
//! listable, preview, media_count recounts, trim request), `hls_file`/`sprites` (§5.1, §5.2)
//! and the whisper rows (§5.3).

use deadpool_postgres::GenericClient;

use super::{Result, Store};
use crate::mediacms::model::TranscriptionRequest;

/// What to do with `files_media.preview_file_path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreviewChange {
    Keep,
    /// A gif encoding was added: its absolute path (only applied to `media_type='video'`).
    Set(String),
    /// A gif encoding was deleted: blank it (only applied to `media_type='video'`).
    Clear,
}

#[derive(Debug, Clone)]
pub struct PostEncodeUpdate {
    pub media_id: i32,
    pub preview: PreviewChange,
    /// Mark one `running` VideoTrimRequest `success` (h264 non-chunk success "add" only).
    pub claim_trim_request: bool,
}

/// The media's values after the update, all computed in SQL from current rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostEncodeResult {
    pub friendly_token: String,
    pub encoding_status: String,
    pub listable: bool,
    /// A running trim request was moved to `success`: `post_trim_action` must be published.
    pub trim_request_claimed: bool,
}

impl Store {
    /// `post_encode_actions` steps 1-4 and the trim part of step 5, in one transaction.
    /// `None` when the media no longer exists. The search-vector rebuild of `media_save` is
    /// not replicated: no column it reads changes here (the short worker's
    /// `update_search_vector` task owns it).
    pub async fn post_encode_update(
        &self,
        up: &PostEncodeUpdate,
    ) -> Result<Option<PostEncodeResult>> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // Status from the non-chunk mp4/webm encodings as they are now; gif is ignored.
        let row = tx
            .query_opt(
                "WITH s AS (SELECT e.status FROM files_encoding e \
                   JOIN files_encodeprofile p ON p.id = e.profile_id \
                   WHERE e.media_id = $1 AND NOT e.chunk AND p.extension IN ('mp4', 'webm')) \
                 UPDATE files_media SET encoding_status = CASE \
                   WHEN NOT EXISTS (SELECT 1 FROM s) THEN 'pending' \
                   WHEN EXISTS (SELECT 1 FROM s WHERE status = 'success') THEN 'success' \
                   WHEN EXISTS (SELECT 1 FROM s WHERE status = 'running') THEN 'running' \
                   ELSE 'fail' END \
                 WHERE id = $1 RETURNING user_id",
                &[&up.media_id],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let user_id: i32 = row.get(0);
        let preview: Option<&str> = match &up.preview {
            PreviewChange::Keep => None,
            PreviewChange::Set(p) => Some(p),
            PreviewChange::Clear => Some(""),
        };
        // listable from the row's *current* state/is_reviewed (the row is locked by now).
        let row = tx
            .query_one(
                "UPDATE files_media SET \
                   listable = (state = 'public' AND encoding_status = 'success' AND is_reviewed), \
                   preview_file_path = CASE WHEN $2::text IS NOT NULL AND media_type = 'video' \
                     THEN $2::text ELSE preview_file_path END \
                 WHERE id = $1 RETURNING friendly_token, encoding_status, listable",
                &[&up.media_id, &preview],
            )
            .await?;
        recount_media_counts(&tx, up.media_id, user_id).await?;
        let trim_request_claimed =
            up.claim_trim_request && claim_trim_request(&tx, up.media_id).await?;
        tx.commit().await?;
        Ok(Some(PostEncodeResult {
            friendly_token: row.get(0),
            encoding_status: row.get(1),
            listable: row.get(2),
            trim_request_claimed,
        }))
    }

    /// `create_hls` step 4: writes `hls_file` only when it differs (a queryset update in
    /// MediaCMS: no signals). Returns whether a row changed.
    pub async fn set_hls_file(&self, media_id: i32, master_abs: &str) -> Result<bool> {
        let c = self.conn().await?;
        let n = c
            .execute(
                "UPDATE files_media SET hls_file = $2 WHERE id = $1 AND hls_file <> $2",
                &[&media_id, &master_abs],
            )
            .await?;
        Ok(n == 1)
    }

    /// `produce_sprite_from_video`: the relative sprite path. The `media_save` recounts that
    /// Django runs afterwards are no-ops here (no counted column changes), so none run.
    pub async fn set_sprites(&self, media_id: i32, sprites_rel: &str) -> Result<bool> {
        let c = self.conn().await?;
        let n = c
            .execute(
                "UPDATE files_media SET sprites = $2 WHERE id = $1",
                &[&media_id, &sprites_rel],
            )
            .await?;
        Ok(n == 1)
    }

    /// `whisper_transcribe` start: the oldest `pending` request of this media and flavour
    /// becomes `running`. `None` = nothing to do (task returns false).
    pub async fn claim_transcription_request(
        &self,
        media_id: i32,
        translate_to_english: bool,
    ) -> Result<Option<TranscriptionRequest>> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                "UPDATE files_transcriptionrequest SET status = 'running' WHERE id = ( \
                   SELECT id FROM files_transcriptionrequest WHERE media_id = $1 \
                   AND status = 'pending' AND translate_to_english = $2 \
                   ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 RETURNING id, media_id, status, translate_to_english, logs",
                &[&media_id, &translate_to_english],
            )
            .await?;
        Ok(row.map(|r| TranscriptionRequest {
            id: r.get(0),
            media_id: r.get(1),
            status: r.get(2),
            translate_to_english: r.get(3),
            logs: r.get(4),
        }))
    }

    /// `success`/`fail` plus the human-readable log line of §5.3.
    pub async fn finish_transcription_request(
        &self,
        id: i32,
        status: &str,
        logs: &str,
    ) -> Result<bool> {
        let c = self.conn().await?;
        let n = c
            .execute(
                "UPDATE files_transcriptionrequest SET status = $2, logs = $3 WHERE id = $1",
                &[&id, &status, &logs],
            )
            .await?;
        Ok(n == 1)
    }

    /// The `files_language` id for `code`, created with `title` if missing (`whisper` /
    /// `Transcription`, `whisper-translation` / `English Translation`). Serialised with an
    /// advisory lock because the table has no unique constraint on `code`.
    pub async fn language_id(&self, code: &str, title: &str) -> Result<i32> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('files_language:' || $1))",
            &[&code],
        )
        .await?;
        let found = tx
            .query_opt(
                "SELECT id FROM files_language WHERE code = $1 ORDER BY id LIMIT 1",
                &[&code],
            )
            .await?;
        let id = match found {
            Some(r) => r.get(0),
            None => tx
                .query_one(
                    "INSERT INTO files_language (code, title) VALUES ($1, $2) RETURNING id",
                    &[&code, &title],
                )
                .await?
                .get(0),
        };
        tx.commit().await?;
        Ok(id)
    }

    /// A `files_subtitle` row (every column is NOT NULL and supplied).
    pub async fn insert_subtitle(
        &self,
        media_id: i32,
        user_id: i32,
        language_id: i32,
        subtitle_file_rel: &str,
    ) -> Result<i32> {
        let c = self.conn().await?;
        let row = c
            .query_one(
                "INSERT INTO files_subtitle (subtitle_file, language_id, media_id, user_id) \
                 VALUES ($1, $2, $3, $4) RETURNING id",
                &[&subtitle_file_rel, &language_id, &media_id, &user_id],
            )
            .await?;
        Ok(row.get(0))
    }
}

/// `media_save` recounts: the owner's listable media, every category's media, every tag's
/// public reviewed media. Category/tag rows are locked in id order to avoid deadlocks between
/// two media sharing categories.
async fn recount_media_counts<C: GenericClient>(c: &C, media_id: i32, user_id: i32) -> Result<()> {
    c.execute(
        "UPDATE users_user SET media_count = \
           (SELECT COUNT(*) FROM files_media WHERE listable AND user_id = $1) WHERE id = $1",
        &[&user_id],
    )
    .await?;
    c.execute(
        "SELECT id FROM files_category WHERE id IN \
           (SELECT category_id FROM files_media_category WHERE media_id = $1) ORDER BY id FOR UPDATE",
        &[&media_id],
    )
    .await?;
    c.execute(
        "UPDATE files_category c SET media_count = (SELECT COUNT(DISTINCT mc.media_id) \
           FROM files_media_category mc WHERE mc.category_id = c.id) \
         WHERE c.id IN (SELECT category_id FROM files_media_category WHERE media_id = $1)",
        &[&media_id],
    )
    .await?;
    c.execute(
        "SELECT id FROM files_tag WHERE id IN \
           (SELECT tag_id FROM files_media_tags WHERE media_id = $1) ORDER BY id FOR UPDATE",
        &[&media_id],
    )
    .await?;
    c.execute(
        "UPDATE files_tag t SET media_count = (SELECT COUNT(DISTINCT m.id) FROM files_media m \
           JOIN files_media_tags mt ON mt.media_id = m.id \
           WHERE mt.tag_id = t.id AND m.state = 'public' AND m.is_reviewed) \
         WHERE t.id IN (SELECT tag_id FROM files_media_tags WHERE media_id = $1)",
        &[&media_id],
    )
    .await?;
    Ok(())
}

/// One `running` VideoTrimRequest of the media (lowest id, like `.first()`) → `success`.
async fn claim_trim_request<C: GenericClient>(c: &C, media_id: i32) -> Result<bool> {
    let n = c
        .execute(
            "UPDATE files_videotrimrequest SET status = 'success' WHERE id = ( \
               SELECT id FROM files_videotrimrequest WHERE media_id = $1 AND status = 'running' \
               ORDER BY id LIMIT 1 FOR UPDATE)",
            &[&media_id],
        )
        .await?;
    Ok(n == 1)
}
