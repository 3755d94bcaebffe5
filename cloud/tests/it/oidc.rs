//! Signed-in users on the real binary: JWTs signed at test time with keys made at test
//! time (ES256 with rcgen, RS256 with the openssl command), published by a JWKS server on
//! 127.0.0.1, and every way a token can be wrong.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ferry_tests::loyalty::dashboard;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::BIN;

const AUDIENCE: &str = "ferry-app-client";

/// A signing key and its public half as a JWK.
struct Signer {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
    jwk: Value,
}

fn es256(kid: &str) -> Signer {
    let pair = rcgen::KeyPair::generate().expect("P-256 key");
    let raw = pair.public_key_raw();
    assert_eq!((raw.len(), raw[0]), (65, 4), "an uncompressed P-256 point");
    Signer {
        kid: kid.into(),
        alg: Algorithm::ES256,
        key: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("EC key"),
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
                    "x": B64.encode(&raw[1..33]), "y": B64.encode(&raw[33..])}),
    }
}

/// RSA keys come from the openssl command (ring makes none); nothing is committed.
fn rs256(dir: &std::path::Path, kid: &str) -> Signer {
    let pem = dir.join(format!("{kid}.pem"));
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("the openssl command (apt-get install -y openssl)");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let path = pem.to_str().expect("utf-8 path");
    run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        path,
    ]);
    let modulus = run(&["rsa", "-in", path, "-noout", "-modulus"]);
    let hex = modulus.trim().trim_start_matches("Modulus=");
    let n: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    Signer {
        kid: kid.into(),
        alg: Algorithm::RS256,
        key: EncodingKey::from_rsa_pem(&std::fs::read(&pem).expect("pem")).expect("RSA key"),
        jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "e": "AQAB",
                    "n": B64.encode(n)}),
    }
}

impl Signer {
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &self.key).expect("sign")
    }
}

/// Serves the discovery document and `keys` on 127.0.0.1, counting key fetches.
fn provider(keys: Value) -> (String, Arc<AtomicU32>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let issuer = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let fetches = Arc::new(AtomicU32::new(0));
    let (count, base) = (fetches.clone(), issuer.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut line = String::new();
            let mut reader = BufReader::new(&stream);
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            while reader.read_line(&mut String::new()).is_ok_and(|n| n > 2) {}
            let body = if line.contains("/.well-known/openid-configuration") {
                json!({"issuer": base, "jwks_uri": format!("{base}/jwks.json")})
            } else {
                count.fetch_add(1, Ordering::Relaxed);
                keys.clone()
            }
            .to_string();
            let _ = write!(
                &stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (issuer, fetches)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[test]
fn signed_in_users_get_the_role_of_their_group_and_bad_tokens_get_nothing() {
    let _load = crate::beside_others();
    let dir = tempfile::tempdir().expect("tempdir");
    let (ec, rsa) = (es256("ec-1"), rs256(dir.path(), "rsa-1"));
    let (issuer, fetches) = provider(json!({"keys": [ec.jwk, rsa.jwk]}));
    let hot = format!("sqlite://{}", dir.path().join("hot.db").display());
    let ledger = format!("sqlite://{}", dir.path().join("ledger.db").display());
    ferry_cloud::loyalty::Ledger::open(&ledger).expect("ledger");
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
    let impostor = Signer {
        kid: "ec-1".into(),
        ..es256("ec-1")
    };
    let unknown = Signer {
        kid: "ec-9".into(),
        ..es256("ec-9")
    };
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
