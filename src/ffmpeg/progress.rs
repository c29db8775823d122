//! Pure parsing of ffmpeg's `-progress` key=value blocks, progress percentages, and the save throttle.

use std::time::{Duration, Instant};

/// One `-progress` block, reduced to what the worker uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Output timestamp reached so far (`out_time_us`, else `out_time_ms`, else `out_time`).
    pub out_time: Duration,
    pub fps: Option<f64>,
    /// Encode speed as a multiple of real time (`1.5x` → 1.5).
    pub speed: Option<f64>,
    /// `progress=end`: the last block ffmpeg writes.
    pub done: bool,
}

/// Accumulates `key=value` lines until a `progress=` line closes a block.
#[derive(Debug, Default)]
pub struct ProgressParser {
    out_time_us: Option<i64>,
    out_time_ms: Option<i64>,
    out_time: Option<Duration>,
    fps: Option<f64>,
    speed: Option<f64>,
    last_out_time: Duration,
}

impl ProgressParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one line of ffmpeg's stdout; returns a [`Progress`] when the line ends a block.
    pub fn push_line(&mut self, line: &str) -> Option<Progress> {
        let (key, value) = line.trim().split_once('=')?;
        let value = value.trim();
        match key.trim() {
            "out_time_us" => self.out_time_us = value.parse().ok(),
            // ffmpeg writes microseconds under this name too (a long-standing ffmpeg naming bug).
            "out_time_ms" => self.out_time_ms = value.parse().ok(),
            "out_time" => self.out_time = parse_clock(value),
            "fps" => self.fps = value.parse().ok().filter(|f: &f64| f.is_finite()),
            "speed" => {
                self.speed = value
                    .trim_end_matches('x')
                    .trim()
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite())
            }
            "progress" => return Some(self.finish_block(value == "end")),
            _ => {}
        }
        None
    }

    fn finish_block(&mut self, done: bool) -> Progress {
        let micros = self.out_time_us.or(self.out_time_ms);
        let out_time = match micros {
            // Negative or absent times appear before the first packet is muxed; keep the last value
            // so a consumer never sees progress go backwards.
            Some(us) if us >= 0 => Duration::from_micros(us as u64),
            _ => self.out_time.unwrap_or(self.last_out_time),
        };
        let out_time = out_time.max(self.last_out_time);
        self.last_out_time = out_time;
        let progress = Progress {
            out_time,
            fps: self.fps,
            speed: self.speed,
            done,
        };
        let last = self.last_out_time;
        *self = Self {
            last_out_time: last,
            ..Self::default()
        };
        progress
    }
}

/// Parses `HH:MM:SS.micros` (ffmpeg's `out_time`); `N/A` and negative clocks yield `None`.
pub fn parse_clock(value: &str) -> Option<Duration> {
    let mut parts = value.trim().split(':');
    let h: u64 = parts.next()?.parse().ok()?;
    let m: u64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(0.0..60.0).contains(&s) {
        return None;
    }
    Some(Duration::from_secs(h * 3600 + m * 60) + Duration::from_secs_f64(s))
}

/// Percentage of `duration_secs` reached at `out_time`, truncated like Django's `int()` into
/// the smallint column, clamped to 0..=100. A zero/unknown duration gives 0 instead of MediaCMS's
/// ZeroDivisionError (contract §9.9).
pub fn percent(out_time: Duration, duration_secs: f64) -> u8 {
    if !(duration_secs.is_finite() && duration_secs > 0.0) {
        return 0;
    }
    let p = out_time.as_secs_f64() * 100.0 / duration_secs;
    #[allow(clippy::cast_possible_truncation)] // clamped to 0..=100 first; truncation wanted
    let pct = p.clamp(0.0, 100.0) as u8;
    pct
}

/// Decides when a progress reading is worth a database write: the first reading, the last one,
/// and then at most once per `every`. Each write also detects a deleted Encoding row, so the
/// interval bounds cancellation latency (MediaCMS: ~30 s; default here: 5 s).
#[derive(Debug, Clone)]
pub struct ProgressThrottle {
    every: Duration,
    last_saved: Option<Instant>,
}

impl Default for ProgressThrottle {
    fn default() -> Self {
        Self::new(Duration::from_secs(5))
    }
}

impl ProgressThrottle {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last_saved: None,
        }
    }

    /// `true` when the reading at `now` should be saved; records the save when it says so.
    pub fn should_save(&mut self, now: Instant, progress: &Progress) -> bool {
        let due = match self.last_saved {
            None => true,
            Some(last) => progress.done || now.saturating_duration_since(last) >= self.every,
        };
        if due {
            self.last_saved = Some(now);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured verbatim from `ffmpeg 5.1.9 -hide_banner -nostdin -progress pipe:1 -nostats -re
    /// -f lavfi -i testsrc=size=320x240:rate=25 -t 1.2 -c:v libx264 -f mp4 out.mp4`.
    const CAPTURED: &str = "frame=1\nfps=0.00\nstream_0_0_q=0.0\nbitrate=N/A\ntotal_size=48\n\
out_time_us=0\nout_time_ms=0\nout_time=00:00:00.000000\ndup_frames=0\ndrop_frames=0\n\
speed=N/A\nprogress=continue\nframe=26\nfps=25.83\nstream_0_0_q=0.0\nbitrate=N/A\n\
total_size=48\nout_time_us=0\nout_time_ms=0\nout_time=00:00:00.000000\ndup_frames=0\n\
drop_frames=0\nspeed=   0x\nprogress=continue\nframe=30\nfps=23.86\nstream_0_0_q=-1.0\n\
bitrate=  73.1kbits/s\ntotal_size=9866\nout_time_us=1080078\nout_time_ms=1080078\n\
out_time=00:00:01.080078\ndup_frames=0\ndrop_frames=0\nspeed=0.859x\nprogress=end\n";

    fn parse_all(text: &str) -> Vec<Progress> {
        let mut p = ProgressParser::new();
        text.lines().filter_map(|l| p.push_line(l)).collect()
    }

    #[test]
    fn parses_captured_blocks_in_order() {
        let got = parse_all(CAPTURED);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].out_time, Duration::ZERO);
        assert_eq!(got[0].speed, None);
        assert_eq!(got[1].fps, Some(25.83));
        assert_eq!(got[1].speed, Some(0.0));
        assert!(!got[1].done);
        assert_eq!(got[2].out_time, Duration::from_micros(1_080_078));
        assert_eq!(got[2].speed, Some(0.859));
        assert!(got[2].done);
    }

    #[test]
    fn falls_back_to_out_time_clock_and_never_goes_backwards() {
        let got = parse_all(
            "out_time=00:01:02.500000\nprogress=continue\nout_time_us=N/A\nprogress=continue\n",
        );
        assert_eq!(got[0].out_time, Duration::from_millis(62_500));
        assert_eq!(got[1].out_time, Duration::from_millis(62_500));
    }

    #[test]
    fn negative_start_times_clamp_to_zero() {
        // Synthetic: encoders with B-frame delay can report a negative first timestamp.
        let got = parse_all("out_time_us=-64000\nout_time=-00:00:00.064000\nprogress=continue\n");
        assert_eq!(got[0].out_time, Duration::ZERO);
    }

    #[test]
    fn clock_parsing() {
        assert_eq!(
            parse_clock("01:00:00.000000"),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(parse_clock("N/A"), None);
        assert_eq!(parse_clock("-00:00:00.064000"), None);
    }

    #[test]
    fn percent_truncates_and_is_safe() {
        assert_eq!(percent(Duration::from_millis(2999), 10.0), 29);
        assert_eq!(percent(Duration::from_secs(20), 10.0), 100);
        assert_eq!(percent(Duration::from_secs(5), 0.0), 0);
        assert_eq!(percent(Duration::from_secs(5), f64::NAN), 0);
    }

    #[test]
    fn throttle_saves_first_then_every_interval_and_the_end() {
        let mut t = ProgressThrottle::new(Duration::from_secs(5));
        let start = Instant::now();
        let mut p = Progress {
            out_time: Duration::ZERO,
            fps: None,
            speed: None,
            done: false,
        };
        assert!(t.should_save(start, &p));
        assert!(!t.should_save(start + Duration::from_secs(4), &p));
        assert!(t.should_save(start + Duration::from_secs(5), &p));
        assert!(!t.should_save(start + Duration::from_secs(6), &p));
        p.done = true;
        assert!(t.should_save(start + Duration::from_secs(7), &p));
    }
}
