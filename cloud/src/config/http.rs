//! `[http]`: the address and token of the loyalty and dashboard APIs.

use serde::Deserialize;

use super::{ConfigError, invalid};

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: std::net::SocketAddr,
    pub token: String,
}

// By hand, so that the token never reaches a log through `{:?}`.
impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("listen", &self.listen)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl HttpConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.token.is_empty() {
            return Err(invalid("http.token", "must not be empty"));
        }
        Ok(())
    }
}
