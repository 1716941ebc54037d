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

use std::collections::HashSet;

use age::secrecy::SecretString;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::http::{ApiClient, Auth, RequestStats};
use super::{MetadataMap, MetadataSink, Provider, ProviderError, RepoInfo, SourceConfig};
use super::{bool_field, segment, str_field};

pub const DEFAULT_API: &str = "https://codeberg.org/api/v1";

/// Gitea's default `MAX_RESPONSE_ITEMS`: a larger `limit` is cut to it anyway.
const PAGE: u32 = 50;

/// The user name git sends with the token: Gitea and Forgejo take the token as the password
/// and ignore the name.
const GIT_USERNAME: &str = "gitvault";

pub struct Gitea<'i> {
    api: ApiClient<'i>,
    base: String,
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

/// Same scheme, host and port: the token may be sent there.
fn same_origin(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
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

fn repo_info(v: &Value) -> Option<RepoInfo> {
    let full_name = str_field(v, "full_name")?;
    let clone_url = str_field(v, "clone_url")?;
    let wiki_url = bool_field(v, "has_wiki").then(|| {
        let base = clone_url.strip_suffix(".git").unwrap_or(&clone_url);
        format!("{base}.wiki.git")
    });
    Some(RepoInfo {
        short_name: str_field(v, "name").unwrap_or_else(|| full_name.clone()),
        full_name,
        clone_url,
        wiki_url,
        fork: bool_field(v, "fork"),
        archived: bool_field(v, "archived"),
        private: bool_field(v, "private"),
        updated_at: str_field(v, "updated_at"),
    })
}

impl<'i> Gitea<'i> {
    pub fn new(
        source: &SourceConfig,
        cache: Option<&'i crate::index::Index>,
    ) -> Result<Self, ProviderError> {
        let token = source.token()?;
        Ok(Gitea {
            api: ApiClient::new(
                token.as_ref().map(|t| Auth::scheme("token", t)),
                "application/json",
                Vec::new(),
                cache,
            )?,
            base: source
                .api_url
                .clone()
                .unwrap_or_else(|| DEFAULT_API.into())
                .trim_end_matches('/')
                .to_string(),
            owner: source.owner.clone(),
            token,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn repo_url(&self, repo: &RepoInfo, rest: &str) -> String {
        self.url(&format!("/repos/{}{}", repo.full_name, rest))
    }

    /// The instance's web root: attachments are downloaded from there.
    fn web_root(&self) -> String {
        match self.base.strip_suffix("/api/v1") {
            Some(root) => root.to_string(),
            None => url::Url::parse(&self.base)
                .map(|u| u.origin().ascii_serialization())
                .unwrap_or_else(|_| self.base.clone()),
        }
    }

    fn get_json(&mut self, url: &str) -> Result<Value, ProviderError> {
        self.api.get_json(url).map_err(rate_limit)
    }

    fn get_all(&mut self, url: &str) -> Result<Vec<Value>, ProviderError> {
        self.api.get_all(url).map_err(rate_limit)
    }

    /// One issue with its comments, or one pull request with its comments, reviews and the
    /// comments of every review.
    fn issue_document(
        &mut self,
        repo: &RepoInfo,
        number: u64,
        item: &Value,
    ) -> Result<(String, Value), ProviderError> {
        let comments = if item.get("comments").and_then(Value::as_u64).unwrap_or(1) > 0 {
            self.get_all(&self.repo_url(repo, &format!("/issues/{number}/comments")))?
        } else {
            Vec::new()
        };
        // Gitea sends `"pull_request": null` for plain issues.
        if item.get("pull_request").is_none_or(Value::is_null) {
            return Ok((
                format!("issues/{number}.json"),
                json!({ "issue": item, "comments": comments }),
            ));
        }
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
        Ok((
            format!("pulls/{number}.json"),
            json!({ "pull_request": pull, "comments": comments, "reviews": reviews, "review_comments": review_comments }),
        ))
    }

    /// Issues and pull requests changed since the newest one held (`since` is inclusive),
    /// asked again with the advanced `since` until the answer stops moving: the next run then
    /// sends the same URL, and an update between two requests is never skipped. The items
    /// held at exactly `since` (`issues_at_since`) come back every time and are not fetched
    /// again. Timestamps are kept as UTC seconds, one format, so text order is time order.
    fn export_issues(
        &mut self,
        repo: &RepoInfo,
        map: &mut MetadataMap,
        sink: &mut dyn MetadataSink,
    ) -> Result<(), ProviderError> {
        let mut since = map.state.get("issues_since").cloned();
        let mut done: HashSet<(u64, String)> = HashSet::new();
        if let (Some(s), Some(held)) = (&since, map.state.get("issues_at_since")) {
            for n in held.split(',').filter_map(|n| n.parse::<u64>().ok()) {
                done.insert((n, s.clone()));
            }
        }
        for _ in 0..4 {
            let mut list_url = self.repo_url(repo, &format!("/issues?state=all&limit={PAGE}"));
            if let Some(s) = &since {
                list_url.push_str(&format!("&since={s}"));
            }
            let items = or_empty(self.get_all(&list_url))?;
            let mut newest = since.clone();
            for item in &items {
                let Some(number) = item.get("number").and_then(Value::as_u64) else {
                    continue;
                };
                let raw = str_field(item, "updated_at").unwrap_or_default();
                let updated = utc_seconds(&raw);
                if !done.insert((number, updated.clone().unwrap_or(raw))) {
                    continue;
                }
                let (path, doc) = self.issue_document(repo, number, item)?;
                map.documents.insert(path, sink.document(&doc)?.to_hex());
                if let Some(updated) = updated
                    && newest.as_ref().is_none_or(|n| updated > *n)
                {
                    newest = Some(updated);
                }
            }
            if newest == since {
                break;
            }
            since = newest;
        }
        if let Some(s) = since {
            let mut at_since: Vec<u64> = done
                .iter()
                .filter(|(_, u)| *u == s)
                .map(|(n, _)| *n)
                .collect();
            at_since.sort_unstable();
            let list: Vec<String> = at_since.iter().map(u64::to_string).collect();
            map.state.insert("issues_at_since".into(), list.join(","));
            map.state.insert("issues_since".into(), s);
        }
        Ok(())
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
        for release in &releases {
            let Some(id) = release.get("id").and_then(Value::as_u64) else {
                continue;
            };
            let mut doc = release.clone();
            if let Some(assets) = doc.get_mut("assets").and_then(Value::as_array_mut) {
                for asset in assets.iter_mut() {
                    let Some(asset_id) = asset.get("id").and_then(Value::as_u64) else {
                        continue;
                    };
                    let name = segment(&str_field(asset, "name").unwrap_or_default());
                    let path = format!("release-assets/{asset_id}/{name}");
                    let uuid = str_field(asset, "uuid").unwrap_or_default();
                    let size = asset.get("size").and_then(Value::as_u64).unwrap_or(0);
                    let stamp = format!("{uuid}:{size}");
                    let state_key = format!("asset:{asset_id}");
                    let unchanged = map.state.get(&state_key) == Some(&stamp)
                        && map.documents.contains_key(&path);
                    if !unchanged {
                        // The token goes only to the API's own origin; attachments are
                        // also served at /attachments/{uuid} of the instance.
                        let url = str_field(asset, "browser_download_url")
                            .filter(|u| same_origin(u, &self.base))
                            .unwrap_or_else(|| format!("{}/attachments/{uuid}", self.web_root()));
                        let mut stored = None;
                        self.api
                            .download(&url, &mut |input| {
                                stored = Some(sink.binary(input)?);
                                Ok(())
                            })
                            .map_err(rate_limit)?;
                        if let Some(id) = stored {
                            map.documents.insert(path.clone(), id.to_hex());
                            map.state.insert(state_key, stamp);
                        }
                    }
                    if let Some(obj) = asset.as_object_mut() {
                        obj.insert("gitvault_content".into(), Value::String(path));
                    }
                }
            }
            map.documents
                .insert(format!("releases/{id}.json"), sink.document(&doc)?.to_hex());
        }
        Ok(())
    }
}

impl Provider for Gitea<'_> {
    fn list_repositories(&mut self) -> Result<Vec<RepoInfo>, ProviderError> {
        // GET /orgs/{name} answers 404 for users.
        let org = self.get_json(&self.url(&format!("/orgs/{}", self.owner)));
        let list = match org {
            Ok(_) => format!("/orgs/{}/repos?limit={PAGE}", self.owner),
            Err(ProviderError::NotFound(_)) => format!("/users/{}/repos?limit={PAGE}", self.owner),
            Err(e) => return Err(e),
        };
        let listed = self.get_all(&self.url(&list))?;
        let mut repos: Vec<RepoInfo> = listed.iter().filter_map(repo_info).collect();
        repos.sort_by(|a, b| a.full_name.cmp(&b.full_name));
        repos.dedup_by(|a, b| a.full_name == b.full_name);
        Ok(repos)
    }

    fn export_metadata(
        &mut self,
        repo: &RepoInfo,
        previous: Option<&MetadataMap>,
        sink: &mut dyn MetadataSink,
    ) -> Result<MetadataMap, ProviderError> {
        let mut map = previous.cloned().unwrap_or_default();
        map.format = 1;
        map.provider = "gitea".into();

        // The repository object holds the topics already.
        let settings = self.get_json(&self.repo_url(repo, ""))?;
        map.documents
            .insert("settings.json".into(), sink.document(&settings)?.to_hex());
        let labels = self.get_all(&self.repo_url(repo, &format!("/labels?limit={PAGE}")))?;
        map.documents.insert(
            "labels.json".into(),
            sink.document(&Value::Array(labels))?.to_hex(),
        );
        let milestones =
            self.get_all(&self.repo_url(repo, &format!("/milestones?state=all&limit={PAGE}")))?;
        map.documents.insert(
            "milestones.json".into(),
            sink.document(&Value::Array(milestones))?.to_hex(),
        );
        self.export_issues(repo, &mut map, sink)?;
        self.export_releases(repo, &mut map, sink)?;
        Ok(map)
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
        let r = repo_info(&v).unwrap();
        assert_eq!(
            r.wiki_url.as_deref(),
            Some("https://codeberg.org/acme/api.wiki.git")
        );
        assert!(r.fork && r.private && !r.archived);
    }
}
