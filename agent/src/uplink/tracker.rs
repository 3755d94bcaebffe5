//! Pairs publishes with the records they carry.
//!
//! rumqttc's `publish()` returns no packet id. Requests leave in the order they were made,
//! so the n-th `Outgoing::Publish(pkid)` belongs to the n-th publish we requested; its
//! `PubAck(pkid)` then acknowledges exactly those records.

use std::collections::{HashMap, VecDeque};

use crate::spool::AckRange;

/// What a publish carries, and so what its PubAck means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carries {
    Records(AckRange),
    /// The retained status message: its delivery ends an update's trial.
    Status,
    /// A fleet message: nothing to do on its PubAck.
    Other,
}

#[derive(Debug, Default)]
pub struct Tracker {
    /// Requested but not yet given a packet id, with the payload size of records.
    requested: VecDeque<(Carries, usize)>,
    awaiting_ack: HashMap<u16, Carries>,
}

impl Tracker {
    /// A publish was requested of rumqttc; `bytes` is its payload's size.
    pub fn requested(&mut self, carries: Carries, bytes: usize) {
        self.requested.push_back((carries, bytes));
    }

    /// The oldest request went out as `pkid`; returns its payload size if it carries
    /// records, which is what the link's measure counts.
    pub fn published(&mut self, pkid: u16) -> Option<usize> {
        let (carries, bytes) = self.requested.pop_front()?;
        // QoS 0 publishes have pkid 0 and get no PubAck; we send none of those.
        if pkid == 0 {
            return None;
        }
        self.awaiting_ack.insert(pkid, carries);
        matches!(carries, Carries::Records(_)).then_some(bytes)
    }

    /// What a PubAck acknowledges; `None` for a repeated or unknown one.
    pub fn acked(&mut self, pkid: u16) -> Option<Carries> {
        self.awaiting_ack.remove(&pkid)
    }

    pub fn in_flight(&self) -> usize {
        self.requested.len() + self.awaiting_ack.len()
    }

    /// Forgets everything: after a disconnect, unacknowledged records are resent from the
    /// spool, never from here.
    pub fn reset(&mut self) {
        self.requested.clear();
        self.awaiting_ack.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Class;

    fn range(first: u64) -> Carries {
        Carries::Records(AckRange {
            class: Class::Telemetry,
            first,
            last: first + 9,
            held: None,
        })
    }

    #[test]
    fn pairs_in_request_order_and_acks_out_of_order() {
        let mut t = Tracker::default();
        t.requested(range(1), 100);
        t.requested(Carries::Status, 10);
        t.requested(range(11), 200);
        assert_eq!(t.published(7), Some(100));
        assert_eq!(t.published(8), None, "a status is not the link's measure");
        assert_eq!(t.in_flight(), 3);
        assert_eq!(t.published(9), Some(200));
        assert_eq!(t.acked(9), Some(range(11)));
        assert_eq!(t.acked(8), Some(Carries::Status));
        assert_eq!(t.acked(7), Some(range(1)));
        assert_eq!(t.acked(7), None, "a repeated PubAck acknowledges nothing");
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn reset_forgets_everything() {
        let mut t = Tracker::default();
        t.requested(range(1), 1);
        t.published(1);
        t.requested(range(2), 1);
        t.reset();
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.acked(1), None);
    }
}
