//! The store and the replayed Django signals against MediaCMS's real schema (fresh database per
//! test): the reference upload replayed as the encode_media handler will drive it, compared to
//! `python-reference-run.md`; force/dedup deletions; cancellation; racing chunk finalisations;
//! chunk failure; trim/category/tag side effects; beat queries; whisper rows.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use mediacms_worker::mediacms::model::Encoding;
use mediacms_worker::mediacms::signals::{Completion, ConcatOutput, FollowUp, Signals};
use mediacms_worker::mediacms::store::{DropReason, StartOutcome, StartRequest, Started, Store};
use support::db::TestDb;

const H1: &str = "41905ce2087146cdba79c28a24c33a9a";
const H2: &str = "5af382d5f37447fa99853daeea4622fb";
const FT1: &str = "2SJorQ1Qe";
const FT2: &str = "emp3s0aau";

struct Env {
    db: TestDb,
    signals: Signals,
    root: tempfile::TempDir,
    work: tempfile::TempDir,
}

impl Env {
    async fn new() -> Self {
        let db = TestDb::with_upload_example().await;
        let root = tempfile::tempdir().unwrap();
        db.rebase_media_root(root.path()).await;
        let store = Store::connect(&db.config(), 8).unwrap();
        let signals = Signals::new(store, root.path());
        Env {
            db,
            signals,
            root,
            work: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self) -> &Path {
        self.root.path()
    }

    /// A fake ffmpeg output of `len` bytes in the scratch dir.
    fn output(&self, name: &str, len: usize) -> PathBuf {
        let p = self.work.path().join(name);
        std::fs::write(&p, vec![7u8; len]).unwrap();
        p
    }

    async fn start(
        &self,
        encoding_id: i32,
        ft: &str,
        profile_id: i32,
        chunk: Option<&str>,
        force: bool,
    ) -> StartOutcome {
        let req = StartRequest {
            encoding_id,
            friendly_token: ft,
            profile_id,
            force,
            chunk_file_path: chunk,
            task_id: &format!("task-{encoding_id}"),
            worker: "localhost",
            retries: 0,
        };
        self.signals.begin_encoding(&req).await.unwrap()
    }

    async fn started(
        &self,
        encoding_id: i32,
        ft: &str,
        profile_id: i32,
        chunk: Option<&str>,
    ) -> Started {
        match self.start(encoding_id, ft, profile_id, chunk, true).await {
            StartOutcome::Started(s) => *s,
            other => panic!("encoding {encoding_id} not started: {other:?}"),
        }
    }

    /// start → commands → progress → success, as the handler does; returns (row, follow-ups).
    async fn encode(
        &self,
        encoding_id: i32,
        ft: &str,
        profile_id: i32,
        chunk: Option<&str>,
        len: usize,
    ) -> (
        Encoding,
        Vec<FollowUp>,
        Option<mediacms_worker::mediacms::store::ChunkKey>,
    ) {
        let s = self.started(encoding_id, ft, profile_id, chunk).await;
        let store = self.signals.store();
        assert!(store
            .set_commands(encoding_id, "/tmp/x/tmp1.mp4", "[['ffmpeg']]")
            .await
            .unwrap());
        assert!(store.update_progress(encoding_id, 37).await.unwrap());
        let out = self.output(&format!("out-{encoding_id}"), len);
        let done = self
            .signals
            .encoding_succeeded(&s.media, &s.profile, &s.encoding, &out, "tail of stderr", 3)
            .await
            .unwrap();
        match done {
            Completion::Saved { encoding, saved } => (*encoding, saved.follow_ups, saved.concat),
            Completion::Cancelled => panic!("encoding {encoding_id} cancelled"),
        }
    }

    async fn media_row(&self, ft: &str) -> (String, bool, String) {
        let r = self
            .db
            .client()
            .await
            .query_one("SELECT encoding_status, listable, preview_file_path FROM files_media WHERE friendly_token = $1", &[&ft])
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    }

    async fn user_media_count(&self) -> i32 {
        self.db
            .client()
            .await
            .query_one("SELECT media_count FROM users_user WHERE id = 1", &[])
            .await
            .unwrap()
            .get(0)
    }

    async fn count(&self, sql: &str) -> i64 {
        self.db
            .client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Source chunk `.mkv` paths of media 2 (rebased), created as files.
    fn make_sources(&self) -> [String; 2] {
        let dir = self.root().join("original/user/refuser");
        std::fs::create_dir_all(&dir).unwrap();
        ["00", "01"].map(|n| {
            let p = dir.join(format!("{n}_EdwGGQKxk_{H2}.reference_long_360p.mp4.mkv"));
            std::fs::write(&p, b"mkv").unwrap();
            p.to_string_lossy().into_owned()
        })
    }
}

fn hls(ft: &str) -> FollowUp {
    FollowUp::CreateHls {
        friendly_token: ft.into(),
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn reference_upload_replay_matches_python_run() {
    let env = Env::new().await;
    // Media 1: five h264 renditions and the gif, in the Python run's order.
    let mut hls_requests = 0;
    for (i, (enc, pid)) in [(3, 3), (4, 13), (5, 10), (6, 1), (1, 23), (2, 2)]
        .into_iter()
        .enumerate()
    {
        let (row, follow_ups, concat) = env.encode(enc, FT1, pid, None, 219_605).await;
        assert_eq!(concat, None);
        assert_eq!(
            (row.status.as_str(), row.progress, row.size.as_str()),
            ("success", 100, "0.2MB")
        );
        assert_eq!(
            (row.task_id.clone(), row.worker.as_str()),
            (format!("task-{enc}"), "localhost")
        );
        if pid == 1 {
            assert!(follow_ups.is_empty(), "gif success publishes nothing");
            let (_, _, preview) = env.media_row(FT1).await;
            assert_eq!(
                preview,
                format!("{}/{}", env.root().display(), row.media_file)
            );
            assert!(row
                .media_file
                .starts_with(&format!("encoded/1/refuser/{H1}.tmp")));
        } else {
            assert_eq!(
                follow_ups,
                vec![hls(FT1)],
                "exactly one create_hls per h264 success"
            );
            hls_requests += 1;
            assert_eq!(
                row.media_file,
                format!("encoded/{pid}/refuser/{H1}.{H1}.reference_720p.mp4.mp4")
            );
        }
        assert_eq!(mode(&env.root().join(&row.media_file)), 0o644);
        if i == 0 {
            assert_eq!(env.media_row(FT1).await.0, "success");
            assert_eq!(env.user_media_count().await, 1);
        }
    }
    assert_eq!(hls_requests, 5, "Python publishes 10 here (quirk §9.3)");
    let (status, listable, _) = env.media_row(FT1).await;
    assert_eq!((status.as_str(), listable), ("success", true));

    // Media 2: gif, then chunks 00/01 per profile; the second chunk's task concatenates.
    let sources = env.make_sources();
    env.encode(7, FT2, 1, None, 211_573).await;
    assert_eq!(
        env.media_row(FT2).await.0,
        "pending",
        "gif alone leaves the status pending"
    );
    for (n, (pid, first, second)) in [(23, 8, 9), (2, 10, 11), (3, 12, 13)]
        .into_iter()
        .enumerate()
    {
        let (c0, f0, k0) = env.encode(first, FT2, pid, Some(&sources[0]), 1000).await;
        assert!(f0.is_empty() && k0.is_none(), "first chunk: set incomplete");
        let (c1, f1, key) = env.encode(second, FT2, pid, Some(&sources[1]), 1000).await;
        assert!(f1.is_empty(), "chunk successes publish nothing");
        let job = env
            .signals
            .begin_concat(&key.expect("set complete"))
            .await
            .unwrap()
            .expect("job");
        let parts: Vec<PathBuf> = [&c0, &c1]
            .iter()
            .map(|c| env.root().join(&c.media_file).canonicalize().unwrap())
            .collect();
        assert_eq!(job.parts, parts, "add_date order");
        let out = env.output(&format!("concat-{pid}"), 8_402_056);
        let done = env
            .signals
            .finish_concat(
                job,
                ConcatOutput {
                    temp_file: &out,
                    ffmpeg_stderr: "moov",
                },
            )
            .await
            .unwrap();
        assert_eq!(
            done.follow_ups,
            vec![hls(FT2)],
            "one create_hls per concatenation"
        );
        let e = &done.encoding;
        assert_eq!(
            (e.status.as_str(), e.progress, e.chunk, e.worker.as_str()),
            ("success", 100, false, r#"{"workers": ["localhost"]}"#)
        );
        assert_eq!(
            e.media_file,
            format!("encoded/{pid}/refuser/{H2}.{H2}.reference_long_360p.mp4.mp4")
        );
        assert_eq!(e.size, "8.4MB");
        assert!(e.logs.starts_with(&format!(
            "['{}', '{}']\n",
            parts[0].display(),
            parts[1].display()
        )));
        assert!(
            !parts[0].exists() && !parts[1].exists(),
            "chunk outputs removed"
        );
        let sources_left = sources.iter().filter(|s| Path::new(s).exists()).count();
        assert_eq!(
            sources_left,
            if n < 2 { 2 } else { 0 },
            "sources go with the last profile"
        );
    }
    let (status, listable, preview) = env.media_row(FT2).await;
    assert_eq!((status.as_str(), listable), ("success", true));
    assert!(preview.contains(&format!("/encoded/1/refuser/{H2}.tmp")));
    assert_eq!(env.user_media_count().await, 2);
    assert_eq!(
        env.count("SELECT COUNT(*) FROM files_encoding").await,
        10,
        "10 rows as in the reference"
    );
    assert_eq!(
        env.count("SELECT COUNT(*) FROM files_encoding WHERE chunk OR status <> 'success'")
            .await,
        0
    );
}

#[tokio::test]
async fn force_replaces_other_rows_and_dedup_drops_own() {
    let env = Env::new().await;
    let (old, _, _) = env.encode(5, FT1, 10, None, 10).await;
    let old_file = env.root().join(&old.media_file);
    let (gif, _, _) = env.encode(6, FT1, 1, None, 10).await;
    let c = env.db.client().await;
    let insert = "INSERT INTO files_encoding (add_date, commands, chunk, chunk_file_path, chunks_info, logs, \
        media_file, progress, update_date, retries, size, status, temp_file, task_id, total_run_time, worker, \
        media_id, profile_id) VALUES (now(), '', false, '', '', '', '', 0, now(), 0, '', 'pending', '', '', 0, '', 1, $1) RETURNING id";
    let new_id: i32 = c.query_one(insert, &[&10i32]).await.unwrap().get(0);

    // force=False with a duplicate: the task's own row is deleted, the old success survives.
    match env.start(new_id, FT1, 10, None, false).await {
        StartOutcome::Dropped { reason, deleted } => {
            assert_eq!(reason, DropReason::Duplicate);
            assert_eq!(
                deleted.iter().map(|e| e.id).collect::<Vec<_>>(),
                vec![new_id]
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(old_file.exists());

    // force=True: every other row of (media, profile) goes, with its file.
    let new_id: i32 = c.query_one(insert, &[&10i32]).await.unwrap().get(0);
    let s = env.started(new_id, FT1, 10, None).await;
    assert_eq!(s.replaced.iter().map(|e| e.id).collect::<Vec<_>>(), vec![5]);
    assert!(!old_file.exists(), "replaced row's file removed");
    assert_eq!(s.encoding.status, "running");
    // The only mp4 left is running: post_delete recomputed the status from current rows.
    assert_eq!(env.media_row(FT1).await.0, "running");

    // Replacing the gif blanks the preview (post_delete of a gif).
    let gif_new: i32 = c.query_one(insert, &[&1i32]).await.unwrap().get(0);
    env.started(gif_new, FT1, 1, None).await;
    assert!(!env.root().join(&gif.media_file).exists());
    assert_eq!(env.media_row(FT1).await.2, "");

    // Unknown profile: the row is deleted (§2.1 step 2); unknown row: Missing.
    match env.start(1, FT1, 999, None, true).await {
        StartOutcome::Dropped { reason, .. } => assert_eq!(reason, DropReason::ProfileMissing),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        env.start(1, FT1, 23, None, true).await,
        StartOutcome::Missing
    ));
}

#[tokio::test]
async fn deleted_row_cancels_progress_and_success() {
    let env = Env::new().await;
    let r = env.started(4, FT1, 13, None).await;
    let deleted = env
        .signals
        .encoding_revoked("task-4", r.media.id)
        .await
        .unwrap();
    assert_eq!(
        deleted.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![r.encoding.id]
    );
    let s = env.started(3, FT1, 3, None).await;
    let store = env.signals.store();
    assert!(store.update_progress(3, 10).await.unwrap());
    env.db
        .client()
        .await
        .execute("DELETE FROM files_encoding WHERE id = 3", &[])
        .await
        .unwrap();
    assert!(
        !store.update_progress(3, 20).await.unwrap(),
        "0 rows = cancelled"
    );
    let out = env.output("o", 10);
    // Revoking a task id deletes its row like Django's task_revoked handler.
    let revoked = env
        .signals
        .encoding_revoked("task-3", s.media.id)
        .await
        .unwrap();
    assert!(revoked.is_empty(), "row already gone");
    let done = env
        .signals
        .encoding_succeeded(&s.media, &s.profile, &s.encoding, &out, "", 1)
        .await
        .unwrap();
    assert!(matches!(done, Completion::Cancelled));
    let dir = env.root().join("encoded/3/refuser");
    assert_eq!(
        std::fs::read_dir(dir).unwrap().count(),
        0,
        "placed file removed again"
    );
}

/// Both tasks finished their chunk and both saw the set complete: exactly one concatenates.
#[tokio::test]
async fn racing_chunk_finalisations_produce_one_final_encoding() {
    let env = Env::new().await;
    let sources = env.make_sources();
    let mut keys = Vec::new();
    for (id, src) in [(8, &sources[0]), (9, &sources[1])] {
        let s = env.started(id, FT2, 23, Some(src)).await;
        let out = env.output(&format!("c{id}"), 100);
        let placed = mediacms_worker::mediacms::layout::place_file(
            env.root(),
            &format!("encoded/23/refuser/{H2}.c{id}.mp4"),
            &out,
        )
        .unwrap();
        let up = mediacms_worker::mediacms::store::SuccessUpdate {
            media_file: &placed,
            size_bytes: 100,
            logs: "",
            total_run_time: 1,
        };
        keys.push(
            env.signals
                .store()
                .mark_success(s.encoding.id, &up)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    // Both post_saves now see a complete set.
    let saved: Vec<_> =
        futures::future::join_all(keys.iter().map(|e| env.signals.encoding_saved(e))).await;
    let keys: Vec<_> = saved
        .into_iter()
        .map(|s| s.unwrap().concat.expect("complete"))
        .collect();
    // No sleep standing in for ffmpeg: the winner finishes only once Postgres shows the other
    // caller waiting on the chunk set's advisory lock, so the race provably overlaps.
    let env_ref = &env;
    let race = |key: mediacms_worker::mediacms::store::ChunkKey, tag: &'static str| {
        let signals = env.signals.clone();
        let out = env.output(tag, 500);
        async move {
            let job = signals.begin_concat(&key).await.unwrap()?;
            support::worker::wait_for(
                std::time::Duration::from_secs(30),
                "the other finaliser to wait on the chunk set's lock",
                || async move {
                    let waiting = env_ref
                        .count(
                            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' \
                             AND NOT granted AND database = \
                             (SELECT oid FROM pg_database WHERE datname = current_database())",
                        )
                        .await;
                    (waiting > 0).then_some(())
                },
            )
            .await;
            let done = signals
                .finish_concat(
                    job,
                    ConcatOutput {
                        temp_file: &out,
                        ffmpeg_stderr: "",
                    },
                )
                .await
                .unwrap();
            Some(done.follow_ups)
        }
    };
    let (a, b) = tokio::join!(race(keys[0].clone(), "ka"), race(keys[1].clone(), "kb"));
    let winners: Vec<_> = [a, b].into_iter().flatten().collect();
    assert_eq!(
        winners,
        vec![vec![hls(FT2)]],
        "exactly one finaliser, one create_hls"
    );
    let finals = env
        .count("SELECT COUNT(*) FROM files_encoding WHERE media_id = 2 AND profile_id = 23")
        .await;
    assert_eq!(finals, 1);
    let chunks_left = env
        .count(
            "SELECT COUNT(*) FROM files_encoding WHERE media_id = 2 AND profile_id = 23 AND chunk",
        )
        .await;
    assert_eq!(chunks_left, 0);
    let files = std::fs::read_dir(env.root().join("encoded/23/refuser"))
        .unwrap()
        .count();
    assert_eq!(files, 1, "only the concatenated file remains");
}

#[tokio::test]
async fn chunk_failure_records_aggregate_fail_and_media_status() {
    let env = Env::new().await;
    let sources = env.make_sources();
    let (c0, _, _) = env.encode(8, FT2, 23, Some(&sources[0]), 100).await;
    env.started(9, FT2, 23, Some(&sources[1])).await;
    // A failure with a retry pending changes nothing beyond the row.
    let failed = env
        .signals
        .store()
        .mark_failed(9, Some("first try"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        env.signals
            .encoding_saved(&failed)
            .await
            .unwrap()
            .follow_ups,
        vec![]
    );
    assert_eq!(
        env.count("SELECT COUNT(*) FROM files_encoding WHERE media_id = 2 AND profile_id = 23")
            .await,
        2
    );
    // Final failure: aggregate row, chunk rows and files gone, media status recomputed.
    let follow_ups = env
        .signals
        .on_failure(9, Some("Conversion failed!"))
        .await
        .unwrap();
    assert!(follow_ups.is_empty());
    let c = env.db.client().await;
    let rows = c.query("SELECT status, chunk, progress, logs, worker FROM files_encoding WHERE media_id = 2 AND profile_id = 23", &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
    let (status, chunk, progress): (String, bool, i16) =
        (rows[0].get(0), rows[0].get(1), rows[0].get(2));
    assert_eq!((status.as_str(), chunk, progress), ("fail", false, 100));
    assert!(rows[0].get::<_, String>(3).contains("Conversion failed!"));
    assert_eq!(rows[0].get::<_, String>(4), r#"{"workers": ["localhost"]}"#);
    assert!(
        !env.root().join(&c0.media_file).exists(),
        "sibling chunk output removed"
    );
    assert_eq!(
        env.media_row(FT2).await.0,
        "fail",
        "not left pending (quirk §9.1)"
    );
    assert!(
        sources.iter().all(|s| Path::new(s).exists()),
        "other profiles still need the sources"
    );
    // The failed set's sibling task now finds its row gone.
    assert!(!env.signals.store().update_progress(8, 50).await.unwrap());
}

#[tokio::test]
async fn trim_request_categories_and_tags_follow_a_success() {
    let env = Env::new().await;
    let c = env.db.client().await;
    c.batch_execute(
        "INSERT INTO files_videotrimrequest (status, add_date, video_action, media_trim_style, timestamps, media_id) \
           VALUES ('running', now(), 'replace', 'no_encoding', '[]', 1); \
         INSERT INTO files_category (uid, add_date, title, description, is_global, media_count, thumbnail, \
           is_rbac_category, is_lms_course, lti_context_id) VALUES ('c1', now(), 'Cat', '', false, 0, '', false, false, ''); \
         INSERT INTO files_media_category (media_id, category_id) SELECT 1, id FROM files_category; \
         INSERT INTO files_media_category (media_id, category_id) SELECT 2, id FROM files_category; \
         INSERT INTO files_tag (title, media_count) VALUES ('t', 0); \
         INSERT INTO files_media_tags (media_id, tag_id) SELECT m, id FROM files_tag, (VALUES (1), (2)) v(m); \
         UPDATE files_media SET state = 'private' WHERE id = 2;",
    )
    .await
    .unwrap();
    let (_, follow_ups, _) = env.encode(1, FT1, 23, None, 10).await;
    assert_eq!(
        follow_ups,
        vec![
            hls(FT1),
            FollowUp::PostTrimAction {
                friendly_token: FT1.into()
            }
        ]
    );
    let q = |sql: &'static str| {
        let c = &c;
        async move { c.query_one(sql, &[]).await.unwrap() }
    };
    assert_eq!(
        q("SELECT status FROM files_videotrimrequest")
            .await
            .get::<_, String>(0),
        "success"
    );
    assert_eq!(
        q("SELECT media_count FROM files_category")
            .await
            .get::<_, i32>(0),
        2,
        "all media in the category"
    );
    assert_eq!(
        q("SELECT media_count FROM files_tag")
            .await
            .get::<_, i32>(0),
        1,
        "public reviewed only"
    );
    // The trim request was consumed: the next h264 success publishes only create_hls.
    let (_, follow_ups, _) = env.encode(2, FT1, 2, None, 10).await;
    assert_eq!(follow_ups, vec![hls(FT1)]);
    // listable is computed from the row's current state, not from a stale read.
    c.execute(
        "UPDATE files_media SET state = 'unlisted' WHERE id = 1",
        &[],
    )
    .await
    .unwrap();
    env.encode(3, FT1, 3, None, 10).await;
    assert!(!env.media_row(FT1).await.1);
    assert_eq!(env.user_media_count().await, 0);
}

#[tokio::test]
async fn beat_queries_and_whisper_rows() {
    let env = Env::new().await;
    let c = env.db.client().await;
    c.batch_execute(
        "UPDATE files_media SET listable = true, views = id; \
         INSERT INTO actions_mediaaction (action, action_date, media_id) VALUES \
           ('watch', now(), 2), ('watch', now(), 2), ('watch', now() - interval '8 days', 1), \
           ('like', now() - interval '100 days', 1), ('like', now() - interval '200 days', 2); \
         INSERT INTO files_category (uid, add_date, title, description, is_global, media_count, thumbnail, \
           is_rbac_category, is_lms_course, lti_context_id) VALUES \
           ('a', now(), 'A', '', false, 0, '', false, false, ''), ('b', now(), 'B', '', false, 0, '', false, false, ''); \
         INSERT INTO files_media_category (media_id, category_id) SELECT m, id FROM files_category, (VALUES (1), (2)) v(m); \
         INSERT INTO files_transcriptionrequest (add_date, status, translate_to_english, media_id) VALUES (now(), 'pending', false, 1);",
    )
    .await
    .unwrap();
    let store = env.signals.store();
    assert_eq!(
        store.popular_media_tokens().await.unwrap(),
        vec![FT2.to_owned(), FT1.to_owned()]
    );
    let changed = store.update_listings_thumbnails().await.unwrap();
    assert_eq!((changed.categories, changed.tags), (2, 0));
    let thumbs: Vec<String> = c
        .query(
            "SELECT listings_thumbnail FROM files_category ORDER BY title",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        thumbs[0],
        format!("/media/original/thumbnails/user/refuser/{H2}_wIHnJVS.reference_long_360p.mp4.jpg"),
        "most viewed"
    );
    assert_eq!(
        thumbs[1],
        format!("/media/original/thumbnails/user/refuser/{H1}_MLAESK7.reference_720p.mp4.jpg"),
        "next unused"
    );

    let req = store
        .claim_transcription_request(1, false)
        .await
        .unwrap()
        .expect("pending request");
    assert_eq!(req.status, "running");
    assert!(store
        .claim_transcription_request(1, false)
        .await
        .unwrap()
        .is_none());
    let lang = store.language_id("whisper", "Transcription").await.unwrap();
    assert_eq!(
        store.language_id("whisper", "Transcription").await.unwrap(),
        lang,
        "get-or-create"
    );
    let sub = store
        .insert_subtitle(1, 1, lang, "original/subtitles/user/refuser/x.vtt")
        .await
        .unwrap();
    assert!(sub > 0);
    assert!(store
        .finish_transcription_request(req.id, "success", "Transcription took 1.00 seconds.")
        .await
        .unwrap());
    assert!(store.set_hls_file(1, "/m/hls/x/master.m3u8").await.unwrap());
    assert!(
        !store.set_hls_file(1, "/m/hls/x/master.m3u8").await.unwrap(),
        "unchanged value not rewritten"
    );
    assert!(store
        .set_sprites(1, "original/thumbnails/user/refuser/s.jpg")
        .await
        .unwrap());
}

/// A job dropped mid-way (panic, early return) or abandoned (ffmpeg failed) never strands the
/// lock: the next finaliser gets the set, with nothing changed meanwhile.
#[tokio::test]
async fn abandoned_or_dropped_concat_job_frees_the_set() {
    let env = Env::new().await;
    let sources = env.make_sources();
    env.encode(8, FT2, 23, Some(&sources[0]), 100).await;
    let (_, _, key) = env.encode(9, FT2, 23, Some(&sources[1]), 100).await;
    let key = key.expect("complete");
    let again = || async {
        let job = env.signals.begin_concat(&key);
        tokio::time::timeout(std::time::Duration::from_secs(10), job)
            .await
            .expect("lock must be free")
            .unwrap()
            .expect("set still complete")
    };
    // Probe from a separate session: a pooled session re-entering its own lock proves nothing.
    let probe = env.db.client().await;
    let free = |tries: usize| {
        let probe = &probe;
        async move {
            for _ in 0..tries {
                let sql = "SELECT pg_try_advisory_lock(2, 23)";
                if probe.query_one(sql, &[]).await.unwrap().get::<_, bool>(0) {
                    probe
                        .execute("SELECT pg_advisory_unlock(2, 23)", &[])
                        .await
                        .unwrap();
                    return true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            false
        }
    };
    let job = again().await;
    assert!(!free(1).await, "held while the job lives");
    drop(job);
    assert!(free(50).await, "dropping the job closed its session");
    again().await.abandon().await.unwrap();
    assert!(free(1).await, "abandon unlocks");
    let job = again().await;
    assert_eq!(job.parts.len(), 2);
    let chunks =
        "SELECT COUNT(*) FROM files_encoding WHERE media_id = 2 AND profile_id = 23 AND chunk";
    assert_eq!(
        env.count(chunks).await,
        2,
        "nothing finalised by the abandoned jobs"
    );
}

/// A revoke-terminate of a decode-once ladder's task: MediaCMS's `task_revoked` deletes the
/// rows carrying the id, but only of the revoked task's media; another media's rows the ladder
/// borrowed (playable-first) are not the revoked upload's — the finished one stays, the
/// unfinished one goes back to `pending` for its own message.
#[tokio::test]
async fn revoking_a_ladder_spares_other_media_rows_it_borrowed() {
    let env = Env::new().await;
    let c = env.db.client().await;
    for (id, status) in [
        (1, "running"),
        (2, "success"),
        (7, "running"),
        (8, "success"),
    ] {
        c.execute(
            "UPDATE files_encoding SET task_id = 'ladder-T', status = $2 WHERE id = $1",
            &[&id, &status],
        )
        .await
        .unwrap();
    }
    let deleted = env.signals.encoding_revoked("ladder-T", 1).await.unwrap();
    let mut ids: Vec<i32> = deleted.iter().map(|e| e.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2], "media 1's rows carrying the id");
    let left = |id: i32| {
        let c = &c;
        async move {
            let r = c
                .query_one("SELECT status FROM files_encoding WHERE id = $1", &[&id])
                .await
                .unwrap();
            r.get::<_, String>(0)
        }
    };
    assert_eq!(
        left(7).await,
        "pending",
        "borrowed, unfinished: back to its own message"
    );
    assert_eq!(left(8).await, "success", "borrowed, finished: kept");
}
