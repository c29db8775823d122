//! Test commands the capability probe runs through the runner: a deadline per command, a short
//! reason from ffmpeg's error lines, a lazily made H.264 sample, a private scratch directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::caps::{broken, outcome, FeatureReport};
use super::run::{run, tail_chars, RunError, RunSpec};

/// Longest a single test command may take (a wedged driver must not stall start-up).
pub(super) const TEST_TIMEOUT: Duration = Duration::from_secs(20);
pub(super) const TEST_SOURCE: &str = "testsrc2=size=320x240:rate=25";

pub(super) fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// `ffmpeg -v error <pre> -f lavfi -i testsrc2 -frames:v 5 <filters> <codec> -f null -`.
pub(super) fn encode_args(pre: &[&str], filters: &[&str], codec: &[&str]) -> Vec<String> {
    let mut argv = args(&["ffmpeg", "-v", "error"]);
    argv.extend(args(pre));
    argv.extend(args(&["-f", "lavfi", "-i", TEST_SOURCE, "-frames:v", "5"]));
    argv.extend(args(filters));
    argv.extend(args(codec));
    argv.extend(args(&["-f", "null", "-"]));
    argv
}

/// Runs one test command with a deadline; `Err` is the reason it failed.
pub(super) async fn run_test(ffmpeg: &str, argv: Vec<String>) -> Result<(), String> {
    let spec = RunSpec {
        add_progress: false,
        ..RunSpec::ffmpeg(ffmpeg, argv)
    };
    let cancel = CancellationToken::new();
    let deadline = async {
        tokio::time::sleep(TEST_TIMEOUT).await;
        cancel.cancel();
        std::future::pending::<()>().await
    };
    let result = tokio::select! {
        r = run(spec, &cancel, |_| {}) => r,
        () = deadline => unreachable!("the deadline future never completes"),
    };
    result.map(|_| ()).map_err(|e| reason_of(&e))
}

/// A short, readable reason: the last error lines ffmpeg printed, with the exit status.
pub(super) fn reason_of(err: &RunError) -> String {
    match err {
        RunError::Spawn { source, .. } => format!("cannot run ffmpeg: {source}"),
        RunError::Cancelled { .. } => format!("timed out after {} s", TEST_TIMEOUT.as_secs()),
        RunError::Failed {
            status,
            stderr_tail,
            ..
        } => {
            let lines: Vec<&str> = stderr_tail
                .lines()
                .filter(|l| !l.trim().is_empty())
                .collect();
            let last = lines[lines.len().saturating_sub(3)..].join(" | ");
            format!("{} ({status})", tail_chars(&last, 400))
        }
    }
}

/// A small H.264 clip made on first use: hardware decoders need a real bitstream to decode.
pub(super) struct Sample<'a> {
    ffmpeg: &'a str,
    dir: &'a Path,
    made: Option<Result<PathBuf, String>>,
}

impl<'a> Sample<'a> {
    pub(super) fn new(ffmpeg: &'a str, dir: &'a Path) -> Self {
        Self {
            ffmpeg,
            dir,
            made: None,
        }
    }

    async fn path(&mut self) -> Result<PathBuf, String> {
        if self.made.is_none() {
            let out = self.dir.join("sample.mp4");
            let mut argv = args(&[
                "ffmpeg",
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                TEST_SOURCE,
            ]);
            argv.extend(args(&[
                "-frames:v",
                "10",
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p",
            ]));
            argv.push(out.to_string_lossy().into_owned());
            let made = run_test(self.ffmpeg, argv).await.map(|()| out);
            self.made = Some(made.map_err(|e| format!("cannot make the H.264 test clip: {e}")));
        }
        self.made.clone().expect("set above")
    }

    /// Runs a decode test built by `argv_for(input)` against the sample.
    pub(super) async fn test(
        &mut self,
        ffmpeg: &str,
        name: &str,
        argv_for: impl FnOnce(&str) -> Vec<String>,
    ) -> FeatureReport {
        let input = match self.path().await {
            Ok(p) => p,
            Err(reason) => return broken(name, reason),
        };
        let mut argv = args(&["ffmpeg", "-v", "error"]);
        argv.extend(argv_for(&input.to_string_lossy()));
        outcome(name, run_test(ffmpeg, argv).await)
    }
}

/// A private scratch directory, removed on drop.
pub(super) struct Scratch(PathBuf);

impl Scratch {
    pub(super) fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "mediacms-worker-caps-{}-{nanos}",
            std::process::id()
        ));
        // If this fails the sample cannot be written and the decode tests say so.
        let _ = std::fs::create_dir_all(&dir);
        Self(dir)
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
