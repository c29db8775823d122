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

use super::rules::{decide, Decisions};
use super::software::{self, argv_with, Pass};
use super::{EncodeIo, EncodeSettings, MediaInfo, PlanSkip, ProfileSpec};

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
    let decided = rungs
        .iter()
        .map(|r| rung_decisions(info, &r.profile, settings))
        .collect::<Result<Vec<_>, _>>()?;
    let mut argv: Vec<String> = ["ffmpeg", "-y", "-i", input, "-filter_complex"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    argv.push(filter_graph(&decided));
    for (k, (rung, d)) in rungs.iter().zip(&decided).enumerate() {
        argv.extend(["-map".to_string(), format!("[v{k}]")]);
        if d.has_audio {
            argv.extend(["-map".to_string(), "0:a:0".to_string()]);
        }
        argv.extend(output_options(input, &rung.output, d, settings));
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
/// encodes: one ffmpeg process finishes all its outputs together), then the rest. One group when
/// either side is empty. Indices into `resolutions`.
pub fn ladder_groups(resolutions: &[i32], minimum: &[i32]) -> Vec<Vec<usize>> {
    let (low, high): (Vec<usize>, Vec<usize>) =
        (0..resolutions.len()).partition(|&i| minimum.contains(&resolutions[i]));
    [low, high].into_iter().filter(|g| !g.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_rungs_run_first_in_their_own_group() {
        let g = ladder_groups(&[360, 144, 720, 240, 480], &[144, 240]);
        assert_eq!(g, vec![vec![1, 3], vec![0, 2, 4]]);
        assert_eq!(ladder_groups(&[144, 240], &[144, 240]), vec![vec![0, 1]]);
        assert_eq!(ladder_groups(&[720, 480], &[144, 240]), vec![vec![0, 1]]);
        assert!(ladder_groups(&[], &[144]).is_empty());
    }
}
