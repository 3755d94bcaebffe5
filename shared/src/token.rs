//! A bearer token for Ferry's HTTP APIs, compared in constant time. It never reaches a
//! log: `Token` has no `Display`, and its `Debug` is redacted.

use std::path::Path;

pub struct Token(String);

/// The shortest token a config may give: a guessable one protects nothing.
pub const MIN_TOKEN_LEN: usize = 16;

/// The problem with `token` as a secret, if it has one: too short, or one of the
/// placeholders that example configs ship (`change-me`, anything with `set-me`), which
/// would otherwise work as real tokens wherever an example was copied unchanged.
pub fn weakness(token: &str) -> Option<String> {
    let lower = token.to_ascii_lowercase();
    if ["change-me", "changeme", "set-me", "setme"]
        .iter()
        .any(|p| lower.contains(p))
    {
        return Some("is a placeholder from an example; set a real secret".into());
    }
    if token.chars().count() < MIN_TOKEN_LEN {
        return Some(format!("must be at least {MIN_TOKEN_LEN} characters"));
    }
    if token.chars().any(char::is_control) {
        return Some("must not contain control characters".into());
    }
    None
}

/// A config's token: `token`, or the first line of `token_file`, read now; checked with
/// [`weakness`]. An error names the key (`token` or `token_file`) and the problem.
pub fn from_config(
    token: Option<&str>,
    token_file: Option<&Path>,
) -> Result<String, (&'static str, String)> {
    let (key, token) = match (token, token_file) {
        (Some(_), Some(_)) => return Err(("token", "give token or token_file, not both".into())),
        (None, None) => return Err(("token", "required (or token_file)".into())),
        (Some(t), None) => ("token", t.to_owned()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ("token_file", format!("{}: {e}", path.display())))?;
            (
                "token_file",
                text.lines().next().unwrap_or_default().trim().to_owned(),
            )
        }
    };
    match weakness(&token) {
        Some(problem) => Err((key, problem)),
        None => Ok(token),
    }
}

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
    fn weak_tokens_are_named() {
        for weak in [
            "change-me",
            "set-me-through-FERRY_HTTP__TOKEN",
            "CHANGE-ME-PLEASE-0123456",
            "t",
            "fifteen-chars-x",
        ] {
            assert!(weakness(weak).is_some(), "{weak}");
        }
        assert_eq!(weakness("a-real-secret-of-24-chars"), None);
        let dir = std::env::temp_dir().join(format!("ferry-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("token");
        std::fs::write(&file, "from-a-file-0123456789\nignored\n").expect("write");
        assert_eq!(
            from_config(None, Some(&file)).as_deref(),
            Ok("from-a-file-0123456789")
        );
        assert_eq!(
            from_config(Some("change-me"), None).map_err(|e| e.0),
            Err("token")
        );
        assert!(from_config(Some("x"), Some(&file)).is_err());
        assert_eq!(from_config(None, None).map_err(|e| e.0), Err("token"));
        assert_eq!(
            from_config(None, Some(&dir.join("missing"))).map_err(|e| e.0),
            Err("token_file")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

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
