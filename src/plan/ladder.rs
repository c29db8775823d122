//! Decode-once ladder planning: several video renditions of one source from ONE ffmpeg process.
//!
//! Only the decode/scale graph is shared. Each output's encoder options are cut out of the very
//! argv MediaCMS would run for that profile ([`software::argv_with`]), so `-c:v`/`-crf`/
//! `-maxrate`/`-bufsize`/`-force_key_frames`/`-x264-params`/`-preset`/`-profile:v`/`-level`/
//! audio/`-threads`/`-strict` are equal by construction; only `-filter:v` moves into
//! `-filter_complex`. Every rung is scaled from the decoded source (`split`, not a cascade from
//! the 720 picture), so each rendition gets exactly MediaCMS's frames (perf-baseline "b1").
//!
//! Deviations, documented: the video input is `0:v:0` and audio `0:a:0` (ffmpeg's automatic
//! choice for a one-output command can differ on files with several video/audio streams).
//!
//! Memory bound (issue 18): one process holding several x264 encoders holds the sum of their
//! lookahead and frame-thread buffers (360–1080 of a 1080p source peaked at ~930 MB RSS against
//! ~545 MB for MediaCMS's own 1080p encode; ffmpeg 5.1 has no frame queue that grows here: the
//! peak is the encoders' own). [`ladder_groups`] therefore never puts more pixels in one process
//! than one 1080p frame ([`MEMORY_BOUND_PIXELS`]) unless a rung alone has more: a 1080p
//! source's 1080 rung gets its own process (one more decode) and 360–720 share one. Tried first
//! and dropped: capping each x264 output's `rc-lookahead` (20) and threads (2) in one process
//! kept the single decode at 619 MB but cost SSIM (0.984–0.988 against MediaCMS's renditions on
//! bbb, BENCHMARKS.md); encoder options stay MediaCMS's exactly.

use super::rules::{decide, Decisions};
use super::software::{self, argv_with, Pass};
use super::{EncodeIo, EncodeSettings, MediaInfo, PlanSkip, ProfileSpec};

/// The most pixels (summed over its rungs' frames) one ladder process encodes, unless one rung
/// alone has more: one 1080p frame, MediaCMS's own largest single encode.
pub const MEMORY_BOUND_PIXELS: i64 = 1920 * 1080;

/// One rendition of a ladder: the profile and the temp file it is written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LadderRung {
    pub profile: ProfileSpec,
    pub output: String,
}

/// Why a rung cannot join a ladder.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LadderSkip {
    /// MediaCMS would not encode this profile at all (the Encoding fails, as one-by-one).
    #[error(transparent)]
    Plan(#[from] PlanSkip),
    /// Sources of ≤ 2 s are two-pass in MediaCMS; a shared graph cannot replay pass 1.
    #[error("two-pass encode (source ≤ 2 s)")]
    TwoPass,
}

/// The argv of one ladder process (`argv[0] == "ffmpeg"`), outputs in `rungs` order.
pub fn plan_ladder(
    input: &str,
    info: &MediaInfo,
    rungs: &[LadderRung],
    settings: &EncodeSettings,
) -> Result<Vec<String>, LadderSkip> {
    plan_ladder_with_gif(input, info, rungs, None, settings)
}

/// Whether MediaCMS's preview GIF can come out of a ladder's shared decode with its own bytes:
/// the source is long enough for its 3 s seek (else the one-by-one path makes it from the
/// start) and not interlaced (the shared graph deinterlaces; MediaCMS's GIF does not).
pub fn gif_joins_ladder(info: &MediaInfo) -> bool {
    let long_enough = info
        .video_duration
        .is_some_and(|d| d > super::extras::GIF_SEEK_SECS + 1.0);
    long_enough && !info.interlaced
}

/// [`plan_ladder`] plus, when `gif` names an output, MediaCMS's preview GIF as one more output
/// of the same decode (see [`plan_ladder_with`]).
pub fn plan_ladder_with_gif(
    input: &str,
    info: &MediaInfo,
    rungs: &[LadderRung],
    gif: Option<&str>,
    settings: &EncodeSettings,
) -> Result<Vec<String>, LadderSkip> {
    let extras = LadderExtras { gif, sprites: None };
    plan_ladder_with(input, info, rungs, &extras, settings)
}

/// MediaCMS's sprite frames as a ladder output: `fps=1/<every>, scale=160:90` into `pattern`
/// (`img%03d.jpg`), at most `max_frames`, as `produce_sprite_from_video`'s first command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpriteFrames<'a> {
    pub pattern: &'a str,
    pub every_secs: u32,
    pub max_frames: u32,
}

/// The non-rendition outputs a ladder process may also write from its decode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LadderExtras<'a> {
    /// MediaCMS's preview GIF, to this path.
    pub gif: Option<&'a str>,
    pub sprites: Option<SpriteFrames<'a>>,
}

/// [`plan_ladder`] plus the extras, each one more `split` output taken before any per-rung
/// filter (callers keep interlaced sources out: MediaCMS's GIF and sprite commands do not
/// deinterlace). The GIF: `-ss 3 … -vf scale=344:-1:flags=lanczos,fps=1 -t 25 -f gif` becomes
/// the branch `trim=start=3,setpts=PTS-3/TB,scale…,fps=1` (the seek's exact offset, so the fps
/// filter picks the same frames: byte-identical GIFs, measured) and `-t 25 -f gif`. The sprite
/// frames: the branch `fps=1/N,scale=160:90` and `-frames:v <max> -f image2 <pattern>`.
pub fn plan_ladder_with(
    input: &str,
    info: &MediaInfo,
    rungs: &[LadderRung],
    extras: &LadderExtras<'_>,
    settings: &EncodeSettings,
) -> Result<Vec<String>, LadderSkip> {
    let decided = rungs
        .iter()
        .map(|r| rung_decisions(info, &r.profile, settings))
        .collect::<Result<Vec<_>, _>>()?;
    let mut argv: Vec<String> = ["ffmpeg", "-y", "-i", input, "-filter_complex"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut branches = Vec::new();
    if extras.gif.is_some() {
        branches.push(("g", GIF_BRANCH.to_string()));
    }
    if let Some(sp) = extras.sprites {
        let chain = format!("fps=1/{},scale=160:90", sp.every_secs);
        branches.push(("p", chain));
    }
    argv.push(with_branches(
        &filter_graph(&decided),
        decided.len(),
        &branches,
    ));
    for (k, (rung, d)) in rungs.iter().zip(&decided).enumerate() {
        argv.extend(["-map".to_string(), format!("[v{k}]")]);
        if d.has_audio {
            argv.extend(["-map".to_string(), "0:a:0".to_string()]);
        }
        argv.extend(output_options(input, &rung.output, d, settings));
    }
    if let Some(out) = extras.gif {
        let tail = ["-map", "[g]", "-t", "25", "-f", "gif", out];
        argv.extend(tail.iter().map(|s| s.to_string()));
    }
    if let Some(sp) = extras.sprites {
        let max = sp.max_frames.to_string();
        let tail = ["-map", "[p]", "-frames:v", &max, "-f", "image2", sp.pattern];
        argv.extend(tail.iter().map(|s| s.to_string()));
    }
    Ok(argv)
}

/// MediaCMS's decisions for a rung, refusing what a shared graph cannot do.
pub fn rung_decisions(
    info: &MediaInfo,
    profile: &ProfileSpec,
    settings: &EncodeSettings,
) -> Result<Decisions, LadderSkip> {
    let d = decide(info, profile, settings)?;
    if d.two_pass {
        return Err(LadderSkip::TwoPass);
    }
    Ok(d)
}

/// `[0:v:0][yadif,]split=N[s0]…;[s0]scale…,fps=fps=…[v0];…` — deinterlacing (the same for every
/// rung, it depends only on the source) runs once before the split.
pub fn filter_graph(decided: &[Decisions]) -> String {
    let n = decided.len();
    let deint = if decided.first().is_some_and(|d| d.interlaced) {
        "yadif,"
    } else {
        ""
    };
    let per_rung = |k: usize, d: &Decisions| {
        format!(
            "{},{}",
            software::scale_filter(d.resolution),
            software::fps_filter(d)
        ) + &format!("[v{k}]")
    };
    if n == 1 {
        let chain = deint.to_string() + &per_rung(0, &decided[0]);
        return format!("[0:v:0]{chain}");
    }
    let labels: String = (0..n).map(|k| format!("[s{k}]")).collect();
    let mut graph = format!("[0:v:0]{deint}split={n}{labels}");
    for (k, d) in decided.iter().enumerate() {
        graph.push_str(&format!(";[s{k}]{}", per_rung(k, d)));
    }
    graph
}

/// The GIF branch's chain (see [`plan_ladder_with`]).
const GIF_BRANCH: &str = "trim=start=3,setpts=PTS-3/TB,scale=344:-1:flags=lanczos,fps=1";

/// Adds extra branches `(label, chain)` to a graph of `n` rungs: one more `split` output each,
/// `[s<label>]<chain>[<label>]`, taken before any per-rung filter.
fn with_branches(graph: &str, n: usize, branches: &[(&str, String)]) -> String {
    if branches.is_empty() {
        return graph.to_string();
    }
    let extra: String = branches.iter().map(|(l, _)| format!("[s{l}]")).collect();
    let labels: String = (0..n).map(|k| format!("[s{k}]")).collect();
    let video = if n == 1 {
        // `[0:v:0]<chain>[v0]` → `[0:v:0]split=K[s0][s…];[s0]<chain>[v0]`
        let chain = graph.trim_start_matches("[0:v:0]");
        format!("[0:v:0]split={}[s0]{extra};[s0]{chain}", 1 + branches.len())
    } else {
        graph.replacen(
            &format!("split={n}{labels}"),
            &format!("split={}{labels}{extra}", n + branches.len()),
            1,
        )
    };
    let tails: String = branches
        .iter()
        .map(|(l, chain)| format!(";[s{l}]{chain}[{l}]"))
        .collect();
    video + &tails
}

/// The output options of MediaCMS's own argv for this rung: everything after `-i <input>`,
/// minus the `-filter:v <chain>` pair (its work is done in the shared graph).
fn output_options(
    input: &str,
    output: &str,
    d: &Decisions,
    settings: &EncodeSettings,
) -> Vec<String> {
    let io = EncodeIo {
        input,
        output,
        pass_file: "",
        chunk: false,
    };
    let full = argv_with(&io, d, settings, Pass::Crf, &[], "");
    let after_input = full.iter().position(|a| a == "-i").map_or(0, |i| i + 2);
    let mut opts = full[after_input..].to_vec();
    if let Some(f) = opts.iter().position(|a| a == "-filter:v") {
        opts.drain(f..f + 2);
    }
    opts
}

/// Which rungs run in which process, in order: the `MINIMUM_RESOLUTIONS_TO_ENCODE` rungs first in
/// their own quick process (so the first playable rendition does not wait for the 720p/1080p
/// encodes: one ffmpeg process finishes all its outputs together), then the rest, split so no
/// process has more than [`MEMORY_BOUND_PIXELS`] (see [`memory_groups`]). Indices into
/// `resolutions`.
pub fn ladder_groups(resolutions: &[i32], minimum: &[i32]) -> Vec<Vec<usize>> {
    let (low, high): (Vec<usize>, Vec<usize>) =
        (0..resolutions.len()).partition(|&i| minimum.contains(&resolutions[i]));
    let mut groups = vec![low];
    groups.extend(memory_groups(resolutions, high));
    groups.retain(|g| !g.is_empty());
    groups
}

/// The rungs `idx` in processes of at most [`MEMORY_BOUND_PIXELS`] each (a rung above it alone):
/// tallest first into a process until the next one does not fit; emitted smallest process
/// first, so more renditions land before the long 1080p encode.
fn memory_groups(resolutions: &[i32], mut idx: Vec<usize>) -> Vec<Vec<usize>> {
    let area = |i: usize| {
        let h = i64::from(resolutions[i]);
        h * super::rules::box_long_side(resolutions[i])
    };
    idx.sort_by_key(|&i| std::cmp::Reverse(resolutions[i]));
    let mut groups: Vec<(i64, Vec<usize>)> = Vec::new();
    for i in idx {
        match groups.last_mut() {
            Some((sum, g)) if *sum + area(i) <= MEMORY_BOUND_PIXELS => {
                *sum += area(i);
                g.push(i);
            }
            _ => groups.push((area(i), vec![i])),
        }
    }
    groups.sort_by_key(|(sum, _)| *sum);
    groups
        .into_iter()
        .map(|(_, mut g)| {
            g.sort_unstable();
            g
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rung(resolution: i32) -> LadderRung {
        LadderRung {
            profile: ProfileSpec {
                id: 0,
                extension: "mp4".into(),
                resolution: Some(resolution),
                codec: Some("h264".into()),
            },
            output: format!("out{resolution}.mp4"),
        }
    }

    fn info_1080() -> MediaInfo {
        MediaInfo::from_json(
            r#"{"video_frame_rate_n": "30", "video_frame_rate_d": "1", "video_height": 1080,
                "video_width": 1920, "video_duration": 30.0, "has_audio": true}"#,
        )
    }

    #[test]
    fn the_gif_is_one_more_split_output_with_mediacms_options() {
        let s = EncodeSettings::default();
        let one = plan_ladder_with_gif("IN", &info_1080(), &[rung(144)], Some("p.gif"), &s);
        let one = one.unwrap();
        assert!(
            one[5].starts_with("[0:v:0]split=2[s0][sg];[s0]scale="),
            "{}",
            one[5]
        );
        assert!(one[5].ends_with(
            "[v0];[sg]trim=start=3,setpts=PTS-3/TB,scale=344:-1:flags=lanczos,fps=1[g]"
        ));
        assert_eq!(
            one[one.len() - 7..],
            ["-map", "[g]", "-t", "25", "-f", "gif", "p.gif"]
        );
        let two = plan_ladder_with_gif(
            "IN",
            &info_1080(),
            &[rung(144), rung(240)],
            Some("p.gif"),
            &s,
        );
        assert!(two.unwrap()[5].starts_with("[0:v:0]split=3[s0][s1][sg];"));
        assert!(gif_joins_ladder(&info_1080()));
        let short = MediaInfo::from_json(r#"{"video_height": 720, "video_duration": 3.5}"#);
        assert!(!gif_joins_ladder(&short));
    }

    #[test]
    fn gif_and_sprite_frames_are_two_more_split_outputs() {
        let s = EncodeSettings::default();
        let sprites = SpriteFrames {
            pattern: "d/img%03d.jpg",
            every_secs: 10,
            max_frames: 727,
        };
        let extras = LadderExtras {
            gif: Some("p.gif"),
            sprites: Some(sprites),
        };
        let rungs = [rung(144), rung(240)];
        let a = plan_ladder_with("IN", &info_1080(), &rungs, &extras, &s).unwrap();
        assert!(
            a[5].starts_with("[0:v:0]split=4[s0][s1][sg][sp];"),
            "{}",
            a[5]
        );
        assert!(a[5].ends_with(";[sp]fps=1/10,scale=160:90[p]"), "{}", a[5]);
        let tail = [
            "-map",
            "[p]",
            "-frames:v",
            "727",
            "-f",
            "image2",
            "d/img%03d.jpg",
        ];
        assert_eq!(a[a.len() - 7..], tail);
        let only = LadderExtras {
            gif: None,
            sprites: Some(sprites),
        };
        let one = plan_ladder_with("IN", &info_1080(), &[rung(144)], &only, &s).unwrap();
        assert!(
            one[5].starts_with("[0:v:0]split=2[s0][sp];[s0]scale="),
            "{}",
            one[5]
        );
    }

    /// Issue 18: a 1080p source's 1080 rung gets its own process (memory), 360–720 share one,
    /// smaller process first; encoder options are untouched.
    #[test]
    fn no_process_holds_more_than_one_1080p_encode_of_pixels() {
        let g = ladder_groups(&[144, 240, 360, 480, 720, 1080], &[144, 240]);
        assert_eq!(g, vec![vec![0, 1], vec![2, 3, 4], vec![5]]);
        let g = ladder_groups(&[1080, 720, 2160, 144], &[144, 240]);
        assert_eq!(g, vec![vec![3], vec![1], vec![0], vec![2]]);
        assert_eq!(ladder_groups(&[360, 480, 720], &[144]), vec![vec![0, 1, 2]]);
        let s = EncodeSettings::default();
        let rungs = [rung(720), rung(1080)];
        let a = plan_ladder("IN", &info_1080(), &rungs, &s).unwrap();
        assert!(!a.contains(&"-rc-lookahead".to_string()));
    }

    #[test]
    fn minimum_rungs_run_first_in_their_own_group() {
        let g = ladder_groups(&[360, 144, 720, 240, 480], &[144, 240]);
        assert_eq!(g, vec![vec![1, 3], vec![0, 2, 4]]);
        assert_eq!(ladder_groups(&[144, 240], &[144, 240]), vec![vec![0, 1]]);
        assert_eq!(ladder_groups(&[720, 480], &[144, 240]), vec![vec![0, 1]]);
        assert!(ladder_groups(&[], &[144]).is_empty());
    }
}
