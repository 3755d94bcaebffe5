//! Envelopes: the payload of `telemetry` and `transactions` (README: envelopes).

use std::fmt::Write as _;
use std::io::Read;

use flate2::Compression as Level;
use flate2::read::GzDecoder;
use flate2::{Compress, Crc, FlushCompress, Status};
use serde::{Deserialize, Serialize};

use crate::error::WireError;
use crate::ids::{DeviceId, SpoolId};
use crate::limits::{ENVELOPE_VERSION, MAX_DECOMPRESSED_BYTES, MAX_PAYLOAD_BYTES};
use crate::record::Record;
use crate::time::Timestamp;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u32,
    pub device: DeviceId,
    pub spool: SpoolId,
    pub sent_at: Timestamp,
    pub records: Vec<Record>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain JSON.
    None,
    /// Always gzip, at this level (0–9).
    Gzip(u32),
    /// Gzip at this level when that makes the payload smaller.
    Auto(u32),
}

/// Encodes finished envelope JSON for the wire, with a deflate state of its own; a sender
/// of many envelopes keeps a [`Gzipper`] instead.
pub fn encode(json: &[u8], compression: Compression) -> Vec<u8> {
    match compression {
        Compression::None => json.to_vec(),
        // A fresh deflate state over a buffer does not fail; were it to, the empty payload
        // is refused by every receiver rather than sent as something else.
        Compression::Gzip(level) => Gzipper::new(level).gzip(json).unwrap_or_default(),
        Compression::Auto(level) => Gzipper::new(level).auto(json),
    }
}

/// gzip of one envelope after another: one deflate state (a few hundred KiB), reset for
/// each, where a new encoder would allocate it every time.
pub struct Gzipper {
    deflate: Compress,
}

/// The gzip member header (RFC 1952): deflate, no flags, no mtime, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

impl Gzipper {
    pub fn new(level: u32) -> Self {
        Self {
            deflate: Compress::new(Level::new(level), false),
        }
    }

    /// `json` gzipped, or plain when gzip would not make it smaller (or failed, which a
    /// fresh deflate state over a buffer does not do).
    pub fn auto(&mut self, json: &[u8]) -> Vec<u8> {
        match self.gzip(json) {
            Some(zipped) if zipped.len() < json.len() => zipped,
            _ => json.to_vec(),
        }
    }

    fn gzip(&mut self, data: &[u8]) -> Option<Vec<u8>> {
        self.deflate.reset();
        let mut out = Vec::with_capacity(data.len() / 4 + 64);
        out.extend_from_slice(&GZIP_HEADER);
        loop {
            let read = usize::try_from(self.deflate.total_in()).ok()?;
            match self
                .deflate
                .compress_vec(&data[read..], &mut out, FlushCompress::Finish)
                .ok()?
            {
                Status::StreamEnd => break,
                // Out of room: deflate writes only into the spare capacity.
                Status::Ok | Status::BufError => out.reserve(out.len().max(4096)),
            }
        }
        let mut crc = Crc::new();
        crc.update(data);
        out.extend_from_slice(&crc.sum().to_le_bytes());
        // ISIZE is the length modulo 2^32 by definition.
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        Some(out)
    }
}

/// Decodes and validates a payload received on `topic_device`'s topic.
///
/// Checks, in order: size, gzip, JSON shape, version, device, and every record.
pub fn decode(payload: &[u8], topic_device: &DeviceId) -> Result<Envelope, WireError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(WireError::Oversize {
            bytes: payload.len(),
            limit: MAX_PAYLOAD_BYTES,
        });
    }
    let unzipped;
    let json: &[u8] = if payload.starts_with(&GZIP_MAGIC) {
        unzipped = gunzip(payload)?;
        &unzipped
    } else {
        payload
    };
    let env: Envelope = match serde_json::from_slice(json) {
        Ok(env) => env,
        Err(e) => {
            // A newer version may well have another shape: say so rather than blame a field.
            return Err(match probe_version(json) {
                Some(v) if v != serde_json::json!(ENVELOPE_VERSION) => {
                    WireError::UnknownVersion(v.to_string())
                }
                _ => WireError::from_json(&e, json),
            });
        }
    };
    if env.v != ENVELOPE_VERSION {
        return Err(WireError::UnknownVersion(env.v.to_string()));
    }
    if env.device != *topic_device {
        return Err(WireError::DeviceMismatch {
            topic: topic_device.to_string(),
            envelope: env.device.to_string(),
        });
    }
    if env.records.is_empty() {
        return Err(WireError::invalid("records", "must not be empty"));
    }
    for record in &env.records {
        if record.seq == 0 {
            return Err(WireError::invalid("seq", "starts at 1"));
        }
        record.body.validate()?;
    }
    Ok(env)
}

fn gunzip(payload: &[u8]) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(payload.len() * 8);
    let limit = MAX_DECOMPRESSED_BYTES as u64 + 1;
    GzDecoder::new(payload)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| WireError::BadGzip(e.to_string()))?;
    if out.len() > MAX_DECOMPRESSED_BYTES {
        return Err(WireError::Oversize {
            bytes: out.len(),
            limit: MAX_DECOMPRESSED_BYTES,
        });
    }
    Ok(out)
}

fn probe_version(json: &[u8]) -> Option<serde_json::Value> {
    #[derive(Deserialize)]
    struct Probe {
        v: serde_json::Value,
    }
    serde_json::from_slice::<Probe>(json).ok().map(|p| p.v)
}

/// Builds envelope JSON from records already serialised by
/// [`crate::record::Unsequenced::to_spool_json`], without parsing them again.
///
/// The agent keeps records in its spool as JSON; splicing the `seq` in is what lets it
/// drain a large backlog at the speed of gzip rather than of serde. The buffer is a complete
/// envelope after every call, so a caller can compress it, find it too large, drop records
/// from the end with [`EnvelopeWriter::truncate`] and compress again without rebuilding it,
/// and can [`EnvelopeWriter::restart`] it for the next envelope without reallocating.
#[derive(Debug)]
pub struct EnvelopeWriter {
    buf: String,
    /// Where each record's text ends in `buf`, before the closing `]}`.
    ends: Vec<usize>,
    header_len: usize,
}

const CLOSE: &str = "]}";

impl EnvelopeWriter {
    pub fn new(device: &DeviceId, spool: &SpoolId, sent_at: Timestamp) -> Self {
        let mut w = Self {
            buf: String::new(),
            ends: Vec::new(),
            header_len: 0,
        };
        w.restart(device, spool, sent_at);
        w
    }

    /// Empties the writer for a new envelope, keeping its buffers' capacity.
    pub fn restart(&mut self, device: &DeviceId, spool: &SpoolId, sent_at: Timestamp) {
        self.buf.clear();
        self.ends.clear();
        // Ids are [A-Za-z0-9_-] only, so they need no JSON escaping.
        let _ = write!(
            self.buf,
            r#"{{"v":{ENVELOPE_VERSION},"device":"{device}","spool":"{spool}","sent_at":"{sent_at}","records":["#
        );
        self.header_len = self.buf.len();
        self.buf.push_str(CLOSE);
    }

    /// Appends a record. `spool_json` must be an object starting with `{"ts":`.
    pub fn push(&mut self, seq: u64, spool_json: &str) {
        self.buf.truncate(self.buf.len() - CLOSE.len());
        if !self.ends.is_empty() {
            self.buf.push(',');
        }
        self.buf.push_str("{\"seq\":");
        // Straight into the buffer: this runs once per record on the drain's hot path.
        let _ = write!(self.buf, "{seq}");
        self.buf.push(',');
        self.buf
            .push_str(spool_json.strip_prefix('{').unwrap_or(spool_json));
        self.ends.push(self.buf.len());
        self.buf.push_str(CLOSE);
    }

    /// Keeps only the first `records` records.
    pub fn truncate(&mut self, records: usize) {
        if records >= self.ends.len() {
            return;
        }
        let end = match records {
            0 => self.header_len,
            n => self.ends[n - 1],
        };
        self.ends.truncate(records);
        self.buf.truncate(end);
        self.buf.push_str(CLOSE);
    }

    /// The envelope as it stands.
    pub fn json(&self) -> &str {
        &self.buf
    }

    pub fn records(&self) -> usize {
        self.ends.len()
    }

    pub fn finish(self) -> String {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{RecordBody, Unsequenced};

    fn ids() -> (DeviceId, SpoolId) {
        (
            DeviceId::new("ws-001").expect("id"),
            SpoolId::new("01JD3W6Q3X8F2M7C9K4N5P6R8T").expect("id"),
        )
    }

    fn reading(t: f64) -> Unsequenced {
        let ts = Timestamp::parse("2026-11-22T09:59:58Z").expect("ts");
        Unsequenced::new(
            ts,
            RecordBody::Reading {
                sensor: "bme280".into(),
                metrics: [("temperature_c".to_owned(), t)].into(),
            },
        )
    }

    #[test]
    fn writer_output_decodes_identically_plain_and_gzipped() {
        let (device, spool) = ids();
        let mut w = EnvelopeWriter::new(&device, &spool, Timestamp::now());
        for seq in 1..=300 {
            w.push(
                seq,
                &reading(seq as f64 / 10.0).to_spool_json().expect("json"),
            );
        }
        let json = w.finish();
        let plain = decode(json.as_bytes(), &device).expect("plain");
        let zipped = encode(json.as_bytes(), Compression::Auto(6));
        assert_eq!(&zipped[..2], &GZIP_MAGIC, "300 readings compress");
        assert_eq!(decode(&zipped, &device).expect("gzip"), plain);
        assert_eq!(plain.records.len(), 300);
        assert_eq!(plain.records[41].seq, 42);
    }

    #[test]
    fn truncated_and_restarted_writers_hold_complete_envelopes() {
        let (device, spool) = ids();
        let mut w = EnvelopeWriter::new(&device, &spool, Timestamp::now());
        let empty: serde_json::Value = serde_json::from_str(w.json()).expect("JSON");
        assert_eq!(empty["records"], serde_json::json!([]));
        for seq in 1..=10 {
            w.push(seq, &reading(seq as f64).to_spool_json().expect("json"));
        }
        w.truncate(4);
        let env = decode(w.json().as_bytes(), &device).expect("truncated");
        assert_eq!(
            env.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        w.push(11, &reading(11.0).to_spool_json().expect("json"));
        let env = decode(w.json().as_bytes(), &device).expect("pushed after truncate");
        assert_eq!(
            env.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 11]
        );
        w.truncate(0);
        let none: serde_json::Value = serde_json::from_str(w.json()).expect("JSON");
        assert_eq!(none["records"], serde_json::json!([]));
        w.restart(&device, &spool, Timestamp::now());
        w.push(12, &reading(12.0).to_spool_json().expect("json"));
        let env = decode(w.finish().as_bytes(), &device).expect("restarted");
        assert_eq!(env.records.iter().map(|r| r.seq).collect::<Vec<_>>(), [12]);
    }

    #[test]
    fn a_reused_gzipper_encodes_as_a_fresh_encoder_decodes() {
        let (device, spool) = ids();
        let mut gz = Gzipper::new(6);
        for n in [1usize, 300, 20_000] {
            let mut w = EnvelopeWriter::new(&device, &spool, Timestamp::now());
            for seq in 1..=n as u64 {
                w.push(
                    seq,
                    &reading(seq as f64 / 7.0).to_spool_json().expect("json"),
                );
            }
            let payload = gz.auto(w.json().as_bytes());
            let fresh = encode(w.json().as_bytes(), Compression::Auto(6));
            assert_eq!(
                payload.starts_with(&GZIP_MAGIC),
                fresh.starts_with(&GZIP_MAGIC)
            );
            assert_eq!(decode(&payload, &device).expect("decodes").records.len(), n);
            // Through a decoder other than ours: the trailer's CRC and length are checked.
            let mut plain = Vec::new();
            GzDecoder::new(&payload[..])
                .read_to_end(&mut plain)
                .expect("gunzip");
            assert_eq!(plain, w.json().as_bytes());
        }
        assert_eq!(gz.auto(b"{}"), b"{}");
    }

    #[test]
    fn auto_keeps_plain_when_gzip_is_larger() {
        assert_eq!(encode(b"{}", Compression::Auto(6)), b"{}");
    }

    #[test]
    fn decode_rejections() {
        let (device, spool) = ids();
        // A fixed time: the cases below edit the text, and must not hit digits of a clock.
        let sent = Timestamp::parse("2026-11-22T10:00:00.000Z").expect("ts");
        let mut w = EnvelopeWriter::new(&device, &spool, sent);
        w.push(1, &reading(1.0).to_spool_json().expect("json"));
        let good = w.finish();
        let other = DeviceId::new("ws-002").expect("id");
        let cases: Vec<(Vec<u8>, &DeviceId, &str)> = vec![
            (vec![b'x'; MAX_PAYLOAD_BYTES + 1], &device, "oversize"),
            (vec![0x1f, 0x8b, 0, 1, 2], &device, "bad_gzip"),
            (b"hello".to_vec(), &device, "not_json"),
            (
                good.replace("\"v\":1", "\"v\":2").into_bytes(),
                &device,
                "unknown_version",
            ),
            (
                good.replace("\"v\":1", "\"v\":\"x\"").into_bytes(),
                &device,
                "unknown_version",
            ),
            (good.clone().into_bytes(), &other, "device_mismatch"),
            (
                good.replace("21", "NaN")
                    .replace(":1.0", ":NaN")
                    .into_bytes(),
                &device,
                "non_finite_metric",
            ),
            (
                good.replace(":1.0", ":1e999").into_bytes(),
                &device,
                "non_finite_metric",
            ),
            (
                good.replace("\"sensor\":\"bme280\",", "").into_bytes(),
                &device,
                "missing_field",
            ),
            (
                good.replace("\"seq\":1", "\"seq\":0").into_bytes(),
                &device,
                "invalid_field",
            ),
        ];
        for (payload, dev, want) in cases {
            let got = decode(&payload, dev)
                .map(|_| ())
                .map_err(|e| e.reason_code());
            assert_eq!(
                got,
                Err(want),
                "{}",
                String::from_utf8_lossy(&payload[..payload.len().min(120)])
            );
        }
        assert!(decode(good.as_bytes(), &device).is_ok());
    }

    #[test]
    fn gzip_bomb_is_oversize() {
        let bomb = encode(
            &vec![b' '; MAX_DECOMPRESSED_BYTES + 10],
            Compression::Gzip(9),
        );
        assert!(bomb.len() < MAX_PAYLOAD_BYTES);
        let (device, _) = ids();
        assert_eq!(
            decode(&bomb, &device).map_err(|e| e.reason_code()),
            Err("oversize")
        );
    }
}
