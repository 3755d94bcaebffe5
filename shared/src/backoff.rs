//! Exponential backoff with jitter, for everything that reconnects: the agent's MQTT driver
//! and serial ports, the ingest's MQTT consumer and lake writer.

use std::time::Duration;

use rand::Rng;

/// The delay after `failures` consecutive failures: doubling from `min`, capped at `max`,
/// and drawn from [d/2, d] so that a fleet does not retry in lockstep after an outage.
/// Never below `min`.
pub fn jittered(min: Duration, max: Duration, failures: u32) -> Duration {
    let ceiling = min.saturating_mul(1u32 << failures.min(16)).min(max);
    let ms = ceiling.as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms)).max(min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_jitter_and_is_capped() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(30));
        for failures in 0..40 {
            let d = jittered(min, max, failures);
            assert!(d >= min && d <= max, "{failures}: {d:?}");
        }
        let late: Vec<_> = (0..50).map(|_| jittered(min, max, 10)).collect();
        assert!(
            late.iter().any(|d| *d != late[0]),
            "jitter varies the delay"
        );
        assert!(late.iter().all(|d| *d >= max / 2));
    }
}
