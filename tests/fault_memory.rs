//! Fault case 7: resource caps. One real worker with `-c 2 --ffmpeg-threads 2` encodes a 6 s
//! 1080p clip to h264-720 and h264-1080 at once; the summed RSS of the worker and its ffmpeg
//! children, sampled from /proc every 20 ms, stays under [`PEAK_BOUND_MIB`], never more than
//! two ffmpeg run at once, and each ffmpeg got `-threads 2`.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mediacms_worker::ffmpeg::probe;
use support::db::TestDb;
use support::fault::{
    descendants, encode_task, insert_media_and_encoding, lpush, processes, tree_rss_kib,
    wait_until, Case, Endpoints, WorkerProc, QUEUE,
};
use support::media::{clip, ClipSpec};
use support::redis::TestRedis;

/// Measured peak on the dev box (2 cores, ffmpeg 5.1, ultrafast): see docs/RELIABILITY.md.
/// The bound leaves about 2x headroom for other ffmpeg builds and allocators.
const PEAK_BOUND_MIB: u64 = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_slots_of_1080p_stay_within_the_memory_bound() {
    let case = Case::new("resource_caps_memory");
    let db = TestDb::with_upload_example().await;
    let redis = TestRedis::claim();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("media");
    let originals = root.join("original/user/refuser");
    std::fs::create_dir_all(&originals).unwrap();
    let spec = ClipSpec {
        width: 1920,
        height: 1080,
        fps: 25,
        // Long enough, with the 20 ms sampling below, that the sampler sees the encodes many
        // times however idle and fast the machine is (a 2 s clip sampled every 100 ms once gave
        // only 10 samples on an unloaded run).
        seconds: 6.0,
        ..ClipSpec::default()
    };
    let made = clip(&originals, &spec);
    let rel = format!(
        "original/user/refuser/{}",
        made.file_name().unwrap().to_str().unwrap()
    );
    let info = probe::media_file_info(&made, false);
    let c = db.client().await;
    insert_media_and_encoding(&c, 300, "Mem1080", &rel, &info.to_string(), 6, 10).await;
    // Second Encoding (h264-1080) of the same media: the helper's staged row under id 301.
    c.batch_execute(
        "UPDATE fault_enc SET id = 301, profile_id = 7; \
         INSERT INTO files_encoding SELECT * FROM fault_enc;",
    )
    .await
    .unwrap();

    let ep = Endpoints {
        redis_url: redis.url.clone(),
        pg: db.config(),
        media_root: root.clone(),
        temp_dir: dir.path().join("tmp"),
    };
    let mut r = redis.conn();
    for (profile, id) in [(10, 300), (7, 301)] {
        let t = encode_task("Mem1080", profile, id);
        let raw = support::fault::envelope_of("encode_media", t.args.clone(), t.kwargs.clone(), 0);
        lpush(&mut r, QUEUE, &raw);
    }
    let log = dir.path().join("worker.log");
    let mut w = WorkerProc::spawn(
        &ep,
        &log,
        &[
            "-c",
            "2",
            "--ffmpeg-threads",
            "2",
            "--celery-soft-time-limit",
            "120",
        ],
        &[],
    );
    let pid = w.pid;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut peak, mut max_ffmpeg, mut samples) = (0u64, 0usize, 0u64);
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(tree_rss_kib(pid));
                let below = descendants(pid);
                let ffmpegs = processes()
                    .iter()
                    .filter(|(p, _, comm)| below.contains(p) && comm == "ffmpeg")
                    .count();
                max_ffmpeg = max_ffmpeg.max(ffmpegs);
                samples += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (peak, max_ffmpeg, samples)
        })
    };
    let statuses = loop {
        assert!(w.alive(), "{}", w.log_tail());
        let rows = c
            .query(
                "SELECT status, commands FROM files_encoding WHERE media_id = 300 ORDER BY id",
                &[],
            )
            .await
            .unwrap();
        let st: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        if st.len() == 2 && st.iter().all(|(s, _)| s == "success" || s == "fail") {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // Let the post-encode follow-ups settle before the last samples.
    wait_until(Duration::from_secs(5), "idle", || Some(()));
    stop.store(true, Ordering::Relaxed);
    let (peak_kib, max_ffmpeg, samples) = sampler.join().unwrap();
    let peak_mib = peak_kib / 1024;
    println!(
        "memory: peak {peak_mib} MiB (worker + ffmpeg children), {max_ffmpeg} ffmpeg at once, \
         {samples} samples, bound {PEAK_BOUND_MIB} MiB"
    );
    for (status, commands) in &statuses {
        assert_eq!(status, "success", "{}", w.log_tail());
        assert!(commands.contains("'-threads', '2'"), "{commands}");
    }
    assert!(
        samples > 10,
        "too few samples ({samples}) to trust the peak"
    );
    assert!(max_ffmpeg <= 2, "{max_ffmpeg} ffmpeg ran at once with -c 2");
    assert!(max_ffmpeg >= 1, "no ffmpeg was ever sampled");
    assert!(
        peak_mib <= PEAK_BOUND_MIB,
        "peak {peak_mib} MiB over the {PEAK_BOUND_MIB} MiB bound"
    );
    case.survived();
}
