//! A subscriber that decodes every envelope with the `shared` crate and records what it saw.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ferry_shared::{Record, Stream, Topic};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS, TlsConfiguration, Transport};

use crate::certs::TestPki;

/// One received envelope.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub at: Instant,
    pub stream: Stream,
    pub bytes: usize,
    pub records: usize,
}

#[derive(Debug, Default)]
pub struct Seen {
    /// Seqs seen per (device, spool).
    pub seqs: HashMap<(String, String), BTreeSet<u64>>,
    /// Records by seq, for the one spool of a device, the last copy seen.
    pub records: HashMap<String, HashMap<u64, Record>>,
    pub arrivals: Vec<Arrival>,
    pub deliveries: u64,
    pub rejects: Vec<String>,
    /// Last retained status per device.
    pub status: HashMap<String, serde_json::Value>,
    /// The first copy of each (device, spool, seq), as JSON: a later copy that differs is a
    /// seq used for two records, which the cloud would drop as a resend.
    pub first_copies: HashMap<(String, String, u64), String>,
    /// (device, seq) of every such second record.
    pub conflicts: Vec<(String, u64)>,
}

impl Seen {
    /// All seqs seen from a device, whatever the spool.
    pub fn seqs_of(&self, device: &str) -> BTreeSet<u64> {
        self.seqs
            .iter()
            .filter(|((d, _), _)| d == device)
            .flat_map(|(_, s)| s.iter().copied())
            .collect()
    }

    pub fn spools_of(&self, device: &str) -> usize {
        self.seqs.keys().filter(|(d, _)| d == device).count()
    }
}

pub struct Collector {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    /// Subscribes to every Ferry device stream on `port` with a persistent session, and waits
    /// until the subscription is acknowledged.
    pub async fn start(port: u16) -> Self {
        Self::start_with(port, None).await
    }

    /// The same over mutual TLS, with `pki`'s client certificate.
    pub async fn start_tls(port: u16, pki: &TestPki) -> Self {
        Self::start_mtls(port, &pki.ca, &pki.client_cert, &pki.client_key).await
    }

    /// The same over mutual TLS with the certificate and key in these files.
    pub async fn start_mtls(port: u16, ca: &Path, cert: &Path, key: &Path) -> Self {
        let read = |p: &Path| std::fs::read(p).expect("reading a test certificate");
        Self::start_with(port, Some((read(ca), read(cert), read(key)))).await
    }

    /// `identity`: the CA, client certificate and key, PEM.
    async fn start_with(port: u16, identity: Option<(Vec<u8>, Vec<u8>, Vec<u8>)>) -> Self {
        let mut opts = MqttOptions::new(
            format!("collector-{}", crate::free_port()),
            "127.0.0.1",
            port,
        );
        if let Some((ca, cert, key)) = identity {
            ferry_shared::tls::use_ring();
            opts.set_transport(Transport::Tls(TlsConfiguration::Simple {
                ca,
                alpn: None,
                client_auth: Some((cert, key)),
            }));
        }
        opts.set_clean_session(false)
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(512 * 1024, 512 * 1024);
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
        let task_seen = seen.clone();
        let task = tokio::spawn(async move {
            let mut subscribed_tx = Some(subscribed_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        for stream in [Stream::Telemetry, Stream::Transactions, Stream::Status] {
                            let _ =
                                client.try_subscribe(Topic::filter_all(stream), QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        record(&task_seen, &p.topic, &p.payload)
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed)
            .await
            .expect("collector subscribed within 10 s")
            .expect("collector task alive");
        Self { seen, task }
    }

    pub fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().expect("collector lock")
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn record(seen: &Mutex<Seen>, topic: &str, payload: &[u8]) {
    let mut seen = seen.lock().expect("collector lock");
    let topic = match Topic::parse(topic) {
        Ok(t) => t,
        Err(e) => return seen.rejects.push(format!("{topic}: {e}")),
    };
    if topic.stream == Stream::Status {
        if let Ok(v) = serde_json::from_slice(payload) {
            seen.status.insert(topic.device.to_string(), v);
        }
        return;
    }
    match ferry_shared::decode(payload, &topic.device) {
        Ok(env) => {
            seen.deliveries += 1;
            seen.arrivals.push(Arrival {
                at: Instant::now(),
                stream: topic.stream,
                bytes: payload.len(),
                records: env.records.len(),
            });
            let key = (env.device.to_string(), env.spool.to_string());
            let seqs = seen.seqs.entry(key).or_default();
            seqs.extend(env.records.iter().map(|r| r.seq));
            for r in &env.records {
                let copy = serde_json::to_string(r).unwrap_or_default();
                let at = (env.device.to_string(), env.spool.to_string(), r.seq);
                match seen.first_copies.get(&at) {
                    Some(first) if *first != copy => {
                        seen.conflicts.push((env.device.to_string(), r.seq))
                    }
                    Some(_) => {}
                    None => {
                        seen.first_copies.insert(at, copy);
                    }
                }
            }
            let records = seen.records.entry(env.device.to_string()).or_default();
            for r in env.records {
                records.insert(r.seq, r);
            }
        }
        Err(e) => seen.rejects.push(format!("{topic}: {e}")),
    }
}
