//! `[http]`: the address of the loyalty and dashboard APIs, and who may call them: the
//! named tokens of `[[http.tokens]]`, each with a role, and the single `http.token` of
//! older configs, which is an `admin`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid, resolve_token};

/// What a caller may do (README: roles). `Router` is the ingest's loyalty router, known by
/// `loyalty.token`; it is never configured in `[[http.tokens]]`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ApiRole {
    /// Everything.
    Admin,
    /// The device registry, the dashboards, and reading the ledger; not programs.
    Operator,
    /// Its stores' figures and cards, and transactions for its stores.
    Store,
    /// The dashboards, read only, without card-level data.
    Viewer,
    /// Posting transactions and reading balances.
    Router,
}

impl ApiRole {
    pub const ALL: [Self; 5] = [
        Self::Admin,
        Self::Operator,
        Self::Store,
        Self::Viewer,
        Self::Router,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Store => "store",
            Self::Viewer => "viewer",
            Self::Router => "router",
        }
    }
}

/// One `[[http.tokens]]` entry.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedToken {
    /// Shown in logs and the audit trail; the secret never is.
    pub name: String,
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    pub role: ApiRole,
    /// Role `store` only: the stores it speaks for.
    #[serde(default)]
    pub stores: Vec<String>,
    /// Role `store` only: the brands it speaks for, every store of theirs included.
    #[serde(default)]
    pub brands: Vec<String>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: std::net::SocketAddr,
    /// An `admin` token, as configs before `[[http.tokens]]` gave it; or `token_file`.
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub tokens: Vec<NamedToken>,
    /// Signed-in users: JWTs from this OpenID Connect provider (Cognito, say).
    pub oidc: Option<OidcConfig>,
}

/// `[http.oidc]`: whose JWTs the APIs accept, and where a user's role and stores are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The `iss` of its tokens: `https://cognito-idp.REGION.amazonaws.com/POOL_ID`.
    pub issuer: String,
    /// The `aud` (ID tokens) or `client_id` (Cognito access tokens) they must carry: the
    /// app client's id.
    pub audience: String,
    /// The provider's keys; by default from `{issuer}/.well-known/openid-configuration`.
    pub jwks_url: Option<String>,
    /// The claim listing the user's groups: `admin`, `operator`, `viewer`, `store` (with
    /// `stores_claim`) or `store:S-01`.
    #[serde(default = "roles_claim")]
    pub roles_claim: String,
    /// The claim listing a `store` user's stores (an array, or a comma-separated string).
    #[serde(default = "stores_claim")]
    pub stores_claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "leeway_s")]
    pub leeway_s: u64,
}

fn roles_claim() -> String {
    "cognito:groups".into()
}

fn stores_claim() -> String {
    "custom:stores".into()
}

fn leeway_s() -> u64 {
    60
}

// By hand, so that no token reaches a log through `{:?}`.
impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("listen", &self.listen)
            .field("token", &"<redacted>")
            .field("token_file", &self.token_file)
            .field(
                "tokens",
                &self
                    .tokens
                    .iter()
                    .map(|t| (t.name.as_str(), t.role))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A token name: shown in logs and the audit trail, so short and printable.
const MAX_NAME_LEN: usize = 64;

impl HttpConfig {
    /// Reads every `token_file`, and checks every token, name, role and store list.
    pub(super) fn resolve(&mut self) -> Result<(), ConfigError> {
        if let Some(oidc) = &self.oidc {
            for (key, value) in [
                ("http.oidc.issuer", &oidc.issuer),
                ("http.oidc.audience", &oidc.audience),
            ] {
                if value.is_empty() {
                    return Err(invalid(key, "required"));
                }
            }
            let url = oidc.jwks_url.as_deref().unwrap_or(&oidc.issuer);
            if !secure_or_loopback(url) {
                return Err(invalid(
                    if oidc.jwks_url.is_some() {
                        "http.oidc.jwks_url"
                    } else {
                        "http.oidc.issuer"
                    },
                    "must be https:// (http only on 127.0.0.1, for tests)",
                ));
            }
            if oidc.leeway_s > 300 {
                return Err(invalid("http.oidc.leeway_s", "at most 300 seconds"));
            }
        }
        let legacy = !self.token.is_empty() || self.token_file.is_some();
        if legacy || (self.tokens.is_empty() && self.oidc.is_none()) {
            self.token = resolve_token(
                ("http.token", "http.token_file"),
                &self.token,
                self.token_file.as_deref(),
            )
            .map_err(|e| {
                if self.tokens.is_empty() {
                    e
                } else {
                    invalid("http.token", e.to_string())
                }
            })?;
        }
        let mut names = BTreeSet::new();
        let mut secrets: BTreeSet<String> = BTreeSet::new();
        if !self.token.is_empty() {
            secrets.insert(self.token.clone());
        }
        for (i, t) in self.tokens.iter_mut().enumerate() {
            let key = |field: &str| format!("http.tokens[{i}].{field}");
            if t.name.is_empty()
                || t.name.len() > MAX_NAME_LEN
                || !t.name.chars().all(|c| c.is_ascii_graphic())
            {
                return Err(invalid(
                    key("name"),
                    format!("1 to {MAX_NAME_LEN} printable characters without spaces"),
                ));
            }
            if !names.insert(t.name.clone()) {
                return Err(invalid(key("name"), format!("{:?} is used twice", t.name)));
            }
            let given = Some(t.token.as_str()).filter(|s| !s.is_empty());
            t.token = ferry_shared::token::from_config(given, t.token_file.as_deref())
                .map_err(|(field, problem)| invalid(key(field), problem))?;
            if !secrets.insert(t.token.clone()) {
                return Err(invalid(
                    key("token"),
                    "the same secret as another token; each needs its own",
                ));
            }
            match (t.role, t.stores.is_empty() && t.brands.is_empty()) {
                (ApiRole::Router, _) => {
                    return Err(invalid(
                        key("role"),
                        "router is loyalty.token's role; use admin, operator, store or viewer",
                    ));
                }
                (ApiRole::Store, true) => {
                    return Err(invalid(
                        key("stores"),
                        "role store needs its stores (stores = [...]) or brands (brands = [...])",
                    ));
                }
                (ApiRole::Store, false) => {}
                (_, false) => {
                    return Err(invalid(
                        key("stores"),
                        "only role store has stores or brands",
                    ));
                }
                (_, true) => {}
            }
            if let Some(bad) = t.stores.iter().chain(&t.brands).find(|s| {
                s.is_empty()
                    || s.len() > ferry_shared::limits::MAX_TEXT_LEN
                    || s.chars().any(char::is_control)
            }) {
                return Err(invalid(
                    key("stores"),
                    format!("{bad:?} is not a store or brand id"),
                ));
            }
        }
        Ok(())
    }
}

/// `https://`, or plain `http://` to a loopback address, judged by the parsed host (a
/// prefix would let `http://127.0.0.1.evil.example` through).
fn secure_or_loopback(url: &str) -> bool {
    let Ok(url) = url::Url::parse(url) else {
        return false;
    };
    match (url.scheme(), url.host()) {
        ("https", Some(_)) => true,
        ("http", Some(url::Host::Ipv4(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Ipv6(ip))) => ip.is_loopback(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::secure_or_loopback;

    #[test]
    fn loopback_is_judged_by_the_parsed_host() {
        for ok in [
            "https://idp.example/x",
            "http://127.0.0.1:9000/",
            "http://[::1]:80/",
        ] {
            assert!(secure_or_loopback(ok), "{ok}");
        }
        for bad in [
            "http://127.0.0.1.evil.example/",
            "http://127.0.0.1@evil.example/",
            "http://localhost.evil.example/",
            "http://10.0.0.1/",
            "ftp://127.0.0.1/",
            "not a url",
        ] {
            assert!(!secure_or_loopback(bad), "{bad}");
        }
    }
}
