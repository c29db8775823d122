//! Issue 3 acceptance: the reference upload replayed through the real binary — MediaCMS's 15
//! captured `long_tasks` messages, real Redis, real Postgres, real ffmpeg — must leave the rows,
//! files and Redis state `python-reference-run.md` describes (contract §10).
//!
//! Substitution (documented, deliberate): media 2 is a 310 s video in the reference; encoding
//! it takes minutes on this machine, so a 10 s 640x360 25 fps clip stands in, segmented by the
//! segment muxer into the two chunks the chunk rows name (`00_…mkv` 6 s, `01_…mkv` 4 s), with
//! `files_media.duration`, the `media_info` durations, the chunk rows' `md5sum` and the
//! `chunks_info` JSON rewritten to match. Media 1 is regenerated as described (8 s 1280x720
//! 30 fps, h264 + AAC mono 44.1 kHz) but with `-preset ultrafast` to save time; the worker
//! itself runs with MediaCMS's default preset (`medium`) so the argv is the reference's.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use mediacms_worker::celery::envelope;
use serde_json::Value;
use support::media::ffmpeg;
use support::worker::{
    ffprobe, files_under, metric, Site, WorkerOpts, MEDIA1_FILE, MEDIA1_UID, MEDIA2_UID, QUEUE,
    QUEUE_P9,
};

/// The 15 `long_tasks` messages in enqueue order (README of `messages/`).
const MESSAGES: [&str; 15] = [
    "produce_sprite_from_video-1.json",
    "encode_media-1.json",
    "encode_media-2.json",
    "encode_media-3.json",
    "encode_media-4.json",
    "encode_media-5.json",
    "encode_media-6.json",
    "produce_sprite_from_video-2.json",
    "encode_media-7.json",
    "encode_media-chunk-1.json",
    "encode_media-chunk-2.json",
    "encode_media-chunk-3.json",
    "encode_media-chunk-4.json",
    "encode_media-chunk-5.json",
    "encode_media-chunk-6.json",
];

const MEDIA2_FILE: &str =
    "original/user/refuser/5af382d5f37447fa99853daeea4622fb.reference_long_360p.mp4";
const CHUNK_PATTERN: &str =
    "%02d_EdwGGQKxk_5af382d5f37447fa99853daeea4622fb.reference_long_360p.mp4.mkv";
const MEDIA2_SECONDS: i32 = 10;

/// (profile id, output height, maxrate) of the h264 ladder of the reference run.
const LADDER: [(i32, i64, &str); 5] = [
    (23, 144, "225k"),
    (2, 240, "450k"),
    (3, 360, "750k"),
    (13, 480, "1500k"),
    (10, 720, "3750k"),
];

fn s(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// The two source videos at the paths the rows name, and media 2's chunks at the paths the
/// chunk rows name; the rows' durations and md5s made to match (see the module docs).
async fn prepare_sources(site: &Site) {
    let m1 = site.media_path(MEDIA1_FILE);
    ffmpeg(&s(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440",
        "-t",
        "8",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        &m1.to_string_lossy(),
    ]));
    let m2 = site.media_path(MEDIA2_FILE);
    // `-g 50`: a keyframe every 2 s, so `-c copy` segmenting can cut at 6 s.
    ffmpeg(&s(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440",
        "-t",
        &MEDIA2_SECONDS.to_string(),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "50",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        &m2.to_string_lossy(),
    ]));
    // What chunkize_media runs (contract §2.10), with 6 s instead of 240 s pieces.
    let pattern = m2.parent().unwrap().join(CHUNK_PATTERN);
    ffmpeg(&s(&[
        "-i",
        &m2.to_string_lossy(),
        "-c",
        "copy",
        "-f",
        "segment",
        "-segment_time",
        "6",
        &pattern.to_string_lossy(),
    ]));
    let chunks: Vec<String> = ["00", "01"]
        .iter()
        .map(|n| {
            let p = pattern.to_string_lossy().replace("%02d", n);
            assert!(std::path::Path::new(&p).is_file(), "segment {p} missing");
            p
        })
        .collect();
    assert!(
        !pattern.to_string_lossy().replace("%02d", "02").is_empty()
            && !std::path::Path::new(&pattern.to_string_lossy().replace("%02d", "02")).exists(),
        "expected exactly two chunks"
    );
    let md5s: Vec<String> = chunks
        .iter()
        .map(|c| mediacms_worker::ffmpeg::probe::md5_file(std::path::Path::new(c)).unwrap())
        .collect();
    // json.dumps of {path: md5} with Python's default separators, as chunkize_media writes it.
    let chunks_info = format!(
        "{{\"{}\": \"{}\", \"{}\": \"{}\"}}",
        chunks[0], md5s[0], chunks[1], md5s[1]
    );
    let c = site.db.client().await;
    for (path, md5) in chunks.iter().zip(&md5s) {
        let n = c
            .execute(
                "UPDATE files_encoding SET md5sum = $2, chunks_info = $3 WHERE chunk_file_path = $1",
                &[path, md5, &chunks_info],
            )
            .await
            .unwrap();
        assert_eq!(n, 3, "three profiles encode chunk {path}");
    }
    let info: String = c
        .query_one("SELECT media_info FROM files_media WHERE id = 2", &[])
        .await
        .unwrap()
        .get(0);
    let secs = format!("{MEDIA2_SECONDS}.0");
    let info = info
        .replace(
            "\"video_duration\": 310.0",
            &format!("\"video_duration\": {secs}"),
        )
        .replace(
            "\"audio_duration\": 310.0",
            &format!("\"audio_duration\": {secs}"),
        );
    c.execute(
        "UPDATE files_media SET duration = $1, media_info = $2 WHERE id = 2",
        &[&MEDIA2_SECONDS, &info],
    )
    .await
    .unwrap();
}

/// LPUSH the 15 messages onto their priority lists in enqueue order; returns the
/// encode_media task ids by message file name.
fn enqueue(site: &Site) -> Vec<(String, String)> {
    let mut ids = vec![];
    for file in MESSAGES {
        let raw = site.real_message(file);
        let task = envelope::decode_redis(&raw).expect("real message decodes");
        let list = if task.priority == 9 { QUEUE_P9 } else { QUEUE };
        assert!(task.priority == 0 || task.priority == 9);
        site.lpush(list, &raw);
        if task.name == "encode_media" {
            ids.push((file.to_owned(), task.id));
        }
    }
    assert_eq!(ids.len(), 13);
    ids
}

/// True when `name` is `<uid>.tmp<8 chars of [a-z0-9_]>.gif` (Python's NamedTemporaryFile).
fn is_gif_name(name: &str, uid: &str) -> bool {
    let Some(rest) = name.strip_prefix(&format!("{uid}.tmp")) else {
        return false;
    };
    let Some(tag) = rest.strip_suffix(".gif") else {
        return false;
    };
    tag.len() == 8
        && tag
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `\d+\.\dMB`.
fn is_size_label(size: &str) -> bool {
    let Some(num) = size.strip_suffix("MB") else {
        return false;
    };
    let Some((int, frac)) = num.split_once('.') else {
        return false;
    };
    !int.is_empty() && int.chars().all(|c| c.is_ascii_digit()) && frac.len() == 1
}

#[derive(Debug)]
struct Row {
    id: i32,
    media: i32,
    profile: i32,
    status: String,
    progress: i16,
    chunk: bool,
    media_file: String,
    size: String,
    task_id: String,
    retries: i32,
    worker: String,
    commands: String,
    logs: String,
    temp_file: String,
}

async fn rows(site: &Site) -> Vec<Row> {
    let c = site.db.client().await;
    c.query(
        "SELECT id, media_id, profile_id, status, progress, chunk, media_file, size, task_id, \
         retries, worker, commands, logs, temp_file FROM files_encoding ORDER BY id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| Row {
        id: r.get(0),
        media: r.get(1),
        profile: r.get(2),
        status: r.get(3),
        progress: r.get(4),
        chunk: r.get(5),
        media_file: r.get(6),
        size: r.get(7),
        task_id: r.get(8),
        retries: r.get(9),
        worker: r.get(10),
        commands: r.get(11),
        logs: r.get(12),
        temp_file: r.get(13),
    })
    .collect()
}

/// Common checks of an h264 rendition row and its file.
fn check_h264_output(site: &Site, row: &Row, height: i64) {
    let path = site.media_path(&row.media_file);
    let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    assert_eq!(meta.permissions().mode() & 0o777, 0o644, "mode of {path:?}");
    assert!(
        is_size_label(&row.size),
        "size {:?} of row {}",
        row.size,
        row.id
    );
    assert_eq!(
        row.size,
        format!("{:.1}MB", meta.len() as f64 / 1e6),
        "size of row {}",
        row.id
    );
    let p = ffprobe(&path);
    assert_eq!(
        (p.codec.as_str(), p.profile.as_str(), p.pix_fmt.as_str()),
        ("h264", "Main", "yuv420p"),
        "{path:?}"
    );
    assert_eq!(p.height, height, "{path:?}");
    assert_eq!(p.audio_codec.as_deref(), Some("aac"), "{path:?}");
    assert_eq!((row.status.as_str(), row.progress), ("success", 100));
    assert_eq!(row.retries, 0);
    assert!(!row.logs.is_empty(), "row {} has empty logs", row.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_upload_ends_like_the_python_worker() {
    let started = Instant::now();
    let site = Site::upload_example().await;
    prepare_sources(&site).await;
    let ids = enqueue(&site);
    let mut w = site
        .worker(WorkerOpts {
            concurrency: 2,
            preset: "medium".into(),
            ..WorkerOpts::default()
        })
        .await;

    // Done = every encode_media has a terminal result document and nothing is queued or held.
    let site_ref = &site;
    let ids_ref = &ids;
    w.until(
        Duration::from_secs(300),
        "all 13 encode_media results",
        || async move {
            let terminal = ids_ref.iter().all(|(_, id)| {
                site_ref.result(id).is_some_and(|r| {
                    matches!(r["status"].as_str(), Some("SUCCESS") | Some("FAILURE"))
                })
            });
            (terminal && site_ref.queued() == 0 && site_ref.unacked() == 0).then_some(())
        },
    )
    .await;
    // The follow-ups too: 8 create_hls and 2 sprite tasks finished (BRPOP → unacked is not
    // atomic, so an empty queue alone could be read in between).
    let http = w.http;
    w.until(
        Duration::from_secs(120),
        "the follow-up tasks",
        || async move {
            let m = support::worker::http_get(http, "/metrics").ok()?.1;
            let done = |task| {
                metric(
                    &m,
                    "mediacms_worker_tasks_finished_total",
                    &[("task", task)],
                )
            };
            let settled = done("create_hls") == Some(8.0)
                && done("produce_sprite_from_video") == Some(2.0)
                && site_ref.idle();
            settled.then_some(())
        },
    )
    .await;
    let encode_secs = started.elapsed().as_secs_f64();

    // --- Redis: every result SUCCESS true; nothing queued or held.
    for (file, id) in &ids {
        let r = site.result(id).unwrap();
        assert_eq!(r["status"], "SUCCESS", "{file}: {r}");
        assert_eq!(r["result"], Value::Bool(true), "{file}: {r}");
        assert_eq!(r["task_id"], id.as_str());
    }
    assert_eq!(site.queued(), 0);
    assert_eq!(site.unacked(), 0, "unacked must be empty at the end");

    // --- files_encoding: 10 rows like the reference (7 kept + 3 concatenations).
    let rows = rows(&site).await;
    let task_of = |file: &str| ids.iter().find(|(f, _)| f == file).unwrap().1.clone();
    assert!(
        rows.iter().all(|r| !r.chunk),
        "chunk rows must be gone: {rows:#?}"
    );
    assert_eq!(rows.len(), 10, "{rows:#?}");
    let media1_name = format!("{MEDIA1_UID}.{MEDIA1_UID}.reference_720p.mp4.mp4");
    let input1 = site.media_path(MEDIA1_FILE);
    for (n, (profile, height, maxrate)) in LADDER.iter().enumerate() {
        let row = rows
            .iter()
            .find(|r| r.media == 1 && r.profile == *profile)
            .unwrap_or_else(|| panic!("no row for media 1 profile {profile}"));
        assert_eq!(row.id, n as i32 + 1, "media 1 rows keep their ids");
        assert_eq!(
            row.media_file,
            format!("encoded/{profile}/refuser/{media1_name}")
        );
        check_h264_output(&site, row, *height);
        assert_eq!(
            row.task_id,
            task_of(&format!("encode_media-{}.json", n + 1))
        );
        assert_eq!(row.worker, w.hostname);
        assert!(
            row.temp_file
                .starts_with(&site.temp_dir().to_string_lossy().into_owned())
                && row.temp_file.ends_with(".mp4"),
            "temp_file {:?}",
            row.temp_file
        );
        // MediaCMS's argv, as the str() of a Python list (reference `commands` of row 1).
        let expected = format!(
            "[['ffmpeg', '-y', '-i', '{input}', '-c:v', 'libx264', '-filter:v', \
             'scale=if(lt(iw\\\\,ih)\\\\,{h}\\\\,{wd}):if(lt(iw\\\\,ih)\\\\,{wd}\\\\,{h}):\
             force_original_aspect_ratio=decrease:force_divisible_by=2:flags=lanczos,fps=fps=30', \
             '-pix_fmt', 'yuv420p', '-crf', '23', '-c:a', 'aac', '-b:a', '128k', '-ac', '2', \
             '-maxrate', '{maxrate}', '-bufsize', '{maxrate}', '-force_key_frames', \
             'expr:gte(t,n_forced*4)', '-x264-params', 'keyint=240:keyint_min=120', '-preset', \
             'medium', '-profile:v', 'main', '-level', '4.2', '-strict', '-2', '{out}']]",
            input = input1.display(),
            h = height,
            wd = scaled_width(*height),
            out = row.temp_file,
        );
        assert_eq!(row.commands, expected, "commands of row {}", row.id);
    }
    for (media, uid, enc_id, file) in [
        (1, MEDIA1_UID, 6, "encode_media-6.json"),
        (2, MEDIA2_UID, 7, "encode_media-7.json"),
    ] {
        let gif = rows.iter().find(|r| r.id == enc_id).unwrap();
        assert_eq!((gif.media, gif.profile), (media, 1));
        assert_eq!(gif.status, "success");
        assert_eq!(gif.task_id, task_of(file));
        let name = gif
            .media_file
            .strip_prefix("encoded/1/refuser/")
            .unwrap_or_else(|| panic!("gif path {:?}", gif.media_file));
        assert!(is_gif_name(name, uid), "gif name {name:?}");
        assert!(is_size_label(&gif.size), "gif size {:?}", gif.size);
        let path = site.media_path(&gif.media_file);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        let p = ffprobe(&path);
        assert_eq!((p.codec.as_str(), p.width), ("gif", 344), "{path:?}");
    }
    let media2_name = format!("{MEDIA2_UID}.{MEDIA2_UID}.reference_long_360p.mp4.mp4");
    let workers = format!("{{\"workers\": [\"{}\"]}}", w.hostname);
    for (profile, height) in [(23, 144), (2, 240), (3, 360)] {
        let row = rows
            .iter()
            .find(|r| r.media == 2 && r.profile == profile)
            .unwrap_or_else(|| panic!("no concatenated row for profile {profile}"));
        assert!(row.id > 13, "a new row, not a chunk row: {row:?}");
        assert_eq!(
            row.media_file,
            format!("encoded/{profile}/refuser/{media2_name}")
        );
        check_h264_output(&site, row, height);
        assert_eq!(row.worker, workers);
        let p = ffprobe(&site.media_path(&row.media_file));
        assert!(
            (p.duration - f64::from(MEDIA2_SECONDS)).abs() < 0.5,
            "concatenated duration {} of profile {profile}",
            p.duration
        );
    }

    // --- Files: exactly the 10 renditions under encoded/, sources kept, chunks gone.
    let mut expected_files: Vec<String> = rows.iter().map(|r| r.media_file.clone()).collect();
    expected_files.push(MEDIA1_FILE.into());
    expected_files.push(MEDIA2_FILE.into());
    for (uid, original) in [
        (MEDIA1_UID, "reference_720p.mp4"),
        (MEDIA2_UID, "reference_long_360p.mp4"),
    ] {
        expected_files.push(format!(
            "original/thumbnails/user/refuser/{uid}.{original}sprites.jpg"
        ));
    }
    expected_files.sort();
    let outside_hls: Vec<String> = files_under(&site.media_root())
        .into_iter()
        .filter(|f| !f.starts_with("hls/"))
        .collect();
    assert_eq!(outside_hls, expected_files);
    assert!(
        files_under(&site.temp_dir()).is_empty(),
        "TEMP_DIRECTORY must be left empty: {:?}",
        files_under(&site.temp_dir())
    );

    // --- files_media and users_user.
    let c = site.db.client().await;
    for (id, gif_row) in [(1, 6), (2, 7)] {
        let m = c
            .query_one(
                "SELECT encoding_status, listable, preview_file_path FROM files_media WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        let gif = rows.iter().find(|r| r.id == gif_row).unwrap();
        assert_eq!(m.get::<_, String>(0), "success", "media {id}");
        assert!(m.get::<_, bool>(1), "media {id} listable");
        assert_eq!(
            m.get::<_, String>(2),
            site.media_path(&gif.media_file).to_string_lossy(),
            "preview_file_path of media {id} is the absolute gif path"
        );
    }
    let count: i32 = c
        .query_one(
            "SELECT media_count FROM users_user WHERE username = 'refuser'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 2);

    // --- Follow-ups: every task ran here (no other consumer). create_hls was published once
    // per h264 success on long_tasks (5 for media 1, 3 concatenations for media 2; MediaCMS
    // publishes each twice, §9.3), and received and run by this worker.
    let m = w.metrics();
    let hls = [("task", "create_hls")];
    assert_eq!(
        metric(&m, "mediacms_worker_tasks_received_total", &hls),
        Some(8.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "mediacms_worker_tasks_finished_total",
            &[("task", "create_hls"), ("outcome", "success")]
        ),
        Some(8.0),
        "{m}"
    );
    for file in [
        "produce_sprite_from_video-1.json",
        "produce_sprite_from_video-2.json",
    ] {
        let id = envelope::decode_redis(&site.real_message(file)).unwrap().id;
        let r = site
            .result(&id)
            .unwrap_or_else(|| panic!("no result for {file}"));
        assert_eq!(
            (r["status"].as_str(), &r["result"]),
            (Some("SUCCESS"), &Value::Bool(true)),
            "{file}: {r}"
        );
    }
    for (id, uid, original, renditions) in [
        (1, MEDIA1_UID, "reference_720p.mp4", 5),
        (2, MEDIA2_UID, "reference_long_360p.mp4", 3),
    ] {
        let m = c
            .query_one(
                "SELECT hls_file, sprites FROM files_media WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        let master = site.media_path(&format!("hls/{uid}/master.m3u8"));
        assert_eq!(
            m.get::<_, String>(0),
            master.to_string_lossy(),
            "hls_file of media {id}"
        );
        let text = std::fs::read_to_string(&master).unwrap();
        let variants = text
            .lines()
            .filter(|l| l.starts_with("#EXT-X-STREAM-INF"))
            .count();
        assert_eq!(variants, renditions, "{master:?}:\n{text}");
        assert!(text.contains("RESOLUTION="), "{text}");
        let sprites = format!("original/thumbnails/user/refuser/{uid}.{original}sprites.jpg");
        assert_eq!(m.get::<_, String>(1), sprites, "sprites of media {id}");
        assert!(site.media_path(&sprites).is_file());
    }

    eprintln!(
        "reference upload: encodes done after {encode_secs:.1} s, test {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Width of the 16:9 box MediaCMS's scale filter gets for `height` (`if(lt(iw,ih),h,w)`).
fn scaled_width(height: i64) -> i64 {
    match height {
        144 => 256,
        240 => 427,
        360 => 640,
        480 => 853,
        720 => 1280,
        other => panic!("no width for {other}"),
    }
}
