//! A real Mosquitto broker, started on a random 127.0.0.1 port.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::certs::TestPki;

pub struct Mosquitto {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn binary() -> PathBuf {
    for candidate in [
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
        "/usr/bin/mosquitto",
    ] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!(
        "mosquitto is not installed: `cargo xtask test` installs it (apt-get install -y mosquitto)"
    );
}

impl Mosquitto {
    /// A plain-TCP broker. Persistence is on, so that a stop and start keeps the collector's
    /// persistent session and what was queued for it, as a real broker outage would.
    pub fn start() -> Self {
        Self::start_on(crate::free_port(), None)
    }

    /// A broker that requires a client certificate signed by `pki`'s CA.
    pub fn start_tls(pki: &TestPki) -> Self {
        Self::start_on(crate::free_port(), Some(pki))
    }

    /// A broker on a given port, e.g. one an agent was already told to use.
    ///
    /// `user root`: started as root, mosquitto would otherwise drop to the `mosquitto` user,
    /// which cannot write into this root-only folder, and every save of its persistence
    /// file would fail, so a restart would lose what it had queued. Not root, the line does
    /// nothing. [`Mosquitto::stop`] and the drop fail the test if a save failed anyway.
    pub fn start_on(port: u16, pki: Option<&TestPki>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir for mosquitto");
        let mut conf = format!(
            "listener {port} 127.0.0.1\n\
             user root\n\
             allow_anonymous true\n\
             persistence true\n\
             persistence_location {}/\n\
             max_queued_messages 0\n\
             max_packet_size 262144\n\
             log_dest stderr\n\
             log_type error\n\
             log_type warning\n\
             log_type notice\n",
            dir.path().display()
        );
        if let Some(pki) = pki {
            conf.push_str(&format!(
                "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nuse_identity_as_username true\n",
                pki.ca.display(),
                pki.server_cert.display(),
                pki.server_key.display()
            ));
        }
        Self::start_conf(port, dir, &conf)
    }

    /// A broker on `port` with a whole configuration, `conf`, in which `{dir}` stands for
    /// a private folder of its own (for its persistence).
    pub fn start_with_conf(port: u16, conf: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir for mosquitto");
        let conf = conf.replace("{dir}", &dir.path().display().to_string());
        Self::start_conf(port, dir, &conf)
    }

    fn start_conf(port: u16, dir: tempfile::TempDir, conf: &str) -> Self {
        let mut file = std::fs::File::create(dir.path().join("mosquitto.conf")).expect("conf");
        file.write_all(conf.as_bytes()).expect("write conf");
        let mut broker = Self {
            port,
            dir,
            child: None,
        };
        broker.resume();
        broker
    }

    /// Stops the broker politely (it saves its persistence file), keeping the port. Panics
    /// if the broker logged a failed save: what it had queued would then be lost.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::agent::signal(&child, "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.assert_saves_ok();
    }

    /// Panics when the broker's log shows that it failed to save its persistence file.
    pub fn assert_saves_ok(&self) {
        let log = self.log();
        let failed: Vec<&str> = log.lines().filter(|l| l.contains("Error saving")).collect();
        assert!(
            failed.is_empty(),
            "mosquitto on port {} could not save its persistence, so a restart loses its queues:\n{}",
            self.port,
            failed.join("\n")
        );
    }

    /// Starts it again on the same port, with the same configuration and persistence.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let log = std::fs::File::create(self.dir.path().join("mosquitto.log")).expect("log file");
        let child = Command::new(binary())
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {}: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A second panic while unwinding would abort and hide the first one.
        if !std::thread::panicking() {
            self.assert_saves_ok();
        }
    }
}
