//! Open partitions: lines gzipped as they come, so that "flush at `flush_bytes` compressed"
//! is measured, not guessed, and a partition is ready when it is big enough or old enough.
//! The measure is what the compressor has emitted, which trails its input by at most one
//! deflate block (tens of kilobytes): small beside the megabytes of `flush_bytes`.
//!
//! Memory is bounded twice: at most `max_open` partitions, and at most `max_buffer` gzipped
//! bytes across them. Past either bound, the oldest (or the largest) is made ready early.
//! The lines themselves are durable in the journal; this is only the compressor's state.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub flush_bytes: usize,
    pub flush_interval: Duration,
    pub max_open: usize,
    pub max_buffer: usize,
}

/// A partition ready to be sealed and written.
#[derive(Debug)]
pub struct Ready {
    pub partition: String,
    pub chunk_ids: Vec<i64>,
    pub records: u64,
    /// When its oldest record arrived.
    pub oldest: Instant,
    /// The finished gzip object.
    pub bytes: Vec<u8>,
}

struct Open {
    encoder: GzEncoder<Vec<u8>>,
    chunk_ids: Vec<i64>,
    records: u64,
    oldest: Instant,
}

impl Open {
    fn compressed(&self) -> usize {
        self.encoder.get_ref().len()
    }
}

pub struct Batcher {
    limits: Limits,
    open: HashMap<String, Open>,
}

/// gzip of NDJSON lines: the one encoding of lake objects, also used to rebuild a sealed
/// batch after a crash, so both give the same bytes.
pub fn gzip_lines<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut encoder = encoder();
    for chunk in lines {
        // Writing into a Vec cannot fail.
        let _ = encoder.write_all(chunk);
    }
    encoder.finish().unwrap_or_default()
}

fn encoder() -> GzEncoder<Vec<u8>> {
    GzEncoder::new(Vec::new(), Compression::new(6))
}

impl Batcher {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            open: HashMap::new(),
        }
    }

    /// Adds a journal chunk; `oldest` is when its first record arrived.
    pub fn add(
        &mut self,
        partition: &str,
        chunk_id: i64,
        lines: &[u8],
        records: u64,
        oldest: Instant,
    ) {
        let open = self
            .open
            .entry(partition.to_owned())
            .or_insert_with(|| Open {
                encoder: encoder(),
                chunk_ids: Vec::new(),
                records: 0,
                oldest,
            });
        let _ = open.encoder.write_all(lines);
        open.chunk_ids.push(chunk_id);
        open.records += records;
        open.oldest = open.oldest.min(oldest);
    }

    /// Partitions that must be written now: full, old, or over the memory bounds.
    pub fn due(&mut self, now: Instant) -> Vec<Ready> {
        let mut names: Vec<String> = self
            .open
            .iter()
            .filter(|(_, o)| {
                o.compressed() >= self.limits.flush_bytes
                    || now.duration_since(o.oldest) >= self.limits.flush_interval
            })
            .map(|(name, _)| name.clone())
            .collect();
        let mut ready: Vec<Ready> = names.drain(..).filter_map(|n| self.take(&n)).collect();
        while self.open.len() > self.limits.max_open {
            let Some(oldest) = self
                .open
                .iter()
                .min_by_key(|(_, o)| o.oldest)
                .map(|(n, _)| n.clone())
            else {
                break;
            };
            ready.extend(self.take(&oldest));
        }
        while self.buffered() > self.limits.max_buffer {
            let Some(largest) = self
                .open
                .iter()
                .max_by_key(|(_, o)| o.compressed())
                .map(|(n, _)| n.clone())
            else {
                break;
            };
            ready.extend(self.take(&largest));
        }
        ready
    }

    /// Every open partition, at a clean stop.
    pub fn all(&mut self) -> Vec<Ready> {
        let names: Vec<String> = self.open.keys().cloned().collect();
        names.iter().filter_map(|n| self.take(n)).collect()
    }

    /// When the oldest record still unwritten arrived.
    pub fn oldest(&self) -> Option<Instant> {
        self.open.values().map(|o| o.oldest).min()
    }

    pub fn buffered(&self) -> usize {
        self.open.values().map(Open::compressed).sum()
    }

    fn take(&mut self, partition: &str) -> Option<Ready> {
        let open = self.open.remove(partition)?;
        Some(Ready {
            partition: partition.to_owned(),
            chunk_ids: open.chunk_ids,
            records: open.records,
            oldest: open.oldest,
            bytes: open.encoder.finish().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn limits() -> Limits {
        Limits {
            flush_bytes: 4096,
            flush_interval: Duration::from_secs(60),
            max_open: 3,
            max_buffer: 1 << 20,
        }
    }

    fn gunzip(bytes: &[u8]) -> String {
        let mut out = String::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_string(&mut out)
            .expect("gzip");
        out
    }

    #[test]
    fn flushes_on_compressed_size_and_on_age() {
        let t0 = Instant::now();
        let mut b = Batcher::new(limits());
        b.add("a", 1, b"{\"x\":1}\n", 1, t0);
        b.add("a", 2, b"{\"x\":2}\n", 1, t0 + Duration::from_secs(5));
        assert!(b.due(t0 + Duration::from_secs(59)).is_empty());
        let ready = b.due(t0 + Duration::from_secs(60));
        assert_eq!(ready.len(), 1);
        assert_eq!(
            (ready[0].chunk_ids.clone(), ready[0].records),
            (vec![1, 2], 2)
        );
        assert_eq!(gunzip(&ready[0].bytes), "{\"x\":1}\n{\"x\":2}\n");
        assert_eq!(
            ready[0].bytes,
            gzip_lines([&b"{\"x\":1}\n"[..], b"{\"x\":2}\n"]),
            "a rebuild gives the same bytes"
        );

        // Incompressible lines pass flush_bytes quickly; the size is the gzipped one.
        let mut x = 1u64;
        let noise: Vec<u8> = (0..200_000)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                b'a' + (x >> 59) as u8
            })
            .collect();
        b.add("b", 3, &noise, 1, t0);
        let ready = b.due(t0);
        assert_eq!(ready.len(), 1, "compressed size passed 4096");
        assert!(ready[0].bytes.len() >= 4096);
        b.add("c", 4, &vec![b'x'; 20_000], 1, t0);
        assert!(
            b.due(t0).is_empty(),
            "20 kB of one byte gzip far below 4096"
        );
    }

    #[test]
    fn memory_bounds_flush_early() {
        let t0 = Instant::now();
        let mut b = Batcher::new(limits());
        for (i, p) in ["p1", "p2", "p3", "p4"].iter().enumerate() {
            b.add(p, i as i64, b"{}\n", 1, t0 + Duration::from_secs(i as u64));
        }
        let ready = b.due(t0 + Duration::from_secs(5));
        assert_eq!(
            ready
                .iter()
                .map(|r| r.partition.as_str())
                .collect::<Vec<_>>(),
            ["p1"]
        );
        assert_eq!(b.oldest(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(b.all().len(), 3);
        assert!(b.oldest().is_none());
    }
}
