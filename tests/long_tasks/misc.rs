//! Beat tasks, remove_media_file, whisper_transcribe and chunkize_media.

use std::os::unix::fs::PermissionsExt;

use mediacms_worker::tasks::beat::BeatTasks;
use mediacms_worker::tasks::chunkize::ChunkizeMedia;
use mediacms_worker::tasks::remove_media_file::RemoveMediaFile;
use mediacms_worker::tasks::whisper::WhisperTranscribe;

use super::*;

#[tokio::test]
async fn popular_media_pickle_loads_in_python_and_thumbnails_are_set() {
    let e = Env::new().await;
    e.sql(
        "INSERT INTO actions_mediaaction (action, action_date, media_id) VALUES \
           ('watch', now(), 2), ('watch', now(), 2), ('watch', now(), 1), \
           ('like', now() - interval '10 days', 1); \
         INSERT INTO files_category (uid, add_date, title, description, is_global, media_count, \
           thumbnail, is_rbac_category, is_lms_course, lti_context_id) \
           VALUES ('c', now(), 'Cat', '', false, 0, '', false, false, ''); \
         INSERT INTO files_media_category (media_id, category_id) SELECT 1, id FROM files_category; \
         UPDATE files_media SET state = 'public', is_reviewed = true, thumbnail = 'thumbs/one.jpg' \
           WHERE id = 1; \
         UPDATE files_media SET listable = true;",
    )
    .await;
    let h = BeatTasks {
        env: e.env.clone(),
        cache: redis::Client::open(e.redis.url.as_str()).unwrap(),
    };
    assert_eq!(
        run(&e, &h, "get_list_of_popular_media", json!([]), json!({})).await,
        ok(true)
    );
    let mut conn = e.redis.conn();
    let raw: Vec<u8> = redis::cmd("GET")
        .arg(":1:popular_media_ids")
        .query(&mut conn)
        .unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(":1:popular_media_ids")
        .query(&mut conn)
        .unwrap();
    assert!((43_190..=43_200).contains(&ttl), "ttl {ttl}");
    let script = "import json, os, pickle; \
                  print(json.dumps(pickle.loads(bytes.fromhex(os.environ['PICKLED']))))";
    let loaded = py(&["-c", script], &[("PICKLED", hex::encode(&raw))]);
    assert_eq!(loaded.trim(), format!(r#"["{FT2}", "{FT1}"]"#));

    assert_eq!(
        run(&e, &h, "update_listings_thumbnails", json!([]), json!({})).await,
        ok(true)
    );
    let thumb = e
        .text("SELECT listings_thumbnail FROM files_category")
        .await;
    assert_eq!(thumb, "/media/thumbs/one.jpg");
}

#[tokio::test]
async fn remove_media_file_deletes_inside_and_refuses_escapes() {
    let e = Env::new().await;
    let h = RemoveMediaFile { env: e.env.clone() };
    let inside = e.root().join("encoded/x.mp4");
    std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
    std::fs::write(&inside, b"x").unwrap();
    let outside = e.work.path().join("precious.txt");
    std::fs::write(&outside, b"keep").unwrap();
    let link = e.root().join("encoded/link.mp4");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let dotdot = format!(
        "{}/encoded/../../{}/precious.txt",
        e.root().display(),
        e.work.path().file_name().unwrap().to_string_lossy()
    );
    let refused = [
        dotdot,
        link.to_string_lossy().into(),
        outside.to_string_lossy().into(),
    ];
    for path in refused {
        let outcome = run(&e, &h, "remove_media_file", json!([path]), json!({})).await;
        assert_eq!(outcome, ok(false), "{path} must be refused");
    }
    assert!(
        outside.is_file() && link.is_symlink(),
        "nothing outside was deleted"
    );
    let path = inside.to_string_lossy();
    assert_eq!(
        run(&e, &h, "remove_media_file", json!([path]), json!({})).await,
        ok(true)
    );
    assert!(!inside.exists());
    assert_eq!(
        run(&e, &h, "remove_media_file", json!([]), json!({})).await,
        ok(true)
    );
}

async fn transcription_request(e: &Env, translate: bool) {
    e.sql(&format!(
        "INSERT INTO files_transcriptionrequest (add_date, status, translate_to_english, media_id) \
         VALUES (now(), 'pending', {translate}, 1)"
    ))
    .await;
}

#[tokio::test]
async fn whisper_missing_cli_fails_the_request_with_a_clear_log() {
    let e = Env::new().await;
    transcription_request(&e, false).await;
    let h = WhisperTranscribe {
        env: e.env.clone(),
        options: WhisperOptions {
            command: "mediacms-worker-no-such-whisper".into(),
            model: "base".into(),
        },
    };
    assert_eq!(
        run(&e, &h, "whisper_transcribe", json!([FT1]), json!({})).await,
        ok(false)
    );
    let row =
        e.db.client()
            .await
            .query_one("SELECT status, logs FROM files_transcriptionrequest", &[])
            .await
            .unwrap();
    assert_eq!(row.get::<_, String>(0), "fail");
    let logs: String = row.get(1);
    assert!(
        logs.contains("whisper CLI") && logs.contains("missing"),
        "{logs}"
    );
    // No pending request left: nothing to do.
    assert_eq!(
        run(&e, &h, "whisper_transcribe", json!([FT1]), json!({})).await,
        ok(false)
    );
}

#[tokio::test]
async fn whisper_fake_cli_saves_subtitle_and_requests_search_vector() {
    let e = Env::new().await;
    transcription_request(&e, true).await;
    e.clip_at(
        ORIG1,
        "w.mp4",
        "-f lavfi -i testsrc2=size=64x64:rate=5 -t 1 -c:v libx264",
    );
    let args_log = e.work.path().join("args.txt");
    let script = e.work.path().join("whisper");
    std::fs::write(&script, format!(
        "#!/bin/sh\necho \"$@\" > {log}\nwhile [ $# -gt 0 ]; do\n  case \"$1\" in\n    \
         --output_dir) out=\"$2\"; shift;;\n    --*) shift;;\n    *) in=\"$1\";;\n  esac\n  shift\ndone\n\
         stem=$(basename \"$in\"); stem=\"${{stem%.*}}\"\n\
         printf 'WEBVTT\\n\\n00:00.000 --> 00:01.000\\nhello\\n' > \"$out/$stem.vtt\"\n",
        log = args_log.display()
    )).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let h = WhisperTranscribe {
        env: e.env.clone(),
        options: WhisperOptions {
            command: script.to_string_lossy().into(),
            model: "tiny".into(),
        },
    };
    let kwargs = json!({"translate_to_english": true});
    assert_eq!(
        run(&e, &h, "whisper_transcribe", json!([FT1]), kwargs).await,
        ok(true)
    );
    let argv = std::fs::read_to_string(&args_log).unwrap();
    let input = e.root().join(ORIG1);
    assert!(
        argv.starts_with(&format!("{} --model tiny --output_dir ", input.display())),
        "{argv}"
    );
    assert!(argv.trim_end().ends_with("--task translate"), "{argv}");
    let c = e.db.client().await;
    let req = c
        .query_one("SELECT status, logs FROM files_transcriptionrequest", &[])
        .await
        .unwrap();
    assert_eq!(req.get::<_, String>(0), "success");
    assert!(req.get::<_, String>(1).starts_with("Transcription took "));
    let sub = c
        .query_one(
            "SELECT s.subtitle_file, l.code, l.title, s.user_id FROM files_subtitle s \
             JOIN files_language l ON l.id = s.language_id",
            &[],
        )
        .await
        .unwrap();
    let rel: String = sub.get(0);
    assert_eq!(
        rel,
        "original/subtitles/user/refuser/41905ce2087146cdba79c28a24c33a9a.reference_720p.vtt"
    );
    assert_eq!(
        (sub.get::<_, String>(1), sub.get::<_, String>(2)),
        ("whisper-translation".into(), "English Translation".into())
    );
    assert_eq!(sub.get::<_, i32>(3), 1);
    assert!(std::fs::read_to_string(e.root().join(&rel))
        .unwrap()
        .starts_with("WEBVTT"));
    let sent = queued(&e.redis, "short_tasks");
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].name.as_str(), &sent[0].args),
        ("update_search_vector", &vec![json!(FT1)])
    );
    let wait = sent[0].eta.expect("countdown") - chrono::Utc::now();
    assert!((5..=11).contains(&wait.num_seconds()), "eta in {wait}");
}

#[tokio::test]
async fn chunkize_makes_chunk_rows_and_prioritised_encode_messages() {
    let e = Env::new().await;
    // 250 s: two 240 s segments, like the reference run's 310 s upload.
    let args = "-f lavfi -i testsrc2=size=96x54:rate=5 -t 250 -c:v libx264 -preset ultrafast -g 50";
    e.clip_at(ORIG2, "long.mp4", args);
    let h = ChunkizeMedia { env: e.env.clone() };
    let outcome = run(
        &e,
        &h,
        "chunkize_media",
        json!([FT2, [23, 2, 3, 13, 10, 7]]),
        json!({"force": true}),
    )
    .await;
    assert_eq!(outcome, ok(true));
    let c = e.db.client().await;
    let rows = c
        .query(
            "SELECT id, profile_id, chunk_file_path, chunks_info, md5sum, status, logs, media_file \
             FROM files_encoding WHERE media_id = 2 AND chunk AND id > 13 ORDER BY add_date",
            &[],
        )
        .await
        .unwrap();
    let profiles: Vec<i32> = rows.iter().map(|r| r.get(1)).collect();
    assert_eq!(
        profiles,
        [23, 23, 2, 2, 3, 3],
        "profile-major, 480+ skipped for a 360p video"
    );
    let dir = e.root().join("original/user/refuser");
    let mut info = Vec::new();
    for r in &rows[..2] {
        let path: String = r.get(2);
        let name = Path::new(&path)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            path.starts_with(&dir.to_string_lossy().into_owned()),
            "{path}"
        );
        assert_eq!(
            name.len(),
            "00_".len() + 10 + ORIG2.rsplit('/').next().unwrap().len() + 4
        );
        assert!(name.ends_with("_5af382d5f37447fa99853daeea4622fb.reference_long_360p.mp4.mkv"));
        let md5 = hex::encode(<md5::Md5 as md5::Digest>::digest(
            std::fs::read(&path).unwrap(),
        ));
        assert_eq!(r.get::<_, Option<String>>(4), Some(md5.clone()));
        info.push(format!("\"{path}\": \"{md5}\""));
    }
    let chunks_info = format!("{{{}}}", info.join(", "));
    for r in &rows {
        assert_eq!(
            r.get::<_, String>(3),
            chunks_info,
            "json.dumps text, same on every row"
        );
        assert_eq!(
            (
                r.get::<_, String>(5),
                r.get::<_, String>(6),
                r.get::<_, String>(7)
            ),
            ("pending".into(), String::new(), String::new())
        );
    }
    // Lowest rungs first: 144/240 at priority 0 (`long_tasks`), 360 at 9.
    let high = queued(&e.redis, "long_tasks");
    let low = queued(&e.redis, "long_tasks\x06\x169");
    assert_eq!((high.len(), low.len()), (4, 2));
    for (m, r) in high.iter().chain(&low).zip(&rows) {
        assert_eq!(m.name, "encode_media");
        assert_eq!(
            m.args,
            vec![
                json!(FT2),
                json!(r.get::<_, i32>(1)),
                json!(r.get::<_, i32>(0))
            ]
        );
        let want = json!({"force": true, "chunk": true, "chunk_file_path": r.get::<_, String>(2)});
        assert_eq!(Value::Object(m.kwargs.clone()), want);
        assert_eq!(m.time_limit, (None, Some(7200.0)));
    }
}

#[tokio::test]
async fn chunkize_falls_back_to_whole_encodes_when_segmenting_fails() {
    let e = Env::new().await;
    let dest = e.root().join(ORIG2);
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::write(&dest, vec![7u8; 4096]).unwrap();
    let h = ChunkizeMedia { env: e.env.clone() };
    let outcome = run(
        &e,
        &h,
        "chunkize_media",
        json!([FT2, [23, 3]]),
        json!({"force": false}),
    )
    .await;
    assert_eq!(outcome, ok(false));
    let n: i64 = e.db.client().await.query_one(
        "SELECT COUNT(*) FROM files_encoding WHERE media_id = 2 AND NOT chunk AND status = 'pending' AND id > 13",
        &[]).await.unwrap().get(0);
    assert_eq!(n, 2);
    let sent = queued(&e.redis, "long_tasks");
    assert_eq!(sent.len(), 2);
    assert_eq!(
        Value::Object(sent[0].kwargs.clone()),
        json!({"force": false})
    );
    let leftovers = std::fs::read_dir(dest.parent().unwrap()).unwrap().count();
    assert_eq!(leftovers, 1, "no partial chunk left next to the original");
    assert_eq!(
        run(
            &e,
            &h,
            "chunkize_media",
            json!(["nosuchmed", [3]]),
            json!({})
        )
        .await,
        ok(false)
    );
}
