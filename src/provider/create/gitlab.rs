//! GitLab (gitlab.com and self-managed, REST API v4) as the place to restore into. Projects
//! are addressed by their URL-encoded full path; issues and merge requests by `iid`, which
//! GitLab numbers apart (issue #1 and merge request !1 both exist), so the caller keeps the
//! two sequences apart. The token goes as `PRIVATE-TOKEN`, attached by the API client for its
//! own origin only.

use reqwest::Method;
use serde_json::{Value, json};

use super::super::{ProviderError, str_field};
use super::{CreatedRelease, CreatedRepo, Destination, IssueSpec, RepoSpec, id_of, opened};

/// Percent-encodes a path segment: a project's full path becomes one segment (`/` is `%2F`,
/// as GitLab requires for ids given as paths).
pub(super) fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A date GitLab takes for a milestone's `due_date`: the day of a GitHub-style `due_on`.
fn due_date(m: &Value) -> Option<String> {
    let due = str_field(m, "due_on").or_else(|| str_field(m, "due_date"))?;
    let day = due.get(..10)?;
    let ok = day.bytes().enumerate().all(|(i, b)| {
        if i == 4 || i == 7 {
            b == b'-'
        } else {
            b.is_ascii_digit()
        }
    });
    ok.then(|| day.to_string())
}

impl Destination<'_> {
    /// `/projects/<full path><rest>` on the API.
    pub(super) fn gitlab_url(&self, full_name: &str, rest: &str) -> String {
        self.api
            .url(&format!("/projects/{}{rest}", encode(full_name)))
    }

    /// Creates the project in the namespace named by the owner (a group's full path or a
    /// user name), private unless asked otherwise.
    pub(super) fn gitlab_create_project(
        &mut self,
        spec: &RepoSpec,
    ) -> Result<CreatedRepo, ProviderError> {
        let url = self
            .api
            .url(&format!("/namespaces/{}", encode(&self.owner)));
        let namespace = self.api.get_json(&url)?;
        let namespace_id = id_of(&namespace, "id")?;
        let mut body = json!({
            "name": spec.name,
            "path": spec.name,
            "namespace_id": namespace_id,
            "visibility": if spec.private { "private" } else { "public" },
            "initialize_with_readme": false,
            "wiki_access_level": if spec.has_wiki { "enabled" } else { "disabled" },
        });
        if let Some(d) = &spec.description {
            body["description"] = Value::String(d.clone());
        }
        let answer = self.write(Method::POST, &self.api.url("/projects"), &body)?;
        let mut repo = self.created_repo(&answer, &spec.name)?;
        // An empty project's default branch is the instance's default name until the first
        // push picks one: unknown until then, so it is always set after the push.
        repo.default_branch = None;
        Ok(repo)
    }

    /// Changes project settings (`default_branch`, `topics`): a PUT of the project.
    pub(super) fn gitlab_edit_project(
        &mut self,
        repo: &str,
        body: &Value,
    ) -> Result<(), ProviderError> {
        let url = self.gitlab_url(repo, "");
        self.write(Method::PUT, &url, body).map(drop)
    }

    /// A milestone, closed afterwards when the original was (GitLab creates them active).
    /// Returns its id, which issues name it by.
    pub(super) fn gitlab_create_milestone(
        &mut self,
        repo: &str,
        m: &Value,
    ) -> Result<u64, ProviderError> {
        let mut body = json!({
            "title": str_field(m, "title").unwrap_or_default(),
            "description": str_field(m, "description").unwrap_or_default(),
        });
        if let Some(due) = due_date(m) {
            body["due_date"] = Value::String(due);
        }
        let answer = self.write(Method::POST, &self.gitlab_url(repo, "/milestones"), &body)?;
        let id = id_of(&answer, "id")?;
        self.gitlab_finish_milestone(repo, id, m)?;
        Ok(id)
    }

    /// Closes milestone `id` when the original `m` was closed (a repeat changes nothing).
    pub(super) fn gitlab_finish_milestone(
        &mut self,
        repo: &str,
        id: u64,
        m: &Value,
    ) -> Result<(), ProviderError> {
        if str_field(m, "state").as_deref() != Some("closed") {
            return Ok(());
        }
        let url = self.gitlab_url(repo, &format!("/milestones/{id}"));
        self.write(Method::PUT, &url, &json!({ "state_event": "close" }))
            .map(drop)
    }

    /// The fields an issue and a merge request share.
    fn gitlab_item(spec: &IssueSpec) -> Value {
        let mut body = json!({
            "title": spec.title,
            "description": spec.body,
            "labels": spec.label_names.join(","),
        });
        if let Some(m) = spec.milestone {
            body["milestone_id"] = json!(m);
        }
        body
    }

    pub(super) fn gitlab_create_issue(
        &mut self,
        repo: &str,
        spec: &IssueSpec,
    ) -> Result<u64, ProviderError> {
        let url = self.gitlab_url(repo, "/issues");
        let answer = self.write(Method::POST, &url, &Self::gitlab_item(spec))?;
        id_of(&answer, "iid")
    }

    /// Opens a merge request; `None` when GitLab will not (409: one is open for the
    /// branches; 400/422: a branch is missing).
    pub(super) fn gitlab_create_merge_request(
        &mut self,
        repo: &str,
        spec: &IssueSpec,
        head: &str,
        base: &str,
    ) -> Result<Option<u64>, ProviderError> {
        let mut body = Self::gitlab_item(spec);
        body["source_branch"] = json!(head);
        body["target_branch"] = json!(base);
        let url = self.gitlab_url(repo, "/merge_requests");
        let answer = self.write(Method::POST, &url, &body);
        opened(answer, "iid", &[400, 409, 422], (head, base))
    }

    /// `issues` or `merge_requests`.
    fn gitlab_kind(pull: bool) -> &'static str {
        if pull { "merge_requests" } else { "issues" }
    }

    /// The notes people wrote on an item (GitLab adds system notes for state changes).
    pub(super) fn gitlab_note_count(
        &mut self,
        repo: &str,
        number: u64,
        pull: bool,
    ) -> Result<usize, ProviderError> {
        let kind = Self::gitlab_kind(pull);
        let url = self.gitlab_url(repo, &format!("/{kind}/{number}/notes?per_page=100"));
        let notes = self.api.get_all(&url)?;
        Ok(notes
            .iter()
            .filter(|n| n.get("system").and_then(Value::as_bool) != Some(true))
            .count())
    }

    pub(super) fn gitlab_create_note(
        &mut self,
        repo: &str,
        number: u64,
        pull: bool,
        body: &str,
    ) -> Result<(), ProviderError> {
        let kind = Self::gitlab_kind(pull);
        let url = self.gitlab_url(repo, &format!("/{kind}/{number}/notes"));
        self.write(Method::POST, &url, &json!({ "body": body }))
            .map(drop)
    }

    pub(super) fn gitlab_close(
        &mut self,
        repo: &str,
        number: u64,
        pull: bool,
    ) -> Result<(), ProviderError> {
        let kind = Self::gitlab_kind(pull);
        let url = self.gitlab_url(repo, &format!("/{kind}/{number}"));
        self.write(Method::PUT, &url, &json!({ "state_event": "close" }))
            .map(drop)
    }

    /// A merge request of `repo` by iid, if it exists.
    pub(super) fn gitlab_merge_request(
        &mut self,
        repo: &str,
        number: u64,
    ) -> Result<Option<Value>, ProviderError> {
        let url = self.gitlab_url(repo, &format!("/merge_requests/{number}"));
        self.get_optional(&url)
    }

    /// A release from a backed-up one. GitLab keys releases by tag, so the tag stands where
    /// GitHub has an id and an upload URL.
    pub(super) fn gitlab_create_release(
        &mut self,
        repo: &str,
        release: &Value,
        body: &str,
    ) -> Result<Option<CreatedRelease>, ProviderError> {
        let tag = str_field(release, "tag_name").unwrap_or_default();
        let mut create = json!({
            "tag_name": tag,
            "name": str_field(release, "name").unwrap_or_else(|| tag.clone()),
            "description": body,
        });
        if let Some(target) = str_field(release, "target_commitish") {
            create["ref"] = Value::String(target);
        }
        match self.write(Method::POST, &self.gitlab_url(repo, "/releases"), &create) {
            Ok(v) => Ok(Some(read_release(&v))),
            Err(ProviderError::Http { status: 422, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(super) fn gitlab_release_by_tag(
        &mut self,
        repo: &str,
        tag: &str,
    ) -> Result<Option<CreatedRelease>, ProviderError> {
        let url = self.gitlab_url(repo, &format!("/releases/{}", encode(tag)));
        Ok(self.get_optional(&url)?.map(|v| read_release(&v)))
    }

    /// An asset: the file uploaded to the project (`multipart` field `file`), then linked
    /// from the release. A run stopped between the two uploads the file again: an unlinked
    /// upload is only unused space.
    pub(super) fn gitlab_upload_asset(
        &mut self,
        repo: &str,
        release: &CreatedRelease,
        name: &str,
        form: &std::path::Path,
        boundary: &str,
    ) -> Result<(), ProviderError> {
        let url = self.gitlab_url(repo, "/uploads");
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let uploaded = self.api.send_file(&url, form, &content_type)?;
        let path = str_field(&uploaded, "full_path")
            .filter(|p| p.starts_with('/') && !p.starts_with("//"))
            .ok_or_else(|| ProviderError::BadResponse("upload answer: no full_path".into()))?;
        // An upload is served on the instance's own origin, beside the API.
        let origin = super::super::http::shown_origin(self.api.base());
        let target = format!("{origin}{path}");
        self.create_release_link(repo, release, name, &target, "other")
    }

    /// A link of a GitLab release (`link_type` other, runbook, image or package).
    pub fn create_release_link(
        &mut self,
        repo: &str,
        release: &CreatedRelease,
        name: &str,
        target: &str,
        link_type: &str,
    ) -> Result<(), ProviderError> {
        let link_type = match link_type {
            "runbook" | "image" | "package" => link_type,
            _ => "other",
        };
        let link = json!({ "name": name, "url": target, "link_type": link_type });
        let url = self.gitlab_url(
            repo,
            &format!("/releases/{}/assets/links", encode(&release.upload_url)),
        );
        self.write(Method::POST, &url, &link).map(drop)
    }
}

/// A GitLab release: its tag (where GitHub's upload URL goes) and the names of its links.
fn read_release(v: &Value) -> CreatedRelease {
    let assets = v["assets"]["links"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| str_field(l, "name"))
        .collect();
    CreatedRelease {
        id: 0,
        upload_url: str_field(v, "tag_name").unwrap_or_default(),
        assets,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn due_dates_are_days() {
        assert_eq!(
            super::due_date(&json!({"due_on": "2023-04-01T07:00:00Z"})).as_deref(),
            Some("2023-04-01")
        );
        assert_eq!(
            super::due_date(&json!({"due_date": "2023-04-01"})).as_deref(),
            Some("2023-04-01")
        );
        assert_eq!(super::due_date(&json!({"due_on": "soon"})), None);
        assert_eq!(super::due_date(&json!({})), None);
    }
}
