//! Capped exponential backoff: the one formula behind every wait-and-try-again — start-up
//! waits for the broker and Postgres, Redis reconnects, and the cool-down of a failed hardware
//! device. Pure: callers own the clock and the attempt count.

use std::time::Duration;

/// `base` for the first attempt, doubling with each further one, never above `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Backoff { base, cap }
    }

    /// The pause after the `attempt`-th consecutive failure (1-based; 0 reads as 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        // 2^16 × any base we use is far past every cap; the shift cannot overflow.
        let exp = attempt.saturating_sub(1).min(16);
        self.base.saturating_mul(1 << exp).min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_base_and_stops_at_cap() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let got: Vec<u128> = [0, 1, 2, 3, 6, 7, 1000]
            .iter()
            .map(|&n| b.delay(n).as_millis())
            .collect();
        assert_eq!(got, [100, 100, 200, 400, 3200, 5000, 5000]);
    }

    #[test]
    fn a_cap_below_the_base_wins() {
        let b = Backoff::new(Duration::from_secs(30), Duration::from_secs(10));
        assert_eq!(b.delay(1), Duration::from_secs(10));
    }
}
