//! Gitea and Forgejo (codeberg.org by default, any instance through `--api-url`): the
//! repositories of an organisation or a user, and per repository: settings, labels,
//! milestones, issues with comments, pull requests with comments, reviews and review comments,
//! releases with their attachments. The documents have the shapes of GitHub's (docs/PROVIDERS.md)
//! so that one reader serves both.
//!
//! Incremental like GitHub: issues and pull requests are listed with `since` = the newest
//! `updated_at` already held (normalised to UTC: Gitea renders times in the server's zone), and
//! asked again until the answer stops moving, so an unchanged repository sends the URLs of the
//! previous run. Every request is conditional where the server gave an ETag.

use age::secrecy::SecretString;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use super::common::{self, PullParts, github_like_repo, listing, put};
use super::http::{ApiClient, Auth, Cache, RequestStats, same_origin};
use super::str_field;
use super::{
    Export, Listing, MetadataMap, MetadataSink, Provider, ProviderError, RepoInfo, SourceConfig,
};

pub const DEFAULT_API: &str = "https://codeberg.org/api/v1";

/// Gitea's default `MAX_RESPONSE_ITEMS`: a larger `limit` is cut to it anyway.
const PAGE: u32 = 50;

/// The user name git sends with the token: Gitea and Forgejo take the token as the password
/// and ignore the name.
const GIT_USERNAME: &str = "gitvault";

pub struct Gitea<'i> {
    api: ApiClient<'i>,
    owner: String,
    token: Option<SecretString>,
}

/// A timestamp in any zone, as UTC seconds (`2024-03-05T09:20:30Z`).
fn utc_seconds(text: &str) -> Option<String> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| {
        t.with_timezone(&Utc)
            .to_rfc3339_opts(SecondsFormat::Secs, true)
    })
}

/// A 429 without `Retry-After` (Codeberg's proxy, for one) stops the source like a
/// rate limit instead of failing every repository in turn.
fn rate_limit(e: ProviderError) -> ProviderError {
    match e {
        ProviderError::Http { status: 429, .. } => ProviderError::RateLimited {
            until: Utc::now() + chrono::Duration::minutes(10),
        },
        e => e,
    }
}

/// An empty list when the unit (issues, pull requests, releases) is disabled: Gitea answers
/// 404 for the lists of a disabled unit.
fn or_empty(result: Result<Vec<Value>, ProviderError>) -> Result<Vec<Value>, ProviderError> {
    match result {
        Err(ProviderError::NotFound(_)) => Ok(Vec::new()),
        other => other,
    }
}

impl<'i> Gitea<'i> {
    pub fn new(source: &SourceConfig, cache: Cache<'i>) -> Result<Self, ProviderError> {
        let (api, owner, token) =
            common::token_client(source, cache, DEFAULT_API, |t| Auth::scheme("token", t))?;
        Ok(Gitea { api, owner, token })
    }

    fn repo_url(&self, repo: &RepoInfo, rest: &str) -> String {
        self.api.url(&format!("/repos/{}{}", repo.full_name, rest))
    }

    /// The instance's web root: attachments are downloaded from there.
    fn web_root(&self) -> String {
        match self.api.base().strip_suffix("/api/v1") {
            Some(root) => root.to_string(),
            None => url::Url::parse(self.api.base())
                .map(|u| u.origin().ascii_serialization())
                .unwrap_or_else(|_| self.api.base().to_string()),
        }
    }

    fn get_json(&mut self, url: &str) -> Result<Value, ProviderError> {
        self.api.get_json(url).map_err(rate_limit)
    }

    fn get_all(&mut self, url: &str) -> Result<Vec<Value>, ProviderError> {
        self.api.get_all(url).map_err(rate_limit)
    }

    /// A pull request's own parts; its review comments are asked review by review.
    fn pull_parts(&mut self, repo: &RepoInfo, number: u64) -> Result<PullParts, ProviderError> {
        let pull = self.get_json(&self.repo_url(repo, &format!("/pulls/{number}")))?;
        let reviews =
            self.get_all(&self.repo_url(repo, &format!("/pulls/{number}/reviews?limit={PAGE}")))?;
        let mut review_comments = Vec::new();
        for review in &reviews {
            let Some(id) = review.get("id").and_then(Value::as_u64) else {
                continue;
            };
            if review.get("comments_count").and_then(Value::as_u64) == Some(0) {
                continue;
            }
            review_comments.extend(self.get_all(
                &self.repo_url(repo, &format!("/pulls/{number}/reviews/{id}/comments")),
            )?);
        }
        Ok((pull, reviews, review_comments))
    }

    /// Issues and pull requests changed since the newest one held (see
    /// [`common::export_issues_since`]). Timestamps are kept as UTC seconds, one format, so
    /// text order is time order.
    fn export_issues(
        &mut self,
        repo: &RepoInfo,
        map: &mut MetadataMap,
        sink: &mut dyn MetadataSink,
    ) -> Result<(), ProviderError> {
        let list_url = self.repo_url(repo, &format!("/issues?state=all&limit={PAGE}"));
        common::export_issues_since(
            self,
            &list_url,
            map,
            sink,
            utc_seconds,
            |gitea, url| or_empty(gitea.get_all(url)),
            |gitea, number, item| {
                // Gitea sends `"pull_request": null` for plain issues.
                let is_pull = !item.get("pull_request").is_none_or(Value::is_null);
                let comments = format!("/issues/{number}/comments");
                common::issue_document(
                    gitea,
                    number,
                    item,
                    is_pull,
                    |g| g.get_all(&g.repo_url(repo, &comments)),
                    |g| g.pull_parts(repo, number),
                )
            },
        )
    }

    /// Releases, each attachment's bytes stored once and downloaded again only when the
    /// attachment changes (a new upload has a new uuid).
    fn export_releases(
        &mut self,
        repo: &RepoInfo,
        map: &mut MetadataMap,
        sink: &mut dyn MetadataSink,
    ) -> Result<(), ProviderError> {
        let releases =
            or_empty(self.get_all(&self.repo_url(repo, &format!("/releases?limit={PAGE}"))))?;
        let uuid = |asset: &Value| str_field(asset, "uuid").unwrap_or_default();
        let (base, web_root) = (self.api.base().to_string(), self.web_root());
        common::export_releases(
            &mut self.api,
            &releases,
            map,
            sink,
            |asset| {
                let size = asset.get("size").and_then(Value::as_u64).unwrap_or(0);
                format!("{}:{size}", uuid(asset))
            },
            // The token goes only to the API's own origin; attachments are also served at
            // /attachments/{uuid} of the instance.
            |asset, _| {
                str_field(asset, "browser_download_url")
                    .filter(|u| same_origin(u, &base))
                    .unwrap_or_else(|| format!("{web_root}/attachments/{}", uuid(asset)))
            },
        )
        .map_err(rate_limit)
    }
}

impl Provider for Gitea<'_> {
    fn list_repositories(&mut self) -> Result<Listing, ProviderError> {
        // GET /orgs/{name} answers 404 for users.
        let org = self.get_json(&self.api.url(&format!("/orgs/{}", self.owner)));
        let list = match org {
            Ok(_) => format!("/orgs/{}/repos?limit={PAGE}", self.owner),
            Err(ProviderError::NotFound(_)) => format!("/users/{}/repos?limit={PAGE}", self.owner),
            Err(e) => return Err(e),
        };
        let listed = self.get_all(&self.api.url(&list))?;
        Ok(listing(&listed, &["full_name", "name"], github_like_repo))
    }

    fn kind(&self) -> &'static str {
        "gitea"
    }

    fn export(&mut self, repo: &RepoInfo, out: &mut Export<'_>) -> Result<(), ProviderError> {
        // The repository object holds the topics already.
        let settings = self.get_json(&self.repo_url(repo, ""))?;
        put(&mut out.map, out.sink, "settings.json", &settings)?;
        let lists = [
            ("labels.json", format!("/labels?limit={PAGE}")),
            (
                "milestones.json",
                format!("/milestones?state=all&limit={PAGE}"),
            ),
        ]
        .map(|(path, rest)| (path, self.repo_url(repo, &rest)));
        common::put_lists(&mut self.api, out, lists).map_err(rate_limit)?;
        self.export_issues(repo, &mut out.map, out.sink)?;
        self.export_releases(repo, &mut out.map, out.sink)?;
        Ok(())
    }

    fn stats(&self) -> RequestStats {
        self.api.stats
    }

    fn git_credentials(&mut self) -> Result<Option<crate::git::Credentials>, ProviderError> {
        Ok(self.token.clone().map(|secret| crate::git::Credentials {
            username: GIT_USERNAME.into(),
            secret,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_in_any_zone_become_utc_seconds() {
        assert_eq!(
            utc_seconds("2024-03-05T10:20:30+01:00").as_deref(),
            Some("2024-03-05T09:20:30Z")
        );
        assert_eq!(
            utc_seconds("2024-03-05T09:20:30Z").as_deref(),
            Some("2024-03-05T09:20:30Z")
        );
        assert_eq!(utc_seconds("yesterday"), None);
    }

    #[test]
    fn the_token_goes_only_to_the_api_origin() {
        let api = "https://codeberg.org/api/v1";
        assert!(same_origin(
            "https://codeberg.org/acme/x/releases/download/v1/a.tgz",
            api
        ));
        assert!(!same_origin("https://cdn.example.com/a.tgz", api));
        assert!(!same_origin("http://codeberg.org/a.tgz", api));
    }

    #[test]
    fn repositories_and_their_wikis() {
        let v = json!({
            "full_name": "acme/api", "name": "api", "clone_url": "https://codeberg.org/acme/api.git",
            "has_wiki": true, "fork": true, "archived": false, "private": true,
            "updated_at": "2024-03-05T10:20:30+01:00"
        });
        let r = github_like_repo(&v).unwrap();
        assert_eq!(
            r.wiki_url.as_deref(),
            Some("https://codeberg.org/acme/api.wiki.git")
        );
        assert!(r.fork && r.private && !r.archived);
    }
}
