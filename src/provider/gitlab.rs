//! GitLab (gitlab.com and self-managed instances through `--api-url`, REST API v4): the
//! projects of a group and all its subgroups, or of a user's personal namespace, and per
//! project: settings, labels, milestones, issues with their notes, merge requests with their
//! notes, discussions and approvals, releases (their JSON only: GitLab's release asset links
//! point at URLs outside GitLab, which are not ours to download).
//!
//! Projects are addressed by their URL-encoded full path (`acme%2Fplatform%2Fapi`), which the
//! `RepoInfo` carries, so a provider instance that did not list the source (a parallel worker)
//! can export metadata too.
//!
//! Incremental and cheap, as for GitHub: issues and merge requests are listed with
//! `updated_after` = the newest `updated_at` already in the vault, asked again until the
//! answer stops moving so that the next run sends a URL whose answer is cached, and an item is
//! fetched again only when its `updated_at` differs from the one recorded in the metadata
//! state. An unchanged project costs six conditional requests, all answered 304.

use age::secrecy::SecretString;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::common::{self, listing, put, put_lists};
use super::http::{ApiClient, Auth, Cache, RequestStats, shown};
use super::{
    Export, Listing, MetadataMap, MetadataSink, Provider, ProviderError, RepoInfo, SourceConfig,
};
use super::{bool_field, segment, str_field};

pub const DEFAULT_API: &str = "https://gitlab.com/api/v4";

pub struct GitLab<'i> {
    api: ApiClient<'i>,
    owner: String,
    token: Option<SecretString>,
}

/// The two incremental lists: issues and merge requests share their listing rules.
#[derive(Clone, Copy)]
enum Listed {
    Issues,
    MergeRequests,
}

impl Listed {
    /// The API collection under `/projects/:id/`.
    fn collection(self) -> &'static str {
        match self {
            Listed::Issues => "issues",
            Listed::MergeRequests => "merge_requests",
        }
    }

    /// Where the documents go: `pulls/` like GitHub's pull requests, so that readers of the
    /// metadata find the same layout for every provider.
    fn directory(self) -> &'static str {
        match self {
            Listed::Issues => "issues",
            Listed::MergeRequests => "pulls",
        }
    }

    fn since_key(self) -> &'static str {
        match self {
            Listed::Issues => "issues_since",
            Listed::MergeRequests => "merge_requests_since",
        }
    }

    /// The state key recording the `updated_at` an item's document was made from.
    fn stamp_key(self, iid: u64) -> String {
        match self {
            Listed::Issues => format!("issue:{iid}"),
            Listed::MergeRequests => format!("merge_request:{iid}"),
        }
    }
}

/// Percent-encodes a path segment or query value: group and project paths become one segment
/// (`/` is `%2F`, as GitLab requires for ids given as paths), and timestamps with an offset
/// keep their `+`.
fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Whether timestamp `a` is later than `b`. GitLab writes UTC with milliseconds, but a
/// self-managed instance may write its own offset, where text order is not time order.
fn later(a: &str, b: &str) -> bool {
    match (
        DateTime::parse_from_rfc3339(a),
        DateTime::parse_from_rfc3339(b),
    ) {
        (Ok(a), Ok(b)) => a.with_timezone(&Utc) > b.with_timezone(&Utc),
        _ => a > b,
    }
}

/// Whether a project feature is on: `*_access_level` is `disabled`, `private` (members only)
/// or `enabled`; older servers send only the `*_enabled` flag.
fn feature_enabled(settings: &Value, level: &str, flag: Option<&str>) -> bool {
    match settings.get(level).and_then(Value::as_str) {
        Some(level) => level != "disabled",
        None => flag
            .and_then(|f| settings.get(f))
            .and_then(Value::as_bool)
            .unwrap_or(true),
    }
}

fn repo_info(v: &Value) -> Option<RepoInfo> {
    let full_name = str_field(v, "path_with_namespace")?;
    let clone_url = str_field(v, "http_url_to_repo")?;
    // Enabled is not created: a wiki nobody wrote has no repository (backup reports it as
    // skipped).
    let wiki_url = feature_enabled(v, "wiki_access_level", Some("wiki_enabled"))
        .then(|| common::wiki_url(&clone_url));
    Some(RepoInfo {
        short_name: str_field(v, "path").unwrap_or_else(|| full_name.clone()),
        full_name,
        clone_url,
        wiki_url,
        // GitLab has no fork flag: a fork names its upstream (when the token may see it).
        fork: v.get("forked_from_project").is_some_and(|p| !p.is_null()),
        archived: bool_field(v, "archived"),
        // `internal` projects are visible to every signed-in user, not to the public.
        private: str_field(v, "visibility").is_some_and(|vis| vis != "public"),
        updated_at: str_field(v, "updated_at").or_else(|| str_field(v, "last_activity_at")),
    })
}

impl<'i> GitLab<'i> {
    pub fn new(source: &SourceConfig, cache: Cache<'i>) -> Result<Self, ProviderError> {
        let (api, owner, token) = common::token_client(source, cache, DEFAULT_API, |t| {
            Auth::header("PRIVATE-TOKEN", t)
        })?;
        Ok(GitLab { api, owner, token })
    }

    fn project_url(&self, repo: &RepoInfo, rest: &str) -> String {
        self.api
            .url(&format!("/projects/{}{}", encode(&repo.full_name), rest))
    }

    /// `{"issue": …, "comments": [notes]}`. Notes include GitLab's system notes (label,
    /// state and assignment changes), the history GitHub keeps as events.
    fn issue_document(
        &mut self,
        repo: &RepoInfo,
        iid: u64,
        item: &Value,
    ) -> Result<Value, ProviderError> {
        let notes = self.api.get_all(&self.project_url(
            repo,
            &format!("/issues/{iid}/notes?sort=asc&order_by=created_at&per_page=100"),
        ))?;
        Ok(json!({ "issue": item, "comments": notes }))
    }

    /// `{"pull_request": …, "comments": [notes], "review_comments": [diff notes],
    /// "discussions": [threads], "approvals": …}`. The list entry lacks `diff_refs` and other
    /// fields of the single merge request, hence the extra request.
    fn merge_request_document(
        &mut self,
        repo: &RepoInfo,
        iid: u64,
    ) -> Result<Value, ProviderError> {
        let merge_request = self
            .api
            .get_json(&self.project_url(repo, &format!("/merge_requests/{iid}")))?;
        let notes = self.api.get_all(&self.project_url(
            repo,
            &format!("/merge_requests/{iid}/notes?sort=asc&order_by=created_at&per_page=100"),
        ))?;
        // The threads: which note answers which, and whether a thread is resolved; the notes
        // list alone loses that.
        let discussions = self.api.get_all(&self.project_url(
            repo,
            &format!("/merge_requests/{iid}/discussions?per_page=100"),
        ))?;
        // Instances or tokens without the approvals API (403/404) still get their merge
        // requests backed up.
        let approvals = match self
            .api
            .get_json(&self.project_url(repo, &format!("/merge_requests/{iid}/approvals")))
        {
            Ok(v) => v,
            Err(ProviderError::NotFound(_)) | Err(ProviderError::Http { status: 403, .. }) => {
                Value::Null
            }
            Err(e) => return Err(e),
        };
        let review_comments: Vec<Value> = notes
            .iter()
            .filter(|n| n.get("type").and_then(Value::as_str) == Some("DiffNote"))
            .cloned()
            .collect();
        Ok(json!({
            "pull_request": merge_request,
            "comments": notes,
            "review_comments": review_comments,
            "discussions": discussions,
            "approvals": approvals,
        }))
    }

    /// Brings the documents of one incremental list up to date in `map`.
    fn export_changed(
        &mut self,
        repo: &RepoInfo,
        kind: Listed,
        map: &mut MetadataMap,
        sink: &mut dyn MetadataSink,
    ) -> Result<(), ProviderError> {
        // `updated_after` is inclusive. The list is asked again with the advanced bound until
        // it stops moving, so that the URL the next run sends is one whose answer is cached:
        // an unchanged project then costs a 304, and an update between two requests is never
        // skipped.
        //
        // Offset pages can shift under us: an item updated while we page moves from a page
        // already read to the end, and the item that slid onto the read page is never seen,
        // though it is older than the new bound. The moved item then shows up twice; when it
        // does, the bound is kept and the list asked again.
        let mut since = map.state.get(kind.since_key()).cloned();
        for _ in 0..4 {
            let mut list_url = self.project_url(
                repo,
                &format!(
                    "/{}?order_by=updated_at&sort=asc&per_page=100",
                    kind.collection()
                ),
            );
            if let Some(s) = &since {
                list_url.push_str(&format!("&updated_after={}", encode(s)));
            }
            let items = self.api.get_all(&list_url)?;
            let mut newest = since.clone();
            let mut seen = std::collections::HashSet::new();
            let mut shifted = false;
            for item in &items {
                let Some(iid) = item.get("iid").and_then(Value::as_u64) else {
                    continue;
                };
                shifted |= !seen.insert(iid);
                let updated = str_field(item, "updated_at").unwrap_or_default();
                let path = format!("{}/{iid}.json", kind.directory());
                let stamp_key = kind.stamp_key(iid);
                // The item at the bound comes back every time; its document is already the
                // one for this `updated_at`.
                let held = map.state.get(&stamp_key) == Some(&updated)
                    && map.documents.contains_key(&path);
                if !held {
                    let doc = match kind {
                        Listed::Issues => self.issue_document(repo, iid, item)?,
                        Listed::MergeRequests => self.merge_request_document(repo, iid)?,
                    };
                    put(map, sink, &path, &doc)?;
                    map.state.insert(stamp_key, updated.clone());
                }
                if !updated.is_empty() && newest.as_ref().is_none_or(|n| later(&updated, n)) {
                    newest = Some(updated);
                }
            }
            if shifted {
                continue;
            }
            if newest == since {
                break;
            }
            since = newest;
        }
        if let Some(s) = since {
            map.state.insert(kind.since_key().into(), s);
        }
        Ok(())
    }
}

impl Provider for GitLab<'_> {
    fn list_repositories(&mut self) -> Result<Listing, ProviderError> {
        // Groups and users share one namespace of paths: try the group first (conditional, so
        // an unchanged run pays a 304), and a 404 means a user, or nothing.
        let owner = encode(&self.owner);
        let group_url = self
            .api
            .url(&format!("/groups/{owner}?with_projects=false"));
        let listed = match self.api.get_json(&group_url) {
            // Offset pagination (the group projects endpoint has no keyset pagination) in id
            // order, so that a project created during the listing cannot shift another out
            // of the pages.
            Ok(_) => self.api.get_all(&self.api.url(&format!(
                "/groups/{owner}/projects?include_subgroups=true&with_shared=false\
                 &order_by=id&sort=asc&per_page=100"
            )))?,
            Err(ProviderError::NotFound(_)) => {
                let users = self
                    .api
                    .get_json(&self.api.url(&format!("/users?username={owner}")))?;
                let id = users
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|u| {
                        str_field(u, "username")
                            .is_some_and(|name| name.eq_ignore_ascii_case(&self.owner))
                    })
                    .and_then(|u| u.get("id").and_then(Value::as_u64))
                    .ok_or_else(|| {
                        ProviderError::NotFound(format!(
                            "{} (no group or user is named `{}`)",
                            shown(&group_url),
                            self.owner
                        ))
                    })?;
                // The user's personal namespace only; projects they are a member of belong
                // to other groups and users.
                self.api.get_all(&self.api.url(&format!(
                    "/users/{id}/projects?pagination=keyset&order_by=id&sort=asc&per_page=100"
                )))?
            }
            Err(e) => return Err(e),
        };
        Ok(listing(
            &listed,
            &["path_with_namespace", "path"],
            repo_info,
        ))
    }

    fn kind(&self) -> &'static str {
        "gitlab"
    }

    fn export(&mut self, repo: &RepoInfo, out: &mut Export<'_>) -> Result<(), ProviderError> {
        let settings = self.api.get_json(&self.project_url(repo, ""))?;
        put(&mut out.map, out.sink, "settings.json", &settings)?;
        let lists = [
            (
                "labels.json",
                self.project_url(repo, "/labels?per_page=100"),
            ),
            // Every state: the endpoint's default.
            (
                "milestones.json",
                self.project_url(repo, "/milestones?per_page=100"),
            ),
        ];
        put_lists(&mut self.api, out, lists)?;

        // A feature turned off answers 403 and is skipped; what was backed up before it was
        // turned off stays in the map.
        if feature_enabled(&settings, "issues_access_level", Some("issues_enabled")) {
            self.export_changed(repo, Listed::Issues, &mut out.map, out.sink)?;
        }
        if feature_enabled(
            &settings,
            "merge_requests_access_level",
            Some("merge_requests_enabled"),
        ) {
            self.export_changed(repo, Listed::MergeRequests, &mut out.map, out.sink)?;
        }
        if !feature_enabled(&settings, "releases_access_level", None) {
            return Ok(());
        }

        // Releases are listed whole every run, so a deleted release leaves this snapshot (it
        // stays in the older ones).
        let releases = self
            .api
            .get_all(&self.project_url(repo, "/releases?per_page=100"))?;
        let mut current = std::collections::BTreeSet::new();
        for release in &releases {
            let Some(tag) = str_field(release, "tag_name") else {
                continue;
            };
            let path = format!("releases/{}.json", segment(&tag));
            put(&mut out.map, out.sink, &path, release)?;
            current.insert(path);
        }
        out.map
            .documents
            .retain(|path, _| !path.starts_with("releases/") || current.contains(path));
        Ok(())
    }

    fn stats(&self) -> RequestStats {
        self.api.stats
    }

    /// GitLab takes any user name with a personal, group or project access token over HTTPS;
    /// `oauth2` is the one its documentation uses.
    fn git_credentials(&mut self) -> Result<Option<crate::git::Credentials>, ProviderError> {
        Ok(self.token.clone().map(|secret| crate::git::Credentials {
            username: "oauth2".into(),
            secret,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_become_repositories() {
        let fork = json!({
            "path": "api",
            "path_with_namespace": "acme/platform/api",
            "http_url_to_repo": "https://gitlab.example.com/acme/platform/api.git",
            "wiki_access_level": "enabled",
            "wiki_enabled": false,
            "forked_from_project": { "id": 1 },
            "archived": true,
            "visibility": "internal",
            "last_activity_at": "2024-01-01T00:00:00.000Z",
        });
        let info = repo_info(&fork).expect("a project");
        assert_eq!(info.short_name, "api");
        assert_eq!(info.full_name, "acme/platform/api");
        assert_eq!(
            info.wiki_url.as_deref(),
            Some("https://gitlab.example.com/acme/platform/api.wiki.git")
        );
        assert!(info.fork && info.archived && info.private);
        assert_eq!(info.updated_at.as_deref(), Some("2024-01-01T00:00:00.000Z"));

        let plain = json!({
            "path": "web",
            "path_with_namespace": "acme/web",
            "http_url_to_repo": "https://gitlab.example.com/acme/web.git",
            "wiki_enabled": false,
            "forked_from_project": null,
            "visibility": "public",
        });
        let info = repo_info(&plain).expect("a project");
        assert!(info.wiki_url.is_none() && !info.fork && !info.archived && !info.private);
        assert!(repo_info(&json!({ "path": "x" })).is_none());
    }

    #[test]
    fn ids_and_bounds_are_encoded() {
        assert_eq!(encode("acme/platform/api"), "acme%2Fplatform%2Fapi");
        assert_eq!(
            encode("2024-01-01T10:00:00.000+01:00"),
            "2024-01-01T10%3A00%3A00.000%2B01%3A00"
        );
        assert_eq!(segment("release/v1.0"), "release_v1.0");
    }

    #[test]
    fn timestamps_compare_as_times() {
        assert!(later(
            "2024-01-01T10:00:00.000Z",
            "2024-01-01T09:00:00.000Z"
        ));
        // 10:00+02:00 is 08:00 UTC: earlier, though it sorts later as text.
        assert!(!later(
            "2024-01-01T10:00:00.000+02:00",
            "2024-01-01T09:00:00.000Z"
        ));
        assert!(!later(
            "2024-01-01T09:00:00.000Z",
            "2024-01-01T09:00:00.000Z"
        ));
    }

    #[test]
    fn git_uses_the_token_as_oauth2() {
        let source = SourceConfig {
            name: "acme".into(),
            provider: "gitlab".into(),
            owner: "acme".into(),
            ..Default::default()
        };
        let mut gitlab = GitLab::new(&source, None).expect("a provider");
        assert_eq!(gitlab.api.base(), DEFAULT_API);
        assert!(gitlab.git_credentials().expect("credentials").is_none());
        gitlab.token = Some(SecretString::from("glpat-unit"));
        let credentials = gitlab
            .git_credentials()
            .expect("credentials")
            .expect("a token");
        assert_eq!(credentials.username, "oauth2");
        use age::secrecy::ExposeSecret;
        assert_eq!(credentials.secret.expose_secret(), "glpat-unit");
    }
}
