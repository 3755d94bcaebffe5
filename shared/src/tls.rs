//! One rustls crypto provider for every process: ring (it cross-compiles with a Debian
//! cross gcc alone).
//!
//! rumqttc, reqwest and the OIDC client build their rustls configs from the process-wide
//! default. rustls picks one by itself only when a build compiles exactly one provider, and
//! a workspace build compiles two (ferry-cloud's Delta crates bring aws-lc-rs), so every
//! place about to let a library build a config calls this first.

/// Makes ring the process's default provider. A second call, or one after another
/// provider was installed, changes nothing.
pub fn use_ring() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
