//! Rate-limited reports of what went wrong on a port: bad lines, a vanished device.
//!
//! An operator must learn that a sensor sends garbage without a garbage line costing a record
//! each (a station on a metered link sends about 1 MB a day). So the first incident after a
//! quiet spell is reported at once, as an `event` record; the ones after it are only counted,
//! by reason, and summed up in one `event` when the window closes.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, Instant};

use ferry_shared::{EventLevel, RecordBody};

/// How much of an offending line an event quotes.
const SAMPLE_CHARS: usize = 48;

#[derive(Debug)]
pub struct Incidents {
    /// Names the source in messages: `serial bme280 on /dev/ttyUSB0`.
    what: String,
    window: Duration,
    /// Start of the window that suppresses reports, if one is open.
    opened: Option<Instant>,
    counts: BTreeMap<&'static str, u64>,
    last_sample: Option<String>,
}

impl Incidents {
    pub fn new(what: String, window: Duration) -> Self {
        Self {
            what,
            window,
            opened: None,
            counts: BTreeMap::new(),
            last_sample: None,
        }
    }

    /// Notes one incident. Returns the events to append: the summary of a window this
    /// closes, and a report of this incident when it is the first in a while.
    pub fn note(&mut self, reason: &'static str, sample: &[u8], now: Instant) -> Vec<RecordBody> {
        let mut out: Vec<RecordBody> = self.tick(now).into_iter().collect();
        if self.opened.is_none() {
            self.opened = Some(now);
            out.push(event(format!(
                "{}: {reason}; line: {}",
                self.what,
                quote(sample)
            )));
        } else {
            *self.counts.entry(reason).or_insert(0) += 1;
            self.last_sample = Some(quote(sample));
        }
        out
    }

    /// Closes the window if it is over: a summary event when anything was suppressed in it.
    /// Call it now and then, so that a last burst is reported even if no incident follows.
    pub fn tick(&mut self, now: Instant) -> Option<RecordBody> {
        let opened = self.opened?;
        if now.duration_since(opened) < self.window {
            return None;
        }
        self.opened = None;
        self.summary()
    }

    /// The summary of the open window, at shutdown.
    pub fn flush(&mut self) -> Option<RecordBody> {
        self.opened = None;
        self.summary()
    }

    fn summary(&mut self) -> Option<RecordBody> {
        if self.counts.is_empty() {
            return None;
        }
        let total: u64 = self.counts.values().sum();
        let mut message = format!(
            "{}: {total} more in {} s (",
            self.what,
            self.window.as_secs()
        );
        for (i, (reason, n)) in std::mem::take(&mut self.counts).into_iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            let _ = write!(message, "{sep}{reason}: {n}");
        }
        message.push(')');
        if let Some(sample) = self.last_sample.take() {
            let _ = write!(message, "; last line: {sample}");
        }
        Some(event(message))
    }
}

fn event(message: String) -> RecordBody {
    RecordBody::Event {
        level: EventLevel::Warn,
        message,
        code: Some("serial_input".into()),
    }
}

/// A short, printable quote of raw bytes: control characters and invalid UTF-8 escaped, so
/// the event stays valid text whatever the line held.
fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text
        .chars()
        .take(SAMPLE_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(SAMPLE_CHARS).is_some() {
        out.push('…');
    }
    format!("\"{out}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: Option<RecordBody>) -> String {
        match body {
            Some(RecordBody::Event { message, .. }) => message,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    fn messages(bodies: Vec<RecordBody>) -> Vec<String> {
        bodies.into_iter().map(|b| message(Some(b))).collect()
    }

    #[test]
    fn first_is_reported_then_counted_then_summed() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut inc = Incidents::new("serial x".into(), Duration::from_secs(60));
        let first = messages(inc.note("checksum_mismatch", b"t=1*00", t0));
        assert!(
            first.len() == 1
                && first[0].contains("checksum_mismatch")
                && first[0].contains("t=1*00"),
            "{first:?}"
        );
        assert!(inc.note("overlong", b"xxxx", t0 + s).is_empty());
        assert!(inc.note("overlong", b"yyyy", t0 + 2 * s).is_empty());
        assert!(inc.note("binary", b"\x00\xff", t0 + 3 * s).is_empty());
        assert!(inc.tick(t0 + 59 * s).is_none(), "window still open");
        let summary = message(inc.tick(t0 + 60 * s));
        assert!(
            summary.contains("3 more") && summary.contains("binary: 1, overlong: 2"),
            "{summary}"
        );
        assert!(summary.contains("\\0\u{fffd}"), "escaped: {summary}");
        assert!(inc.tick(t0 + 200 * s).is_none(), "nothing left to say");
        assert_eq!(
            inc.note("binary", b"", t0 + 200 * s).len(),
            1,
            "quiet again: reported at once"
        );
    }

    #[test]
    fn an_incident_after_the_window_reports_the_summary_and_itself() {
        let t0 = Instant::now();
        let mut inc = Incidents::new("x".into(), Duration::from_secs(10));
        assert_eq!(inc.note("a", b"", t0).len(), 1);
        assert!(inc.note("a", b"", t0 + Duration::from_secs(1)).is_empty());
        let both = messages(inc.note("b", b"", t0 + Duration::from_secs(11)));
        assert_eq!(both.len(), 2, "{both:?}");
        assert!(
            both[0].contains("1 more") && both[1].contains(": b;"),
            "{both:?}"
        );
        assert!(inc.flush().is_none());
    }

    #[test]
    fn samples_are_short() {
        let long = vec![b'a'; 1000];
        let q = quote(&long);
        assert!(q.chars().count() < SAMPLE_CHARS + 4, "{q}");
    }
}
