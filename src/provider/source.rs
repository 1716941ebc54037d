//! Sources: an account to back up as config.toml names it (provider, owner, API URL, the
//! *name* of the token's variable), which repositories of it to keep, and which clone URLs its
//! git origin accepts.

use super::*;

/// A configured account to back up (`[[source]]` in config.toml). Holds the *name* of the
/// token's environment variable, never the token.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SourceConfig {
    pub name: String,
    pub provider: String,
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// Where the repositories' git URLs live (`https://git.example.com:8443`), when not on the
    /// API's host: clone URLs elsewhere are refused and git credentials go to this origin only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_url: Option<String>,
    /// Name of the variable holding the user name that goes with the token where the API
    /// wants Basic auth (Bitbucket: the Atlassian account e-mail for API tokens, the Bitbucket
    /// user name for app passwords).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_env: Option<String>,
    /// GitHub App authentication instead of a token: the app's id and its private key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_key_file: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub no_forks: bool,
    #[serde(default)]
    pub no_archived: bool,
    /// The retention policy `forget` applies to this source's repositories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<crate::policy::Policy>,
    /// Timeouts and limits of the API client (`[source.http]`).
    #[serde(default, skip_serializing_if = "http::HttpSettings::is_default")]
    pub http: http::HttpSettings,
}

impl SourceConfig {
    pub(crate) fn validate(&self) -> Result<(), ProviderError> {
        let bad = |reason: &str| ProviderError::BadSource {
            name: self.name.clone(),
            reason: reason.to_string(),
        };
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad("names may hold letters, digits, `-` and `_` only"));
        }
        match self.provider.as_str() {
            "github" | "gitlab" | "bitbucket" | "gitea" => {}
            _ => return Err(bad("unknown provider (github, gitlab, bitbucket, gitea)")),
        }
        if (self.app_id.is_some() || self.app_key_file.is_some()) && self.provider != "github" {
            return Err(bad("--app-id and --app-key-file are for GitHub Apps only"));
        }
        if self.app_id.is_some() != self.app_key_file.is_some() {
            return Err(bad("a GitHub App needs both --app-id and --app-key-file"));
        }
        if self.app_id.is_some() && self.token_env.is_some() {
            return Err(bad(
                "use either a token (--token-env) or a GitHub App, not both",
            ));
        }
        // GitLab owners may be subgroup paths (`group/subgroup`); nowhere else is `/` valid.
        let nested = self.provider == "gitlab"
            && self
                .owner
                .split('/')
                .all(|s| !s.is_empty() && s != "." && s != "..");
        if self.owner.is_empty()
            || self.owner.contains(['?', '#', ' ', '%', '\\'])
            || (self.owner.contains('/') && !nested)
        {
            return Err(bad(
                "--owner must be an organisation, group (GitLab: group/subgroup) or user name",
            ));
        }
        if let Some(url) = &self.api_url {
            let parsed = url::Url::parse(url).map_err(|e| bad(&format!("--api-url: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(bad("--api-url must be an http(s) URL"));
            }
        }
        if let Some(url) = &self.git_url {
            let parsed = url::Url::parse(url).map_err(|e| bad(&format!("--git-url: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(bad("--git-url must be an http(s) URL with a host"));
            }
        }
        self.filter()?;
        Ok(())
    }

    /// The include/exclude globs, matched against the repository name (`repo`) and the full
    /// name (`owner/repo`).
    pub(crate) fn filter(&self) -> Result<RepoFilter, ProviderError> {
        let build = |globs: &[String]| -> Result<Option<globset::GlobSet>, ProviderError> {
            if globs.is_empty() {
                return Ok(None);
            }
            let mut b = globset::GlobSetBuilder::new();
            for g in globs {
                b.add(globset::Glob::new(g).map_err(|e| ProviderError::BadSource {
                    name: self.name.clone(),
                    reason: format!("glob `{g}`: {e}"),
                })?);
            }
            b.build().map(Some).map_err(|e| ProviderError::BadSource {
                name: self.name.clone(),
                reason: e.to_string(),
            })
        };
        Ok(RepoFilter {
            include: build(&self.include)?,
            exclude: build(&self.exclude)?,
            no_forks: self.no_forks,
            no_archived: self.no_archived,
        })
    }

    pub fn token(&self) -> Result<Option<age::secrecy::SecretString>, ProviderError> {
        match &self.token_env {
            Some(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Some(age::secrecy::SecretString::from(v))),
                _ => Err(ProviderError::MissingToken(var.clone())),
            },
            None => Ok(None),
        }
    }

    /// Where this source's repositories may be cloned from: `--git-url`, or the API's own
    /// scheme and host without a leading `api.` (api.github.com → github.com), on the
    /// scheme's default port unless the API has another.
    pub fn git_origin(&self) -> Result<GitOrigin, ProviderError> {
        let bad = |reason: String| ProviderError::BadSource {
            name: self.name.clone(),
            reason,
        };
        if let Some(git) = &self.git_url {
            let url = url::Url::parse(git).map_err(|e| bad(format!("--git-url: {e}")))?;
            return Ok(GitOrigin { url });
        }
        let api = match &self.api_url {
            Some(api) => api.clone(),
            None => match self.provider.as_str() {
                "github" => github::DEFAULT_API.to_string(),
                "gitlab" => gitlab::DEFAULT_API.to_string(),
                "gitea" => gitea::DEFAULT_API.to_string(),
                _ => bitbucket::DEFAULT_API.to_string(),
            },
        };
        let mut url = url::Url::parse(&api).map_err(|e| bad(format!("--api-url: {e}")))?;
        let host = url.host_str().unwrap_or_default().to_string();
        if let Some(stripped) = host.strip_prefix("api.") {
            url.set_host(Some(stripped))
                .map_err(|e| bad(format!("--api-url: {e}")))?;
        }
        url.set_path("/");
        url.set_query(None);
        Ok(GitOrigin { url })
    }

    /// The user name from `--username-env`, when one is configured.
    pub fn username(&self) -> Result<Option<String>, ProviderError> {
        match &self.username_env {
            Some(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Some(v)),
                _ => Err(ProviderError::MissingToken(var.clone())),
            },
            None => Ok(None),
        }
    }
}

/// Where a source's repositories live, judged against the clone URLs an API hands out (they
/// are the server's data: DESIGN.md invariant 9, docs/SECURITY.md, "API and git servers").
#[derive(Debug, Clone)]
pub struct GitOrigin {
    url: url::Url,
}

impl GitOrigin {
    /// Why a listed clone URL may not be fetched, if it may not: only http(s) and ssh, on the
    /// git host (ssh may use another port), never a downgrade from https to http. A
    /// `file://` URL or a local path would make the backup host copy its own repositories.
    pub(crate) fn refusal(&self, clone_url: &str) -> Option<String> {
        let own_host = self.url.host_str().unwrap_or_default();
        let (scheme, host) = match url::Url::parse(clone_url) {
            Ok(u) => (
                u.scheme().to_string(),
                u.host_str().unwrap_or_default().to_string(),
            ),
            Err(_) => match scp_host(clone_url) {
                Some(host) => ("ssh".to_string(), host.to_string()),
                None => return Some("not a URL".into()),
            },
        };
        if !matches!(scheme.as_str(), "http" | "https" | "ssh") {
            return Some(format!(
                "the scheme `{scheme}` is not http(s) or ssh (a hostile API could name the backup host's own repositories)"
            ));
        }
        if scheme == "http" && self.url.scheme() == "https" {
            return Some("http where the git host is https (a downgrade)".into());
        }
        if !host.eq_ignore_ascii_case(own_host) {
            return Some(format!(
                "the host `{host}` is not the source's git host `{own_host}` (set --git-url if it should be)"
            ));
        }
        None
    }

    /// Whether git credentials may go with a fetch of `clone_url`: same scheme, host and port.
    pub fn trusts(&self, clone_url: &str) -> bool {
        url::Url::parse(clone_url).is_ok_and(|u| u.origin() == self.url.origin())
    }
}

/// Splits a listing into the repositories that may be fetched and those refused with a
/// reason: clone URLs (and wiki URLs) the source's git origin does not accept, and clone URLs
/// listed more than once (two names for one repository would give one the other's metadata).
pub fn screen_listing(
    repos: Vec<RepoInfo>,
    origin: &GitOrigin,
) -> (Vec<RepoInfo>, Vec<(RepoInfo, String)>) {
    let key = |url: &str| {
        let url = url.trim_end_matches('/');
        url.strip_suffix(".git").unwrap_or(url).to_ascii_lowercase()
    };
    let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for repo in &repos {
        names
            .entry(key(&repo.clone_url))
            .or_default()
            .push(repo.full_name.clone());
    }
    let mut kept = Vec::new();
    let mut refused = Vec::new();
    for repo in repos {
        let reason = origin
            .refusal(&repo.clone_url)
            .map(|r| format!("clone URL refused: {r}"))
            .or_else(|| {
                let wiki = repo.wiki_url.as_deref()?;
                origin
                    .refusal(wiki)
                    .map(|r| format!("wiki URL refused: {r}"))
            })
            .or_else(|| {
                let same = names.get(&key(&repo.clone_url))?;
                (same.len() > 1).then(|| {
                    format!(
                        "the API lists one clone URL for {} repositories ({}): none is backed up",
                        same.len(),
                        same.join(", ")
                    )
                })
            });
        match reason {
            Some(reason) => refused.push((repo, reason)),
            None => kept.push(repo),
        }
    }
    (kept, refused)
}

/// The host of an scp-like git address (`git@host:path`).
pub(super) fn scp_host(address: &str) -> Option<&str> {
    let (user_host, path) = address.split_once(':')?;
    if user_host.contains('/') || path.starts_with("//") || user_host.len() < 2 {
        return None;
    }
    Some(user_host.rsplit('@').next().unwrap_or(user_host))
}

pub struct RepoFilter {
    include: Option<globset::GlobSet>,
    exclude: Option<globset::GlobSet>,
    no_forks: bool,
    no_archived: bool,
}

impl RepoFilter {
    pub fn keeps(&self, repo: &RepoInfo) -> bool {
        let names = [repo.short_name.as_str(), repo.full_name.as_str()];
        if self.no_forks && repo.fork || self.no_archived && repo.archived {
            return false;
        }
        if let Some(inc) = &self.include
            && !names.iter().any(|n| inc.is_match(n))
        {
            return false;
        }
        if let Some(exc) = &self.exclude
            && names.iter().any(|n| exc.is_match(n))
        {
            return false;
        }
        true
    }
}
