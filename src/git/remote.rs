//! Where a repository is: URL forms, the default vault name, and credentials kept out of URLs
//! and bound to the origin they were given for (DESIGN.md invariant 9): a request to any other
//! scheme, host or port, or over plain http to a host that is not loopback, goes without them.

use std::fmt;
use std::net::IpAddr;

use age::secrecy::{ExposeSecret, SecretString};
use base64::Engine;

use super::GitError;
use crate::model::valid_repo_name;
use crate::redact::RedactedUrl;

/// A repository to fetch: the URL given to gix (never with a password in it), its name in the
/// vault, and credentials found in the URL's userinfo.
pub struct RemoteSpec {
    pub fetch_url: String,
    /// `fetch_url` as shown to users and stored in manifests: without userinfo or query.
    pub display_url: RedactedUrl,
    pub default_name: String,
    pub is_http: bool,
    pub url_credentials: Option<Credentials>,
}

/// HTTP credentials, sent only as an `Authorization` header.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub secret: SecretString,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

impl Credentials {
    pub(crate) fn authorization_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.secret.expose_secret());
        format!(
            "Authorization: Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    /// `GITVAULT_TOKEN` (or `GITVAULT_PASSWORD`) with `GITVAULT_USERNAME` (default
    /// `x-access-token`, which GitHub, Gitea and most servers accept with a token).
    pub fn from_environment() -> Option<Credentials> {
        let secret = std::env::var("GITVAULT_TOKEN")
            .or_else(|_| std::env::var("GITVAULT_PASSWORD"))
            .ok()
            .filter(|s| !s.is_empty())?;
        let username =
            std::env::var("GITVAULT_USERNAME").unwrap_or_else(|_| "x-access-token".into());
        Some(Credentials {
            username,
            secret: SecretString::from(secret),
        })
    }

    /// Removes the secret from a message that might quote it (defence in depth: errors of
    /// lower layers are not ours to trust).
    pub fn scrub(&self, message: &str) -> String {
        let secret = self.secret.expose_secret();
        if secret.len() >= 4 {
            message.replace(secret, "***")
        } else {
            message.to_string()
        }
    }
}

fn bad(input: &str, reason: &str) -> GitError {
    GitError::BadUrl {
        input: RedactedUrl::new(input),
        reason: reason.to_string(),
    }
}

/// The variable that allows credentials over plain http to hosts other than loopback (a
/// trusted network, a TLS-terminating proxy on the same host).
pub const ALLOW_INSECURE_HTTP_ENV: &str = "GITVAULT_ALLOW_INSECURE_HTTP";

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Whether credentials may travel to `url` at all: over https, or plain http to loopback (tests,
/// a local proxy), or plain http anywhere when `GITVAULT_ALLOW_INSECURE_HTTP=1`.
pub fn transport_allows_credentials(url: &url::Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => {
            is_loopback(url) || std::env::var(ALLOW_INSECURE_HTTP_ENV).is_ok_and(|v| v == "1")
        }
        _ => false,
    }
}

/// Credentials together with the origin (scheme, host, port) of the URL they were given for.
/// The only way to get at them for a request is [`BoundCredentials::for_url`], which checks the
/// request's origin, so a host named by repository content (`.lfsconfig`) or a server's answer
/// (an LFS `href`, a redirect) never receives them.
#[derive(Clone, Debug)]
pub struct BoundCredentials {
    credentials: Credentials,
    origin: url::Origin,
}

impl BoundCredentials {
    /// `None` when `home` is not a URL with an origin (a path, an scp-style address).
    pub fn new(credentials: Credentials, home: &str) -> Option<BoundCredentials> {
        let origin = url::Url::parse(home).ok()?.origin();
        origin.is_tuple().then_some(BoundCredentials {
            credentials,
            origin,
        })
    }

    /// The credentials for a request to `url`: only on their own origin and over a transport
    /// that may carry them.
    pub(crate) fn for_url(&self, url: &str) -> Option<&Credentials> {
        let url = url::Url::parse(url).ok()?;
        (url.origin() == self.origin && transport_allows_credentials(&url))
            .then_some(&self.credentials)
    }

    /// `scheme://host:port` of the origin, for messages.
    pub(crate) fn origin(&self) -> String {
        self.origin.ascii_serialization()
    }
}

/// Turns path segments into a vault name: `.git` dropped, odd characters replaced.
fn name_from(first: &str, path: &str) -> String {
    let mut segments = vec![first.to_string()];
    for seg in path
        .split('/')
        .filter(|s| !s.is_empty() && *s != "." && *s != "..")
    {
        let seg = seg.strip_suffix(".git").unwrap_or(seg);
        let clean: String = seg
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if !clean.is_empty() && clean != "." && clean != ".." {
            segments.push(clean);
        }
    }
    segments.join("/")
}

pub fn parse_remote(input: &str) -> Result<RemoteSpec, GitError> {
    let input = input.trim();
    if input.is_empty() {
        return Err(bad(input, "empty"));
    }
    let spec = if input.contains("://") {
        parse_url(input)?
    } else if let Some((host_part, path)) = scp_like(input) {
        // `user:PW@host:path` would parse as host `user` with the password in the path (and so
        // in the repository's name); ssh cannot use a password from an address anyway.
        if path
            .split_once('@')
            .is_some_and(|(_, after)| after.contains(':'))
        {
            return Err(bad(
                input,
                "an scp-style address cannot carry a password (ssh uses keys); use an ssh key, \
                 or an https URL with GITVAULT_TOKEN",
            ));
        }
        let host = host_part.rsplit('@').next().unwrap_or(host_part);
        RemoteSpec {
            fetch_url: input.to_string(),
            display_url: RedactedUrl::new(input),
            default_name: name_from(&host.to_ascii_lowercase(), path),
            is_http: false,
            url_credentials: None,
        }
    } else {
        let path = std::path::Path::new(input)
            .canonicalize()
            .map_err(|e| bad(input, &format!("no such local repository ({e})")))?;
        let url = url::Url::from_file_path(&path).map_err(|_| bad(input, "not a local path"))?;
        RemoteSpec {
            fetch_url: url.to_string(),
            display_url: RedactedUrl::new(url.as_str()),
            default_name: name_from("local", &path.to_string_lossy()),
            is_http: false,
            url_credentials: None,
        }
    };
    if !valid_repo_name(&spec.default_name) {
        return Err(bad(
            input,
            "no usable repository name can be derived from it; pass --name",
        ));
    }
    Ok(spec)
}

/// `user@host:path` (but not `C:\path` or a path with a slash before the colon).
fn scp_like(input: &str) -> Option<(&str, &str)> {
    let (host, path) = input.split_once(':')?;
    if host.is_empty() || host.contains('/') || host.len() == 1 || path.starts_with("//") {
        return None;
    }
    Some((host, path))
}

fn parse_url(input: &str) -> Result<RemoteSpec, GitError> {
    let mut url = url::Url::parse(input).map_err(|e| bad(input, &e.to_string()))?;
    let scheme = url.scheme().to_string();
    let is_http = scheme == "http" || scheme == "https";
    match scheme.as_str() {
        "http" | "https" | "ssh" | "git" | "file" => {}
        other => return Err(bad(input, &format!("unsupported scheme `{other}`"))),
    }
    let mut url_credentials = None;
    if let Some(password) = url.password() {
        let password = urlencoding_decode(password);
        url_credentials = Some(Credentials {
            username: urlencoding_decode(url.username()),
            secret: SecretString::from(password),
        });
        let _ = url.set_password(None);
    }
    if is_http {
        // Credentials travel in a header; a user name in an http URL would only leak into logs.
        if !url.username().is_empty() && url_credentials.is_none() {
            url_credentials = Some(Credentials {
                username: urlencoding_decode(url.username()),
                secret: SecretString::from(String::new()),
            });
        }
        let _ = url.set_username("");
    }
    let default_name = if scheme == "file" {
        name_from("local", url.path())
    } else {
        let host = url
            .host_str()
            .ok_or_else(|| bad(input, "no host"))?
            .to_ascii_lowercase();
        let host = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        };
        name_from(&host, url.path())
    };
    Ok(RemoteSpec {
        fetch_url: url.to_string(),
        display_url: RedactedUrl::new(url.as_str()),
        default_name,
        is_http,
        url_credentials: url_credentials.filter(|c| !c.secret.expose_secret().is_empty()),
    })
}

fn urlencoding_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_credentials_from_urls() {
        let s = parse_remote("https://user:s3cr%40t@github.com/Owner/Repo.git").unwrap();
        assert_eq!(s.default_name, "github.com/Owner/Repo");
        assert_eq!(s.fetch_url, "https://github.com/Owner/Repo.git");
        assert!(!s.display_url.as_str().contains("s3cr"));
        let c = s.url_credentials.unwrap();
        assert_eq!(c.username, "user");
        assert_eq!(c.secret.expose_secret(), "s3cr@t");
        assert_eq!(
            parse_remote("git@gitlab.example.org:group/sub/proj.git")
                .unwrap()
                .default_name,
            "gitlab.example.org/group/sub/proj"
        );
        assert_eq!(
            parse_remote("git://127.0.0.1:9418/a/b.git")
                .unwrap()
                .default_name,
            "127.0.0.1:9418/a/b"
        );
        assert_eq!(
            parse_remote("ssh://git@host/x/y").unwrap().default_name,
            "host/x/y"
        );
        assert!(parse_remote("ftp://host/x").is_err());
        assert!(parse_remote("/definitely/not/here").is_err());
    }

    #[test]
    fn hostile_paths_give_safe_names() {
        let s = parse_remote("https://host/../../etc/passwd").unwrap();
        assert!(valid_repo_name(&s.default_name));
        assert!(!s.default_name.contains(".."));
    }

    #[test]
    fn passwords_never_reach_names_or_errors() {
        let e = parse_remote("user:PW@host:x.git")
            .err()
            .unwrap()
            .to_string();
        assert!(!e.contains("PW"), "{e}");
        let e = parse_remote("https://user:PW@host:99999/x.git")
            .err()
            .unwrap()
            .to_string();
        assert!(!e.contains("PW"), "{e}");
        let s = parse_remote("https://h/o/r.git?private_token=PW").unwrap();
        assert!(!s.display_url.as_str().contains("PW"));
        assert!(!s.default_name.contains("PW"));
    }

    #[test]
    fn credentials_stay_with_their_origin() {
        let c = Credentials {
            username: "u".into(),
            secret: SecretString::from("tok-123456".to_string()),
        };
        let b = BoundCredentials::new(c.clone(), "https://git.example/o/r.git").unwrap();
        assert!(b.for_url("https://git.example/o/r.git/info/lfs").is_some());
        assert!(b.for_url("https://git.example:443/x").is_some());
        assert!(b.for_url("https://git.example:8443/x").is_none());
        assert!(b.for_url("http://git.example/x").is_none());
        assert!(b.for_url("https://lfs.example/x").is_none());
        assert!(b.for_url("not a url").is_none());
        let b = BoundCredentials::new(c.clone(), "http://127.0.0.1:8080/r.git").unwrap();
        assert!(b.for_url("http://127.0.0.1:8080/r.git/info/lfs").is_some());
        assert!(b.for_url("http://127.0.0.2:8080/r.git").is_none());
        let b = BoundCredentials::new(c.clone(), "http://git.example/r.git").unwrap();
        if std::env::var(ALLOW_INSECURE_HTTP_ENV).is_err() {
            assert!(b.for_url("http://git.example/r.git").is_none());
        }
        assert!(BoundCredentials::new(c, "git@host:x.git").is_none());
    }

    #[test]
    fn scrub_hides_secrets() {
        let c = Credentials {
            username: "u".into(),
            secret: SecretString::from("tok-123456".to_string()),
        };
        assert_eq!(
            c.scrub("failed with tok-123456 here"),
            "failed with *** here"
        );
        assert!(!format!("{c:?}").contains("tok"));
    }
}
