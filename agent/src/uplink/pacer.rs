//! Keeps one connection within IoT Core's per-connection quotas: publishes per second and
//! bytes per second. IoT Core silently discards the excess, so the pacer never bursts:
//! each publish waits for the larger of the two gaps the previous one earned.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct Pacer {
    min_gap: Duration,
    bytes_per_s: f64,
    next: Instant,
}

impl Pacer {
    pub fn new(publishes_per_s: u32, bytes_per_s: u32) -> Self {
        Self {
            min_gap: Duration::from_secs_f64(1.0 / f64::from(publishes_per_s.max(1))),
            bytes_per_s: f64::from(bytes_per_s.max(1)),
            next: Instant::now(),
        }
    }

    /// When the next publish may go.
    pub fn ready_at(&self) -> Instant {
        self.next
    }

    /// Accounts for a publish of `bytes` made now.
    pub fn sent(&mut self, bytes: usize) {
        let gap = self
            .min_gap
            .max(Duration::from_secs_f64(bytes as f64 / self.bytes_per_s));
        self.next = Instant::now().max(self.next) + gap;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn spaces_by_count_or_bytes_whichever_is_slower() {
        let mut p = Pacer::new(20, 512 * 1024);
        let start = Instant::now();
        for _ in 0..40 {
            tokio::time::sleep_until(p.ready_at()).await;
            p.sent(100);
        }
        // 40 small publishes at 20/s: the 40th may start after 39 gaps of 50 ms.
        assert_eq!(Instant::now() - start, Duration::from_millis(39 * 50));

        let mut p = Pacer::new(100, 512 * 1024);
        let start = Instant::now();
        for _ in 0..5 {
            tokio::time::sleep_until(p.ready_at()).await;
            p.sent(128 * 1024);
        }
        assert_eq!(Instant::now() - start, Duration::from_millis(4 * 250));
    }
}
