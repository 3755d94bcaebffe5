//! Identifier newtypes. Each is validated once at construction, so code that holds one
//! never has to check it again.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::limits::{MAX_DEVICE_ID_LEN, MAX_TX_ID_LEN};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("device id must be 1 to {MAX_DEVICE_ID_LEN} characters of [A-Za-z0-9_-], got {0:?}")]
    Device(String),
    #[error("tx_id must be 1 to {MAX_TX_ID_LEN} characters without control characters")]
    Tx,
    #[error("spool id must be 1 to 64 characters of [A-Za-z0-9_-], got {0:?}")]
    Spool(String),
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

fn is_plain_id(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.chars().all(is_id_char)
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                let check: fn(String) -> Result<String, IdError> = $check;
                check(s).map(Self)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// `[A-Za-z0-9_-]{1,64}`; equals the IoT thing name, the MQTT client id and the topic level.
    DeviceId,
    |s| if is_plain_id(&s, MAX_DEVICE_ID_LEN) { Ok(s) } else { Err(IdError::Device(s)) }
);

id_type!(
    /// The random id a spool database is born with (a ULID when Ferry makes it).
    SpoolId,
    |s| if is_plain_id(&s, 64) { Ok(s) } else { Err(IdError::Spool(s)) }
);

id_type!(
    /// A transaction's worldwide-unique idempotency key.
    TxId,
    |s| {
        let ok = !s.is_empty() && s.len() <= MAX_TX_ID_LEN && !s.chars().any(char::is_control);
        if ok { Ok(s) } else { Err(IdError::Tx) }
    }
);

/// What a device's serial may not start with, in any case: its thing is `ferry-{serial}`,
/// which would then be named like the ingest's client ids (`ferry-ingest-*`), the
/// enrollment's (`ferry-enroll-*`) or the stack's own things (`{stack}-ferry-*`). The
/// stack's pre-provisioning hook (`deploy/aws/ferry.yaml`) applies the same rule.
pub const RESERVED_SERIAL_PREFIXES: [&str; 3] = ["ingest", "enroll", "ferry"];

/// A serial enrolls as the thing `ferry-{serial}`: 1 to 64 of `[0-9A-Za-z_-]`, starting
/// with a letter or digit, and no [`RESERVED_SERIAL_PREFIXES`].
pub fn check_serial(serial: &str) -> Result<(), String> {
    let starts_plain = serial
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if !is_plain_id(serial, 64) || !starts_plain {
        return Err(format!(
            "serial {:?} must be 1 to 64 of A-Z a-z 0-9 _ -, starting with a letter or digit",
            serial.chars().take(80).collect::<String>()
        ));
    }
    let lower = serial.to_ascii_lowercase();
    if let Some(p) = RESERVED_SERIAL_PREFIXES
        .iter()
        .find(|p| lower.starts_with(*p))
    {
        return Err(format!(
            "serial {serial:?} starts with {p:?}: ferry-{serial} would be named like Ferry's own identities"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn serials_cannot_name_the_ingest_the_enrollment_or_the_stack() {
        for good in ["10000000abcdef01", "ws-001", "POS_7"] {
            assert_eq!(check_serial(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "-ws",
            "_ws",
            "ws 1",
            "../x",
            "ingest-1",
            "Ingest",
            "enroll-x",
            "FERRY-ingest",
            &"w".repeat(65),
        ] {
            assert!(check_serial(bad).is_err(), "{bad}");
        }
    }
    use super::*;

    #[test]
    fn device_ids() {
        for ok in ["ws-001", "A_b-9", &"x".repeat(64)] {
            assert!(DeviceId::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "ws 001", "ws/001", "é", "+", "#", &"x".repeat(65)] {
            assert!(DeviceId::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tx_ids() {
        assert!(TxId::new("pos-17:R-000881").is_ok());
        assert!(TxId::new("").is_err());
        assert!(TxId::new("a\nb").is_err());
        assert!(TxId::new("x".repeat(129)).is_err());
    }

    #[test]
    fn deserialize_validates() {
        assert!(serde_json::from_str::<DeviceId>("\"ok-1\"").is_ok());
        assert!(serde_json::from_str::<DeviceId>("\"not ok\"").is_err());
    }
}
