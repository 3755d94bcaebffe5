//! What the link actually carries, measured from PUBACKs, and the window and envelope size
//! that follow from it.
//!
//! IoT Core's quotas (the `Pacer`) are a ceiling, not a rate: a GPRS-class link carries a
//! hundredth of them. Sending at the quota there fills the socket buffer, rumqttc's flush of
//! the next packet outlasts its timeout, the connection drops and everything unacknowledged
//! goes again, so a station on a poor link never catches up. Instead the uplink keeps about
//! [`QUEUE`] of the link's measured rate in flight, in envelopes of about [`ENVELOPE_TIME`]
//! each, so that one PUBACK is never behind minutes of data.
//!
//! The rate is a delivery-rate sample per acknowledged envelope, as TCP BBR takes it: the
//! payload bytes acknowledged between the envelope's send and its PUBACK, over that time.
//! When the window is full these samples measure the bottleneck; the largest of the last
//! [`SAMPLE_SPAN`] is the estimate, so a pause in sending (too little to send) does not
//! read as a slow link.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use ferry_shared::limits::MAX_PAYLOAD_BYTES;
use tokio::time::Instant;

/// How much of the link's time the window keeps queued.
const QUEUE: Duration = Duration::from_secs(2);
/// How much of the link's time one envelope takes.
const ENVELOPE_TIME: Duration = Duration::from_secs(1);
/// Before any sample: small enough for a 32 kbit/s link (4 s of it), and grown within one
/// round trip on a fast one.
const INITIAL_WINDOW: u64 = 16 * 1024;
/// The smallest envelope worth its MQTT and TCP headers (about 5 % of it).
const MIN_ENVELOPE: usize = 4 * 1024;
/// Samples older than this no longer count.
const SAMPLE_SPAN: Duration = Duration::from_secs(6);

#[derive(Debug, Clone, Copy)]
struct Sent {
    bytes: u64,
    at: Instant,
    /// [`Link::delivered`] when it was sent.
    delivered: u64,
}

#[derive(Debug, Default)]
pub struct Link {
    /// Payload bytes acknowledged on this connection.
    delivered: u64,
    in_flight: HashMap<u16, Sent>,
    in_flight_bytes: u64,
    /// (when, bytes per second), oldest first.
    samples: VecDeque<(Instant, f64)>,
    /// The last estimate, kept across connections and quiet spells.
    rate: Option<f64>,
}

impl Link {
    /// An envelope of `bytes` went out with packet id `pkid`.
    pub fn published(&mut self, pkid: u16, bytes: u64) {
        let sent = Sent {
            bytes,
            at: Instant::now(),
            delivered: self.delivered,
        };
        if let Some(old) = self.in_flight.insert(pkid, sent) {
            self.in_flight_bytes = self.in_flight_bytes.saturating_sub(old.bytes);
        }
        self.in_flight_bytes += bytes;
    }

    /// The envelope sent as `pkid` was acknowledged.
    pub fn acked(&mut self, pkid: u16) {
        let Some(sent) = self.in_flight.remove(&pkid) else {
            return;
        };
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(sent.bytes);
        self.delivered += sent.bytes;
        let now = Instant::now();
        // A sub-millisecond round trip says only that the link is fast; it must not read as
        // an unbounded rate.
        let elapsed = (now - sent.at).max(Duration::from_millis(1)).as_secs_f64();
        let sample = (self.delivered - sent.delivered) as f64 / elapsed;
        self.samples.push_back((now, sample));
        while self
            .samples
            .front()
            .is_some_and(|&(at, _)| now - at > SAMPLE_SPAN)
        {
            self.samples.pop_front();
        }
        self.rate = self.samples.iter().map(|&(_, r)| r).reduce(f64::max);
    }

    /// A new connection: nothing is in flight, the estimate stands.
    pub fn reset(&mut self) {
        self.delivered = 0;
        self.in_flight.clear();
        self.in_flight_bytes = 0;
        self.samples.clear();
    }

    /// The measured rate in payload bytes per second, once there is one.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// Whether another envelope of `next` bytes may go now.
    pub fn has_room(&self, next: usize) -> bool {
        // One envelope always may: the window never stalls on a single large one.
        self.in_flight_bytes == 0 || self.in_flight_bytes + next as u64 <= self.window()
    }

    fn window(&self) -> u64 {
        match self.rate {
            None => INITIAL_WINDOW,
            Some(rate) => ((rate * QUEUE.as_secs_f64()) as u64).max(2 * self.envelope() as u64),
        }
    }

    /// The payload size envelopes should aim for.
    pub fn envelope(&self) -> usize {
        let target = match self.rate {
            None => INITIAL_WINDOW as usize / 2,
            Some(rate) => (rate * ENVELOPE_TIME.as_secs_f64()) as usize,
        };
        target.clamp(MIN_ENVELOPE, MAX_PAYLOAD_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends envelopes over a simulated link of `rate` bytes/s (one at a time through the
    /// bottleneck, acknowledged as each finishes) and returns the estimate it settles on.
    async fn settle(rate: f64, seconds: u64) -> Link {
        let mut link = Link::default();
        let mut pkid = 0u16;
        let mut queue: VecDeque<(u16, Instant)> = VecDeque::new();
        let mut link_free = Instant::now();
        let end = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < end {
            while link.has_room(link.envelope()) {
                pkid = pkid.wrapping_add(1);
                let bytes = link.envelope();
                link.published(pkid, bytes as u64);
                link_free =
                    link_free.max(Instant::now()) + Duration::from_secs_f64(bytes as f64 / rate);
                queue.push_back((pkid, link_free));
            }
            let (id, done) = queue.pop_front().expect("in flight");
            tokio::time::sleep_until(done).await;
            link.acked(id);
        }
        link
    }

    #[tokio::test(start_paused = true)]
    async fn the_estimate_finds_a_slow_link_and_a_fast_one() {
        for rate in [4_000.0, 8_000.0, 32_000.0, 2_000_000.0] {
            let link = settle(rate, 60).await;
            let got = link.rate().expect("measured");
            assert!(
                (got / rate - 1.0).abs() < 0.1,
                "link of {rate} B/s measured as {got}"
            );
            // About QUEUE of the link in flight, in envelopes of about a second of it.
            let envelope = link.envelope();
            assert!((MIN_ENVELOPE..=MAX_PAYLOAD_BYTES).contains(&envelope));
            assert!(link.window() as f64 <= (rate * 2.0).max(2.0 * envelope as f64) * 1.1);
        }
    }

    #[test]
    fn one_envelope_always_fits_and_a_new_connection_keeps_the_estimate() {
        let mut link = Link::default();
        assert!(
            link.has_room(MAX_PAYLOAD_BYTES),
            "an empty window takes anything"
        );
        link.published(1, INITIAL_WINDOW);
        assert!(!link.has_room(1));
        link.acked(1);
        let rate = link.rate().expect("a sample");
        link.published(2, 10);
        link.reset();
        assert!(link.has_room(MAX_PAYLOAD_BYTES));
        assert_eq!(link.rate(), Some(rate));
        link.acked(2);
        assert_eq!(
            link.rate(),
            Some(rate),
            "an ack of the old connection counts nothing"
        );
    }
}
