//! Issue 3 failure paths through the real binary: MediaCMS's cancellation (the Encoding row is
//! deleted mid-encode) stops ffmpeg promptly and leaves no rendition; bad inputs (corrupt,
//! missing, audio-only, empty) end `fail` with a readable log, and the worker keeps serving.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::media;
use support::worker::{files_under, Site, WorkerOpts, MEDIA1_TOKEN};

/// Profiles of the fixture: h264-240 (a minimum resolution: never skipped for height) and
/// h264-720.
const P240: i32 = 2;
const P720: i32 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_encoding_mid_encode_stops_ffmpeg_and_leaves_no_file() {
    let started = Instant::now();
    let site = Site::upload_example().await;
    // 60 s of 720p at MediaCMS's default preset runs long enough to be cancelled mid-way.
    site.media1_clip(60).await;
    let mut w = site
        .worker(WorkerOpts {
            preset: "medium".into(),
            ..WorkerOpts::default()
        })
        .await;
    let task_id = site.publish_encode(MEDIA1_TOKEN, P720, 5);

    // ffmpeg is running and the row says so.
    let (site_ref, worker_pid) = (&site, w.pid);
    let ffmpeg_pid = w
        .until(
            Duration::from_secs(60),
            "ffmpeg running the encode",
            || async move {
                let running = site_ref.encoding_status(5).await.as_deref() == Some("running");
                let kids = support::worker::processes()
                    .into_iter()
                    .filter(|p| p.ppid == worker_pid && p.comm == "ffmpeg")
                    .map(|p| p.pid)
                    .collect::<Vec<_>>();
                (running && !kids.is_empty()).then(|| kids[0])
            },
        )
        .await;
    assert!(
        !w.ffmpeg_children().is_empty(),
        "ffmpeg ended before the row could be deleted; the clip is too short for this machine"
    );

    // MediaCMS cancels an encode by deleting its row.
    let deleted_at = Instant::now();
    let n = site
        .db
        .client()
        .await
        .execute("DELETE FROM files_encoding WHERE id = 5", &[])
        .await
        .unwrap();
    assert_eq!(n, 1);
    let w_ref = &w;
    support::worker::wait_for(
        Duration::from_secs(5),
        "the worker's ffmpeg to be gone within 5 s of the deletion",
        || async move { w_ref.ffmpeg_children().is_empty().then_some(()) },
    )
    .await;
    let stop_latency = deleted_at.elapsed();
    assert!(
        support::worker::process(ffmpeg_pid).is_none_or(|p| p.state == 'Z'),
        "ffmpeg {ffmpeg_pid} still alive"
    );

    // The task ends (result `false`: the row is gone), nothing is written, the row stays gone.
    let task_ref = &task_id;
    let result = w
        .until(
            Duration::from_secs(30),
            "the task's result",
            || async move { site_ref.result(task_ref) },
        )
        .await;
    assert_eq!(result["status"], "SUCCESS", "{result}");
    assert_eq!(result["result"], Value::Bool(false), "{result}");
    assert_eq!(site.encoding_status(5).await, None);
    assert!(
        files_under(&site.media_path("encoded")).is_empty(),
        "no rendition may be written: {:?}",
        files_under(&site.media_path("encoded"))
    );
    w.until(
        Duration::from_secs(10),
        "TEMP_DIRECTORY cleaned",
        || async move { files_under(&site_ref.temp_dir()).is_empty().then_some(()) },
    )
    .await;
    assert_eq!(site.unacked(), 0);
    eprintln!(
        "cancellation: ffmpeg gone {:.2} s after DELETE; test {:.1} s",
        stop_latency.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// One bad-input case: a media copy with a bad file, encoded at 240p.
struct Case {
    name: &'static str,
    expect: Expect,
    media_id: i32,
    encoding_id: i32,
    task_id: String,
}

/// How a bad input must end (the row is always `fail`, the media's status `fail`).
struct Expect {
    /// Task result: `Some(false)` = SUCCESS false (MediaCMS returns False); `None` = FAILURE
    /// after the one Celery retry.
    result: Option<bool>,
    /// A line the `logs` column must contain.
    log: &'static str,
    /// Whether ffmpeg ran (then `commands` holds its argv and the log names the input).
    ffmpeg_ran: bool,
    /// `retries` column: 1 when the final run was the retry.
    retries: i32,
}

/// ffmpeg's verdict on unreadable input: final, no retry (ERRORS_LIST, contract §2.5).
const INVALID: Expect = Expect {
    result: Some(false),
    log: "Invalid data found when processing input",
    retries: 0,
    ffmpeg_ran: true,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_fail_with_readable_logs_and_the_worker_keeps_serving() {
    let started = Instant::now();
    let site = Site::upload_example().await;
    let c = site.db.client().await;
    let media1_info: String = c
        .query_one("SELECT media_info FROM files_media WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    let scratch = tempfile::tempdir().unwrap();

    // (name, file content source, media_info, duration). Corrupt/missing/empty keep media 1's
    // media_info (what MediaCMS probed at upload; the file changed or vanished since); the
    // audio-only file gets its real probe.
    let audio = media::audio_only(scratch.path());
    let audio_info = mediacms_worker::ffmpeg::probe::media_file_info(&audio, true).to_string();
    let inputs: Vec<(&str, Option<std::path::PathBuf>, String, i32, Expect)> = vec![
        (
            "corrupt",
            Some(media::garbage(scratch.path())),
            media1_info.clone(),
            8,
            INVALID,
        ),
        // Not in ERRORS_LIST: one retry after 5 s, then FAILURE (VideoEncodingError).
        (
            "missing",
            None,
            media1_info.clone(),
            8,
            Expect {
                result: None,
                log: "No such file or directory",
                retries: 1,
                ffmpeg_ran: true,
            },
        ),
        // media_info without a video stream: no command can be produced (§2.3). MediaCMS marks
        // the row `fail` with empty logs and returns False; we also say why in the log.
        (
            "audio-only",
            Some(audio),
            audio_info,
            2,
            Expect {
                result: Some(false),
                log: "not encoded: media_info field video_height is missing",
                retries: 0,
                ffmpeg_ran: false,
            },
        ),
        // A 0-byte upload: zero duration, nothing to demux.
        (
            "empty",
            Some(media::zero_byte(scratch.path())),
            media1_info.clone(),
            0,
            INVALID,
        ),
    ];
    let mut cases = vec![];
    for (n, (name, file, info, duration, expect)) in inputs.into_iter().enumerate() {
        let media_id = 101 + n as i32;
        let encoding_id = 201 + n as i32;
        let token = format!("bad{n}xxxx");
        let rel = site
            .add_media(media_id, &token, &format!("{name}.mp4"), &info, duration)
            .await;
        if let Some(src) = file {
            std::fs::copy(&src, site.media_path(&rel)).unwrap();
        }
        site.add_encoding(encoding_id, media_id, P240).await;
        let task_id = site.publish_encode(&token, P240, encoding_id);
        cases.push(Case {
            name,
            expect,
            media_id,
            encoding_id,
            task_id,
        });
    }
    // A good encode queued after every bad one: the worker must still serve it.
    site.media1_clip(3).await;
    let good_task = site.publish_encode(MEDIA1_TOKEN, P240, 2);

    let mut w = site.worker(WorkerOpts::default()).await;
    let (site_ref, cases_ref, good_ref) = (&site, &cases, &good_task);
    w.until(
        Duration::from_secs(120),
        "terminal results for every case",
        || async move {
            let terminal = |id: &str| {
                site_ref.result(id).is_some_and(|r| {
                    matches!(r["status"].as_str(), Some("SUCCESS") | Some("FAILURE"))
                })
            };
            (cases_ref.iter().all(|c| terminal(&c.task_id)) && terminal(good_ref)).then_some(())
        },
    )
    .await;

    for case in &cases {
        let row = c
            .query_one(
                "SELECT status, logs, commands, retries FROM files_encoding WHERE id = $1",
                &[&case.encoding_id],
            )
            .await
            .unwrap();
        let (status, logs, commands, retries): (String, String, String, i32) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let result = site.result(&case.task_id).unwrap();
        let name = case.name;
        assert_eq!(status, "fail", "{name}: {logs}");
        assert_eq!(retries, case.expect.retries, "{name}: retries");
        match case.expect.result {
            Some(v) => {
                assert_eq!(result["status"], "SUCCESS", "{name}: {result}");
                assert_eq!(result["result"], Value::Bool(v), "{name}: {result}");
            }
            None => {
                assert_eq!(result["status"], "FAILURE", "{name}: {result}");
                assert_eq!(result["result"]["exc_type"], "VideoEncodingError", "{name}");
            }
        }
        assert!(logs.contains(case.expect.log), "{name}: logs {logs:?}");
        if !case.expect.ffmpeg_ran {
            assert_eq!(commands, "", "{name}");
        } else {
            // Readable: ffmpeg's own words, naming the input.
            assert!(
                logs.contains(&format!(".{name}.mp4")),
                "{name}: logs {logs:?}"
            );
            assert!(commands.starts_with("[['ffmpeg'"), "{name}: {commands}");
        }
        let media_status: String = c
            .query_one(
                "SELECT encoding_status FROM files_media WHERE id = $1",
                &[&case.media_id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(media_status, "fail", "{}", case.name);
    }

    let good = site.result(&good_task).unwrap();
    assert_eq!(good["status"], "SUCCESS", "{good}");
    assert_eq!(good["result"], Value::Bool(true), "{good}");
    assert_eq!(site.encoding_status(2).await.as_deref(), Some("success"));
    // The good encode's create_hls follow-up may still be running.
    w.until(
        Duration::from_secs(60),
        "queue and unacked empty",
        || async move { site_ref.idle().then_some(()) },
    )
    .await;
    // Only the good encode wrote a rendition.
    let written = files_under(&site.media_path("encoded"));
    assert_eq!(written.len(), 1, "{written:?}");
    assert!(written[0].starts_with("2/refuser/"), "{written:?}");
    eprintln!("bad inputs: test {:.1} s", started.elapsed().as_secs_f64());
}
