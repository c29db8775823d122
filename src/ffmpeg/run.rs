//! The crate's only process spawner: ffmpeg (with `-progress`) and other children (whisper).
//!
//! Every child gets its own process group, stdin from /dev/null, concurrently drained stdout and
//! stderr, a bounded stderr tail, and is killed (SIGKILL to the group) and reaped when the
//! cancellation token fires. Every failure carries the argv, exit status and stderr tail.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::process::Command;
use tokio_util::sync::CancellationToken;

pub use super::drain::tail_chars;
use super::drain::{drain_stdout, drain_tail};
use super::progress::Progress;

/// Characters of stderr kept for `Encoding.logs` and errors (MediaCMS keeps ≤ ~510).
pub const STDERR_TAIL_CHARS: usize = 512;
/// Bytes of stderr kept for diagnostics (logs, the CLI).
pub const STDERR_LOG_BYTES: usize = 64 * 1024;
/// How long to wait for a killed child's pipes to close before giving up on them.
const REAP_GRACE: Duration = Duration::from_secs(3);

/// Options ffmpeg needs for a quiet, machine-readable, non-interactive run (ARCHITECTURE §5).
const FFMPEG_BASE_FLAGS: [&str; 2] = ["-hide_banner", "-nostdin"];
const FFMPEG_PROGRESS_FLAGS: [&str; 3] = ["-progress", "pipe:1", "-nostats"];

/// One ffmpeg invocation, as MediaCMS builds it (`argv[0] == "ffmpeg"`).
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    /// FFMPEG_COMMAND; replaces `argv[0]`.
    pub program: String,
    pub argv: Vec<String>,
    /// Niceness of the child (0..=19).
    pub nice: i32,
    pub cwd: Option<PathBuf>,
    /// Add `-progress pipe:1 -nostats` and parse progress blocks from stdout.
    pub add_progress: bool,
}

impl RunSpec {
    /// An ffmpeg run with progress reporting, nice 0, inherited cwd.
    pub fn ffmpeg(program: impl Into<String>, argv: Vec<String>) -> Self {
        Self {
            program: program.into(),
            argv,
            nice: 0,
            cwd: None,
            add_progress: true,
        }
    }

    /// The argv actually executed: program first, then the added flags, then MediaCMS's rest.
    pub fn effective_argv(&self) -> Vec<String> {
        let rest = self.argv.get(1..).unwrap_or_default();
        let present = |flag: &str| rest.iter().any(|a| a == flag);
        let mut out = vec![self.program.clone()];
        for flag in FFMPEG_BASE_FLAGS {
            if !present(flag) {
                out.push(flag.to_owned());
            }
        }
        if self.add_progress {
            if !present("-progress") {
                out.extend(["-progress", "pipe:1"].map(String::from));
            }
            if !present("-nostats") {
                out.push(FFMPEG_PROGRESS_FLAGS[2].to_owned());
            }
        }
        out.extend(rest.iter().cloned());
        out
    }
}

/// What a successful run leaves behind.
#[derive(Debug, Clone)]
pub struct RunOutput {
    pub argv: Vec<String>,
    pub status: ExitStatus,
    /// Last [`STDERR_TAIL_CHARS`] characters of stderr (may be empty: MediaCMS would have raised
    /// "No output from FFmpeg." — callers decide whether that matters).
    pub stderr_tail: String,
    /// Last [`STDERR_LOG_BYTES`] of stderr, lossily decoded.
    pub stderr_log: String,
    /// Captured stdout (empty for progress runs: stdout carries the progress blocks).
    pub stdout: String,
    pub elapsed: Duration,
}

/// Why a run did not succeed. Each variant names the argv; Display shows status and stderr tail.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("could not start `{}`: {source}", Argv(argv))]
    Spawn {
        argv: Vec<String>,
        #[source]
        source: std::io::Error,
        /// What `Encoding.logs` gets: why the program could not start (there is no stderr).
        log: String,
    },
    #[error("`{}` failed ({status}): {stderr_tail}", Argv(argv))]
    Failed {
        argv: Vec<String>,
        status: ExitStatus,
        stderr_tail: String,
    },
    #[error("`{}` cancelled ({}): {stderr_tail}", Argv(argv), Status(status))]
    Cancelled {
        argv: Vec<String>,
        status: Option<ExitStatus>,
        stderr_tail: String,
    },
}

impl RunError {
    fn spawn(argv: Vec<String>, source: std::io::Error) -> Self {
        let program = argv.first().map_or("", String::as_str);
        let log = format!("could not start {program}: {source}");
        Self::Spawn { argv, source, log }
    }

    pub fn argv(&self) -> &[String] {
        match self {
            Self::Spawn { argv, .. } | Self::Failed { argv, .. } | Self::Cancelled { argv, .. } => {
                argv
            }
        }
    }

    /// The text to store in `Encoding.logs`: the stderr tail, or why the program did not start.
    pub fn stderr_tail(&self) -> &str {
        match self {
            Self::Spawn { log, .. } => log,
            Self::Failed { stderr_tail, .. } | Self::Cancelled { stderr_tail, .. } => stderr_tail,
        }
    }
}

/// Shell-like rendering of an argv for messages (quotes only where needed).
struct Argv<'a>(&'a [String]);

impl fmt::Display for Argv<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, arg) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            let plain = !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+%@".contains(c));
            if plain {
                f.write_str(arg)?;
            } else {
                write!(f, "'{}'", arg.replace('\'', r"'\''"))?;
            }
        }
        Ok(())
    }
}

struct Status<'a>(&'a Option<ExitStatus>);

impl fmt::Display for Status<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(s) => write!(f, "{s}"),
            None => f.write_str("not reaped"),
        }
    }
}

/// Runs ffmpeg as described by `spec`, calling `progress` for each `-progress` block.
pub async fn run(
    spec: RunSpec,
    cancel: &CancellationToken,
    progress: impl FnMut(Progress),
) -> Result<RunOutput, RunError> {
    let argv = spec.effective_argv();
    let child = Child {
        argv,
        nice: spec.nice,
        cwd: spec.cwd,
        parse_progress: spec.add_progress,
    };
    child.run(cancel, progress).await
}

/// Runs any other program (whisper, …) with the same guarantees; stdout is captured.
pub async fn run_program(
    program: &str,
    args: &[String],
    cwd: Option<&Path>,
    cancel: &CancellationToken,
) -> Result<RunOutput, RunError> {
    let mut argv = vec![program.to_owned()];
    argv.extend(args.iter().cloned());
    let child = Child {
        argv,
        nice: 0,
        cwd: cwd.map(Path::to_path_buf),
        parse_progress: false,
    };
    child.run(cancel, |_| {}).await
}

/// Whether a child forked by `parent` has lost it: its parent pid is no longer the worker's.
/// True only when the worker really died, also when the worker is PID 1 (its children see 1).
fn parent_died(parent: u32, ppid_now: libc::pid_t) -> bool {
    u32::try_from(ppid_now).ok() != Some(parent)
}

struct Child {
    argv: Vec<String>,
    nice: i32,
    cwd: Option<PathBuf>,
    parse_progress: bool,
}

impl Child {
    fn command(&self) -> Command {
        #[allow(clippy::disallowed_methods)] // this is the one process spawner (clippy.toml)
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own group so a cancel kills whatever the child forks too; kill_on_drop covers a
            // caller that drops the future instead of cancelling.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        let nice = self.nice;
        // Recorded before fork: the child compares its parent with it. Comparing with 1 instead
        // would refuse every spawn of a worker that is PID 1 itself (a container's entrypoint).
        let parent = std::process::id();
        // SAFETY: only async-signal-safe calls (prctl, getppid, setpriority) run between fork
        // and exec.
        unsafe {
            cmd.pre_exec(move || {
                // A worker killed with SIGKILL cannot kill its children: have the kernel do it,
                // so no orphaned ffmpeg keeps encoding (and writing) after its worker is gone.
                // The signal follows the forking *thread*; spawns happen on the runtime's
                // long-lived worker threads, never on short-lived blocking-pool threads.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect: then the child was
                // reparented (to PID 1 or a subreaper) and its parent is no longer the worker.
                if parent_died(parent, libc::getppid()) {
                    return Err(std::io::Error::other("parent exited before exec"));
                }
                if nice != 0 && libc::setpriority(libc::PRIO_PROCESS, 0, nice) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    async fn run(
        self,
        cancel: &CancellationToken,
        mut on_progress: impl FnMut(Progress),
    ) -> Result<RunOutput, RunError> {
        let started = Instant::now();
        let mut child = match self.start(cancel) {
            Ok(child) => child,
            Err(e) => return Err(e),
        };
        let pid = child.id();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let parse = self.parse_progress;
        let work = async {
            let out = drain_stdout(stdout, parse, &mut on_progress);
            let err = drain_tail(stderr, STDERR_LOG_BYTES);
            let (out, err, status) = tokio::join!(out, err, child.wait());
            (out, err, status.ok())
        };
        tokio::pin!(work);
        let mut cancelled = false;
        let (stdout, stderr, status) = tokio::select! {
            done = &mut work => done,
            () = cancel.cancelled() => {
                cancelled = true;
                kill_group(pid);
                // The group is dead, so the pipes close and `wait` reaps: finish the same future.
                tokio::time::timeout(REAP_GRACE, &mut work).await.unwrap_or_default()
            }
        };
        let output = Finished {
            stdout,
            stderr,
            status,
            cancelled,
            elapsed: started.elapsed(),
        };
        output.into_result(self.argv)
    }

    /// Checks the argv and the token, then spawns.
    fn start(&self, cancel: &CancellationToken) -> Result<tokio::process::Child, RunError> {
        let argv = || self.argv.clone();
        if self.argv.first().is_none_or(|p| p.is_empty()) {
            let source = std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty argv");
            return Err(RunError::spawn(argv(), source));
        }
        if cancel.is_cancelled() {
            // Nothing to kill: do not start a child that would be killed at once.
            return Err(RunError::Cancelled {
                argv: argv(),
                status: None,
                stderr_tail: String::new(),
            });
        }
        self.command()
            .spawn()
            .map_err(|source| RunError::spawn(argv(), source))
    }
}

/// What a child left behind, before it is judged.
struct Finished {
    stdout: String,
    stderr: String,
    status: Option<ExitStatus>,
    cancelled: bool,
    elapsed: Duration,
}

impl Finished {
    fn into_result(self, argv: Vec<String>) -> Result<RunOutput, RunError> {
        let stderr_tail = tail_chars(&self.stderr, STDERR_TAIL_CHARS);
        match self.status {
            _ if self.cancelled => Err(RunError::Cancelled {
                argv,
                status: self.status,
                stderr_tail,
            }),
            Some(status) if status.success() => Ok(RunOutput {
                argv,
                status,
                stderr_tail,
                stderr_log: self.stderr,
                stdout: self.stdout,
                elapsed: self.elapsed,
            }),
            Some(status) => Err(RunError::Failed {
                argv,
                status,
                stderr_tail,
            }),
            None => Err(RunError::spawn(
                argv,
                std::io::Error::other("waiting for the child failed"),
            )),
        }
    }
}

fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: plain syscall. The group leader is not reaped yet (we still hold `wait`), so
        // the group id cannot have been reused by an unrelated process.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

/// `command` itself when it names a file, else the first executable match on PATH.
pub fn find_program(command: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if command.contains('/') {
        let p = PathBuf::from(command);
        return executable(&p).then_some(p);
    }
    // PATH is looked up when the program runs, as execvp would (a CLI installed after start is
    // found): part of spawning, so it lives with the one spawner.
    #[allow(clippy::disallowed_methods)]
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(command))
        .find(|p| executable(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn inserts_flags_after_program_and_keeps_dash_y() {
        let spec = RunSpec::ffmpeg(
            "/usr/bin/ffmpeg",
            s(&["ffmpeg", "-y", "-i", "in.mp4", "out.mp4"]),
        );
        assert_eq!(
            spec.effective_argv(),
            s(&[
                "/usr/bin/ffmpeg",
                "-hide_banner",
                "-nostdin",
                "-progress",
                "pipe:1",
                "-nostats",
                "-y",
                "-i",
                "in.mp4",
                "out.mp4"
            ])
        );
    }

    #[test]
    fn skips_flags_already_present_and_progress_when_not_wanted() {
        let mut spec = RunSpec::ffmpeg(
            "ffmpeg",
            s(&["ffmpeg", "-nostdin", "-progress", "x", "-i", "a"]),
        );
        assert_eq!(
            spec.effective_argv(),
            s(&[
                "ffmpeg",
                "-hide_banner",
                "-nostats",
                "-nostdin",
                "-progress",
                "x",
                "-i",
                "a"
            ])
        );
        spec.add_progress = false;
        spec.argv = s(&["ffmpeg", "-i", "a"]);
        assert_eq!(
            spec.effective_argv(),
            s(&["ffmpeg", "-hide_banner", "-nostdin", "-i", "a"])
        );
    }

    #[test]
    fn argv_display_quotes_only_when_needed() {
        let argv = s(&["ffmpeg", "-vf", "fps=1/10, scale=160:90", "it's"]);
        assert_eq!(
            Argv(&argv).to_string(),
            r"ffmpeg -vf 'fps=1/10, scale=160:90' 'it'\''s'"
        );
    }

    #[test]
    fn parent_died_only_when_the_parent_pid_changed() {
        // A worker that is PID 1 (container entrypoint): its children see ppid 1, alive.
        assert!(!parent_died(1, 1));
        assert!(!parent_died(4242, 4242));
        // Reparented to init or to a subreaper: the worker is gone.
        assert!(parent_died(4242, 1));
        assert!(parent_died(4242, 77));
    }
}
