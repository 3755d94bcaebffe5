//! Simulated devices for the cloud's tests: envelopes built with the `shared` crate, exactly
//! as an agent builds them, published at QoS 1 by a plain rumqttc client that waits for
//! every PUBACK. Faster and more controllable than agent processes where the agent is not
//! under test (the end-to-end suite uses real agents).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_shared::record::Unsequenced;
use ferry_shared::{
    Compression, DeviceId, EnvelopeWriter, RecordBody, SpoolId, Stream, Timestamp, Topic, TxId,
    Txn, TxnOp, encode,
};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

/// One MQTT message: topic and payload.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// `devices` devices named `{prefix}-{i}`, `records` each from seq 1, as messages of
/// `per_envelope` records; and the (device, spool) -> count the lake must end up with.
pub fn fleet(
    prefix: &str,
    devices: usize,
    records: u64,
    per_envelope: u64,
) -> (Vec<Message>, BTreeMap<(String, String), u64>) {
    let mut messages = Vec::new();
    let mut expected = BTreeMap::new();
    for d in 0..devices {
        let device = format!("{prefix}-{d}");
        let spool = crate::cloud::spool_id(d);
        messages.extend(device_messages(
            &device,
            &spool,
            records,
            per_envelope,
            Timestamp::now(),
        ));
        expected.insert((device, spool), records);
    }
    (messages, expected)
}

/// A device's records, from seq 1, `per_envelope` to a message. Record `seq` is a reading
/// unless `seq % 10 == 0` (a txn) or `seq % 10 == 5` (an event); `ts` walks back from
/// `start` one second per seq, so records span several hours and partitions.
pub fn device_messages(
    device: &str,
    spool: &str,
    records: u64,
    per_envelope: u64,
    start: Timestamp,
) -> Vec<Message> {
    let device_id = DeviceId::new(device).expect("device id");
    let spool_id = SpoolId::new(spool).expect("spool id");
    let mut out = Vec::new();
    let mut seq = 1;
    while seq <= records {
        let last = (seq + per_envelope - 1).min(records);
        let mut tel = EnvelopeWriter::new(&device_id, &spool_id, Timestamp::now());
        let mut txn = EnvelopeWriter::new(&device_id, &spool_id, Timestamp::now());
        for s in seq..=last {
            let ts =
                Timestamp::from_unix_millis(start.unix_millis() - (s as i64) * 1000).expect("ts");
            let body = body(device, s);
            let is_txn = body.is_txn();
            let json = Unsequenced::new(ts, body)
                .to_spool_json()
                .expect("valid record");
            if is_txn {
                txn.push(s, &json)
            } else {
                tel.push(s, &json)
            }
        }
        for (writer, stream) in [(txn, Stream::Transactions), (tel, Stream::Telemetry)] {
            if writer.records() > 0 {
                out.push(Message {
                    topic: Topic::new(device_id.clone(), stream).to_string(),
                    payload: encode(writer.finish().as_bytes(), Compression::Auto(6)),
                });
            }
        }
        seq = last + 1;
    }
    out
}

fn body(device: &str, seq: u64) -> RecordBody {
    match seq % 10 {
        0 => RecordBody::Txn(Txn {
            tx_id: TxId::new(format!("{device}:tx-{seq}")).expect("tx id"),
            op: TxnOp::Stamp,
            program: "coffee".into(),
            card: format!("C-{:04}", seq % 200),
            store: "S-01".into(),
            qty: Some(1),
            amount_minor: None,
            currency: None,
            receipt: None,
            reverses: None,
            offline: false,
            staff: None,
        }),
        5 => RecordBody::Event {
            level: ferry_shared::EventLevel::Info,
            message: format!("event {seq}"),
            code: None,
        },
        _ => RecordBody::Reading {
            sensor: "bme280".into(),
            metrics: [("temperature_c".to_owned(), (seq % 300) as f64 / 10.0)].into(),
        },
    }
}

/// Publishes every message at QoS 1 and returns once all are acknowledged by the broker.
pub async fn publish_all(port: u16, client_id: &str, messages: &[Message]) {
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_max_packet_size(1 << 24, 1 << 24)
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    let sender = {
        let client = client.clone();
        let messages = messages.to_vec();
        tokio::spawn(async move {
            for m in messages {
                client
                    .publish(m.topic, QoS::AtLeastOnce, false, m.payload)
                    .await
                    .expect("queueing a publish");
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut acked = 0;
    while acked < messages.len() {
        assert!(
            Instant::now() < deadline,
            "broker acknowledged {acked} of {} publishes",
            messages.len()
        );
        match tokio::time::timeout(Duration::from_secs(30), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Incoming::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("test publisher lost the broker: {e}"),
            Err(_) => panic!("no broker event in 30 s; {acked} acked"),
        }
    }
    sender.await.expect("sender task");
    let _ = client.disconnect().await;
}
