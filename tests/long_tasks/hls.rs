//! create_hls: layout parsed with MediaCMS's `hls_info` rules, playable variants, ≤ 4.5 s
//! segments, `hls_file`, burst coalescing, skip when unchanged, atomic replacement.

use std::os::unix::fs::MetadataExt;

use mediacms_worker::ffmpeg::probe::probe_summary;
use mediacms_worker::tasks::create_hls::{CreateHls, MANIFEST};

use super::*;

const H1: &str = "41905ce2087146cdba79c28a24c33a9a";

/// An h264+aac encode with a keyframe every 2 s (MediaCMS forces one every 4 s or less).
fn encode_args(w: u32, h: u32) -> String {
    format!(
        "-f lavfi -i testsrc2=size={w}x{h}:rate=25 -f lavfi -i sine=frequency=440:sample_rate=44100 \
         -t 10 -c:v libx264 -preset ultrafast -g 50 -pix_fmt yuv420p -c:a aac -ac 2"
    )
}

/// Encodings 2 (h264-240) and 3 (h264-360) of media 1 become successes with real files.
async fn two_h264_encodings(e: &Env) {
    for (id, profile, w, h) in [(2, 2, 426, 240), (3, 3, 640, 360)] {
        let rel = format!("encoded/{profile}/refuser/{H1}.{H1}.reference_720p.mp4.mp4");
        e.clip_at(&rel, &format!("e{h}.mp4"), &encode_args(w, h));
        e.sql(&format!(
            "UPDATE files_encoding SET status = 'success', progress = 100, media_file = '{rel}' \
             WHERE id = {id}"
        ))
        .await;
    }
}

fn oracle(e: &Env, master: &Path) -> Value {
    let out = py(
        &[
            "hls_info.py",
            &master.to_string_lossy(),
            &e.root().to_string_lossy(),
        ],
        &[],
    );
    serde_json::from_str(&out).unwrap()
}

#[tokio::test]
async fn hls_tree_is_what_mediacms_parses_and_bursts_coalesce() {
    let e = Env::new().await;
    two_h264_encodings(&e).await;
    let h = CreateHls::with_debounce(e.env.clone(), Duration::from_millis(400));
    let args = || json!([FT1]);
    // A burst of three: exactly one packages, the two earlier ones step aside.
    let (a, b, c) = tokio::join!(
        run(&e, &h, "create_hls", args(), json!({})),
        run(&e, &h, "create_hls", args(), json!({})),
        run(&e, &h, "create_hls", args(), json!({})),
    );
    let mut results = vec![a, b, c];
    results.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(results, [ok(false), ok(false), ok(true)]);

    let dir = e.root().join("hls").join(H1);
    let master = dir.join("master.m3u8");
    let hls_file = e
        .text("SELECT hls_file FROM files_media WHERE id = 1")
        .await;
    assert_eq!(hls_file, master.to_string_lossy());
    let parsed = oracle(&e, &master);
    let info = parsed["info"].as_object().unwrap();
    let keys: Vec<&str> = info.keys().map(String::as_str).collect();
    // Regression (issue 15): hls_info had no `<res>_iframe` keys; Bento4's layout has them.
    assert_eq!(
        keys,
        [
            "master_file",
            "240_iframe",
            "360_iframe",
            "240_playlist",
            "360_playlist"
        ]
    );
    assert_eq!(
        info["240_iframe"],
        format!("/media/hls/{H1}/media-1/iframes.m3u8")
    );
    for (key, ranges) in parsed["iframes"].as_object().unwrap() {
        // A keyframe every 2 s over 10 s, each shown until the next.
        let ranges = ranges.as_array().unwrap();
        assert_eq!(ranges.len(), 5, "{key}: {ranges:?}");
        let secs: f64 = ranges.iter().map(|r| r[3].as_f64().unwrap()).sum();
        assert!((secs - 10.0).abs() < 0.5, "{key}: {ranges:?}");
    }
    assert_eq!(
        info["240_playlist"],
        format!("/media/hls/{H1}/media-1/stream.m3u8")
    );
    for (key, durations) in parsed["segments"].as_object().unwrap() {
        let d: Vec<f64> = durations
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!(d.len() >= 2, "{key}: {d:?}");
        assert!(d.iter().all(|s| *s <= 4.5), "{key}: segments {d:?}");
        assert!((d.iter().sum::<f64>() - 10.0).abs() < 0.5, "{key}: {d:?}");
        assert!(parsed["target"][key].as_f64().unwrap() <= 5.0);
    }
    for (n, height) in [(1, 240), (2, 360)] {
        let variant = dir.join(format!("media-{n}/stream.m3u8"));
        let s = probe_summary(&variant).unwrap_or_else(|err| panic!("{variant:?}: {err}"));
        assert!(s.has_video && s.has_audio && s.height == height, "{s:?}");
    }
    let text = std::fs::read_to_string(&master).unwrap();
    assert!(
        text.contains("RESOLUTION=426x240") && text.contains("CODECS=\"avc1."),
        "{text}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(e.root().join("hls")).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temp dir left behind");
    let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o755, "served tree readable by the web server");

    // Unchanged inputs: nothing is repackaged (the master keeps its inode).
    let inode = std::fs::metadata(&master).unwrap().ino();
    assert_eq!(run(&e, &h, "create_hls", args(), json!({})).await, ok(true));
    assert_eq!(std::fs::metadata(&master).unwrap().ino(), inode);
    assert!(dir.join(MANIFEST).is_file());
}

#[tokio::test]
async fn changed_inputs_replace_the_whole_tree() {
    let e = Env::new().await;
    two_h264_encodings(&e).await;
    let h = CreateHls::with_debounce(e.env.clone(), Duration::ZERO);
    assert_eq!(
        run(&e, &h, "create_hls", json!([FT1]), json!({})).await,
        ok(true)
    );
    let dir = e.root().join("hls").join(H1);
    assert!(dir.join("media-2/segment-0.ts").is_file());
    // The 360p encoding goes away: the new tree has one variant and no stale media-2/.
    e.sql("UPDATE files_encoding SET status = 'fail' WHERE id = 3")
        .await;
    assert_eq!(
        run(&e, &h, "create_hls", json!([FT1]), json!({})).await,
        ok(true)
    );
    let parsed = oracle(&e, &dir.join("master.m3u8"));
    let keys: Vec<String> = parsed["info"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys, ["master_file", "240_iframe", "240_playlist"]);
    assert!(!dir.join("media-2").exists(), "stale variant removed");
    assert_eq!(std::fs::read_dir(e.root().join("hls")).unwrap().count(), 1);
}

#[tokio::test]
async fn create_hls_edge_cases() {
    let e = Env::new().await;
    let h = CreateHls::with_debounce(e.env.clone(), Duration::ZERO);
    assert_eq!(
        run(&e, &h, "create_hls", json!(["nosuchmed"]), json!({})).await,
        ok(false)
    );
    // No h264 success yet: nothing written, hls_file untouched.
    assert_eq!(
        run(&e, &h, "create_hls", json!([FT1]), json!({})).await,
        ok(true)
    );
    assert!(!e.root().join("hls").join(H1).exists());
    assert_eq!(
        e.text("SELECT hls_file FROM files_media WHERE id = 1")
            .await,
        ""
    );
    let bad = run(&e, &h, "create_hls", json!([1, 2]), json!({})).await;
    assert!(
        matches!(bad, Outcome::Failure(ref err) if err.exc_type == "TypeError"),
        "{bad:?}"
    );
}
