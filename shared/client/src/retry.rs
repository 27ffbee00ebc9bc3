//! Retry timing: capped exponential backoff with jitter, and `Retry-After` honoured when it fits
//! the caller's budget (CATALOGUE C4, C6, "Retry policy conformance").
//!
//! Delays are drawn from `[d/2, d)` where `d = min(cap, base * 2^attempt)` (the reference
//! result-post policy, PROTOCOL.md §7.5). Never drawing near zero keeps a failing endpoint from
//! being hammered: with the default base of 1 s there is at most one request per 500 ms.
//! This module only computes waits; callers sleep, so tests can check the policy without time.

use std::time::Duration;

use rand::Rng;

use crate::error::ApiError;

/// Exponential backoff state for one retried operation.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// `base` doubles on every failure up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap: cap.max(base),
            attempt: 0,
        }
    }

    /// Result posts: 1, 2, 4 ... s capped at 30 s (§7.5).
    pub fn for_results() -> Self {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(30))
    }

    /// SSE reconnects: 0.5 s doubling to 10 s (§7.2).
    pub fn for_stream() -> Self {
        Backoff::new(Duration::from_millis(500), Duration::from_secs(10))
    }

    /// Poll and ack errors: 1 s doubling to 60 s (§6.2).
    pub fn for_polling() -> Self {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(60))
    }

    /// How many delays have been drawn since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The upper bound of the next delay, without jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Draws the next delay in `[ceiling/2, ceiling)` and advances.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let spread = ceiling.saturating_sub(half).as_nanos() as u64;
        if spread == 0 {
            return half;
        }
        half + Duration::from_nanos(rng.random_range(0..spread))
    }

    /// Back to the first step (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The wait before retrying after `err`: the server's `Retry-After` when it gave one (plus up
    /// to 10 % jitter, so a crowd of workers does not return in lockstep), else the backoff.
    pub fn delay_after(&mut self, err: &ApiError, rng: &mut impl Rng) -> Duration {
        match err.retry_after() {
            Some(wait) => {
                self.attempt = self.attempt.saturating_add(1);
                let jitter_ns = (wait.as_nanos() / 10) as u64;
                if jitter_ns == 0 {
                    wait
                } else {
                    wait + Duration::from_nanos(rng.random_range(0..jitter_ns))
                }
            }
            None => self.next_delay(rng),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use reqwest::StatusCode;

    #[test]
    fn delays_double_within_jitter_bounds_and_cap() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut b = Backoff::for_results();
        let mut ceilings = vec![];
        for _ in 0..10 {
            let ceiling = b.ceiling();
            let d = b.next_delay(&mut rng);
            assert!(
                d >= ceiling / 2 && d < ceiling,
                "{d:?} outside [{:?}, {ceiling:?})",
                ceiling / 2
            );
            ceilings.push(ceiling.as_secs());
        }
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 30, 30, 30, 30, 30]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_secs(1));
    }

    #[test]
    fn no_tight_loops_even_after_many_attempts() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut b = Backoff::for_stream();
        for _ in 0..100 {
            assert!(b.next_delay(&mut rng) >= Duration::from_millis(250));
        }
        // The shift cannot overflow however long a failure lasts.
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        for _ in 0..200 {
            assert!(b.next_delay(&mut rng) <= Duration::from_secs(5));
        }
    }

    #[test]
    fn c6_retry_after_is_honoured_within_ten_percent() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut b = Backoff::for_results();
        let err = ApiError::Status {
            method: "POST",
            path: "/v1/sessions/s/events".into(),
            status: StatusCode::TOO_MANY_REQUESTS,
            body: None,
            retry_after: Some(Duration::from_secs(4)),
            should_retry: None,
        };
        for _ in 0..50 {
            let d = b.delay_after(&err, &mut rng);
            assert!(
                d >= Duration::from_secs(4) && d <= Duration::from_millis(4400),
                "{d:?}"
            );
        }
        let plain = ApiError::Transport("reset".into());
        let mut b = Backoff::for_results();
        assert!(b.delay_after(&plain, &mut rng) < Duration::from_secs(1));
    }
}
