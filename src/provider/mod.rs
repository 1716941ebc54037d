//! Providers: listing the repositories of an account and exporting each repository's platform
//! metadata (issues, pull requests, reviews, releases, labels, milestones, settings) as JSON
//! documents. Providers know nothing of packs or snapshots: they hand documents and binaries to
//! a `MetadataSink` and get back the ids the sink assigns.

pub mod bitbucket;
mod common;
pub mod create;
pub mod gitea;
pub mod github;
pub mod gitlab;
pub mod http;
mod source;

use std::collections::BTreeMap;
use std::io::Read;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::crypto::ChunkId;
pub use source::{GitOrigin, RepoFilter, SourceConfig, screen_listing};

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("the API refused the token (HTTP 401: {0}); check the variable named by --token-env")]
    Unauthorized(String),
    #[error(
        "not found (HTTP 404) at {0}: the owner or repository does not exist, or the token cannot see it"
    )]
    NotFound(String),
    #[error("rate limited until {until}; run again after that time to resume")]
    RateLimited { until: DateTime<Utc> },
    #[error("HTTP {status} at {path}: {message}")]
    Http {
        path: String,
        status: u16,
        message: String,
    },
    #[error("cannot reach the API: {0}")]
    Network(String),
    #[error("the API did not answer in time: {0}")]
    Timeout(String),
    #[error(
        "the answer at {path} is larger than {limit} bytes; raise the limit in [source.http] of config.toml if it is genuine"
    )]
    TooLarge { path: String, limit: u64 },
    #[error("refused: {0}")]
    Refused(String),
    #[error("unexpected answer from the API: {0}")]
    BadResponse(String),
    #[error("source `{name}`: {reason}")]
    BadSource { name: String, reason: String },
    #[error("the token variable {0} is not set")]
    MissingToken(String),
    #[error("storing metadata failed: {0}")]
    Store(String),
    #[error(transparent)]
    Cache(#[from] http::CacheError),
}

/// One repository as a provider lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RepoInfo {
    /// `repo`
    pub short_name: String,
    /// `owner/repo`
    pub full_name: String,
    pub clone_url: String,
    /// The wiki's git URL when the platform says the repository may have one.
    pub wiki_url: Option<String>,
    pub fork: bool,
    pub archived: bool,
    pub private: bool,
    pub updated_at: Option<String>,
}

/// What a provider listed: the repositories, in full-name order, each once, and the items of
/// the listing that were not readable as repositories (named as well as the item allows), so
/// that a report can say what was left out.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub repos: Vec<RepoInfo>,
    pub dropped: Vec<String>,
}

/// Where exported metadata goes: documents and binaries in, ids out.
pub trait MetadataSink {
    fn document(&mut self, value: &serde_json::Value) -> Result<ChunkId, ProviderError>;
    fn binary(&mut self, input: &mut dyn Read) -> Result<ChunkId, ProviderError>;
    /// Reads back a document stored earlier (previous snapshot's metadata).
    fn read(&mut self, id: &ChunkId) -> Result<Vec<u8>, ProviderError>;
}

/// The metadata of one repository at one snapshot: a path → chunk id map, plus the provider's
/// state for incremental runs. Stored as one JSON document named by the manifest.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MetadataMap {
    pub format: u32,
    pub provider: String,
    pub documents: BTreeMap<String, String>,
    #[serde(default)]
    pub state: BTreeMap<String, String>,
}

/// An export under way: the map being built and the sink its documents go to.
pub struct Export<'s> {
    pub map: MetadataMap,
    pub sink: &'s mut dyn MetadataSink,
}

/// A provider of one kind, for one source. `Send` because a parallel run gives each worker
/// thread its own instance.
pub trait Provider: Send {
    fn list_repositories(&mut self) -> Result<Listing, ProviderError>;
    /// The name a metadata map records as its `provider`.
    fn kind(&self) -> &'static str;
    /// Adds the metadata of `repo` to `out.map`, which starts as the previous snapshot's: what
    /// it holds already is reused when nothing changed.
    fn export(&mut self, repo: &RepoInfo, out: &mut Export<'_>) -> Result<(), ProviderError>;
    /// Exports the metadata of `repo`, reusing what `previous` already holds when nothing
    /// changed.
    fn export_metadata(
        &mut self,
        repo: &RepoInfo,
        previous: Option<&MetadataMap>,
        sink: &mut dyn MetadataSink,
    ) -> Result<MetadataMap, ProviderError> {
        let mut out = Export {
            map: common::start_map(previous, self.kind()),
            sink,
        };
        self.export(repo, &mut out)?;
        Ok(out.map)
    }
    fn stats(&self) -> http::RequestStats;
    /// The credentials git uses to fetch this source's repositories, asked for before each
    /// repository (a GitHub App renews its installation token here when it is near expiry).
    fn git_credentials(&mut self) -> Result<Option<crate::git::Credentials>, ProviderError>;
}

pub fn open_provider<'i>(
    source: &SourceConfig,
    cache: http::Cache<'i>,
) -> Result<Box<dyn Provider + 'i>, ProviderError> {
    source.validate()?;
    match source.provider.as_str() {
        "github" => Ok(Box::new(github::GitHub::new(source, cache)?)),
        "gitlab" => Ok(Box::new(gitlab::GitLab::new(source, cache)?)),
        "gitea" => Ok(Box::new(gitea::Gitea::new(source, cache)?)),
        "bitbucket" => Ok(Box::new(bitbucket::Bitbucket::new(source, cache)?)),
        _ => Err(ProviderError::BadSource {
            name: source.name.clone(),
            reason: "unsupported provider".into(),
        }),
    }
}

/// A string field of an API object.
pub(crate) fn str_field(v: &serde_json::Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
}

/// A boolean field of an API object; absent counts as false.
pub(crate) fn bool_field(v: &serde_json::Value, key: &str) -> bool {
    v.get(key)
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false)
}

/// A path segment from a name an API gave us (asset names and tags are user-chosen and may
/// hold `/`, `..` and more, and be longer than a file name may be).
pub(crate) fn segment(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s == "." || s == ".." {
        return "_".into();
    }
    // File systems take 255 bytes a name: a longer one keeps its start and its extension and
    // gets a hash of the whole name between them, so that two long names stay apart.
    if s.len() > MAX_SEGMENT {
        let hash = blake3::hash(name.as_bytes()).to_hex();
        let extension = s
            .rfind('.')
            .map(|i| &s[i..])
            .filter(|e| e.len() <= 16)
            .unwrap_or("");
        let keep = MAX_SEGMENT - 17 - extension.len();
        return format!("{}-{}{extension}", &s[..keep], &hash[..16]);
    }
    s
}

/// The longest path segment `segment` makes (bytes; file names may have 255).
const MAX_SEGMENT: usize = 200;

/// Checks a document path from a metadata map before writing it under a directory.
pub(crate) fn safe_relative_path(path: &str) -> Option<std::path::PathBuf> {
    let ok = !path.is_empty()
        && !path.starts_with('/')
        && path.split('/').all(|s| {
            !s.is_empty() && s != "." && s != ".." && !s.contains('\0') && !s.contains('\\')
        });
    ok.then(|| std::path::PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin_of(api: Option<&str>, git: Option<&str>, provider: &str) -> GitOrigin {
        let source = SourceConfig {
            name: "s".into(),
            provider: provider.into(),
            owner: "acme".into(),
            api_url: api.map(str::to_string),
            git_url: git.map(str::to_string),
            ..Default::default()
        };
        source.git_origin().expect("a git origin")
    }

    #[test]
    fn clone_urls_must_be_on_the_git_host() {
        let github = origin_of(None, None, "github");
        assert_eq!(github.refusal("https://github.com/acme/api.git"), None);
        assert_eq!(github.refusal("git@github.com:acme/api.git"), None);
        assert_eq!(github.refusal("ssh://git@github.com:22/acme/api.git"), None);
        for bad in [
            "file:///srv/git/secret.git",
            "/srv/git/secret.git",
            "git://github.com/acme/api.git",
            "ext::sh -c touch% /tmp/pwned",
            "http://github.com/acme/api.git",
            "https://evil.example/acme/api.git",
            "git@evil.example:acme/api.git",
        ] {
            assert!(github.refusal(bad).is_some(), "{bad} was accepted");
        }
        assert!(github.trusts("https://github.com/acme/api.git"));
        assert!(!github.trusts("https://github.com:8443/acme/api.git"));
        assert!(!github.trusts("git@github.com:acme/api.git"));

        let gitlab = origin_of(Some("https://gitlab.example.com/api/v4"), None, "gitlab");
        assert!(gitlab.trusts("https://gitlab.example.com/acme/api.git"));
        let separate = origin_of(
            Some("https://api.example.com/v3"),
            Some("https://git.example.com:8443"),
            "github",
        );
        assert_eq!(
            separate.refusal("https://git.example.com:8443/a/b.git"),
            None
        );
        assert!(separate.trusts("https://git.example.com:8443/a/b.git"));
        assert!(!separate.trusts("https://git.example.com/a/b.git"));
        assert!(separate.refusal("https://example.com/a/b.git").is_some());
    }

    #[test]
    fn one_clone_url_for_two_repositories_refuses_both() {
        let origin = origin_of(None, None, "github");
        let repo = |name: &str, url: &str| RepoInfo {
            short_name: name.into(),
            full_name: format!("acme/{name}"),
            clone_url: url.into(),
            wiki_url: None,
            fork: false,
            archived: false,
            private: false,
            updated_at: None,
        };
        let (kept, refused) = screen_listing(
            vec![
                repo("a", "https://github.com/acme/a.git"),
                repo("b", "https://github.com/acme/x.git"),
                repo("c", "https://github.com/acme/X"),
                repo("d", "file:///etc"),
            ],
            &origin,
        );
        assert_eq!(kept.len(), 1);
        assert_eq!(refused.len(), 3);
        assert!(refused[0].1.contains("acme/b, acme/c"), "{}", refused[0].1);
        assert!(refused[2].1.contains("file"));
    }

    #[test]
    fn long_names_are_shortened_apart() {
        let long = format!("{}.tar.gz", "a".repeat(300));
        let other = format!("{}b.tar.gz", "a".repeat(300));
        let (s, t) = (segment(&long), segment(&other));
        assert!(s.len() <= MAX_SEGMENT && s.ends_with(".gz"), "{s}");
        assert_ne!(s, t);
        assert_eq!(segment("v1.0/x"), "v1.0_x");
        assert_eq!(segment(".."), "_");
    }
}
