//! A link of the test's own between this (root) network namespace and one it makes for the
//! agent: a veth pair, addresses only on that pair, a token-bucket cap (`tc … tbf`) and a
//! silent mode in which packets vanish with no RST, as behind a dead 3G modem.
//!
//! Nothing may leave the machine: before any address is set, a blackhole route for the
//! pair's subnet goes into the root namespace (with a high metric, under the pair's own
//! route). Should the veth go down, the kernel would otherwise send the test's traffic out
//! of the default route. Silence is made by pointing each end's neighbour entry at a MAC no
//! interface has, which drops packets and leaves the routes alone.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::broker::Mosquitto;

/// A MAC address no interface has (locally administered).
const NOWHERE: &str = "02:00:00:00:fe:01";

pub struct Link {
    /// The namespace the agent runs in.
    pub ns: String,
    host_if: String,
    agent_if: String,
    /// The root namespace's end (where the broker listens) and the agent's.
    pub host_ip: String,
    pub agent_ip: String,
    subnet: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program).args(args).output().map_err(|e| {
        format!("{program} is needed for the link tests (apt-get install -y iproute2): {e}")
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Link {
    /// Makes the namespace and the pair. `Err` says why the kernel refused (no namespaces
    /// where the test runs, not root): the caller prints it and says the test did not run.
    pub fn new() -> Result<Self, String> {
        static MADE: AtomicU32 = AtomicU32::new(0);
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Interface names are at most 15 bytes.
        let tag = format!("{:x}{n}", pid % 0xfffff);
        // 10.213.X.Y/30, one /30 per link, distinct across the processes of one run.
        let slot = (pid.wrapping_mul(7) + n * 4) % (64 * 250);
        let (third, fourth) = (slot / 64, (slot % 64) * 4);
        let base = format!("10.213.{third}");
        let link = Self {
            ns: format!("ferry-{tag}"),
            host_if: format!("fyh{tag}"),
            agent_if: format!("fya{tag}"),
            host_ip: format!("{base}.{}", fourth + 1),
            agent_ip: format!("{base}.{}", fourth + 2),
            subnet: format!("{base}.{fourth}/30"),
        };
        // First of all: nothing for this subnet may take the default route.
        // `replace`: a run killed before its cleanup may have left the same route behind.
        ip(&[
            "route",
            "replace",
            "blackhole",
            &link.subnet,
            "metric",
            "4000",
        ])?;
        let made = (|| {
            ip(&["netns", "add", &link.ns])?;
            ip(&[
                "link",
                "add",
                &link.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &link.agent_if,
            ])?;
            ip(&["link", "set", &link.agent_if, "netns", &link.ns])?;
            ip(&[
                "addr",
                "add",
                &format!("{}/30", link.host_ip),
                "dev",
                &link.host_if,
            ])?;
            ip(&["link", "set", &link.host_if, "up"])?;
            link.in_ns(&[
                "addr",
                "add",
                &format!("{}/30", link.agent_ip),
                "dev",
                &link.agent_if,
            ])?;
            link.in_ns(&["link", "set", &link.agent_if, "up"])?;
            link.in_ns(&["link", "set", "lo", "up"])
        })();
        // Dropping cleans up whatever was made.
        made.map(|()| link)
    }

    fn in_ns(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["netns", "exec", &self.ns, "ip"];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Caps both directions at `kbit` kbit/s with a token bucket, its queue a second of the
    /// rate deep (a modem's buffer), so TCP sees a slow link rather than a lossy one.
    pub fn cap(&self, kbit: u32) -> Result<(), String> {
        let rate = format!("{kbit}kbit");
        let limit = (kbit as usize * 1000 / 8).max(16 * 1024).to_string();
        let tbf = [
            "root", "tbf", "rate", &rate, "burst", "4096", "limit", &limit,
        ];
        let mut host = vec!["qdisc", "replace", "dev", &self.host_if];
        host.extend_from_slice(&tbf);
        run("tc", &host)?;
        let mut agent = vec![
            "netns",
            "exec",
            &self.ns,
            "tc",
            "qdisc",
            "replace",
            "dev",
            &self.agent_if,
        ];
        agent.extend_from_slice(&tbf);
        run("ip", &agent)
    }

    /// Packets each way vanish from now on: no RST, no ICMP, routes unchanged.
    pub fn silence(&self) -> Result<(), String> {
        ip(&[
            "neigh",
            "replace",
            &self.agent_ip,
            "lladdr",
            NOWHERE,
            "dev",
            &self.host_if,
            "nud",
            "permanent",
        ])?;
        self.in_ns(&[
            "neigh",
            "replace",
            &self.host_ip,
            "lladdr",
            NOWHERE,
            "dev",
            &self.agent_if,
            "nud",
            "permanent",
        ])
    }

    /// The link carries again: the neighbour entries are learnt afresh.
    pub fn restore(&self) -> Result<(), String> {
        ip(&["neigh", "del", &self.agent_ip, "dev", &self.host_if])?;
        self.in_ns(&["neigh", "del", &self.host_ip, "dev", &self.agent_if])
    }

    /// A link, or `None` after printing on the test's output that `test` did not run
    /// because the kernel refused a namespace here (not root, or a sandbox without them).
    pub fn or_skip(test: &str) -> Option<Self> {
        match Self::new() {
            Ok(link) => Some(link),
            Err(e) => {
                println!("{test}: NOT RUN: the kernel refused a network namespace here: {e}");
                None
            }
        }
    }

    /// A broker in the root namespace, on 127.0.0.1 for the test's own clients and on the
    /// link's address for what runs behind it; it queues without limit.
    pub fn broker(&self) -> Mosquitto {
        let port = crate::free_port();
        let conf = format!(
            "listener {port} 127.0.0.1\nlistener {port} {}\nuser root\nallow_anonymous true\n\
             persistence false\nmax_queued_messages 0\nmax_packet_size 262144\n\
             log_dest stderr\nlog_type error\nlog_type warning\n",
            self.host_ip
        );
        Mosquitto::start_with_conf(port, &conf)
    }

    /// The command prefix that runs a program inside the agent's namespace.
    pub fn exec_prefix(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.ns]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Deleting the namespace deletes the pair with it.
        let _ = ip(&["netns", "del", &self.ns]);
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["route", "del", "blackhole", &self.subnet]);
    }
}
