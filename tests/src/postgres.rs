//! A real PostgreSQL server, made with `initdb` and started on a random 127.0.0.1 port from
//! the server binaries (`PG_BIN`, or the newest `/usr/lib/postgresql/*/bin`). PostgreSQL refuses to
//! run as root, so as root it runs as the `postgres` user through `runuser`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn bin_dir() -> PathBuf {
    let usable = |dir: &Path| dir.join("initdb").exists() && dir.join("postgres").exists();
    if let Some(dir) = std::env::var_os("PG_BIN").map(PathBuf::from) {
        assert!(
            usable(&dir),
            "PG_BIN={} holds no initdb and postgres",
            dir.display()
        );
        return dir;
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| usable(bin))
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries are not installed: `cargo xtask test` installs them \
             (apt-get install -y postgresql), or set PG_BIN"
        )
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// The command, as the `postgres` user when we are root.
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

impl Postgres {
    /// A server for tests: no fsync (see below).
    pub fn start() -> Self {
        Self::launch(false)
    }

    /// A server that flushes its commits as production does, for benchmarks.
    pub fn start_durable() -> Self {
        Self::launch(true)
    }

    fn launch(durable: bool) -> Self {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("tempdir for PostgreSQL");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown of the PostgreSQL folder failed");
        }
        let data = dir.path().join("data");
        let out = as_server_user(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "ferry", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("running initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = crate::free_port();
        let log = std::fs::File::create(dir.path().join("postgres.log")).expect("log");
        let child = as_server_user(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-k")
            .arg(dir.path())
            .args(["-c", "max_connections=100"])
            // A test server is never crashed: without fsync it does not flood the shared
            // disk with flushes that stall every other test's fsyncs.
            .args(if durable {
                ["-c", "fsync=on", "-c", "synchronous_commit=on"]
            } else {
                ["-c", "fsync=off", "-c", "synchronous_commit=off"]
            })
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting postgres");
        let pg = Self {
            port,
            dir,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while postgres_ready(port).is_err() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start; log:\n{}",
                std::fs::read_to_string(pg.dir.path().join("postgres.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        pg
    }

    /// A new, empty database, and its URL.
    pub fn database(&self, name: &str) -> String {
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .expect("connecting to PostgreSQL");
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .expect("CREATE DATABASE");
        self.url(name)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://ferry@127.0.0.1:{}/{db}", self.port)
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        bin_dir().join(name)
    }
}

fn postgres_ready(port: u16) -> Result<(), postgres::Error> {
    let url = format!("postgres://ferry@127.0.0.1:{port}/postgres");
    postgres::Client::connect(&url, postgres::NoTls)?.batch_execute("SELECT 1")
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Fast shutdown; the folder goes with the test.
            let _ = Command::new("kill")
                .arg("-INT")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
