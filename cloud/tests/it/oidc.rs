//! Signed-in users on the real binary: JWTs signed at test time with keys made at test
//! time (ES256 with rcgen, RS256 with the openssl command), published by an OIDC provider
//! on 127.0.0.1 (`ferry_tests::oidc`), and every way a token can be wrong.

use std::sync::atomic::Ordering;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ferry_tests::loyalty::dashboard;
use ferry_tests::oidc::{Provider, Signer, now};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::BIN;

const AUDIENCE: &str = "ferry-app-client";

#[test]
fn signed_in_users_get_the_role_of_their_group_and_bad_tokens_get_nothing() {
    let _load = crate::beside_others();
    let dir = tempfile::tempdir().expect("tempdir");
    let (ec, rsa) = (Signer::es256("ec-1"), Signer::rs256(dir.path(), "rsa-1"));
    let provider = Provider::start(
        vec![ec.jwk.clone(), rsa.jwk.clone()],
        Signer::es256("unpublished"),
        AUDIENCE,
        json!([]),
    );
    let (issuer, fetches) = (provider.issuer.clone(), provider.key_fetches.clone());
    let hot = format!("sqlite://{}", dir.path().join("hot.db").display());
    let ledger = format!("sqlite://{}", dir.path().join("ledger.db").display());
    crate::test_stores(&mut ferry_cloud::loyalty::Ledger::open(&ledger).expect("ledger"));
    let sections = format!(
        "[http.oidc]\nissuer = \"{issuer}\"\naudience = \"{AUDIENCE}\"\n\
         [dashboard]\ndatabase = \"{hot}\"\n\
         [loyalty]\nurl = \"http://127.0.0.1:1\"\ntoken = \"unused-but-a-real-token\"\ndatabase = \"{ledger}\"\n"
    );
    let mut board = dashboard(BIN.as_ref(), dir.path(), &sections);
    board.start();
    let claims = |groups: Value| {
        json!({"iss": issuer, "aud": AUDIENCE, "sub": "user-1", "email": "ana@example.com",
               "exp": now() + 600, "iat": now(), "cognito:groups": groups})
    };
    let me = |token: &str| board.call_as(token, "GET", "/v1/me", "");

    // An ID token (aud) signed with the EC key: an admin.
    let (status, body) = me(&ec.sign(&claims(json!(["admin"]))));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["role"], "admin");
    assert!(
        body["name"]
            .as_str()
            .is_some_and(|n| n.contains("ana@example.com") && n.contains("user-1")),
        "{body}"
    );
    // A Cognito access token (client_id, no aud) signed with the RSA key: a viewer.
    let mut access = claims(json!(["viewer"]));
    access["client_id"] = json!(AUDIENCE);
    access.as_object_mut().expect("claims").remove("aud");
    let (status, body) = me(&rsa.sign(&access));
    assert_eq!((status, &body["role"]), (200, &json!("viewer")), "{body}");
    // A store's group: its store only.
    let shop = ec.sign(&claims(json!(["store:S-01"])));
    let (status, body) = me(&shop);
    assert_eq!(
        (status, &body["role"], &body["stores"]),
        (200, &json!("store"), &json!(["S-01"])),
        "{body}"
    );
    let (status, _) = board.call_as(&shop, "GET", "/v1/stores/S-02/loyalty", "");
    assert_eq!(status, 403, "another store's figures");
    let (status, _) = board.call_as(&shop, "GET", "/v1/devices", "");
    assert_eq!(status, 403, "a store's user sees no devices");
    // A brand's group: every store of the brand, looked up in the ledger, and more of the
    // same group's stores beside them.
    let chain = ec.sign(&claims(json!(["brand:test", "store:S-elsewhere"])));
    let (status, body) = me(&chain);
    let mut want: Vec<&str> = ferry_tests::loyalty::TEST_STORES.to_vec();
    want.push("S-elsewhere");
    want.sort_unstable();
    assert_eq!(
        (status, &body["role"], &body["stores"], &body["brands"]),
        (200, &json!("store"), &json!(want), &json!(["test"])),
        "{body}"
    );
    let (status, body) = board.call_as(&chain, "GET", "/v1/stores", "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["records"].as_array().map(Vec::len),
        Some(ferry_tests::loyalty::TEST_STORES.len()),
        "the brand's store records: {body}"
    );
    // No Ferry group: known, but no role.
    let (status, body) = me(&ec.sign(&claims(json!(["staff"]))));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );

    // Every way a token can be wrong is a 401.
    let mut expired = claims(json!(["admin"]));
    expired["exp"] = json!(now() - 3600);
    let mut early = claims(json!(["admin"]));
    early["nbf"] = json!(now() + 3600);
    let mut audience = claims(json!(["admin"]));
    audience["aud"] = json!("another-app");
    let mut issued_elsewhere = claims(json!(["admin"]));
    issued_elsewhere["iss"] = json!("https://evil.example");
    // Another key under a published key's id, and a key the provider never published.
    let impostor = Signer::es256("ec-1");
    let unknown = Signer::es256("ec-9");
    let payload = B64.encode(claims(json!(["admin"])).to_string());
    let none = format!("{}.{payload}.", B64.encode(r#"{"alg":"none","typ":"JWT"}"#));
    let hs256 = encode(
        &Header {
            kid: Some("ec-1".into()),
            ..Header::new(Algorithm::HS256)
        },
        &claims(json!(["admin"])),
        &EncodingKey::from_secret(b"a shared secret, guessed"),
    )
    .expect("hs256");
    let before = fetches.load(Ordering::Relaxed);
    for (why, token) in [
        ("expired", ec.sign(&expired)),
        ("not yet valid", ec.sign(&early)),
        ("wrong audience", ec.sign(&audience)),
        ("wrong issuer", ec.sign(&issued_elsewhere)),
        ("wrong key", impostor.sign(&claims(json!(["admin"])))),
        ("alg none", none),
        ("HS256 with a guessed secret", hs256),
        ("unknown key id", unknown.sign(&claims(json!(["admin"])))),
        (
            "unknown key id again",
            unknown.sign(&claims(json!(["admin"]))),
        ),
        ("garbage", "a.b.c-but-long-enough-to-look-like-one".into()),
    ] {
        let (status, body) = me(&token);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "{why}: {body}"
        );
    }
    // Unknown key ids fetch the keys again at most once per 30 s.
    assert!(
        fetches.load(Ordering::Relaxed) - before <= 1,
        "{} fetches for two unknown keys",
        fetches.load(Ordering::Relaxed) - before
    );
    assert!(!board.proc.log().contains("eyJ"), "no token in the log");
}
