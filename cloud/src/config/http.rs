//! `[http]`: the address and token of the loyalty and dashboard APIs.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, resolve_token};

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: std::net::SocketAddr,
    /// The bearer token every API call needs; or `token_file`, read at startup.
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

// By hand, so that the token never reaches a log through `{:?}`.
impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("listen", &self.listen)
            .field("token", &"<redacted>")
            .field("token_file", &self.token_file)
            .finish()
    }
}

impl HttpConfig {
    /// Reads `token_file` into `token`, and checks the token.
    pub(super) fn resolve(&mut self) -> Result<(), ConfigError> {
        self.token = resolve_token(
            ("http.token", "http.token_file"),
            &self.token,
            self.token_file.as_deref(),
        )?;
        Ok(())
    }
}
