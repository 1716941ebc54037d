//! URLs as they may be shown or stored: without the secrets people put into them.
//!
//! A URL typed by a user or listed by a server may carry a password or token in its userinfo
//! (`https://user:PW@host/…`, `user:PW@host:path`) or its query (`?token=…`, the signed hrefs of
//! LFS batch answers). [`RedactedUrl`] keeps only the redacted text, so whatever displays,
//! logs, serialises or stores one (reports, errors, `--json`, run reports, manifests, the
//! index) cannot leak the secret: there is no way back to the original.

use std::fmt;

/// A URL (or scp-style address, or path) with its userinfo replaced by `***` and its query
/// by `?***`. Built from any text, even text that does not parse as a URL (a bad port must
/// not turn the error message into a leak).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RedactedUrl(String);

impl RedactedUrl {
    pub fn new(raw: &str) -> RedactedUrl {
        RedactedUrl(redact(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl serde::Serialize for RedactedUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// The text redaction, on the raw string rather than a parsed URL: parsers reject exactly the
/// malformed inputs (ports out of range, odd characters) whose errors must not quote them.
fn redact(raw: &str) -> String {
    let (scheme, rest) = match raw.find("://") {
        Some(i) => (&raw[..i + 3], &raw[i + 3..]),
        None => ("", raw),
    };
    // The authority (or an scp-style `user@host:path`'s head) ends at the first `/`; anything
    // up to its last `@` is userinfo. A path with an `@` but no slash may be cut too much:
    // showing less is the safe mistake.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => format!("***{}", &authority[at..]),
        None => authority.to_string(),
    };
    let tail = match tail.find('?') {
        Some(q) => format!("{}?***", &tail[..q]),
        None => match tail.find('#') {
            Some(h) => tail[..h].to_string(),
            None => tail.to_string(),
        },
    };
    format!("{scheme}{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_and_queries_are_hidden() {
        for (raw, shown) in [
            (
                "https://user:PW@host:99999/x.git",
                "https://***@host:99999/x.git",
            ),
            ("https://tok@host/x.git", "https://***@host/x.git"),
            ("user:PW@host:x.git", "***@host:x.git"),
            ("git@github.com:o/r.git", "***@github.com:o/r.git"),
            ("https://h/o/r.git?token=PW#frag", "https://h/o/r.git?***"),
            ("https://h/a@b/c", "https://h/a@b/c"),
            ("https://u:p@w@h/x", "https://***@h/x"),
            ("/srv/git/repo.git", "/srv/git/repo.git"),
            ("file:///srv/git/r.git", "file:///srv/git/r.git"),
        ] {
            let r = RedactedUrl::new(raw);
            assert_eq!(r.to_string(), shown, "{raw}");
            assert_eq!(format!("{r:?}"), format!("{shown:?}"));
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                serde_json::to_string(shown).unwrap()
            );
            assert!(!r.as_str().contains("PW"));
        }
    }
}
