//! Bitbucket Cloud (REST API 2.0) as the place to restore into. A repository is
//! `/repositories/{workspace}/{slug}`, created by a POST to that very URL; issues and pull
//! requests are numbered apart (`id`), as GitLab's merge requests are. Bitbucket has no labels,
//! and its milestones, versions and components cannot be made through the API: an issue takes
//! only `kind` and `priority` (the caller names them in [`IssueSpec`]), and what else the
//! original had is in its text. There are no releases (tags are pushed all the same). Lists
//! are pages of `{"values", "next"}`; errors `{"type": "error", "error": {"message"}}`.

use reqwest::Method;
use serde_json::{Value, json};

use super::super::bitbucket::{get_values, issue_open, tidy, without_userinfo};
use super::super::{ProviderError, str_field};
use super::{CreatedRelease, CreatedRepo, Destination, IssueSpec, RepoSpec, id_of, opened};

/// The longest page the issue, pull request and comment lists all give.
const PAGE: &str = "pagelen=50";

/// Every state a pull request can be in (the list shows only OPEN unless told).
const PULL_STATES: &str = "state=OPEN&state=MERGED&state=DECLINED&state=SUPERSEDED";

fn kind(pull: bool) -> &'static str {
    if pull { "pullrequests" } else { "issues" }
}

impl Destination<'_> {
    pub(super) fn bitbucket_url(&self, full_name: &str, rest: &str) -> String {
        self.api.url(&format!("/repositories/{full_name}{rest}"))
    }

    /// A repository answer: its name, its https clone link (without the user name Bitbucket
    /// puts in it), its main branch.
    pub(super) fn bitbucket_repo(
        v: &Value,
    ) -> Result<(String, String, Option<String>), ProviderError> {
        let bad = |what: &str| ProviderError::BadResponse(format!("repository answer: {what}"));
        let full_name = str_field(v, "full_name").ok_or_else(|| bad("no full_name"))?;
        let clone_url = v
            .pointer("/links/clone")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|l| str_field(l, "name").as_deref() == Some("https"))
            .and_then(|l| str_field(l, "href"))
            .map(|h| without_userinfo(&h))
            .ok_or_else(|| bad("no https clone link"))?;
        let main = v
            .pointer("/mainbranch/name")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok((full_name, clone_url, main))
    }

    /// Creates the repository in the workspace, private unless asked otherwise, with its
    /// issue tracker on (Bitbucket's default is off).
    pub(super) fn bitbucket_create_repo(
        &mut self,
        spec: &RepoSpec,
    ) -> Result<CreatedRepo, ProviderError> {
        let mut body = json!({
            "scm": "git",
            "is_private": spec.private,
            "has_issues": true,
            "has_wiki": spec.has_wiki,
        });
        if let Some(d) = &spec.description {
            body["description"] = Value::String(d.clone());
        }
        let url = self.bitbucket_url(&format!("{}/{}", self.owner, spec.name), "");
        let answer = self.write(Method::POST, &url, &body)?;
        let mut repo = self.created_repo(&answer, &spec.name)?;
        // An empty repository has no branch yet: the main branch is set after the push.
        repo.default_branch = None;
        Ok(repo)
    }

    pub(super) fn bitbucket_set_main_branch(
        &mut self,
        repo: &str,
        branch: &str,
    ) -> Result<(), ProviderError> {
        let url = self.bitbucket_url(repo, "");
        let body = json!({ "mainbranch": { "name": branch } });
        self.write(Method::PUT, &url, &body).map(drop)
    }

    pub(super) fn bitbucket_create_issue(
        &mut self,
        repo: &str,
        spec: &IssueSpec,
    ) -> Result<u64, ProviderError> {
        let mut body = json!({ "title": spec.title, "content": { "raw": spec.body } });
        if let Some(k) = &spec.kind {
            body["kind"] = json!(k);
        }
        if let Some(p) = &spec.priority {
            body["priority"] = json!(p);
        }
        let answer = self.write(Method::POST, &self.bitbucket_url(repo, "/issues"), &body)?;
        id_of(&answer, "id")
    }

    /// Opens a pull request; `None` when Bitbucket will not (400: a branch is missing,
    /// nothing to pull, or one is open for the branches), so that an issue is made instead.
    pub(super) fn bitbucket_create_pull(
        &mut self,
        repo: &str,
        spec: &IssueSpec,
        head: &str,
        base: &str,
    ) -> Result<Option<u64>, ProviderError> {
        let body = json!({
            "title": spec.title,
            "description": spec.body,
            "source": { "branch": { "name": head } },
            "destination": { "branch": { "name": base } },
            "close_source_branch": false,
        });
        let url = self.bitbucket_url(repo, "/pullrequests");
        let answer = self.write(Method::POST, &url, &body);
        opened(answer, "id", &[400, 409, 422], (head, base))
    }

    /// A comment; at `place` (file, line of the new side) an inline one. Bitbucket refuses
    /// an inline comment on a file or line the pull request's head does not have (400: nothing
    /// was made), which then goes as a general comment: its text names the place.
    pub(super) fn bitbucket_create_comment(
        &mut self,
        repo: &str,
        number: u64,
        pull: bool,
        body: &str,
        place: Option<(&str, u64)>,
    ) -> Result<(), ProviderError> {
        let url = self.bitbucket_url(repo, &format!("/{}/{number}/comments", kind(pull)));
        let general = json!({ "content": { "raw": body } });
        if let Some((path, line)) = place {
            let mut inline = general.clone();
            inline["inline"] = json!({ "path": path, "to": line });
            match self.write(Method::POST, &url, &inline) {
                Err(ProviderError::Http {
                    status: 400,
                    message,
                    ..
                }) => {
                    tracing::info!(%path, line, %message, "not accepted as an inline comment");
                }
                other => return other.map(drop),
            }
        }
        self.write(Method::POST, &url, &general).map(drop)
    }

    /// Resolves an issue; declines a pull request (a merged one cannot be made again: its
    /// text says it was merged).
    pub(super) fn bitbucket_close(
        &mut self,
        repo: &str,
        number: u64,
        pull: bool,
    ) -> Result<(), ProviderError> {
        if pull {
            let url = self.bitbucket_url(repo, &format!("/pullrequests/{number}/decline"));
            return self.write(Method::POST, &url, &json!({})).map(drop);
        }
        let url = self.bitbucket_url(repo, &format!("/issues/{number}"));
        self.write(Method::PUT, &url, &json!({ "state": "resolved" }))
            .map(drop)
    }

    /// Every value of a Bitbucket list (body-paged).
    fn bitbucket_values(&mut self, repo: &str, rest: &str) -> Result<Vec<Value>, ProviderError> {
        let sep = if rest.contains('?') { '&' } else { '?' };
        let url = self.bitbucket_url(repo, &format!("{rest}{sep}{PAGE}"));
        get_values(&mut self.api, &url)
    }

    /// Issue or pull request `number`, its state as `open` or `closed` (what the caller
    /// compares).
    pub(super) fn bitbucket_item(
        &mut self,
        repo: &str,
        number: u64,
        pull: bool,
    ) -> Result<Option<Value>, ProviderError> {
        let url = self.bitbucket_url(repo, &format!("/{}/{number}", kind(pull)));
        let Some(mut v) = self.get_optional(&url)? else {
            return Ok(None);
        };
        let state = str_field(&v, "state").unwrap_or_default();
        let open = if pull {
            state == "OPEN"
        } else {
            issue_open(&state)
        };
        if let Some(obj) = v.as_object_mut() {
            obj.insert("state".into(), json!(if open { "open" } else { "closed" }));
            // Bitbucket numbers the two apart: a pull request is never at an issue's URL.
            obj.remove("pull_request");
        }
        Ok(Some(v))
    }

    /// The newest pull request, then issue, titled `title` that is none of `taken`.
    pub(super) fn bitbucket_find_item(
        &mut self,
        repo: &str,
        title: &str,
        taken: &[(u64, bool)],
    ) -> Result<Option<(u64, bool)>, ProviderError> {
        let lists = [
            (format!("/pullrequests?{PULL_STATES}"), true),
            ("/issues".into(), false),
        ];
        for (rest, pull) in lists {
            let found = self
                .bitbucket_values(repo, &rest)?
                .iter()
                .filter(|i| str_field(i, "title").as_deref() == Some(title))
                .filter_map(|i| Some((i.get("id")?.as_u64()?, pull)))
                .filter(|item| !taken.contains(item))
                .max();
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Comments people wrote (a state change makes one without text; deleted ones stay
    /// listed).
    pub(super) fn bitbucket_comment_count(
        &mut self,
        repo: &str,
        number: u64,
        pull: bool,
    ) -> Result<usize, ProviderError> {
        let rest = format!("/{}/{number}/comments", kind(pull));
        Ok(self
            .bitbucket_values(repo, &rest)?
            .iter()
            .filter(|c| c.get("deleted").and_then(Value::as_bool) != Some(true))
            .filter(|c| {
                c.pointer("/content/raw")
                    .and_then(Value::as_str)
                    .is_some_and(|r| !r.is_empty())
            })
            .count())
    }

    /// What stands for a release: Bitbucket Cloud has none, so its assets go to the
    /// repository's Downloads (one flat list), whose names are what it holds already.
    pub(super) fn bitbucket_release(
        &mut self,
        repo: &str,
        tag: &str,
    ) -> Result<CreatedRelease, ProviderError> {
        let assets = self
            .bitbucket_values(repo, "/downloads")?
            .iter()
            .filter_map(|d| str_field(d, "name"))
            .collect();
        Ok(CreatedRelease {
            id: 0,
            upload_url: tag.to_string(),
            assets,
        })
    }

    /// Uploads the multipart form at `form` (its `files` field) to the Downloads.
    pub(super) fn bitbucket_upload(
        &mut self,
        repo: &str,
        form: &std::path::Path,
        boundary: &str,
    ) -> Result<(), ProviderError> {
        let url = self.bitbucket_url(repo, "/downloads");
        let content_type = format!("multipart/form-data; boundary={boundary}");
        (self.api.send_file(&url, form, &content_type))
            .map(drop)
            .map_err(Self::bitbucket_error)
    }

    /// Bitbucket's error bodies read, its 429 a rate limit.
    pub(super) fn bitbucket_error(e: ProviderError) -> ProviderError {
        tidy(e)
    }
}
