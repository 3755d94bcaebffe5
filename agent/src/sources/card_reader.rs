//! The `card_reader` source: a reader at the till that sends each card id it reads as a
//! line (CR or LF). Every read becomes a `scan` record; with an `on_scan` rule it also
//! becomes a `txn`, appended in the same spool transaction as its scan.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_shared::record::Unsequenced;
use ferry_shared::{DeviceId, RecordBody, TxId, Txn};
use regex::Regex;

use super::SourceMetrics;
use super::line_source::LineHandler;
use super::port::Received;
use crate::config::{CardReaderConfig, ScanRule};

/// Beyond this many cards remembered for debouncing, the stale ones are forgotten.
const DEBOUNCE_MEMORY: usize = 1024;

pub struct CardLines {
    device: DeviceId,
    reader: String,
    pattern: Option<Regex>,
    debounce: Duration,
    on_scan: Option<ScanRule>,
    last_read: HashMap<String, Instant>,
    metrics: Arc<SourceMetrics>,
}

impl CardLines {
    /// `pattern` was compiled once already when the config was checked; this cannot fail
    /// for a checked config.
    pub fn new(
        cfg: &CardReaderConfig,
        device: DeviceId,
        metrics: Arc<SourceMetrics>,
    ) -> Result<Self, regex::Error> {
        Ok(Self {
            device,
            reader: cfg.reader.clone(),
            pattern: cfg.compiled_pattern()?,
            debounce: Duration::from_millis(cfg.debounce_ms),
            on_scan: cfg.on_scan.clone(),
            last_read: HashMap::new(),
            metrics,
        })
    }

    /// True when the same card was read within the debounce time. A read that is ignored
    /// does not extend the time: a card held on the reader is read again every `debounce`.
    fn bounced(&mut self, card: &str, now: Instant) -> bool {
        if let Some(last) = self.last_read.get(card)
            && now.duration_since(*last) < self.debounce
        {
            return true;
        }
        if self.last_read.len() >= DEBOUNCE_MEMORY {
            let debounce = self.debounce;
            self.last_read
                .retain(|_, at| now.duration_since(*at) < debounce);
        }
        self.last_read.insert(card.to_owned(), now);
        false
    }
}

impl LineHandler for CardLines {
    fn line(&mut self, line: &[u8], at: Received) -> Result<Vec<Unsequenced>, &'static str> {
        let card = std::str::from_utf8(line).map_err(|_| "binary")?.trim();
        if card.is_empty() || card.chars().any(char::is_control) {
            return Err("binary");
        }
        if card.len() > ferry_shared::limits::MAX_TEXT_LEN {
            return Err("overlong");
        }
        if let Some(pattern) = &self.pattern
            && !pattern.is_match(card)
        {
            return Err("pattern_mismatch");
        }
        if self.bounced(card, at.instant) {
            SourceMetrics::bump(&self.metrics.debounced);
            return Ok(Vec::new());
        }
        SourceMetrics::bump(&self.metrics.scans);
        let mut records = vec![at.record(RecordBody::Scan {
            reader: self.reader.clone(),
            card: card.to_owned(),
        })];
        if let Some(rule) = &self.on_scan {
            let tx_id = TxId::new(format!("{}:{}", self.device, ulid::Ulid::new()))
                .map_err(|_| "invalid_tx_id")?;
            records.push(at.record(RecordBody::Txn(rule.txn(tx_id, card))));
        }
        Ok(records)
    }
}

impl ScanRule {
    pub fn txn(&self, tx_id: TxId, card: &str) -> Txn {
        Txn {
            tx_id,
            op: self.op,
            program: self.program.clone(),
            card: card.to_owned(),
            store: self.store.clone(),
            qty: Some(self.qty),
            amount_minor: None,
            currency: None,
            receipt: None,
            reverses: None,
            offline: false,
            staff: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AgentConfig;
    use ferry_shared::TxnOp;

    fn config(extra: &str) -> CardReaderConfig {
        let text = format!(
            "device_id = \"pos-1\"\ndata_dir = \"/tmp/x\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n\
             [[sources]]\ntype = \"card_reader\"\npath = \"/dev/null\"\nreader = \"till-1\"\n{extra}"
        );
        match AgentConfig::parse(&text, [])
            .expect("valid")
            .sources
            .remove(0)
        {
            crate::config::SourceConfig::CardReader(c) => c,
            other => panic!("not a card reader: {other:?}"),
        }
    }

    fn lines(extra: &str) -> CardLines {
        CardLines::new(
            &config(extra),
            DeviceId::new("pos-1").expect("id"),
            Arc::default(),
        )
        .expect("pattern")
    }

    fn at(t0: Instant, ms: u64) -> Received {
        Received {
            ts: (ferry_shared::Timestamp::now(), false),
            instant: t0 + Duration::from_millis(ms),
        }
    }

    fn kinds(records: &[Unsequenced]) -> Vec<&'static str> {
        records.iter().map(|r| r.body.type_name()).collect()
    }

    #[test]
    fn debounce_ignores_the_same_card_only() {
        let t0 = Instant::now();
        let mut c = lines("debounce_ms = 1000");
        let read =
            |c: &mut CardLines, card: &str, ms| c.line(card.as_bytes(), at(t0, ms)).expect("card");
        assert_eq!(kinds(&read(&mut c, "C-1", 0)), ["scan"]);
        assert!(read(&mut c, "C-1", 300).is_empty(), "same card, too soon");
        assert_eq!(kinds(&read(&mut c, "C-2", 400)), ["scan"], "another card");
        assert!(read(&mut c, "C-1", 999).is_empty());
        assert_eq!(
            kinds(&read(&mut c, "C-1", 1000)),
            ["scan"],
            "debounce is over"
        );
        assert_eq!(
            c.metrics
                .debounced
                .load(std::sync::atomic::Ordering::Relaxed),
            2
        );
        assert_eq!(
            c.metrics.scans.load(std::sync::atomic::Ordering::Relaxed),
            3
        );
    }

    #[test]
    fn the_pattern_decides_what_is_a_card() {
        let t0 = Instant::now();
        let mut c = lines("pattern = \"C-[0-9]{4}\"");
        assert!(c.line(b"C-0042", at(t0, 0)).is_ok());
        assert!(
            c.line(b"  C-0043 ", at(t0, 1)).is_ok(),
            "whitespace is trimmed"
        );
        for (line, reason) in [
            (&b"C-42"[..], "pattern_mismatch"),
            (b"xC-0042", "pattern_mismatch"),
            (b"C-00421", "pattern_mismatch"),
            (b"\xff\xfe", "binary"),
            (b"C-\x070042", "binary"),
            (b"   ", "binary"),
        ] {
            assert_eq!(c.line(line, at(t0, 2)).err(), Some(reason), "{line:?}");
        }
    }

    #[test]
    fn a_rule_turns_a_scan_into_a_txn() {
        let t0 = Instant::now();
        let mut c = lines(
            "debounce_ms = 0\non_scan = { op = \"stamp\", program = \"coffee\", qty = 1, store = \"S-01\" }",
        );
        let first = c.line(b"C-7", at(t0, 0)).expect("card");
        let second = c.line(b"C-7", at(t0, 0)).expect("card");
        assert_eq!(kinds(&first), ["scan", "txn"]);
        let (RecordBody::Txn(a), RecordBody::Txn(b)) = (&first[1].body, &second[1].body) else {
            panic!("txns expected");
        };
        assert_eq!(
            (
                a.op,
                a.program.as_str(),
                a.card.as_str(),
                a.store.as_str(),
                a.qty
            ),
            (TxnOp::Stamp, "coffee", "C-7", "S-01", Some(1))
        );
        assert_ne!(a.tx_id, b.tx_id, "every read is its own transaction");
        assert!(a.tx_id.as_str().starts_with("pos-1:"));
        assert!(a.validate().is_ok());
        assert_eq!(first[0].ts, first[1].ts, "scan and txn happened together");
    }
}
