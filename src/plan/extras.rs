//! The other ffmpeg commands of the long worker: gif preview (§2.2), sprites (§5.2), chunk
//! concatenation (§2.6), and the "real ffmpeg error" test that suppresses retries (§2.5).

use super::software::push;

/// Where MediaCMS's preview GIF starts (`-ss 3`).
pub const GIF_SEEK_SECS: f64 = 3.0;

/// What ffmpeg prints (and exits 0) when it wrote no frame, e.g. after seeking past the end.
const EMPTY_OUTPUT: &str = "Output file is empty, nothing was encoded";

/// MediaCMS's preview GIF seeks to 3 s: for a clip no longer than that the seek lands at or past
/// the end and ffmpeg writes nothing. Such clips get the GIF from their start instead; an
/// unknown duration (0 or absent) keeps MediaCMS's argv.
pub fn gif_seek_past_end(duration_secs: Option<f64>) -> bool {
    duration_secs.is_some_and(|d| d > 0.0 && d <= GIF_SEEK_SECS)
}

/// ffmpeg said it encoded nothing (it still exits 0): the output is empty, not a success.
pub fn ffmpeg_reported_empty(stderr: &str) -> bool {
    stderr.contains(EMPTY_OUTPUT)
}

/// The preview GIF from the start of the clip: MediaCMS's argv without `-ss 3`, for clips the
/// seek would skip entirely.
pub fn plan_gif_from_start(input: &str, output: &str) -> Vec<String> {
    let mut argv = plan_gif(input, output);
    argv.drain(2..4); // "-ss", "3"
    argv
}

/// MediaCMS's preview: 25 one-fps frames from second 3, 344 px wide. Always the original file.
pub fn plan_gif(input: &str, output: &str) -> Vec<String> {
    let mut a = Vec::new();
    push(
        &mut a,
        &["ffmpeg", "-y", "-ss", "3", "-i", input, "-hide_banner"],
    );
    push(
        &mut a,
        &["-vf", "scale=344:-1:flags=lanczos,fps=1", "-t", "25"],
    );
    push(&mut a, &["-f", "gif", output]);
    a
}

/// MediaCMS's sprite frames: one 160x90 JPEG every `sprite_num_secs` into `out_pattern`
/// (e.g. `<dir>/img%03d.jpg`), to be stacked vertically afterwards. The space after the comma
/// is MediaCMS's.
pub fn plan_sprite_frames(input: &str, out_pattern: &str, sprite_num_secs: u32) -> Vec<String> {
    let vf = format!("fps=1/{sprite_num_secs}, scale=160:90");
    let mut a = Vec::new();
    push(
        &mut a,
        &[
            "ffmpeg",
            "-i",
            input,
            "-f",
            "image2",
            "-vf",
            &vf,
            out_pattern,
        ],
    );
    a
}

/// One-process sprites: the vertical strip straight from ffmpeg (`tile=1x<frame_count>`),
/// replacing the frames + ImageMagick `-append` step.
///
/// `frame_count` must be what `fps=1/N` emits for the video ([`sprite_frame_count`]): a larger
/// value pads the strip with black cells, a smaller one drops frames. When it is 0 MediaCMS gets
/// no frame (and no sprites); callers should skip the command then — it is clamped to 1 here so
/// the argv stays valid. `-q:v 2` keeps the JPEG near ImageMagick's default quality.
pub fn plan_sprite_strip(
    input: &str,
    output_jpg: &str,
    sprite_num_secs: u32,
    frame_count: u32,
) -> Vec<String> {
    let vf = format!(
        "fps=1/{sprite_num_secs},scale=160:90,tile=1x{}",
        frame_count.max(1)
    );
    let mut a = Vec::new();
    push(&mut a, &["ffmpeg", "-y", "-i", input, "-vf", &vf]);
    push(
        &mut a,
        &["-frames:v", "1", "-update", "1", "-q:v", "2", output_jpg],
    );
    a
}

/// Frames `fps=1/n` emits for a video of `duration_secs`: ffmpeg rounds the end timestamp to the
/// nearest output tick (half away from zero), so it is `round(duration / n)`, not `ceil`.
///
/// Checked by hand with ffmpeg 5.1.9 (`-vf "fps=1/10, scale=160:90"` on 25 fps testsrc2 clips):
/// 4 s → 0, 5 s → 1, 8 s → 1, 12 s → 1, 15 s → 2, 16 s → 2, 25 s → 3, 310 s → 31 frames; and
/// `tile=1x<that>` gave 160x90, 160x90, 160x180 and 160x2790 for 8, 12, 15 and 310 s.
pub fn sprite_frame_count(duration_secs: f64, n: u32) -> u32 {
    if duration_secs.is_nan() || duration_secs <= 0.0 || n == 0 {
        return 0;
    }
    #[allow(clippy::cast_possible_truncation)] // positive; a frame count past u32 saturates
    let frames = (duration_secs / f64::from(n)).round() as u32;
    frames
}

/// MediaCMS's chunk concatenation (stream copy; the `-pix_fmt` is a no-op it keeps).
pub fn plan_concat(list_file: &str, output: &str) -> Vec<String> {
    let mut a = Vec::new();
    push(
        &mut a,
        &[
            "ffmpeg", "-y", "-f", "concat", "-safe", "0", "-i", list_file,
        ],
    );
    push(&mut a, &["-c", "copy", "-pix_fmt", "yuv420p"]);
    push(&mut a, &["-movflags", "faststart", output]);
    a
}

/// The concat demuxer's list: one `file <path>` line per chunk, in order. Paths are written bare
/// like MediaCMS when they hold only safe characters (all Django-sanitised names do), otherwise
/// single-quoted with the demuxer's `'\''` escape so spaces or quotes cannot break the list.
pub fn concat_list(paths: &[String]) -> String {
    paths
        .iter()
        .map(|p| format!("file {}\n", concat_quote(p)))
        .collect()
}

fn concat_quote(path: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+@%:=,".contains(c);
    if !path.is_empty() && path.chars().all(safe) {
        path.to_string()
    } else {
        format!("'{}'", path.replace('\'', "'\\''"))
    }
}

/// §2.5: ffmpeg outputs that mean "retrying will not help" (matched case-insensitively in the
/// stderr tail). Any other failure is retried once.
pub fn ffmpeg_error_is_final(tail: &str) -> bool {
    const FINAL: [&str; 3] = [
        "output file is empty, nothing was encoded",
        "invalid data found when processing input",
        "unable to find a suitable output format for",
    ];
    let lower = tail.to_lowercase();
    FINAL.iter().any(|needle| lower.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sprite_counts_round_half_up() {
        let counts: Vec<u32> = [4.0, 5.0, 8.0, 12.0, 15.0, 16.0, 25.0, 310.0]
            .iter()
            .map(|&d| sprite_frame_count(d, 10))
            .collect();
        assert_eq!(counts, [0, 1, 1, 1, 2, 2, 3, 31]);
        assert_eq!(sprite_frame_count(0.0, 10), 0);
        assert_eq!(sprite_frame_count(f64::NAN, 10), 0);
        assert_eq!(sprite_frame_count(30.0, 0), 0);
    }

    #[test]
    fn concat_list_quotes_only_unsafe_paths() {
        let list = concat_list(&["/m/a_1.mp4".to_string(), "/m/it's here.mp4".to_string()]);
        assert_eq!(list, "file /m/a_1.mp4\nfile '/m/it'\\''s here.mp4'\n");
    }

    #[test]
    fn final_errors_are_case_insensitive() {
        assert!(ffmpeg_error_is_final(
            "x: Invalid data found when processing input\n"
        ));
        assert!(ffmpeg_error_is_final(
            "OUTPUT FILE IS EMPTY, NOTHING WAS ENCODED"
        ));
        assert!(ffmpeg_error_is_final(
            "Unable to find a suitable output format for 'x.foo'"
        ));
        assert!(!ffmpeg_error_is_final("Conversion failed!"));
        assert!(!ffmpeg_error_is_final(""));
    }
}
