//! The ports `ferry-cloud dev` listens on, checked before anything starts: a second `dev`
//! on the same ports would otherwise join the first one's broker with the same client ids,
//! and the two would knock each other off.

use std::net::{Ipv4Addr, TcpListener};

use super::DevOptions;
use super::agents::TILLS;

/// The `n`th till's POS API (from 1): the ports after the cloud's, 8081 and 8082 by
/// default.
pub fn pos_port(opts: &DevOptions, n: usize) -> anyhow::Result<u16> {
    u16::try_from(n)
        .ok()
        .and_then(|n| opts.http_port.checked_add(n))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--http-port {}: the tills' POS APIs take the {TILLS} ports after it, which \
                 must be below 65536",
                opts.http_port
            )
        })
}

/// Every port free on 127.0.0.1, or an error naming the first that is not and the flag
/// that moves it. Each is bound and let go at once; what starts next binds it again.
pub fn check(opts: &DevOptions) -> anyhow::Result<()> {
    let mut wanted = vec![
        (opts.mqtt_port, "the embedded MQTT broker", "--mqtt-port"),
        (opts.http_port, "the cloud API and dashboard", "--http-port"),
    ];
    for n in 1..=TILLS {
        wanted.push((
            pos_port(opts, n)?,
            "a simulated till's POS API (the ports after --http-port)",
            "--http-port",
        ));
    }
    for (i, (port, what, flag)) in wanted.iter().enumerate() {
        if let Some((_, other, _)) = wanted[..i].iter().find(|(p, ..)| p == port) {
            anyhow::bail!("port {port} is wanted by both {other} and {what}; change {flag}");
        }
        TcpListener::bind((Ipv4Addr::LOCALHOST, *port)).map_err(|e| {
            anyhow::anyhow!(
                "port {port} on 127.0.0.1, for {what}, is not free ({e}); another \
                 `ferry-cloud dev` may be running. Stop it, or choose another port with {flag}"
            )
        })?;
    }
    Ok(())
}
