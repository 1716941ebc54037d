//! Bitbucket Cloud (api.bitbucket.org/2.0): the repositories of a workspace, and per
//! repository: settings, pull requests with their comments (inline ones included) and
//! activity (updates, approvals, comments), issues with comments where the issue tracker is
//! on, and the files of the Downloads section. Bitbucket 2.0 has no releases, labels or
//! milestones.
//!
//! Lists are pages of `{"values": […], "next": "<url>"}` (not `Link` headers). Pull requests
//! and issues are listed with `q=updated_on > <newest held>` and asked again until the answer
//! is empty, so an unchanged repository sends the URLs of the previous run (conditional where
//! the API gave an ETag).
//!
//! Credentials (HTTP Basic): an API token with the Atlassian account e-mail (git then takes
//! the fixed user name `x-bitbucket-api-token-auth`), or an app password with the Bitbucket
//! user name (for the API and git alike). A user name holding `@` marks an API token.

use std::collections::HashSet;

use chrono::{DateTime, FixedOffset, Utc};
use serde_json::{Value, json};

use super::common::{connect, keep_binary, listing, name_content, put};
use super::http::{ApiClient, Auth, Cache, RequestStats};
use super::{
    Export, Listing, MetadataMap, MetadataSink, Provider, ProviderError, RepoInfo, SourceConfig,
};
use super::{bool_field, segment, str_field};
use crate::git::Credentials;

pub const DEFAULT_API: &str = "https://api.bitbucket.org/2.0";

/// The git user name that goes with an API token (Atlassian's documented static name).
const API_TOKEN_GIT_USER: &str = "x-bitbucket-api-token-auth";

/// Every state, SUPERSEDED included (the default is OPEN only).
const PULL_STATES: &str = "state=OPEN&state=MERGED&state=DECLINED&state=SUPERSEDED";

/// The longest page each endpoint gives; a larger `pagelen` is refused.
const REPOS_PAGE: u32 = 100;
const PULLS_PAGE: u32 = 50;
const ISSUES_PAGE: u32 = 50;
const COMMENTS_PAGE: u32 = 100;
const ACTIVITY_PAGE: u32 = 50;
const DOWNLOADS_PAGE: u32 = 100;

pub struct Bitbucket<'i> {
    api: ApiClient<'i>,
    workspace: String,
    git: Option<Credentials>,
}

fn parse_time(text: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(text).ok()
}

/// Bitbucket's errors are `{"type": "error", "error": {"message": …}}`; a 429 without
/// `Retry-After` stops the source like a rate limit (Bitbucket counts over a rolling hour).
pub(super) fn tidy(e: ProviderError) -> ProviderError {
    let message = |body: String| {
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| {
                v.pointer("/error/message")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or(body)
    };
    match e {
        ProviderError::Http { status: 429, .. } => ProviderError::RateLimited {
            until: Utc::now() + chrono::Duration::hours(1),
        },
        ProviderError::Unauthorized(body) => ProviderError::Unauthorized(message(body)),
        ProviderError::Http {
            path,
            status,
            message: body,
        } => ProviderError::Http {
            path,
            status,
            message: message(body),
        },
        e => e,
    }
}

/// The clone URL without the user name Bitbucket puts into it (the caller's own).
pub(super) fn without_userinfo(href: &str) -> String {
    match url::Url::parse(href) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => href.to_string(),
    }
}

fn repo_info(v: &Value, workspace: &str) -> Option<RepoInfo> {
    let slug = str_field(v, "slug")?;
    let ws = v
        .pointer("/workspace/slug")
        .and_then(Value::as_str)
        .unwrap_or(workspace);
    let clone_url = v
        .pointer("/links/clone")
        .and_then(Value::as_array)?
        .iter()
        .find(|l| l.get("name").and_then(Value::as_str) == Some("https"))
        .and_then(|l| str_field(l, "href"))
        .map(|h| without_userinfo(&h))?;
    let wiki_url = bool_field(v, "has_wiki").then(|| format!("{clone_url}/wiki"));
    Some(RepoInfo {
        full_name: format!("{ws}/{slug}"),
        short_name: slug,
        clone_url,
        wiki_url,
        fork: v.get("parent").is_some_and(Value::is_object),
        // Bitbucket Cloud has no archived repositories: --no-archived keeps everything.
        archived: false,
        private: bool_field(v, "is_private"),
        updated_at: str_field(v, "updated_on"),
    })
}

/// The user name git sends: Atlassian's fixed one with an API token (the API's user name is
/// then the account e-mail), else the Bitbucket user name of an app password.
pub(super) fn git_user(api_user: &str) -> String {
    if api_user.contains('@') {
        API_TOKEN_GIT_USER.to_string()
    } else {
        api_user.to_string()
    }
}

/// States that are open on Bitbucket's tracker; every other one is a way of closing.
pub fn issue_open(state: &str) -> bool {
    matches!(state, "new" | "open" | "on hold" | "submitted")
}

/// Every value of a paginated list, following `next` from the body. The credentials go
/// only to the API's own origin.
pub(super) fn get_values(
    api: &mut ApiClient<'_>,
    first: &str,
) -> Result<Vec<Value>, ProviderError> {
    let mut values = Vec::new();
    let mut guard = api.pages(first);
    let mut next = Some(first.to_string());
    while let Some(url) = next {
        let page = guard.fetch(&url, api).map_err(tidy)?;
        let body: Value = serde_json::from_slice(&page.body).map_err(|e| {
            ProviderError::BadResponse(format!("{}: {e}", super::http::shown(&url)))
        })?;
        match body.get("values").and_then(Value::as_array) {
            Some(list) => values.extend(list.iter().cloned()),
            None => {
                return Err(ProviderError::BadResponse(format!(
                    "{}: expected a page of values",
                    super::http::shown(&url)
                )));
            }
        }
        next = str_field(&body, "next");
    }
    Ok(values)
}

/// Pull requests or issues: the two lists filtered by `updated_on`.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Pulls,
    Issues,
}

impl<'i> Bitbucket<'i> {
    pub fn new(source: &SourceConfig, cache: Cache<'i>) -> Result<Self, ProviderError> {
        let token = source.token()?;
        let username = source.username()?;
        let (auth, git) = match (token, username) {
            (Some(secret), Some(user)) => {
                let git_user = git_user(&user);
                (
                    Some(Auth::basic(&user, &secret)),
                    Some(Credentials {
                        username: git_user,
                        secret,
                    }),
                )
            }
            (Some(_), None) => {
                return Err(ProviderError::BadSource {
                    name: source.name.clone(),
                    reason: "Bitbucket needs --username-env with the token: the variable \
                             holding your Atlassian account e-mail (API token) or your \
                             Bitbucket user name (app password)"
                        .into(),
                });
            }
            // Public repositories only.
            (None, _) => (None, None),
        };
        let api = connect(source, cache, DEFAULT_API, auth, "application/json", vec![])?;
        let workspace = source.owner.clone();
        Ok(Bitbucket {
            api,
            workspace,
            git,
        })
    }

    fn repo_url(&self, repo: &RepoInfo, rest: &str) -> String {
        format!(
            "{}/repositories/{}{}",
            self.api.base(),
            repo.full_name,
            rest
        )
    }

    fn get_json(&mut self, url: &str) -> Result<Value, ProviderError> {
        self.api.get_json(url).map_err(tidy)
    }

    fn get_values(&mut self, first: &str) -> Result<Vec<Value>, ProviderError> {
        get_values(&mut self.api, first)
    }

    /// A pull request with its comments and activity, or an issue with its comments.
    fn document(
        &mut self,
        repo: &RepoInfo,
        kind: Kind,
        id: u64,
        item: &Value,
    ) -> Result<(String, Value), ProviderError> {
        match kind {
            Kind::Pulls => {
                // The list gives a summary; the pull request itself has reviewers and
                // participants (approvals).
                let pull = self.get_json(&self.repo_url(repo, &format!("/pullrequests/{id}")))?;
                let comments = if item.get("comment_count").and_then(Value::as_u64) == Some(0) {
                    Vec::new()
                } else {
                    self.get_values(&self.repo_url(
                        repo,
                        &format!("/pullrequests/{id}/comments?pagelen={COMMENTS_PAGE}"),
                    ))?
                };
                let activity = self.get_values(&self.repo_url(
                    repo,
                    &format!("/pullrequests/{id}/activity?pagelen={ACTIVITY_PAGE}"),
                ))?;
                Ok((
                    format!("pulls/{id}.json"),
                    json!({ "pull_request": pull, "comments": comments, "activity": activity }),
                ))
            }
            Kind::Issues => {
                let comments = self.get_values(&self.repo_url(
                    repo,
                    &format!("/issues/{id}/comments?pagelen={COMMENTS_PAGE}"),
                ))?;
                Ok((
                    format!("issues/{id}.json"),
                    json!({ "issue": item, "comments": comments }),
                ))
            }
        }
    }

    /// Pull requests or issues updated after the newest one held, asked again with the
    /// advanced bound until the answer is empty: the next run then sends the same URL, and
    /// an update between two requests is never skipped. Newest first: an item updated while
    /// the pages are read moves to the front, and the next round, asking for items newer than
    /// any seen, finds it.
    fn export_changed(
        &mut self,
        repo: &RepoInfo,
        kind: Kind,
        map: &mut MetadataMap,
        sink: &mut dyn MetadataSink,
    ) -> Result<(), ProviderError> {
        let (state_key, list) = match kind {
            Kind::Pulls => (
                "pulls_since",
                format!("/pullrequests?pagelen={PULLS_PAGE}&sort=-updated_on&{PULL_STATES}"),
            ),
            Kind::Issues => (
                "issues_since",
                format!("/issues?pagelen={ISSUES_PAGE}&sort=-updated_on"),
            ),
        };
        let mut since = map.state.get(state_key).cloned();
        let mut done: HashSet<(u64, String)> = HashSet::new();
        for _ in 0..4 {
            let mut url = self.repo_url(repo, &list);
            if let Some(s) = &since {
                let query: String =
                    url::form_urlencoded::byte_serialize(format!("updated_on > {s}").as_bytes())
                        .collect();
                url.push_str(&format!("&q={query}"));
            }
            let items = match self.get_values(&url) {
                // The issue tracker is off (has_issues said otherwise a moment ago).
                Err(ProviderError::NotFound(_)) if kind == Kind::Issues => return Ok(()),
                other => other?,
            };
            let mut newest = since.clone();
            for item in &items {
                let Some(id) = item.get("id").and_then(Value::as_u64) else {
                    continue;
                };
                let updated = str_field(item, "updated_on").unwrap_or_default();
                if !done.insert((id, updated.clone())) {
                    continue;
                }
                let (path, doc) = self.document(repo, kind, id, item)?;
                put(map, sink, &path, &doc)?;
                let later = match (parse_time(&updated), newest.as_deref().and_then(parse_time)) {
                    (Some(u), Some(n)) => u > n,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                if later {
                    newest = Some(updated);
                }
            }
            if newest == since {
                break;
            }
            since = newest;
        }
        if let Some(s) = since {
            map.state.insert(state_key.into(), s);
        }
        Ok(())
    }

    /// The Downloads section, stored like release assets: `downloads.json` lists the files,
    /// each file's bytes are downloaded again only when it was uploaded anew.
    fn export_downloads(
        &mut self,
        repo: &RepoInfo,
        map: &mut MetadataMap,
        sink: &mut dyn MetadataSink,
    ) -> Result<(), ProviderError> {
        let mut files = match self
            .get_values(&self.repo_url(repo, &format!("/downloads?pagelen={DOWNLOADS_PAGE}")))
        {
            Err(ProviderError::NotFound(_)) => Vec::new(),
            other => other?,
        };
        let downloads = self.repo_url(repo, "/downloads");
        for file in files.iter_mut() {
            let Some(name) = str_field(file, "name") else {
                continue;
            };
            let path = format!("release-assets/downloads/{}", segment(&name));
            let stamp = format!(
                "{}:{}",
                str_field(file, "created_on").unwrap_or_default(),
                file.get("size").and_then(Value::as_u64).unwrap_or(0)
            );
            let state_key = format!("download:{name}");
            // Built here rather than taken from the answer, so the credentials go only to the
            // API (which redirects to a signed URL).
            let url = || {
                let mut url =
                    url::Url::parse(&downloads).map_err(|e| ProviderError::BadSource {
                        name: repo.full_name.clone(),
                        reason: e.to_string(),
                    })?;
                if let Ok(mut segments) = url.path_segments_mut() {
                    segments.push(&name);
                }
                Ok(url.into())
            };
            keep_binary(&mut self.api, map, sink, &path, state_key, stamp, url).map_err(tidy)?;
            name_content(file, path);
        }
        put(map, sink, "downloads.json", &Value::Array(files))
    }
}

impl Provider for Bitbucket<'_> {
    fn list_repositories(&mut self) -> Result<Listing, ProviderError> {
        let listed = self.get_values(&format!(
            "{}/repositories/{}?pagelen={REPOS_PAGE}",
            self.api.base(),
            self.workspace
        ))?;
        Ok(listing(&listed, &["full_name", "slug"], |v| {
            repo_info(v, &self.workspace)
        }))
    }

    fn kind(&self) -> &'static str {
        "bitbucket"
    }

    fn export(&mut self, repo: &RepoInfo, out: &mut Export<'_>) -> Result<(), ProviderError> {
        let settings = self.get_json(&self.repo_url(repo, ""))?;
        put(&mut out.map, out.sink, "settings.json", &settings)?;
        self.export_changed(repo, Kind::Pulls, &mut out.map, out.sink)?;
        if bool_field(&settings, "has_issues") {
            self.export_changed(repo, Kind::Issues, &mut out.map, out.sink)?;
        }
        self.export_downloads(repo, &mut out.map, out.sink)?;
        Ok(())
    }

    fn stats(&self) -> RequestStats {
        self.api.stats
    }

    fn git_credentials(&mut self) -> Result<Option<Credentials>, ProviderError> {
        Ok(self.git.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_urls_lose_the_user_name() {
        assert_eq!(
            without_userinfo("https://alice@bitbucket.org/acme/api.git"),
            "https://bitbucket.org/acme/api.git"
        );
    }

    #[test]
    fn bitbucket_error_bodies_are_read() {
        let e = tidy(ProviderError::Unauthorized(
            r#"{"type":"error","error":{"message":"Invalid credentials"}}"#.into(),
        ));
        assert!(
            e.to_string().contains("HTTP 401: Invalid credentials"),
            "{e}"
        );
    }
}
