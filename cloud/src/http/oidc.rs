//! Signed-in users: a JWT from the OpenID Connect provider of `[http.oidc]` (Cognito, say)
//! as the bearer token. Its signature is checked against the provider's published keys
//! (JWKS, RS256 or ES256; anything else, `none` included, is refused), then `iss`, the
//! audience (`aud`, or Cognito's `client_id`), `exp` and `nbf` within a small leeway. The
//! user's groups give the role: `admin`, `operator`, `viewer`, or `store` with the stores of
//! the stores claim, or `store:S-01`.
//!
//! The keys are fetched when first needed and again when a token names a key not known
//! yet (the provider rotated them), at most once per [`MIN_REFRESH`], so that tokens with
//! made-up key ids cannot make this process hammer the provider.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

use crate::config::{ApiRole, OidcConfig};

/// The least time between two fetches of the keys.
pub const MIN_REFRESH: Duration = Duration::from_secs(30);
/// A JWKS document larger than this is refused.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// Keys kept from one document, at most.
const MAX_KEYS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("not a JWT")]
    Malformed,
    #[error("JWT algorithm {0}: only RS256 and ES256 are accepted")]
    Algorithm(String),
    #[error("JWT key {0:?} is not one of the provider's")]
    UnknownKey(String),
    #[error("JWT refused: {0}")]
    Invalid(String),
    #[error("the user has no Ferry role (groups in {0})")]
    NoRole(String),
    #[error("the provider's keys could not be fetched: {0}")]
    Fetch(String),
}

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `sub`, with the provider's user name or email when the token has one.
    pub name: String,
    pub role: ApiRole,
    pub stores: Vec<String>,
    /// Brands whose stores the user speaks for (`brand:B` groups).
    pub brands: Vec<String>,
}

pub struct Oidc {
    cfg: OidcConfig,
    http: reqwest::Client,
    keys: RwLock<HashMap<String, (DecodingKey, Algorithm)>>,
    /// When the keys were last fetched; held while fetching.
    fetched: Mutex<Option<Instant>>,
    /// The provider's discovery document, once read.
    discovery: Mutex<Option<Value>>,
}

/// What the page needs to send a user to the provider's sign-in page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SignIn {
    pub authorization_endpoint: String,
    pub client_id: String,
    pub scope: &'static str,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kid: Option<String>,
    kty: String,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

impl Jwk {
    fn key(&self) -> Option<(String, (DecodingKey, Algorithm))> {
        let kid = self.kid.clone()?;
        let key = match (self.kty.as_str(), self.crv.as_deref()) {
            ("RSA", _) => (
                DecodingKey::from_rsa_components(self.n.as_deref()?, self.e.as_deref()?).ok()?,
                Algorithm::RS256,
            ),
            ("EC", Some("P-256")) => (
                DecodingKey::from_ec_components(self.x.as_deref()?, self.y.as_deref()?).ok()?,
                Algorithm::ES256,
            ),
            _ => return None,
        };
        Some((kid, key))
    }
}

impl Oidc {
    pub fn new(cfg: OidcConfig) -> Self {
        ferry_shared::tls::use_ring();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            cfg,
            http,
            keys: RwLock::default(),
            fetched: Mutex::new(None),
            discovery: Mutex::new(None),
        }
    }

    /// The provider's discovery document, fetched once.
    async fn discovery(&self) -> Result<Value, OidcError> {
        let mut held = self.discovery.lock().await;
        if let Some(doc) = held.as_ref() {
            return Ok(doc.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.cfg.issuer.trim_end_matches('/')
        );
        let doc: Value = serde_json::from_slice(&self.get(&url).await?)
            .map_err(|e| OidcError::Fetch(format!("{url}: {e}")))?;
        *held = Some(doc.clone());
        Ok(doc)
    }

    fn endpoint(doc: &Value, name: &str) -> Result<String, OidcError> {
        doc[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| OidcError::Fetch(format!("the discovery document has no {name}")))
    }

    /// Where the page sends a user to sign in (authorization code with PKCE).
    pub async fn sign_in(&self) -> Result<SignIn, OidcError> {
        let doc = self.discovery().await?;
        Ok(SignIn {
            authorization_endpoint: Self::endpoint(&doc, "authorization_endpoint")?,
            client_id: self.cfg.audience.clone(),
            scope: "openid email profile",
        })
    }

    /// Trades the page's authorization code (and its PKCE verifier) for the user's ID
    /// token at the provider's token endpoint, and checks the token as every call will.
    /// Done here rather than in the page, so that the page may talk to its own origin only.
    pub async fn exchange(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<(String, Identity), OidcError> {
        let endpoint = Self::endpoint(&self.discovery().await?, "token_endpoint")?;
        let form = [
            ("grant_type", "authorization_code"),
            ("client_id", self.cfg.audience.as_str()),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", redirect_uri),
        ];
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let response = self
            .http
            .post(&endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| OidcError::Fetch(format!("{endpoint}: {}", describe(&e))))?;
        let status = response.status();
        let answer: Value = response
            .json()
            .await
            .map_err(|e| OidcError::Fetch(format!("{endpoint}: {e}")))?;
        if !status.is_success() {
            return Err(OidcError::Invalid(format!(
                "the provider refused the code: {}",
                answer["error"].as_str().unwrap_or("no reason given")
            )));
        }
        let token = answer["id_token"]
            .as_str()
            .ok_or_else(|| OidcError::Invalid("the provider sent no id_token".into()))?
            .to_owned();
        let user = self.verify(&token).await?;
        Ok((token, user))
    }

    /// Whether `token` looks like a JWT (three dot-separated parts), as opposed to a
    /// configured token.
    pub fn looks_like_jwt(token: &str) -> bool {
        token.split('.').count() == 3 && token.len() > 20
    }

    pub async fn verify(&self, token: &str) -> Result<Identity, OidcError> {
        let header = decode_header(token).map_err(|_| OidcError::Malformed)?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(OidcError::Algorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.unwrap_or_default();
        let (key, alg) = self.key(&kid).await?;
        if alg != header.alg {
            return Err(OidcError::Algorithm(format!(
                "{:?} for a {alg:?} key",
                header.alg
            )));
        }
        let mut validation = Validation::new(alg);
        validation.leeway = self.cfg.leeway_s;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.cfg.issuer]);
        // Cognito's access tokens carry the app client in `client_id`, not `aud`: checked
        // below, either way.
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        let claims = decode::<Value>(token, &key, &validation)
            .map_err(|e| OidcError::Invalid(e.to_string()))?
            .claims;
        let audience = &self.cfg.audience;
        let aud_ok = match &claims["aud"] {
            Value::String(a) => a == audience,
            Value::Array(all) => all.iter().any(|a| a == audience),
            _ => claims["client_id"] == audience.as_str(),
        };
        if !aud_ok {
            return Err(OidcError::Invalid("wrong audience".into()));
        }
        self.identity(&claims)
    }

    /// The user's role and stores from their groups.
    fn identity(&self, claims: &Value) -> Result<Identity, OidcError> {
        let list = |claim: &Value| -> Vec<String> {
            match claim {
                Value::Array(all) => all
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                Value::String(s) => s
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
                _ => Vec::new(),
            }
        };
        let groups = list(&claims[&self.cfg.roles_claim]);
        let mut stores = Vec::new();
        let mut brands = Vec::new();
        let has = |role: &str| groups.iter().any(|g| g == role);
        let role = if has("admin") {
            ApiRole::Admin
        } else if has("operator") {
            ApiRole::Operator
        } else if has("viewer") {
            ApiRole::Viewer
        } else {
            stores.extend(
                groups
                    .iter()
                    .filter_map(|g| g.strip_prefix("store:"))
                    .map(str::to_owned),
            );
            if groups.iter().any(|g| g == "store") {
                stores.extend(list(&claims[&self.cfg.stores_claim]));
            }
            brands.extend(
                groups
                    .iter()
                    .filter_map(|g| g.strip_prefix("brand:"))
                    .map(str::to_owned),
            );
            if stores.is_empty() && brands.is_empty() {
                return Err(OidcError::NoRole(self.cfg.roles_claim.clone()));
            }
            ApiRole::Store
        };
        let sub = claims["sub"].as_str().unwrap_or_default();
        let name = ["email", "cognito:username", "username"]
            .iter()
            .find_map(|c| claims[*c].as_str())
            .map_or_else(|| sub.to_owned(), |n| format!("{n} ({sub})"));
        Ok(Identity {
            name,
            role,
            stores,
            brands,
        })
    }

    /// The key named `kid`, fetching the provider's keys when it is not known yet.
    async fn key(&self, kid: &str) -> Result<(DecodingKey, Algorithm), OidcError> {
        if let Some(found) = self.keys.read().await.get(kid) {
            return Ok(found.clone());
        }
        let mut fetched = self.fetched.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(found) = self.keys.read().await.get(kid) {
            return Ok(found.clone());
        }
        if fetched.is_some_and(|at| at.elapsed() < MIN_REFRESH) {
            return Err(OidcError::UnknownKey(kid.to_owned()));
        }
        *fetched = Some(Instant::now());
        let keys = self.fetch().await?;
        tracing::info!(keys = keys.len(), "fetched the OIDC provider's keys");
        let mut held = self.keys.write().await;
        *held = keys;
        held.get(kid)
            .cloned()
            .ok_or_else(|| OidcError::UnknownKey(kid.to_owned()))
    }

    async fn fetch(&self) -> Result<HashMap<String, (DecodingKey, Algorithm)>, OidcError> {
        let url = match &self.cfg.jwks_url {
            Some(url) => url.clone(),
            None => Self::endpoint(&self.discovery().await?, "jwks_uri")?,
        };
        let jwks: Jwks = serde_json::from_slice(&self.get(&url).await?)
            .map_err(|e| OidcError::Fetch(format!("{url}: {e}")))?;
        Ok(jwks
            .keys
            .iter()
            .filter_map(Jwk::key)
            .take(MAX_KEYS)
            .collect())
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, OidcError> {
        let fail = |e: reqwest::Error| OidcError::Fetch(format!("{url}: {}", describe(&e)));
        let response = self
            .http
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(fail)?;
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(OidcError::Fetch(format!("{url}: larger than 1 MiB")));
        }
        let body = response.bytes().await.map_err(fail)?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(OidcError::Fetch(format!("{url}: larger than 1 MiB")));
        }
        Ok(body.to_vec())
    }
}

/// An error with its causes: reqwest's own message rarely says what went wrong.
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// `application/x-www-form-urlencoded` for one value.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn form_values_are_escaped() {
        assert_eq!(
            super::form_encode("http://127.0.0.1:8080/?a=b c"),
            "http%3A%2F%2F127.0.0.1%3A8080%2F%3Fa%3Db%20c"
        );
    }
}
