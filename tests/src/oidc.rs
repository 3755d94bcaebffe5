//! An OpenID Connect provider on 127.0.0.1, enough for Ferry's signed-in users: discovery,
//! the JWKS, and the authorization-code flow with PKCE (`/authorize` sends the browser
//! straight back with a code; `/token` checks the verifier against the challenge and
//! answers an ID token). Keys are made at test time: ES256 with rcgen, RS256 with the
//! `openssl` command, as ring makes no RSA keys; nothing is committed.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

/// A signing key and its public half as a JWK.
pub struct Signer {
    pub kid: String,
    pub alg: Algorithm,
    pub key: EncodingKey,
    pub jwk: Value,
}

impl Signer {
    /// A P-256 key.
    pub fn es256(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate().expect("P-256 key");
        let raw = pair.public_key_raw();
        assert_eq!((raw.len(), raw[0]), (65, 4), "an uncompressed P-256 point");
        Self {
            kid: kid.into(),
            alg: Algorithm::ES256,
            key: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("EC key"),
            jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
                        "x": B64.encode(&raw[1..33]), "y": B64.encode(&raw[33..])}),
        }
    }

    /// A 2048-bit RSA key, made in `dir` by the openssl command.
    pub fn rs256(dir: &std::path::Path, kid: &str) -> Self {
        let pem = dir.join(format!("{kid}.pem"));
        let path = pem.to_str().expect("utf-8 path");
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            path,
        ]);
        let modulus =
            String::from_utf8(openssl(&["rsa", "-in", path, "-noout", "-modulus"])).expect("utf-8");
        let hex = modulus.trim().trim_start_matches("Modulus=");
        let n: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        Self {
            kid: kid.into(),
            alg: Algorithm::RS256,
            key: EncodingKey::from_rsa_pem(&std::fs::read(&pem).expect("pem")).expect("RSA key"),
            jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "e": "AQAB",
                        "n": B64.encode(n)}),
        }
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &self.key).expect("sign")
    }
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl command is missing: apt-get install -y openssl");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
    out.stdout
}

/// SHA-256, base64url: a PKCE challenge from its verifier.
fn challenge_of(verifier: &str) -> String {
    let mut child = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-binary"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(verifier.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("openssl dgst");
    B64.encode(out.stdout)
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Codes handed out: code → (challenge, redirect_uri).
type Codes = Arc<Mutex<HashMap<String, (String, String)>>>;

pub struct Provider {
    pub issuer: String,
    /// How often the JWKS was fetched.
    pub key_fetches: Arc<AtomicU32>,
}

impl Provider {
    /// Publishes `keys`; the flow signs ID tokens for `audience` with `signer`, carrying
    /// `groups`.
    pub fn start(keys: Vec<Value>, signer: Signer, audience: &str, groups: Value) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let issuer = format!(
            "http://127.0.0.1:{}",
            listener.local_addr().expect("addr").port()
        );
        let key_fetches = Arc::new(AtomicU32::new(0));
        let codes: Codes = Arc::default();
        let (fetches, base, audience) = (key_fetches.clone(), issuer.clone(), audience.to_owned());
        let signer = Arc::new(signer);
        let serve = move |stream: TcpStream| {
            let (method, target, body) = read_request(&stream);
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            let (status, headers, body) = match (method.as_str(), path) {
                (_, "/.well-known/openid-configuration") => (
                    200,
                    String::new(),
                    json!({
                        "issuer": base, "jwks_uri": format!("{base}/jwks.json"),
                        "authorization_endpoint": format!("{base}/authorize"),
                        "token_endpoint": format!("{base}/token")})
                    .to_string(),
                ),
                (_, "/jwks.json") => {
                    fetches.fetch_add(1, Ordering::Relaxed);
                    (200, String::new(), json!({ "keys": keys }).to_string())
                }
                ("GET", "/authorize") => {
                    let q = form(query);
                    let code = format!("code-{}", codes.lock().expect("codes").len() + 1);
                    let redirect = q.get("redirect_uri").cloned().unwrap_or_default();
                    codes.lock().expect("codes").insert(
                        code.clone(),
                        (
                            q.get("code_challenge").cloned().unwrap_or_default(),
                            redirect.clone(),
                        ),
                    );
                    let state = q.get("state").cloned().unwrap_or_default();
                    (
                        302,
                        format!("Location: {redirect}?code={code}&state={state}\r\n"),
                        String::new(),
                    )
                }
                ("POST", "/token") => {
                    let f = form(&body);
                    let issued = codes
                        .lock()
                        .expect("codes")
                        .remove(f.get("code").map_or("", |c| c.as_str()));
                    let good = issued.is_some_and(|(challenge, redirect)| {
                        f.get("code_verifier")
                            .is_some_and(|v| challenge_of(v) == challenge)
                            && f.get("redirect_uri") == Some(&redirect)
                            && f.get("client_id") == Some(&audience)
                    });
                    if good {
                        let claims = json!({"iss": base, "aud": audience, "sub": "user-7",
                                "email": "sam@example.com", "exp": now() + 600, "iat": now(),
                                "cognito:groups": groups});
                        (
                            200,
                            String::new(),
                            json!({"id_token": signer.sign(&claims), "token_type": "Bearer"})
                                .to_string(),
                        )
                    } else {
                        (
                            400,
                            String::new(),
                            json!({"error": "invalid_grant"}).to_string(),
                        )
                    }
                }
                _ => (404, String::new(), "{}".into()),
            };
            let _ = write!(
                &stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        };
        let serve = Arc::new(serve);
        // A thread per connection: a browser opens connections it may never use.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
                let serve = serve.clone();
                std::thread::spawn(move || serve(stream));
            }
        });
        Self {
            issuer,
            key_fetches,
        }
    }
}

/// The method, target and body of one request.
fn read_request(stream: &TcpStream) -> (String, String, String) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let _ = reader.read_line(&mut line);
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    );
    let mut length = 0;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) <= 2 {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length.min(1 << 20)];
    let _ = reader.read_exact(&mut body);
    (method, target, String::from_utf8_lossy(&body).into_owned())
}

/// A query string or form body, decoded.
fn form(text: &str) -> HashMap<String, String> {
    text.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
