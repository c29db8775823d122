//! produce_sprite_from_video: 160 px wide, 90 px per cell, as many cells as ffmpeg's own
//! `fps=1/10` yields (at least one), stored under §4.2's name, no blank cell.

use std::process::Command;

use mediacms_worker::ffmpeg::probe::probe_summary;
use mediacms_worker::tasks::sprites::ProduceSprites;

use super::*;

/// Frames real ffmpeg writes for `fps=1/10` — counted independently of the handler.
fn ffmpeg_frame_count(e: &Env, clip: &Path) -> usize {
    let dir = tempfile::tempdir_in(e.work.path()).unwrap();
    let pattern = dir.path().join("f%03d.jpg");
    let args = format!("-i {} -f image2 -vf fps=1/10", clip.display());
    let mut a: Vec<String> = args.split_whitespace().map(String::from).collect();
    a.push(pattern.to_string_lossy().into_owned());
    support::media::ffmpeg(&a);
    std::fs::read_dir(dir.path()).unwrap().count()
}

/// Mean luma of each 160x90 cell of the strip.
fn cell_lumas(strip: &Path, cells: usize) -> Vec<f64> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(strip)
        .args(["-f", "rawvideo", "-pix_fmt", "gray", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let cell = 160 * 90;
    assert_eq!(out.stdout.len(), cell * cells);
    out.stdout
        .chunks(cell)
        .map(|c| c.iter().map(|&p| f64::from(p)).sum::<f64>() / cell as f64)
        .collect()
}

#[tokio::test]
async fn sprite_strips_have_one_cell_per_ffmpeg_frame() {
    let e = Env::new().await;
    let h = ProduceSprites { env: e.env.clone() };
    // 3 s: fps=1/10 yields nothing (MediaCMS makes no sprite); we fall back to one cell.
    for secs in [8, 12, 35, 3] {
        let args = format!(
            "-f lavfi -i testsrc2=size=320x180:rate=25 -f lavfi -i sine=sample_rate=44100 \
             -t {secs} -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac"
        );
        let clip = e.clip_at(ORIG1, &format!("c{secs}.mp4"), &args);
        let expected = ffmpeg_frame_count(&e, &clip).max(1);
        if secs <= 12 {
            assert_eq!(expected, 1, "MediaCMS gives 1 frame for {secs} s");
        }
        assert_eq!(
            run(&e, &h, "produce_sprite_from_video", json!([FT1]), json!({})).await,
            ok(true)
        );
        let rel = e.text("SELECT sprites FROM files_media WHERE id = 1").await;
        assert!(
            rel.starts_with("original/thumbnails/user/refuser/41905ce2087146cdba79c28a24c33a9a")
                && rel.ends_with(".reference_720p.mp4sprites.jpg"),
            "{rel}"
        );
        let strip = e.root().join(&rel);
        let s = probe_summary(&strip).unwrap();
        assert_eq!(
            (s.width, s.height),
            (160, 90 * expected as u32),
            "{secs} s clip"
        );
        for (i, luma) in cell_lumas(&strip, expected).iter().enumerate() {
            assert!(
                *luma > 40.0,
                "{secs} s clip: cell {i} is blank (luma {luma})"
            );
        }
    }
    // MediaCMS's exact name for the first strip (later ones get Django's collision suffix).
    let first = e
        .root()
        .join("original/thumbnails/user/refuser/41905ce2087146cdba79c28a24c33a9a.reference_720p.mp4sprites.jpg");
    assert!(first.is_file());
}

#[tokio::test]
async fn sprites_of_missing_media_or_file() {
    let e = Env::new().await;
    let h = ProduceSprites { env: e.env.clone() };
    assert_eq!(
        run(
            &e,
            &h,
            "produce_sprite_from_video",
            json!(["nosuchmed"]),
            json!({})
        )
        .await,
        ok(false)
    );
    // The original is not on disk: no sprite, the column stays as it was.
    let before = e.text("SELECT sprites FROM files_media WHERE id = 2").await;
    assert_eq!(
        run(&e, &h, "produce_sprite_from_video", json!([FT2]), json!({})).await,
        ok(false)
    );
    assert_eq!(
        e.text("SELECT sprites FROM files_media WHERE id = 2").await,
        before
    );
}

#[tokio::test]
async fn strips_too_tall_for_a_jpeg_are_capped_at_727_cells() {
    // ffmpeg writes no JPEG taller than 65 500 px. One frame per second makes the 727-cell limit reachable with a 740 s tiny clip.
    let settings = EncodeSettings {
        sprite_num_secs: 1,
        ..EncodeSettings::default()
    };
    let e = Env::with_settings(settings).await;
    let args = "-f lavfi -i testsrc2=size=64x36:rate=2 -t 740 -c:v libx264 -preset ultrafast";
    e.clip_at(ORIG1, "long.mp4", args);
    let h = ProduceSprites { env: e.env.clone() };
    assert_eq!(
        run(&e, &h, "produce_sprite_from_video", json!([FT1]), json!({})).await,
        ok(true)
    );
    let rel = e.text("SELECT sprites FROM files_media WHERE id = 1").await;
    let s = probe_summary(&e.root().join(rel)).unwrap();
    assert_eq!((s.width, s.height), (160, 727 * 90));
}
