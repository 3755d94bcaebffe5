//! Who may call what. A caller is known by its bearer token (each compared in constant
//! time) and has a role; [`ROUTES`] says, for every route of every API, which roles may call
//! it. A route missing from the table answers 403 to everyone, and a test walks the table.
//! Scope within a route (a `store` caller's stores) is the handler's to apply, from the
//! [`Caller`] this layer puts in the request.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use ferry_shared::Token;

use super::ApiError;
use super::oidc::{Oidc, OidcError};
use crate::config::ApiRole::{self, Admin, Operator, Router, Store, Viewer};
use crate::config::HttpConfig;

/// Who is calling, for handlers and the audit trail.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name (`http.token` is `admin`, `loyalty.token` is `router`).
    pub name: String,
    pub role: ApiRole,
    /// Role `store` only: its stores, those of its brands included.
    pub stores: Vec<String>,
    /// Role `store` only: the brands it speaks for, whose stores are in `stores`.
    pub brands: Vec<String>,
    /// This request's id, also in the `x-request-id` response header.
    pub request_id: String,
}

impl Caller {
    /// Whether this caller may see or act for `store`: every role but `store` may.
    pub fn covers(&self, store: &str) -> bool {
        self.role != Store || self.stores.iter().any(|s| s == store)
    }
}

/// One configured token and who it makes the caller.
struct Credential {
    token: Token,
    name: String,
    role: ApiRole,
    stores: Vec<String>,
    brands: Vec<String>,
}

/// The stores of some brands, from the ledger: a brand-scoped caller's stores are looked up
/// at each request, so a store added to the brand is in scope at once.
pub type BrandStores = Arc<
    dyn Fn(Vec<String>) -> futures_util::future::BoxFuture<'static, Result<Vec<String>, String>>
        + Send
        + Sync,
>;

/// Every token this process accepts: the configured ones, and signed-in users' JWTs when
/// `[http.oidc]` is set.
pub struct Credentials {
    tokens: Vec<Credential>,
    oidc: Option<Arc<Oidc>>,
    brand_stores: Option<BrandStores>,
}

impl Credentials {
    /// `[http]`'s tokens, and `router`, the ingest router's token (`loyalty.token`) when
    /// this process serves the loyalty API. A router token that is also an `[http]` token
    /// keeps that token's role.
    pub fn new(http: &HttpConfig, router: Option<&str>) -> Self {
        let mut all = Vec::new();
        if !http.token.is_empty() {
            all.push(Credential {
                token: Token::new(http.token.clone()),
                name: "admin".into(),
                role: Admin,
                stores: Vec::new(),
                brands: Vec::new(),
            });
        }
        for t in &http.tokens {
            all.push(Credential {
                token: Token::new(t.token.clone()),
                name: t.name.clone(),
                role: t.role,
                stores: t.stores.clone(),
                brands: t.brands.clone(),
            });
        }
        if let Some(router) = router
            && !all.iter().any(|c| c.token.matches(router))
        {
            all.push(Credential {
                token: Token::new(router.to_owned()),
                name: "router".into(),
                role: Router,
                stores: Vec::new(),
                brands: Vec::new(),
            });
        }
        Self {
            tokens: all,
            oidc: http.oidc.clone().map(|c| Arc::new(Oidc::new(c))),
            brand_stores: None,
        }
    }

    /// Where brand-scoped callers' stores come from: the ledger, where this process has one.
    /// Without it, a brand-scoped caller is refused with a message that says why.
    pub fn with_brand_stores(mut self, lookup: BrandStores) -> Self {
        self.brand_stores = Some(lookup);
        self
    }

    /// The provider of signed-in users, when there is one.
    pub fn oidc(&self) -> Option<Arc<Oidc>> {
        self.oidc.clone()
    }

    /// The caller `header` names. Every token is compared, so the time taken does not
    /// say which one matched.
    fn identify(&self, header: &str) -> Option<&Credential> {
        self.tokens.iter().fold(None, |found, c| {
            let matched = c.token.matches_header(header);
            found.or(matched.then_some(c))
        })
    }
}

const ALL: &[ApiRole] = &[Admin, Operator, Store, Viewer, Router];
const DASHBOARDS: &[ApiRole] = &[Admin, Operator, Viewer];
const FIGURES: &[ApiRole] = &[Admin, Operator, Viewer, Store];
const REGISTRY: &[ApiRole] = &[Admin, Operator];
const LEDGER: &[ApiRole] = &[Admin, Operator, Store];
const ADMIN: &[ApiRole] = &[Admin];

/// Every API route, and the roles that may call it.
pub const ROUTES: &[(Method, &str, &[ApiRole])] = &[
    (Method::GET, "/v1/me", ALL),
    // The loyalty core.
    (Method::GET, "/v1/programs", LEDGER),
    (Method::PUT, "/v1/programs/{id}", ADMIN),
    (Method::POST, "/v1/transactions", &[Admin, Store, Router]),
    (Method::GET, "/v1/cards", REGISTRY),
    (
        Method::GET,
        "/v1/cards/{card}",
        &[Admin, Operator, Store, Router],
    ),
    (Method::GET, "/v1/cards/{card}/transactions", LEDGER),
    (Method::POST, "/v1/cards/{card}/block", LEDGER),
    (Method::POST, "/v1/cards/{card}/unblock", LEDGER),
    (Method::POST, "/v1/cards/{card}/review", LEDGER),
    (Method::POST, "/v1/cards/{card}/replace", LEDGER),
    (Method::POST, "/v1/cards/{card}/merge", LEDGER),
    // The organisation.
    (Method::GET, "/v1/brands", FIGURES),
    (Method::GET, "/v1/brands/{id}", FIGURES),
    (Method::PUT, "/v1/brands/{id}", ADMIN),
    (Method::DELETE, "/v1/brands/{id}", ADMIN),
    (Method::GET, "/v1/stores/{id}", FIGURES),
    (Method::PUT, "/v1/stores/{id}", ADMIN),
    (Method::DELETE, "/v1/stores/{id}", ADMIN),
    (Method::PUT, "/v1/devices/{id}", REGISTRY),
    (Method::DELETE, "/v1/devices/{id}", REGISTRY),
    (Method::GET, "/v1/registry", REGISTRY),
    (Method::GET, "/v1/audit", ADMIN),
    // The dashboards.
    (Method::GET, "/v1/devices", DASHBOARDS),
    (Method::GET, "/v1/devices/{id}", DASHBOARDS),
    (Method::GET, "/v1/devices/{id}/readings", DASHBOARDS),
    (Method::GET, "/v1/alarms", DASHBOARDS),
    (Method::GET, "/v1/events", DASHBOARDS),
    (Method::GET, "/v1/stations", DASHBOARDS),
    (Method::GET, "/v1/compare", DASHBOARDS),
    (Method::GET, "/v1/stores", FIGURES),
    (Method::GET, "/v1/stores/{id}/loyalty", FIGURES),
    (Method::GET, "/v1/loyalty", FIGURES),
    (Method::GET, "/v1/traffic", FIGURES),
    // Fleet operations.
    (Method::GET, "/v1/configs", DASHBOARDS),
    (Method::GET, "/v1/devices/{id}/config", DASHBOARDS),
    (Method::PUT, "/v1/devices/{id}/config", REGISTRY),
    (Method::GET, "/v1/rollouts", REGISTRY),
    (Method::POST, "/v1/rollouts", ADMIN),
    (Method::GET, "/v1/fleet/audit", ADMIN),
    (Method::GET, "/v1/rollouts/{id}", REGISTRY),
];

/// The API routes that need no token: how the page signs a user in, and the API's
/// description.
pub const PUBLIC: &[(Method, &str)] = &[
    (Method::GET, "/v1/auth"),
    (Method::POST, "/v1/auth/token"),
    (Method::GET, "/v1/openapi.json"),
];

/// The roles that may call `method path` (`path` as the router declares it); none for a
/// route not in [`ROUTES`].
pub fn allowed(method: &Method, path: &str) -> &'static [ApiRole] {
    ROUTES
        .iter()
        .find(|(m, p, _)| m == method && *p == path)
        .map_or(&[], |(_, _, roles)| *roles)
}

/// Authenticates the caller, checks the route table, and hands the [`Caller`] on.
pub async fn authorize(
    State(credentials): State<Arc<Credentials>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::Unauthorized(
            "missing Authorization: Bearer TOKEN",
        ))?;
    let (name, role, mut stores, brands) = match credentials.identify(header) {
        Some(c) => (c.name.clone(), c.role, c.stores.clone(), c.brands.clone()),
        None => {
            let bearer = header.strip_prefix("Bearer ").unwrap_or_default();
            match &credentials.oidc {
                Some(oidc) if Oidc::looks_like_jwt(bearer) => {
                    let user = oidc.verify(bearer).await.map_err(|e| match e {
                        OidcError::NoRole(_) => ApiError::Forbidden(e.to_string()),
                        OidcError::Fetch(problem) => ApiError::Provider(problem),
                        other => ApiError::Refused(other.to_string()),
                    })?;
                    (user.name, user.role, user.stores, user.brands)
                }
                _ => return Err(ApiError::Unauthorized("wrong token")),
            }
        }
    };
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let roles = allowed(request.method(), &path);
    if !roles.contains(&role) {
        let names: Vec<&str> = roles.iter().map(|r| r.name()).collect();
        return Err(ApiError::Forbidden(format!(
            "{} {path} needs role {}; this token ({}) is {}",
            request.method(),
            if names.is_empty() {
                "(none: the route is not in the role table)".to_owned()
            } else {
                names.join(" or ")
            },
            name,
            role.name()
        )));
    }
    if !brands.is_empty() {
        let lookup = credentials.brand_stores.as_ref().ok_or_else(|| {
            ApiError::NotConfigured(format!(
                "this token ({name}) speaks for brands {brands:?}, and this process has no \
                 loyalty.database to find their stores in"
            ))
        })?;
        let of_brands = lookup(brands.clone()).await.map_err(|problem| {
            ApiError::Unavailable(anyhow::anyhow!(
                "the stores of brands {brands:?}: {problem}"
            ))
        })?;
        stores.extend(of_brands);
        stores.sort_unstable();
        stores.dedup();
    }
    let request_id = ulid::Ulid::new().to_string();
    request.extensions_mut().insert(Caller {
        name,
        role,
        stores,
        brands,
        request_id: request_id.clone(),
    });
    let mut response = next.run(request).await;
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", id);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `.route("/v1/...", method(...))` in the cloud's source, as (method, path).
    fn declared() -> Vec<(String, String)> {
        let mut found = Vec::new();
        let mut stack = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("src").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                for at in text.match_indices(".route(").map(|(i, _)| i) {
                    // rustfmt puts a long route's path on a line of its own.
                    let rest = text[at + ".route(".len()..].trim_start();
                    let Some(rest) = rest.strip_prefix("\"").filter(|r| r.starts_with("/v1/"))
                    else {
                        continue;
                    };
                    let Some((route, after)) = rest.split_once('"') else {
                        continue;
                    };
                    // The handlers: up to the next route or the end of the chain.
                    let handlers = after
                        .split([';'])
                        .next()
                        .and_then(|h| h.split(".route(").next())
                        .unwrap_or_default();
                    for method in ["get", "put", "post", "delete"] {
                        if handlers.contains(&format!("{method}(")) {
                            found.push((method.to_uppercase(), route.to_owned()));
                        }
                    }
                }
            }
        }
        found
    }

    #[test]
    fn every_declared_route_is_in_the_table_and_every_entry_is_declared() {
        let declared = declared();
        assert!(declared.len() > 20, "{declared:?}");
        for (method, path) in &declared {
            let method = Method::from_bytes(method.as_bytes()).expect("method");
            if PUBLIC.iter().any(|(m, p)| *m == method && p == path) {
                continue;
            }
            assert!(
                !allowed(&method, path).is_empty(),
                "{method} {path} is routed but not in ROUTES: nobody could call it"
            );
        }
        for (method, path, roles) in ROUTES {
            assert!(
                declared
                    .iter()
                    .any(|(m, p)| m == method.as_str() && p == path),
                "{method} {path} is in ROUTES but routed nowhere"
            );
            assert!(
                roles.contains(&Admin),
                "{method} {path}: admin may do everything"
            );
        }
    }
}
