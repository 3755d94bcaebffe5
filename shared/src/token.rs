//! A bearer token for Ferry's HTTP APIs, compared in constant time. It never reaches a
//! log: `Token` has no `Display`, and its `Debug` is redacted.

pub struct Token(String);

impl Token {
    pub fn new(token: String) -> Self {
        Self(token)
    }

    /// Compares without an early exit, so the time taken says nothing about how much of a
    /// guess was right. (The length is not secret: tokens are configured, not derived.)
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// The `Authorization` header's value carries it: `Bearer TOKEN`.
    pub fn matches_header(&self, header: &str) -> bool {
        header
            .strip_prefix("Bearer ")
            .is_some_and(|presented| self.matches(presented))
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_token_matches() {
        let t = Token::new("s3cret".into());
        assert!(t.matches("s3cret"));
        assert!(!t.matches("s3cres"));
        assert!(!t.matches("s3cre"));
        assert!(!t.matches(""));
        assert!(t.matches_header("Bearer s3cret"));
        assert!(!t.matches_header("s3cret"));
        assert!(!t.matches_header("Basic s3cret"));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
    }
}
