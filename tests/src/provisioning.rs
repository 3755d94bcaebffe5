//! A stand-in for AWS IoT fleet provisioning, on a real Mosquitto: it answers
//! `$aws/certificates/create-from-csr/json`, `$aws/certificates/create/json` and
//! `$aws/provisioning-templates/{name}/provision/json` on their `/accepted` and
//! `/rejected` topics, with IoT Core's payload and error shapes, and signs certificates
//! with the test CA, so that what a device gets really connects.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS, TlsConfiguration, Transport};
use serde_json::{Value, json};

use crate::certs::{CaSigner, TestPki};

/// How the stand-in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// As IoT Core does when the claim and the template allow it.
    Accept,
    /// Rejects the certificate request (400 `InvalidCsr` / `InvalidRequest`).
    RejectCertificate,
    /// Accepts the certificate; rejects the provisioning (403 `AccessDenied`, as a
    /// pre-provisioning hook that says no).
    RejectProvision,
    /// Never answers.
    Silent,
}

/// What the stand-in was asked: (topic, payload).
#[derive(Default)]
pub struct Asked {
    pub requests: Vec<(String, Value)>,
}

pub struct FleetProvisioning {
    asked: Arc<Mutex<Asked>>,
    task: tokio::task::JoinHandle<()>,
}

const CREATE_FROM_CSR: &str = "$aws/certificates/create-from-csr/json";
const CREATE: &str = "$aws/certificates/create/json";
/// Every template's topic, to answer a wrong name as IoT Core does.
const FILTERS: [&str; 3] = [
    CREATE_FROM_CSR,
    CREATE,
    "$aws/provisioning-templates/+/provision/json",
];

impl FleetProvisioning {
    /// Connects to the broker on `port` (mutual TLS with `pki`'s client certificate) and
    /// serves `template`; things are named `ferry-{SerialNumber}`.
    pub async fn start(port: u16, pki: &TestPki, template: &str, answer: Answer) -> Self {
        let read = |p: &std::path::Path| std::fs::read(p).expect("reading a test certificate");
        let mut opts = MqttOptions::new(
            format!("iot-core-{}", crate::free_port()),
            "127.0.0.1",
            port,
        );
        ferry_shared::tls::use_ring();
        opts.set_transport(Transport::Tls(TlsConfiguration::Simple {
            ca: read(&pki.ca),
            alpn: None,
            client_auth: Some((read(&pki.client_cert), read(&pki.client_key))),
        }));
        opts.set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(256 * 1024, 256 * 1024);
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let provision = format!("$aws/provisioning-templates/{template}/provision/json");
        let asked = Arc::new(Mutex::new(Asked::default()));
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let mut server = Server {
            signer: pki.signer(),
            answer,
            provision,
            tokens: HashSet::new(),
            issued: 0,
        };
        let task_asked = asked.clone();
        let task = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut subacks = 0;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        for filter in FILTERS {
                            let _ = client.try_subscribe(filter, QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        subacks += 1;
                        if subacks == FILTERS.len()
                            && let Some(tx) = ready_tx.take()
                        {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let request: Value =
                            serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        task_asked
                            .lock()
                            .expect("lock")
                            .requests
                            .push((p.topic.clone(), request.clone()));
                        if let Some((suffix, body)) = server.answer(&p.topic, &request) {
                            let _ = client.try_publish(
                                format!("{}/{suffix}", p.topic),
                                QoS::AtLeastOnce,
                                false,
                                body.to_string(),
                            );
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready)
            .await
            .expect("the provisioning stand-in subscribed within 10 s")
            .expect("the provisioning task is alive");
        Self { asked, task }
    }

    pub fn asked(&self) -> MutexGuard<'_, Asked> {
        self.asked.lock().expect("lock")
    }
}

impl Drop for FleetProvisioning {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Server {
    signer: CaSigner,
    answer: Answer,
    provision: String,
    tokens: HashSet<String>,
    issued: u64,
}

fn rejection(status: u16, code: &str, message: &str) -> (&'static str, Value) {
    (
        "rejected",
        json!({ "statusCode": status, "errorCode": code, "errorMessage": message }),
    )
}

impl Server {
    /// The accepted answer to a certificate request, whose ownership token provisioning
    /// then takes once.
    fn issued(&mut self, id: String, pem: String, key: Option<String>) -> (&'static str, Value) {
        let token = format!("ownership-token-{}", self.issued);
        self.tokens.insert(token.clone());
        let mut answer = json!({
            "certificateId": id,
            "certificatePem": pem,
            "certificateOwnershipToken": token,
        });
        if let Some(key) = key {
            answer["privateKey"] = key.into();
        }
        ("accepted", answer)
    }

    /// The answer to `request` on `topic`: ("accepted" | "rejected", payload), or none.
    fn answer(&mut self, topic: &str, request: &Value) -> Option<(&'static str, Value)> {
        if self.answer == Answer::Silent {
            return None;
        }
        self.issued += 1;
        let id = format!("{:064x}", self.issued);
        match topic {
            CREATE_FROM_CSR | CREATE if self.answer == Answer::RejectCertificate => Some(
                rejection(400, "InvalidCsr", "Invalid certificate signing request"),
            ),
            CREATE_FROM_CSR => {
                let Some(csr) = request["certificateSigningRequest"].as_str() else {
                    return Some(rejection(
                        400,
                        "InvalidRequest",
                        "Missing certificateSigningRequest",
                    ));
                };
                match self.signer.sign_csr(csr) {
                    Ok(pem) => Some(self.issued(id, pem, None)),
                    Err(e) => Some(rejection(400, "InvalidCsr", &e)),
                }
            }
            CREATE => {
                let (pem, key) = self.signer.issue("created-by-aws");
                Some(self.issued(id, pem, Some(key)))
            }
            t if t != self.provision => Some(rejection(
                404,
                "ResourceNotFound",
                "The provisioning template does not exist",
            )),
            _ if self.answer == Answer::RejectProvision => Some(rejection(
                403,
                "AccessDenied",
                "Pre-provisioning hook denied the request",
            )),
            _ => {
                let owned = request["certificateOwnershipToken"]
                    .as_str()
                    .is_some_and(|t| self.tokens.remove(t));
                if !owned {
                    return Some(rejection(
                        400,
                        "InvalidRequest",
                        "Invalid certificate ownership token",
                    ));
                }
                let Some(serial) = request["parameters"]["SerialNumber"].as_str() else {
                    return Some(rejection(
                        400,
                        "InvalidParameters",
                        "Missing parameter SerialNumber",
                    ));
                };
                Some((
                    "accepted",
                    json!({
                        "deviceConfiguration": {},
                        "thingName": format!("ferry-{serial}"),
                    }),
                ))
            }
        }
    }
}
