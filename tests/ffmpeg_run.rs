//! The process runner against real ffmpeg and shell children: progress, cancellation latency
//! and reaping, process-group kill, niceness, failure details, bounded stderr.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use mediacms_worker::ffmpeg::probe::{validate_output, OutputKind};
use mediacms_worker::ffmpeg::progress::Progress;
use mediacms_worker::ffmpeg::run::{run, run_program, RunError, RunSpec, STDERR_TAIL_CHARS};
use support::media::{self, ClipSpec};
use tokio_util::sync::CancellationToken;

fn argv(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| (*a).to_owned()).collect()
}

/// A real-time (`-re`) encode that would run for a minute; `marker` tags its command line.
fn long_encode(marker: &str) -> Vec<String> {
    argv(&[
        "ffmpeg",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=10",
        "-t",
        "60",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-metadata",
        marker,
        "-f",
        "null",
        "-",
    ])
}

/// Finds our child whose command line contains `marker` (tests run in parallel threads).
fn child_pid(marker: &str) -> Option<u32> {
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(marker)
            && stat_field(pid, 4) == Some(me.to_string())
        {
            return Some(pid);
        }
    }
    None
}

/// Field `n` (1-based, as in proc(5)) of /proc/<pid>/stat; `n >= 3` (after `(comm)`, which
/// may contain spaces).
fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    after_comm.split_whitespace().nth(n - 3).map(str::to_owned)
}

async fn wait_for_child(marker: &str) -> u32 {
    for _ in 0..100 {
        if let Some(pid) = child_pid(marker) {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("child with {marker} never appeared");
}

#[tokio::test]
async fn encode_reports_monotonic_progress_ending_done() {
    let dir = tempfile::tempdir().unwrap();
    let input = media::clip(
        dir.path(),
        &ClipSpec {
            seconds: 3.0,
            ..ClipSpec::default()
        },
    );
    let output = dir.path().join("out.mp4");
    let spec = RunSpec::ffmpeg(
        "ffmpeg",
        argv(&[
            "ffmpeg",
            "-y",
            "-i",
            &input.to_string_lossy(),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            &output.to_string_lossy(),
        ]),
    );
    let mut seen: Vec<Progress> = Vec::new();
    let out = run(spec, &CancellationToken::new(), |p| seen.push(p))
        .await
        .unwrap();
    assert!(out.status.success());
    assert!(!seen.is_empty(), "no progress blocks");
    assert!(
        seen.windows(2).all(|w| w[0].out_time <= w[1].out_time),
        "{seen:?}"
    );
    let last = seen.last().unwrap();
    assert!(last.done, "last block is progress=end");
    assert!(seen[..seen.len() - 1].iter().all(|p| !p.done));
    assert!(
        last.out_time >= Duration::from_millis(2900),
        "{:?}",
        last.out_time
    );
    assert_eq!(
        out.argv[1..6],
        argv(&[
            "-hide_banner",
            "-nostdin",
            "-progress",
            "pipe:1",
            "-nostats"
        ])
    );
    assert_eq!(validate_output(&output).unwrap(), OutputKind::Video);
}

#[tokio::test]
async fn cancel_kills_within_5s_and_reaps_the_child() {
    let marker = "comment=cancel-test-marker";
    let cancel = CancellationToken::new();
    let spec = RunSpec::ffmpeg("ffmpeg", long_encode(marker));
    let task = {
        let cancel = cancel.clone();
        tokio::spawn(async move { run(spec, &cancel, |_| {}).await })
    };
    let pid = wait_for_child(marker).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = Instant::now();
    cancel.cancel();
    let result = task.await.unwrap();
    let latency = asked.elapsed();
    assert!(latency < Duration::from_secs(5), "cancel took {latency:?}");
    eprintln!("cancel latency: {latency:?}");
    match result {
        Err(RunError::Cancelled { argv, status, .. }) => {
            assert!(argv.iter().any(|a| a == marker));
            assert!(status.is_some(), "the child was reaped");
        }
        other => panic!("expected Cancelled, got {other:?}"),
    }
    // Reaped: no /proc entry at all (a zombie would still have one, in state Z).
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} left behind"
    );
}

#[tokio::test]
async fn cancel_kills_the_whole_process_group() {
    // The grandchild keeps the pipes open; only a group kill lets the run end promptly.
    let cancel = CancellationToken::new();
    let args = argv(&["-c", "sleep 30 & sleep 31; wait"]);
    let run_it = run_program("sh", &args, None, &cancel);
    let canceller = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.cancel();
    };
    let started = Instant::now();
    let (result, ()) = tokio::join!(run_it, canceller);
    assert!(
        matches!(result, Err(RunError::Cancelled { .. })),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn already_cancelled_token_starts_nothing() {
    let cancel = CancellationToken::new();
    cancel.cancel();
    let spec = RunSpec::ffmpeg("ffmpeg", long_encode("comment=never-started"));
    let started = Instant::now();
    let result = run(spec, &cancel, |_| {}).await;
    assert!(
        matches!(result, Err(RunError::Cancelled { status: None, .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn nice_is_applied_to_the_child() {
    let marker = "comment=nice-test-marker";
    let cancel = CancellationToken::new();
    let spec = RunSpec {
        nice: 7,
        ..RunSpec::ffmpeg("ffmpeg", long_encode(marker))
    };
    let task = {
        let cancel = cancel.clone();
        tokio::spawn(async move { run(spec, &cancel, |_| {}).await })
    };
    let pid = wait_for_child(marker).await;
    // Field 19 of /proc/<pid>/stat is the nice value (proc(5)).
    let nice = stat_field(pid, 19);
    cancel.cancel();
    let _ = task.await.unwrap();
    assert_eq!(nice.as_deref(), Some("7"));
}

#[tokio::test]
async fn failure_carries_argv_status_and_stderr_tail() {
    let dir = tempfile::tempdir().unwrap();
    let bad = media::garbage(dir.path());
    let out = dir.path().join("out.mp4");
    let spec = RunSpec::ffmpeg(
        "ffmpeg",
        argv(&[
            "ffmpeg",
            "-y",
            "-i",
            &bad.to_string_lossy(),
            &out.to_string_lossy(),
        ]),
    );
    let err = run(spec, &CancellationToken::new(), |_| {})
        .await
        .unwrap_err();
    let RunError::Failed {
        argv,
        status,
        stderr_tail,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert!(argv.contains(&bad.to_string_lossy().into_owned()));
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr_tail.contains("Invalid data found when processing input"),
        "{stderr_tail}"
    );
    let shown = err.to_string();
    assert!(
        shown.contains(&*bad.to_string_lossy()) && shown.contains("exit status: 1"),
        "{shown}"
    );
    assert!(shown.contains("Invalid data found"), "{shown}");
}

#[tokio::test]
async fn spawn_failure_names_the_program() {
    let spec = RunSpec::ffmpeg("/nonexistent/ffmpeg", argv(&["ffmpeg", "-version"]));
    let err = run(spec, &CancellationToken::new(), |_| {})
        .await
        .unwrap_err();
    assert!(matches!(&err, RunError::Spawn { argv, .. } if argv[0] == "/nonexistent/ffmpeg"));
    assert!(err.to_string().contains("/nonexistent/ffmpeg"), "{err}");
}

#[tokio::test]
async fn run_program_captures_stdout_and_bounds_stderr() {
    let script = "echo out-line; i=0; while [ $i -lt 3000 ]; do echo 'stderr filler line' >&2; \
                  i=$((i+1)); done; echo LAST-LINE >&2; exit 3";
    let err = run_program(
        "sh",
        &argv(&["-c", script]),
        None,
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    let RunError::Failed {
        status,
        stderr_tail,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(status.code(), Some(3));
    assert_eq!(stderr_tail.chars().count(), STDERR_TAIL_CHARS);
    assert!(stderr_tail.ends_with("LAST-LINE\n"));

    let dir = tempfile::tempdir().unwrap();
    let ok = run_program(
        "sh",
        &argv(&["-c", "pwd; echo note >&2"]),
        Some(dir.path()),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    let cwd = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(ok.stdout.trim(), cwd.to_string_lossy());
    assert_eq!(ok.stderr_tail, "note\n");
}

#[tokio::test]
async fn spawn_failure_says_why_in_the_encoding_log() {
    // An encode whose ffmpeg cannot start stores `stderr_tail()` in Encoding.logs: it must not
    // be empty, or the admin sees a failed Encoding with no reason.
    let spec = RunSpec::ffmpeg("/nonexistent/ffmpeg", argv(&["ffmpeg", "-version"]));
    let err = run(spec, &CancellationToken::new(), |_| {})
        .await
        .unwrap_err();
    let log = err.stderr_tail();
    assert!(
        log.contains("could not start /nonexistent/ffmpeg") && log.contains("No such file"),
        "{log}"
    );
}

/// Regression: the spawner's pre-exec guard compared the child's parent pid with 1, which is
/// always true when the worker itself is PID 1 (a container's exec-form entrypoint), so every
/// ffmpeg failed with EINVAL. The worker runs here as PID 1 of a new pid namespace.
#[test]
fn spawn_works_when_the_worker_is_pid_1() {
    let out = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(env!("CARGO_BIN_EXE_mediacms-worker"))
        .args(["probe", "--hwaccel", "software"])
        .output()
        .expect("unshare(1) runs (util-linux; needs root or CAP_SYS_ADMIN)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let ffmpeg_line = stdout.lines().next().unwrap_or_default();
    assert!(
        ffmpeg_line.contains("ffmpeg version") && !ffmpeg_line.contains("unusable"),
        "{stdout}"
    );
}
