//! A Mosquitto bridge at its defaults, the peers' way to carry a station's messages: an
//! edge broker in a link's namespace bridging `bridge/#` out to the broker over the link,
//! fed one numbered message every `interval` by `mosquitto_pub -l`, and a subscriber here
//! that notes when each number arrived.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

use crate::netns::Link;
use crate::process::Proc;

pub struct Bridge {
    _edge: Proc,
    feeder: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    arrivals: Arc<Mutex<Vec<(u64, Instant)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Bridge {
    /// Starts the edge broker behind `link`, bridged to the broker on `broker_port` at the
    /// link's host address, the subscriber on 127.0.0.1, and the feed.
    pub async fn start(link: &Link, broker_port: u16, dir: &Path, interval: Duration) -> Self {
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let task = subscribe(broker_port, arrivals.clone()).await;

        let edge_port = crate::free_port();
        let conf = dir.join("edge.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {edge_port} 127.0.0.1\nallow_anonymous true\nuser root\n\
                 log_dest stderr\nconnection station\naddress {}:{broker_port}\n\
                 topic bridge/# out 1\n",
                link.host_ip
            ),
        )
        .expect("edge broker config");
        let conf = conf.display().to_string();
        let mut edge = Proc::wrapped(
            &link.exec_prefix(),
            Path::new("mosquitto"),
            &["-c", &conf],
            dir.join("edge.log"),
        );
        edge.start();
        crate::wait_until(Duration::from_secs(10), "the edge broker to listen", || {
            edge.log().contains("running")
        })
        .await;

        let mut pub_args = link.exec_prefix()[1..].to_vec();
        pub_args.extend(
            [
                "mosquitto_pub",
                "-h",
                "127.0.0.1",
                "-p",
                &edge_port.to_string(),
                "-t",
                "bridge/seq",
                "-q",
                "1",
                "-l",
            ]
            .map(String::from),
        );
        let mut publisher = Command::new("ip")
            .args(&pub_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_pub is needed (apt-get install -y mosquitto-clients)");
        let mut stdin = publisher.stdin.take().expect("mosquitto_pub's stdin");
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let feeder = {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    if writeln!(stdin, "{n}").and_then(|()| stdin.flush()).is_err() {
                        break;
                    }
                    sent.store(n, Ordering::Relaxed);
                    std::thread::sleep(interval);
                }
                drop(stdin);
                let _ = publisher.wait();
            })
        };
        Self {
            _edge: edge,
            feeder: Some(feeder),
            stop,
            sent,
            arrivals,
            task,
        }
    }

    /// Stops the feed; returns how many messages it handed to the edge broker.
    pub fn stop_feeding(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(feeder) = self.feeder.take() {
            let _ = feeder.join();
        }
        self.sent.load(Ordering::Relaxed)
    }

    /// Every message that arrived, as (its number, when), in arrival order.
    pub fn arrivals(&self) -> Vec<(u64, Instant)> {
        self.arrivals.lock().expect("bridge arrivals").clone()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop_feeding();
        self.task.abort();
    }
}

async fn subscribe(
    port: u16,
    arrivals: Arc<Mutex<Vec<(u64, Instant)>>>,
) -> tokio::task::JoinHandle<()> {
    let mut opts = MqttOptions::new(
        format!("bridge-sub-{}", std::process::id()),
        "127.0.0.1",
        port,
    );
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    client
        .subscribe("bridge/#", QoS::AtLeastOnce)
        .await
        .expect("bridge subscribe");
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let _client = client;
        let mut subscribed_tx = Some(subscribed_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::SubAck(_))) => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    if let Some(n) = std::str::from_utf8(&p.payload)
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                    {
                        arrivals
                            .lock()
                            .expect("bridge arrivals")
                            .push((n, Instant::now()));
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed)
        .await
        .expect("the bridge's subscriber was not subscribed within 10 s")
        .expect("the bridge's subscriber stopped");
    task
}
