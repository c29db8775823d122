//! Concurrent draining of a child's pipes: progress parsing from stdout, bounded tails.

use std::collections::VecDeque;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

use super::progress::{Progress, ProgressParser};

/// Bytes of stdout kept for non-progress runs (e.g. whisper's transcript echo).
const STDOUT_KEEP_BYTES: usize = 256 * 1024;

/// Reads stdout to the end: progress blocks go to the callback, otherwise a bounded copy is kept.
pub(super) async fn drain_stdout(
    stdout: impl AsyncRead + Unpin,
    parse_progress: bool,
    on_progress: &mut impl FnMut(Progress),
) -> String {
    if !parse_progress {
        return drain_tail(stdout, STDOUT_KEEP_BYTES).await;
    }
    let mut parser = ProgressParser::new();
    let mut lines = BufReader::new(stdout).lines();
    // A read error means the pipe is gone; the exit status tells the rest of the story.
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(p) = parser.push_line(&line) {
            on_progress(p);
        }
    }
    String::new()
}

/// Reads a stream to the end, keeping only its last `keep` bytes, decoded lossily.
pub(super) async fn drain_tail(mut stream: impl AsyncRead + Unpin, keep: usize) -> String {
    let mut ring: VecDeque<u8> = VecDeque::with_capacity(keep.min(8192));
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                ring.extend(&buf[..n]);
                let excess = ring.len().saturating_sub(keep);
                ring.drain(..excess);
            }
        }
    }
    String::from_utf8_lossy(ring.make_contiguous()).into_owned()
}

/// The last `n` characters of `text`.
pub fn tail_chars(text: &str, n: usize) -> String {
    let count = text.chars().count();
    text.chars().skip(count.saturating_sub(n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_chars_on_char_boundaries() {
        assert_eq!(tail_chars("abcdé", 2), "dé");
        assert_eq!(tail_chars("ab", 10), "ab");
    }

    #[tokio::test]
    async fn drain_keeps_only_the_last_bytes() {
        let data = b"0123456789".repeat(10);
        assert_eq!(drain_tail(&data[..], 5).await, "56789");
    }
}
