//! Which seqs of one (device, spool) reached the journal: a set of closed ranges.
//!
//! A device resends everything unacknowledged after each reconnect, and the broker
//! redelivers what the ingest had not acknowledged before a crash; both are recognised here.
//! Seqs arrive mostly in order, per stream, so the set stays a handful of ranges: gaps come
//! from eviction on the device, and from the two streams interleaving (a backlog drains its
//! transactions first, so each makes a range of its own until the telemetry around it
//! arrives).
//!
//! Each insert says what it changed ([`Edit`]), so the journal writes only the ranges that
//! moved, one row each, and can undo them: an admission costs the same whatever the
//! history. Bounded: past [`MAX_RANGES`] the lowest range is forgotten. That errs on the
//! safe side: a resend of one of its seqs would be admitted again, a duplicate that readers
//! drop by (device, spool, seq) and the ledger by `tx_id`, never a loss; and it would have
//! to come after a hundred thousand newer gaps, long after its PUBACK.

use std::collections::BTreeMap;

/// Most ranges kept for one (device, spool): about 4 MB of memory at worst.
pub const MAX_RANGES: usize = 100_000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeenSeqs {
    /// lo -> hi, inclusive, disjoint and not adjacent.
    ranges: BTreeMap<u64, u64>,
}

/// What one insert changed: `set` now maps `lo -> hi`, where `before` held what that key
/// mapped to (if anything); `removed` ranges are gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub set: (u64, u64),
    pub before: Option<u64>,
    pub removed: Vec<(u64, u64)>,
}

impl SeenSeqs {
    pub fn contains(&self, seq: u64) -> bool {
        self.ranges
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, hi)| seq <= *hi)
    }

    /// Adds `seq`; `None` when it was there already.
    pub fn insert(&mut self, seq: u64) -> Option<Edit> {
        if self.contains(seq) {
            return None;
        }
        let below = self
            .ranges
            .range(..seq)
            .next_back()
            .filter(|(_, hi)| hi.checked_add(1) == Some(seq))
            .map(|(lo, hi)| (*lo, *hi));
        let above = seq
            .checked_add(1)
            .and_then(|next| self.ranges.get(&next).map(|hi| (next, *hi)));
        let mut removed = Vec::new();
        let (set, before) = match (below, above) {
            (Some((lo, old)), Some((next, hi))) => {
                self.ranges.remove(&next);
                removed.push((next, hi));
                ((lo, hi), Some(old))
            }
            (Some((lo, old)), None) => ((lo, seq), Some(old)),
            (None, Some((next, hi))) => {
                self.ranges.remove(&next);
                removed.push((next, hi));
                ((seq, hi), None)
            }
            (None, None) => ((seq, seq), None),
        };
        self.ranges.insert(set.0, set.1);
        if self.ranges.len() > MAX_RANGES
            && let Some(lowest) = self.ranges.pop_first()
        {
            removed.push(lowest);
        }
        Some(Edit {
            set,
            before,
            removed,
        })
    }

    /// Takes back an [`Edit`]; edits are undone newest first. The removed ranges go back
    /// before the key that was set is restored: at the bound, the range forgotten can be
    /// the one just made.
    pub fn undo(&mut self, edit: &Edit) {
        for (lo, hi) in &edit.removed {
            self.ranges.insert(*lo, *hi);
        }
        match edit.before {
            Some(hi) => self.ranges.insert(edit.set.0, hi),
            None => self.ranges.remove(&edit.set.0),
        };
    }

    /// A range as stored; ranges must come disjoint, as the set wrote them.
    pub fn restore(&mut self, lo: u64, hi: u64) {
        self.ranges.insert(lo, hi);
    }

    /// How many ranges the set holds.
    pub fn ranges(&self) -> usize {
        self.ranges.len()
    }

    /// `1-500,502-900`: how older journals stored a set, read once at open.
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

    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(lo, hi)| (*lo, *hi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_a_plain_set_and_undoes_exactly() {
        let mut model = std::collections::BTreeSet::new();
        let mut set = SeenSeqs::default();
        let mut x = 12345u64;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let seq = (x >> 33) % 3000 + 1;
            let before = set.clone();
            let edit = set.insert(seq);
            assert_eq!(edit.is_some(), model.insert(seq), "{seq}");
            if let Some(edit) = edit
                && seq.is_multiple_of(7)
            {
                set.undo(&edit);
                assert_eq!(set, before, "undo of {edit:?}");
                model.remove(&seq);
            }
        }
        for seq in 0..3100 {
            assert_eq!(set.contains(seq), model.contains(&seq), "{seq}");
        }
    }

    #[test]
    fn in_order_seqs_stay_one_range() {
        let mut set = SeenSeqs::default();
        for seq in (1..=1000).rev().chain(1001..=2000) {
            set.insert(seq);
        }
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![(1, 2000)]);
        assert!(set.insert(500).is_none());
        assert_eq!(SeenSeqs::from_text("5-3"), None);
        assert_eq!(SeenSeqs::from_text("x"), None);
        assert_eq!(
            SeenSeqs::from_text("1-5,7-9").map(|s| s.iter().collect::<Vec<_>>()),
            Some(vec![(1, 5), (7, 9)])
        );
    }

    #[test]
    fn the_set_is_bounded_and_forgets_its_oldest_range() {
        let mut set = SeenSeqs::default();
        for i in 0..(MAX_RANGES as u64 + 10) {
            set.insert(2 * i + 1);
        }
        assert_eq!(set.ranges(), MAX_RANGES);
        assert!(!set.contains(1), "the oldest were forgotten");
        assert!(
            set.contains(2 * (MAX_RANGES as u64 + 9) + 1),
            "the newest are kept"
        );
    }
}
