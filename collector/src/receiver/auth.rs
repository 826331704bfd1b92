//! The receiver's optional bearer token: loaded once from a file (or the environment), checked
//! against each request's `authorization: Bearer <token>` in constant time, and never shown:
//! its `Debug` is redacted and no message carries it or what a client sent instead.

use std::path::Path;

/// The environment variable read when `[receiver] bearer_token_file` is empty.
pub const TOKEN_ENV: &str = "KOTEL_RECEIVER_BEARER_TOKEN";

/// The message a refused client gets (it names neither the token nor what was sent).
pub const UNAUTHENTICATED_MESSAGE: &str = "kotel receiver: missing or wrong bearer token; send \
     the header `authorization: Bearer <token>` with the token in the agent's \
     receiver.bearer_token_file";

/// A secret every request must present.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// Why the token could not be loaded; never carries the token itself.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read.
    #[error("receiver.bearer_token_file {path}: cannot read it: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file or variable holds no token, or one that cannot go in a header.
    #[error("{origin}: {problem}")]
    Invalid {
        /// `receiver.bearer_token_file <path>` or the environment variable's name.
        origin: String,
        /// What is wrong with it.
        problem: &'static str,
    },
}

impl BearerToken {
    /// A token from text (surrounding whitespace and a trailing newline are trimmed).
    /// `origin` names where it came from, for the error.
    pub fn new(text: &str, origin: &str) -> Result<BearerToken, TokenError> {
        let token = text.trim();
        let invalid = |problem| TokenError::Invalid {
            origin: origin.to_string(),
            problem,
        };
        if token.is_empty() {
            return Err(invalid("is empty; put the token on its first line"));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "holds spaces or non-ASCII characters, which an HTTP header cannot carry",
            ));
        }
        Ok(BearerToken(token.to_string()))
    }

    /// The token from `file` when it is set, else from [`TOKEN_ENV`] when that is set, else
    /// `None` (no authentication).
    pub fn load(
        file: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<BearerToken>, TokenError> {
        if !file.as_os_str().is_empty() {
            let text = std::fs::read_to_string(file).map_err(|source| TokenError::Read {
                path: file.to_path_buf(),
                source,
            })?;
            let origin = format!("receiver.bearer_token_file {}", file.display());
            return BearerToken::new(&text, &origin).map(Some);
        }
        match env(TOKEN_ENV) {
            Some(text) => BearerToken::new(&text, TOKEN_ENV).map(Some),
            None => Ok(None),
        }
    }

    /// Whether an `authorization` header value carries this token (`Bearer` case-insensitive,
    /// as RFC 6750 allows). The comparison takes the same time wherever the first difference
    /// is, and does not stop early on a length mismatch.
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let value = value.trim_ascii();
        let Some((scheme, rest)) = value.split_at_checked(7) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"bearer ") {
            return false;
        }
        constant_time_eq(rest.trim_ascii(), self.0.as_bytes())
    }
}

/// Equality whose time depends only on the lengths, not on where the bytes differ.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        // Past the end of `given`, compare against 0 so the loop always runs in full.
        let g = given.get(i).copied().unwrap_or(0);
        diff |= g ^ e;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> BearerToken {
        BearerToken::new("s3cret-T0ken\n", "test").unwrap()
    }

    #[test]
    fn accepts_only_the_exact_token() {
        let t = token();
        assert!(t.accepts(Some(b"Bearer s3cret-T0ken")));
        assert!(t.accepts(Some(b"bearer s3cret-T0ken")));
        assert!(t.accepts(Some(b"  Bearer   s3cret-T0ken ")));
        for bad in [
            &b""[..],
            b"Bearer",
            b"Bearer ",
            b"Bearer s3cret-T0ke",
            b"Bearer s3cret-T0kenX",
            b"Bearer S3cret-T0ken",
            b"Basic s3cret-T0ken",
            b"s3cret-T0ken",
        ] {
            assert!(!t.accepts(Some(bad)), "{}", String::from_utf8_lossy(bad));
        }
        assert!(!t.accepts(None));
    }

    #[test]
    fn never_shown() {
        let t = token();
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(!UNAUTHENTICATED_MESSAGE.contains("s3cret"));
        let err = BearerToken::new("two words", "KOTEL_RECEIVER_BEARER_TOKEN").unwrap_err();
        assert!(!err.to_string().contains("words"), "{err}");
    }

    #[test]
    fn loads_from_file_then_env() {
        let dir = std::env::temp_dir().join(format!("kotel-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        let env = |k: &str| (k == TOKEN_ENV).then(|| "from-env".to_string());
        let t = BearerToken::load(&file, &env).unwrap().unwrap();
        assert!(t.accepts(Some(b"Bearer from-file")));
        let t = BearerToken::load(Path::new(""), &env).unwrap().unwrap();
        assert!(t.accepts(Some(b"Bearer from-env")));
        assert!(BearerToken::load(Path::new(""), &|_| None)
            .unwrap()
            .is_none());
        std::fs::write(&file, "\n").unwrap();
        let err = BearerToken::load(&file, &env).unwrap_err();
        assert!(err.to_string().contains("bearer_token_file"), "{err}");
        let err = BearerToken::load(&dir.join("missing"), &env).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
