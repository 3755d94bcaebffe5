//! Signed updates (README: updates): ed25519 signatures over an artifact's bytes, and its
//! SHA-256, on ring.
//!
//! A public key is 32 bytes in base64, or a minisign public key (its `.pub` file or the
//! key line). A signature is 64 bytes in base64 (`ferry-cloud sign`), or a minisign
//! signature made with `minisign -S -l` (legacy mode, which signs the bytes themselves).
//! minisign's default prehashed mode signs a BLAKE2b hash instead and is refused by name.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigningError {
    #[error("not a public key: expected 32 bytes of base64 or a minisign public key")]
    PublicKey,
    #[error("not a signature: expected 64 bytes of base64 or a minisign signature")]
    Signature,
    #[error(
        "a prehashed minisign signature (algorithm ED): sign with `minisign -S -l` or `ferry-cloud sign`"
    )]
    Prehashed,
    #[error("the signature was made with minisign key {signed_by}, not the configured {ours}")]
    OtherKey { signed_by: String, ours: String },
    #[error("the signature does not verify with the configured public key")]
    Mismatch,
    #[error("not an ed25519 private key made by `ferry-cloud sign keygen`")]
    PrivateKey,
}

const MINISIGN_LEGACY: &[u8; 2] = b"Ed";
const MINISIGN_PREHASHED: &[u8; 2] = b"ED";

/// An ed25519 public key, with the minisign key id when it came in that form.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: [u8; 32],
    minisign_id: Option<[u8; 8]>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", B64.encode(self.key))
    }
}

/// The base64 line of a minisign file: the last one that is not a comment.
fn payload_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
        .find(|l| !l.starts_with("trusted comment:"))
        .unwrap_or("")
}

impl PublicKey {
    pub fn parse(text: &str) -> Result<Self, SigningError> {
        let bytes = B64
            .decode(payload_line(text))
            .map_err(|_| SigningError::PublicKey)?;
        match bytes.len() {
            32 => Ok(Self {
                key: bytes.try_into().map_err(|_| SigningError::PublicKey)?,
                minisign_id: None,
            }),
            42 if bytes.starts_with(MINISIGN_LEGACY) => Ok(Self {
                key: bytes[10..]
                    .try_into()
                    .map_err(|_| SigningError::PublicKey)?,
                minisign_id: Some(
                    bytes[2..10]
                        .try_into()
                        .map_err(|_| SigningError::PublicKey)?,
                ),
            }),
            _ => Err(SigningError::PublicKey),
        }
    }

    /// Checks `signature` (either form) over `message`.
    pub fn verify(&self, message: &[u8], signature: &str) -> Result<(), SigningError> {
        let bytes = B64
            .decode(payload_line(signature))
            .map_err(|_| SigningError::Signature)?;
        let sig = match bytes.len() {
            64 => &bytes[..],
            74 if bytes.starts_with(MINISIGN_PREHASHED) => return Err(SigningError::Prehashed),
            74 if bytes.starts_with(MINISIGN_LEGACY) => {
                if let Some(ours) = self.minisign_id
                    && bytes[2..10] != ours
                {
                    return Err(SigningError::OtherKey {
                        signed_by: key_id_hex(&bytes[2..10]),
                        ours: key_id_hex(&ours),
                    });
                }
                &bytes[10..]
            }
            _ => return Err(SigningError::Signature),
        };
        UnparsedPublicKey::new(&ED25519, &self.key)
            .verify(message, sig)
            .map_err(|_| SigningError::Mismatch)
    }
}

/// minisign prints key ids as big-endian hex of the little-endian bytes.
fn key_id_hex(id: &[u8]) -> String {
    id.iter().rev().map(|b| format!("{b:02X}")).collect()
}

/// An ed25519 private key, kept as PKCS#8 in base64 (one line, in a file of mode 0600).
pub struct SigningKey(Ed25519KeyPair);

impl SigningKey {
    /// A new key, and the text to store it as.
    pub fn generate() -> Result<(Self, String), SigningError> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| SigningError::PrivateKey)?;
        let text = B64.encode(pkcs8.as_ref());
        Ok((Self::parse(&text)?, text))
    }

    pub fn parse(text: &str) -> Result<Self, SigningError> {
        let der = B64
            .decode(text.trim())
            .map_err(|_| SigningError::PrivateKey)?;
        Ed25519KeyPair::from_pkcs8(&der)
            .map(Self)
            .map_err(|_| SigningError::PrivateKey)
    }

    /// The public key in base64, as `[update] public_key` takes it.
    pub fn public_key(&self) -> String {
        B64.encode(self.0.public_key().as_ref())
    }

    /// The signature of `message` in base64.
    pub fn sign(&self, message: &[u8]) -> String {
        B64.encode(self.0.sign(message).as_ref())
    }
}

// By hand, so that the key never reaches a log through `{:?}`.
impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(public {})", self.public_key())
    }
}

/// SHA-256, fed as the bytes arrive.
pub struct Sha256(ring::digest::Context);

impl Default for Sha256 {
    fn default() -> Self {
        Self(ring::digest::Context::new(&ring::digest::SHA256))
    }
}

impl Sha256 {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// Lower-case hex.
    pub fn finish_hex(self) -> String {
        self.0
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub fn hex_of(bytes: &[u8]) -> String {
        let mut h = Self::default();
        h.update(bytes);
        h.finish_hex()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_over_its_bytes_and_with_its_key() {
        let (key, stored) = SigningKey::generate().expect("key");
        let again = SigningKey::parse(&stored).expect("stored form parses");
        assert_eq!(again.public_key(), key.public_key());
        let public = PublicKey::parse(&key.public_key()).expect("public");
        let sig = key.sign(b"binary");
        assert_eq!(public.verify(b"binary", &sig), Ok(()));
        assert_eq!(public.verify(b"binarY", &sig), Err(SigningError::Mismatch));
        let (other, _) = SigningKey::generate().expect("key");
        assert_eq!(
            PublicKey::parse(&other.public_key())
                .expect("public")
                .verify(b"binary", &sig),
            Err(SigningError::Mismatch)
        );
        assert_eq!(
            public.verify(b"binary", "not base64!"),
            Err(SigningError::Signature)
        );
        assert!(format!("{key:?}").contains("public"));
        assert!(!format!("{key:?}").contains(&stored));
    }

    /// minisign's own layout: "Ed" or "ED", an 8-byte key id, then the key or signature.
    #[test]
    fn minisign_keys_and_legacy_signatures_are_understood() {
        let (key, _) = SigningKey::generate().expect("key");
        let raw_public = B64.decode(key.public_key()).expect("b64");
        let id = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let mut pubfile = b"Ed".to_vec();
        pubfile.extend_from_slice(&id);
        pubfile.extend_from_slice(&raw_public);
        let pub_text = format!(
            "untrusted comment: minisign public key 0807060504030201\n{}\n",
            B64.encode(&pubfile)
        );
        let public = PublicKey::parse(&pub_text).expect("minisign public key");

        let raw_sig = B64.decode(key.sign(b"binary")).expect("b64");
        let minisig = |alg: &[u8], id: &[u8]| {
            let mut s = alg.to_vec();
            s.extend_from_slice(id);
            s.extend_from_slice(&raw_sig);
            format!(
                "untrusted comment: signature from minisign secret key\n{}\ntrusted comment: timestamp:1\nAAAA\n",
                B64.encode(&s)
            )
        };
        assert_eq!(public.verify(b"binary", &minisig(b"Ed", &id)), Ok(()));
        assert_eq!(
            public.verify(b"binary", &minisig(b"ED", &id)),
            Err(SigningError::Prehashed)
        );
        assert_eq!(
            public.verify(b"binary", &minisig(b"Ed", &[9; 8])),
            Err(SigningError::OtherKey {
                signed_by: "0909090909090909".into(),
                ours: "0807060504030201".into()
            })
        );
        assert_eq!(PublicKey::parse("AAAA"), Err(SigningError::PublicKey));
    }

    #[test]
    fn sha256_is_the_standard_one() {
        assert_eq!(
            Sha256::hex_of(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
