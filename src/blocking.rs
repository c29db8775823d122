//! Blocking work — libav probes, keyframe reads, copies and renames of big files, removing old
//! HLS trees — runs on tokio's blocking pool through [`run`], never on the runtime threads that
//! drive every job's database I/O, ffmpeg pipes and lease renewals.

/// Run `f` on the blocking pool and wait for it. A panic inside `f` resumes in the caller, so
/// the pool's per-job panic guard sees it exactly as if `f` had run inline.
pub async fn run<T, F>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Only a runtime shutting down cancels blocking tasks; nothing is left to return to.
            Err(e) => panic!("blocking task cancelled: {e}"),
        },
    }
}
