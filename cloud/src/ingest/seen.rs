//! Which seqs of one (device, spool) reached the journal: a set of closed ranges.
//!
//! A device resends everything unacknowledged after each reconnect, and the broker
//! redelivers what the ingest had not acknowledged before a crash; both are recognised here.
//! Seqs arrive mostly in order, per stream, so the set stays a handful of ranges: gaps come
//! only from eviction on the device, or from the two streams interleaving.

use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeenSeqs {
    /// lo -> hi, inclusive, disjoint and not adjacent.
    ranges: BTreeMap<u64, u64>,
}

impl SeenSeqs {
    pub fn contains(&self, seq: u64) -> bool {
        self.ranges
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, hi)| seq <= *hi)
    }

    /// Adds `seq`; false when it was there already.
    pub fn insert(&mut self, seq: u64) -> bool {
        if self.contains(seq) {
            return false;
        }
        let below = self
            .ranges
            .range(..seq)
            .next_back()
            .filter(|(_, hi)| hi.checked_add(1) == Some(seq))
            .map(|(lo, _)| *lo);
        let above = seq
            .checked_add(1)
            .and_then(|next| self.ranges.get(&next).map(|hi| (next, *hi)));
        match (below, above) {
            (Some(lo), Some((next, hi))) => {
                self.ranges.remove(&next);
                self.ranges.insert(lo, hi);
            }
            (Some(lo), None) => {
                self.ranges.insert(lo, seq);
            }
            (None, Some((next, hi))) => {
                self.ranges.remove(&next);
                self.ranges.insert(seq, hi);
            }
            (None, None) => {
                self.ranges.insert(seq, seq);
            }
        }
        true
    }

    /// `1-500,502-900`: how the journal stores it.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (i, (lo, hi)) in self.ranges.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(out, "{sep}{lo}-{hi}");
        }
        out
    }

    pub fn from_text(text: &str) -> Option<Self> {
        let mut set = Self::default();
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let (lo, hi) = part.split_once('-')?;
            let (lo, hi) = (lo.parse().ok()?, hi.parse().ok()?);
            if lo > hi {
                return None;
            }
            set.ranges.insert(lo, hi);
        }
        Some(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_a_plain_set() {
        let mut model = std::collections::BTreeSet::new();
        let mut set = SeenSeqs::default();
        let mut x = 12345u64;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let seq = (x >> 33) % 3000 + 1;
            assert_eq!(set.insert(seq), model.insert(seq), "{seq}");
        }
        for seq in 0..3100 {
            assert_eq!(set.contains(seq), model.contains(&seq), "{seq}");
        }
        assert_eq!(SeenSeqs::from_text(&set.to_text()), Some(set.clone()));
    }

    #[test]
    fn in_order_seqs_stay_one_range() {
        let mut set = SeenSeqs::default();
        for seq in (1..=1000).rev().chain(1001..=2000) {
            set.insert(seq);
        }
        assert_eq!(set.to_text(), "1-2000");
        assert!(!set.insert(500));
        assert_eq!(SeenSeqs::from_text("5-3"), None);
        assert_eq!(SeenSeqs::from_text("x"), None);
    }
}
