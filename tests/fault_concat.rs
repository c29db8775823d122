//! Fault case 1: `kill -9` mid-concatenation. Two chunk Encodings of one (media, profile); the
//! worker that finishes the last chunk starts the concat (held 30 s by an ffmpeg wrapper) and
//! is killed with its children. A second instance restores the delivery once the 10 s lease
//! lapses and re-runs it: exactly one final Encoding, no chunk rows, no partial file in
//! `encoded/` or `hls/`.

mod support;

use mediacms_worker::tasks::create_hls;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use support::db::TestDb;
use support::fault::{
    envelope_of, lpush, result_doc, script, task_id, wait_until, Case, Endpoints, WorkerProc, QUEUE,
};
use support::media::{clip, ffmpeg, ClipSpec};
use support::redis::TestRedis;
use support::worker::files_under;

const TOKEN: &str = "emp3s0aau";
const PROFILE: i32 = 23;

/// ffmpeg wrapper: the first concat marks `concat-started` and sleeps 30 s before running.
fn slow_concat(dir: &Path) -> String {
    let path = dir.join("slow-concat.sh");
    let mark = dir.join("concat-started");
    script(
        &path,
        &format!(
            "#!/bin/sh\ncase \"$*\" in *\"-f concat\"*) if [ ! -e {m} ]; then touch {m}; sleep 30; fi;; esac\nexec ffmpeg \"$@\"\n",
            m = mark.display()
        ),
    );
    path.display().to_string()
}

fn chunk_message(encoding: i32, chunk_path: &str) -> Vec<u8> {
    let mut kw = Map::new();
    kw.insert("force".into(), json!(true));
    kw.insert("chunk".into(), json!(true));
    kw.insert("chunk_file_path".into(), Value::String(chunk_path.into()));
    envelope_of(
        "encode_media",
        vec![json!(TOKEN), json!(PROFILE), json!(encoding)],
        kw,
        0,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_concatenation_is_rerun_by_another_instance() {
    let case = Case::new("kill9_mid_concat");
    let db = TestDb::with_upload_example().await;
    let redis = TestRedis::claim();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("media");
    std::fs::create_dir_all(root.join("original/user/refuser")).unwrap();
    db.rebase_media_root(&root).await;
    let c = db.client().await;
    // Reference media 2: chunk rows 8 and 9 (h264-144). The other profiles' chunk rows stay
    // pending, so the source .mkv files must survive the concat.
    let rows = c
        .query(
            "SELECT id, chunk_file_path FROM files_encoding \
             WHERE media_id = 2 AND profile_id = $1 AND chunk ORDER BY id",
            &[&PROFILE],
        )
        .await
        .unwrap();
    let chunks: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(chunks.len(), 2);
    let scratch = dir.path().join("gen");
    std::fs::create_dir_all(&scratch).unwrap();
    let spec = ClipSpec {
        width: 640,
        height: 360,
        seconds: 1.0,
        ..ClipSpec::default()
    };
    let base = clip(&scratch, &spec);
    for (_, path) in &chunks {
        ffmpeg(&[
            "-i".into(),
            base.display().to_string(),
            "-c".into(),
            "copy".into(),
            path.clone(),
        ]);
    }

    let ep = Endpoints {
        redis_url: redis.url.clone(),
        pg: db.config(),
        media_root: root.clone(),
        temp_dir: dir.path().join("tmp"),
    };
    let wrapper = slow_concat(dir.path());
    let env = [("FFMPEG_COMMAND", wrapper.as_str())];
    let args = ["--lease-secs", "10", "--celery-soft-time-limit", "120"];
    let mut r = redis.conn();
    let msgs: Vec<Vec<u8>> = chunks
        .iter()
        .map(|(id, path)| chunk_message(*id, path))
        .collect();
    for m in &msgs {
        lpush(&mut r, QUEUE, m);
    }
    let mut first = WorkerProc::spawn(&ep, &dir.path().join("first.log"), &args, &env);
    wait_until(Duration::from_secs(90), "the concat to start", || {
        assert!(first.alive(), "{}", first.log_tail());
        dir.path().join("concat-started").exists().then_some(())
    });
    first.kill_tree();
    let killed_at = Instant::now();
    // The killed worker held the last chunk's delivery; nothing was finalised.
    let last_id = task_id(msgs.last().unwrap());
    assert!(result_doc(&mut r, &last_id).is_none());
    let finals: i64 = c
        .query_one(
            "SELECT count(*) FROM files_encoding WHERE media_id = 2 AND profile_id = $1 AND NOT chunk",
            &[&PROFILE],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(finals, 0, "no final Encoding before the concat finished");

    let mut second = WorkerProc::spawn(&ep, &dir.path().join("second.log"), &args, &env);
    let doc = wait_until(Duration::from_secs(90), "the re-run's result", || {
        assert!(second.alive(), "{}", second.log_tail());
        result_doc(&mut r, &last_id)
    });
    let took = killed_at.elapsed();
    println!(
        "concat: re-run finished {:.1}s after the kill",
        took.as_secs_f64()
    );
    assert_eq!(doc["status"], "SUCCESS", "{doc}\n{}", second.log_tail());
    assert!(
        second
            .log_text()
            .contains("restored deliveries whose lease expired"),
        "{}",
        second.log_tail()
    );

    let rows = c
        .query(
            "SELECT status, chunk, media_file FROM files_encoding \
             WHERE media_id = 2 AND profile_id = $1",
            &[&PROFILE],
        )
        .await
        .unwrap();
    let rows: Vec<(String, bool, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(rows.len(), 1, "exactly one Encoding left: {rows:?}");
    let (status, chunk, media_file) = &rows[0];
    assert_eq!((status.as_str(), *chunk), ("success", false), "{rows:?}");
    assert!(root.join(media_file).is_file());
    let encoded = files_under(&root.join("encoded"));
    let hls = files_under(&root.join("hls"));
    for f in encoded.iter().chain(&hls) {
        let name = f.rsplit('/').next().unwrap();
        // create_hls's inputs manifest is a finished tree's own dot-file, not a partial one;
        // whether the follow-up create_hls already ran when we look is a race.
        let partial = name.starts_with('.') && name != create_hls::MANIFEST;
        assert!(!partial && !name.ends_with(".part"), "partial file {f}");
    }
    let profile_dir: Vec<&String> = encoded
        .iter()
        .filter(|f| f.starts_with(&format!("{PROFILE}/")))
        .collect();
    assert_eq!(
        profile_dir,
        vec![&media_file.trim_start_matches("encoded/").to_owned()],
        "only the final file remains for the profile (no leaked chunk outputs)"
    );
    // The chunk deliveries are acked (the follow-up create_hls may still be running). The ack
    // follows the result write, so the last one may land a moment after the result appeared.
    let ids: Vec<String> = msgs.iter().map(|m| task_id(m)).collect();
    wait_until(
        Duration::from_secs(30),
        "every chunk delivery acked",
        || {
            let held: Vec<String> = redis::cmd("HVALS").arg("unacked").query(&mut r).unwrap();
            let still: Vec<&String> = ids
                .iter()
                .filter(|id| held.iter().any(|h| h.contains(id.as_str())))
                .collect();
            still.is_empty().then_some(())
        },
    );
    for (_, path) in &chunks {
        assert!(
            Path::new(path).is_file(),
            "source chunk still needed by other profiles"
        );
    }
    case.survived();
}
