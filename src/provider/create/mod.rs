//! Creating things in an account, for restoring into it: a repository, labels, milestones,
//! issues, comments, and closing issues, on GitHub, on Gitea/Forgejo (whose API follows
//! GitHub's, with ids where GitHub takes names and numbers), on GitLab (`gitlab`: its own
//! shapes, behind the same calls) and on Bitbucket Cloud (`bitbucket`: no labels, milestones
//! or releases there). Each call is one write, paced
//! and never retried once it may have reached the server (`http::write`); whoever calls keeps
//! track of what was created and asks [`Destination`] what exists when unsure.

use age::secrecy::SecretString;
use reqwest::Method;
use serde_json::{Value, json};

use super::common::{self, connect};
use super::http::{ApiClient, Auth, HttpSettings};
use super::{ProviderError, SourceConfig, str_field};

/// Which API a destination speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    GitHub,
    Gitea,
    GitLab,
    Bitbucket,
}

/// A repository in the destination account.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CreatedRepo {
    pub full_name: String,
    pub clone_url: String,
    pub default_branch: Option<String>,
}

/// What a new repository is made with.
#[derive(Debug, Clone, Default)]
pub struct RepoSpec {
    pub name: String,
    pub description: Option<String>,
    pub private: bool,
    pub has_wiki: bool,
}

/// A label, milestone or issue to create; `labels` are names, `milestone` the value the
/// destination took for it ([`Destination::create_milestone`]).
#[derive(Debug, Clone, Default)]
pub struct IssueSpec {
    pub title: String,
    pub body: String,
    pub labels: Vec<u64>,
    pub label_names: Vec<String>,
    pub milestone: Option<u64>,
    /// Bitbucket's issue fields (`bug`…, `major`…), where labels are not.
    pub kind: Option<String>,
    pub priority: Option<String>,
}

/// A configured source used as the place to restore into.
pub struct Destination<'i> {
    api: ApiClient<'i>,
    flavor: Flavor,
    owner: String,
    token: Option<SecretString>,
    origin: super::GitOrigin,
    /// For a second client on github.com's upload host.
    auth: Option<Auth>,
    settings: HttpSettings,
    /// The user name git sends with the token.
    git_user: String,
}

mod bitbucket;
mod gitlab;
mod lookup;
mod releases;
pub use releases::CreatedRelease;

/// Repository names a restore creates: what GitHub and Gitea both accept, nothing that could
/// climb out of a path or a URL segment.
pub fn valid_repo_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && !name.to_ascii_lowercase().ends_with(".git")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl<'i> Destination<'i> {
    /// The destination of a GitHub, Gitea, GitLab or Bitbucket source; `owner` replaces the
    /// source's (on GitLab a group's full path, `acme/platform`, or a user name; on Bitbucket
    /// a workspace).
    pub fn open(source: &SourceConfig, owner: Option<&str>) -> Result<Self, ProviderError> {
        source.validate()?;
        let token = source.token()?;
        let (flavor, default, scheme, accept) = match source.provider.as_str() {
            "github" => (
                Flavor::GitHub,
                super::github::DEFAULT_API,
                "Bearer",
                "application/vnd.github+json",
            ),
            "gitea" => (
                Flavor::Gitea,
                super::gitea::DEFAULT_API,
                "token",
                "application/json",
            ),
            "gitlab" => (
                Flavor::GitLab,
                super::gitlab::DEFAULT_API,
                "",
                "application/json",
            ),
            "bitbucket" => (
                Flavor::Bitbucket,
                super::bitbucket::DEFAULT_API,
                "",
                "application/json",
            ),
            other => {
                return Err(ProviderError::BadSource {
                    name: source.name.clone(),
                    reason: format!("restoring into a {other} account is not supported yet"),
                });
            }
        };
        // Bitbucket takes HTTP Basic: the account e-mail with an API token (git then takes a
        // fixed user name), or the user name with an app password (git takes it too).
        let username = match flavor {
            Flavor::Bitbucket => source.username()?,
            _ => None,
        };
        if flavor == Flavor::Bitbucket && token.is_some() && username.is_none() {
            return Err(ProviderError::BadSource {
                name: source.name.clone(),
                reason: "Bitbucket needs --username-env with the token".into(),
            });
        }
        let git_user = match (flavor, &username) {
            (Flavor::GitHub, _) => "x-access-token".to_string(),
            (Flavor::Gitea, _) => "gitvault".to_string(),
            // GitLab takes any name with a token; `oauth2` is the one its documentation uses.
            (Flavor::GitLab, _) => "oauth2".to_string(),
            // Without a token (public repositories only) git sends no credentials at all.
            (Flavor::Bitbucket, u) => (u.as_deref())
                .map(super::bitbucket::git_user)
                .unwrap_or_default(),
        };
        let auth = token.as_ref().map(|t| match (flavor, &username) {
            (Flavor::GitLab, _) => Auth::header("PRIVATE-TOKEN", t),
            (Flavor::Bitbucket, Some(u)) => Auth::basic(u, t),
            _ => Auth::scheme(scheme, t),
        });
        let headers = match flavor {
            Flavor::GitHub => vec![("X-GitHub-Api-Version", "2022-11-28")],
            Flavor::Gitea | Flavor::GitLab | Flavor::Bitbucket => vec![],
        };
        let api = connect(source, None, default, auth.clone(), accept, headers)?;
        let owner = owner.unwrap_or(&source.owner).to_string();
        // GitLab's groups nest: every part of the path is a name.
        let nests = flavor == Flavor::GitLab && owner.split('/').all(valid_repo_name);
        if !valid_repo_name(&owner) && !nests {
            return Err(ProviderError::BadSource {
                name: source.name.clone(),
                reason: format!("`{owner}` is not an account name"),
            });
        }
        Ok(Destination {
            api,
            flavor,
            owner,
            token,
            origin: source.git_origin()?,
            auth,
            settings: source.http.clone(),
            git_user,
        })
    }

    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Hides the token in a message.
    pub fn scrub(&self, text: &str) -> String {
        self.api.scrub(text)
    }

    fn repo_url(&self, full_name: &str, rest: &str) -> String {
        match self.flavor {
            Flavor::GitLab => self.gitlab_url(full_name, rest),
            Flavor::Bitbucket => self.bitbucket_url(full_name, rest),
            _ => self.api.url(&format!("/repos/{full_name}{rest}")),
        }
    }

    /// The repository `name` of the owner, if it exists.
    pub fn find_repo(&mut self, name: &str) -> Result<Option<CreatedRepo>, ProviderError> {
        let url = self.repo_url(&format!("{}/{name}", self.owner), "");
        self.get_optional(&url)?
            .map(|v| self.read_repo(&v))
            .transpose()
    }

    /// A created repository's answer, checked to be the one asked for.
    fn created_repo(&self, answer: &Value, name: &str) -> Result<CreatedRepo, ProviderError> {
        let repo = self.read_repo(answer)?;
        let expected = format!("{}/{name}", self.owner);
        if !repo.full_name.eq_ignore_ascii_case(&expected) {
            return Err(ProviderError::BadResponse(format!(
                "asked for {expected}, the server created {}",
                repo.full_name
            )));
        }
        Ok(repo)
    }

    /// Creates the repository: under the authenticated user when the owner is that user,
    /// else under the organisation.
    pub fn create_repo(&mut self, spec: &RepoSpec) -> Result<CreatedRepo, ProviderError> {
        match self.flavor {
            Flavor::GitLab => return self.gitlab_create_project(spec),
            Flavor::Bitbucket => return self.bitbucket_create_repo(spec),
            Flavor::GitHub | Flavor::Gitea => {}
        }
        let me = self.api.get_json(&self.api.url("/user"))?;
        let is_me = str_field(&me, "login").is_some_and(|l| l.eq_ignore_ascii_case(&self.owner));
        let path = if is_me {
            "/user/repos".to_string()
        } else {
            format!("/orgs/{}/repos", self.owner)
        };
        let mut body = json!({
            "name": spec.name,
            "private": spec.private,
            "has_wiki": spec.has_wiki,
            "auto_init": false,
        });
        if let Some(d) = &spec.description {
            body["description"] = Value::String(d.clone());
        }
        let answer = self
            .api
            .send_json(Method::POST, &self.api.url(&path), &body)?;
        self.created_repo(&answer, &spec.name)
    }

    /// A repository object from the server, its clone URL checked against the source's git
    /// origin: the token goes with the push, so the URL must not lead anywhere else.
    fn read_repo(&self, v: &Value) -> Result<CreatedRepo, ProviderError> {
        let bad = |what: &str| ProviderError::BadResponse(format!("repository answer: {what}"));
        let (name_key, url_key) = match self.flavor {
            Flavor::GitLab => ("path_with_namespace", "http_url_to_repo"),
            _ => ("full_name", "clone_url"),
        };
        let (full_name, clone_url, default_branch) = if self.flavor == Flavor::Bitbucket {
            Self::bitbucket_repo(v)?
        } else {
            (
                str_field(v, name_key).ok_or_else(|| bad(&format!("no {name_key}")))?,
                str_field(v, url_key).ok_or_else(|| bad(&format!("no {url_key}")))?,
                str_field(v, "default_branch"),
            )
        };
        if let Some(why) = self.origin.refusal(&clone_url) {
            return Err(ProviderError::Refused(format!(
                "clone URL of {full_name}: {why}"
            )));
        }
        if !self.origin.trusts(&clone_url) {
            return Err(ProviderError::Refused(format!(
                "clone URL of {full_name} is not on the source's git origin"
            )));
        }
        Ok(CreatedRepo {
            full_name,
            clone_url,
            default_branch,
        })
    }

    /// Sets the default branch once the branches are pushed.
    pub fn set_default_branch(&mut self, repo: &str, branch: &str) -> Result<(), ProviderError> {
        match self.flavor {
            Flavor::GitLab => {
                return self.gitlab_edit_project(repo, &json!({ "default_branch": branch }));
            }
            Flavor::Bitbucket => return self.bitbucket_set_main_branch(repo, branch),
            Flavor::GitHub | Flavor::Gitea => {}
        }
        let url = self.repo_url(repo, "");
        self.api
            .send_json(Method::PATCH, &url, &json!({ "default_branch": branch }))
            .map(drop)
    }

    /// Replaces the repository's topics (idempotent: the same list again changes nothing).
    pub fn set_topics(&mut self, repo: &str, topics: &[String]) -> Result<(), ProviderError> {
        let body = match self.flavor {
            Flavor::GitHub => json!({ "names": topics }),
            Flavor::Gitea => json!({ "topics": topics }),
            Flavor::GitLab => return self.gitlab_edit_project(repo, &json!({ "topics": topics })),
            // Bitbucket repositories have no topics.
            Flavor::Bitbucket => return Ok(()),
        };
        let url = self.repo_url(repo, "/topics");
        self.write(Method::PUT, &url, &body).map(drop)
    }

    /// Every label of `repo` as (name, id).
    pub fn labels(&mut self, repo: &str) -> Result<Vec<(String, u64)>, ProviderError> {
        if self.flavor == Flavor::Bitbucket {
            return Ok(Vec::new());
        }
        let url = self.list_url(repo, "/labels");
        let items = self.api.get_all(&url)?;
        Ok(items
            .iter()
            .filter_map(|l| Some((str_field(l, "name")?, l.get("id")?.as_u64()?)))
            .collect())
    }

    /// Creates a label; its id, and whether it was made (not found there already).
    pub fn create_label(
        &mut self,
        repo: &str,
        label: &Value,
    ) -> Result<(u64, bool), ProviderError> {
        if self.flavor == Flavor::Bitbucket {
            return Err(cannot("labels"));
        }
        let color = str_field(label, "color").unwrap_or_else(|| "ededed".into());
        let color = color.trim_start_matches('#');
        let body = json!({
            "name": str_field(label, "name").unwrap_or_default(),
            "color": match self.flavor { Flavor::GitHub => color.to_string(), _ => format!("#{color}") },
            "description": str_field(label, "description").unwrap_or_default(),
        });
        let url = self.repo_url(repo, "/labels");
        match self.write(Method::POST, &url, &body) {
            Ok(answer) => id_of(&answer, "id").map(|id| (id, true)),
            // A GitLab project in a group sees the group's labels: one of the same name is
            // there already (409), and serves as well.
            Err(ProviderError::Http { status: 409, .. }) if self.flavor == Flavor::GitLab => {
                let name = str_field(label, "name").unwrap_or_default();
                let there = self.labels(repo)?.into_iter().find(|(n, _)| *n == name);
                there.map(|(_, id)| (id, false)).ok_or_else(|| {
                    ProviderError::BadResponse(format!("label {name}: 409, yet not listed"))
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Every milestone of `repo` as (title, the value issues name it by).
    pub fn milestones(&mut self, repo: &str) -> Result<Vec<(String, u64)>, ProviderError> {
        if self.flavor == Flavor::Bitbucket {
            return Ok(Vec::new());
        }
        // GitLab lists every state by default and knows no `all`.
        let rest = match self.flavor {
            Flavor::GitLab => "/milestones",
            _ => "/milestones?state=all",
        };
        let url = self.list_url(repo, rest);
        let items = self.api.get_all(&url)?;
        let key = self.milestone_key();
        Ok(items
            .iter()
            .filter_map(|m| Some((str_field(m, "title")?, m.get(key)?.as_u64()?)))
            .collect())
    }

    /// GitHub names milestones by number, Gitea and GitLab by id.
    fn milestone_key(&self) -> &'static str {
        match self.flavor {
            Flavor::GitHub => "number",
            Flavor::Gitea | Flavor::GitLab | Flavor::Bitbucket => "id",
        }
    }

    pub fn create_milestone(&mut self, repo: &str, m: &Value) -> Result<u64, ProviderError> {
        match self.flavor {
            Flavor::GitLab => return self.gitlab_create_milestone(repo, m),
            Flavor::Bitbucket => return Err(cannot("milestones")),
            Flavor::GitHub | Flavor::Gitea => {}
        }
        let mut body = json!({
            "title": str_field(m, "title").unwrap_or_default(),
            "state": if str_field(m, "state").as_deref() == Some("closed") { "closed" } else { "open" },
            "description": str_field(m, "description").unwrap_or_default(),
        });
        if let Some(due) = str_field(m, "due_on") {
            body["due_on"] = Value::String(due);
        }
        let answer = self.write(Method::POST, &self.repo_url(repo, "/milestones"), &body)?;
        id_of(&answer, self.milestone_key())
    }

    /// Brings a milestone found after a lost answer to the original's state: GitLab makes a
    /// closed one in two writes (elsewhere one write did all).
    pub fn finish_milestone(
        &mut self,
        repo: &str,
        id: u64,
        m: &Value,
    ) -> Result<(), ProviderError> {
        match self.flavor {
            Flavor::GitLab => self.gitlab_finish_milestone(repo, id, m),
            _ => Ok(()),
        }
    }

    /// Creates an issue; returns its number.
    pub fn create_issue(&mut self, repo: &str, spec: &IssueSpec) -> Result<u64, ProviderError> {
        match self.flavor {
            Flavor::GitLab => return self.gitlab_create_issue(repo, spec),
            Flavor::Bitbucket => return self.bitbucket_create_issue(repo, spec),
            Flavor::GitHub | Flavor::Gitea => {}
        }
        let mut body = json!({ "title": spec.title, "body": spec.body });
        match self.flavor {
            Flavor::GitHub => body["labels"] = json!(spec.label_names),
            _ => body["labels"] = json!(spec.labels),
        }
        if let Some(m) = spec.milestone {
            body["milestone"] = json!(m);
        }
        let answer = self.write(Method::POST, &self.repo_url(repo, "/issues"), &body)?;
        id_of(&answer, "number")
    }

    /// A comment on issue or pull request `number`; `place` (file, line) is where a review
    /// comment was, which only Bitbucket takes (as an inline comment; the text says it too).
    pub fn create_comment(
        &mut self,
        repo: &str,
        number: u64,
        pull: bool,
        body: &str,
        place: Option<(&str, u64)>,
    ) -> Result<(), ProviderError> {
        match self.flavor {
            Flavor::GitLab => return self.gitlab_create_note(repo, number, pull, body),
            Flavor::Bitbucket => {
                let place = place.filter(|_| pull);
                return self.bitbucket_create_comment(repo, number, pull, body, place);
            }
            Flavor::GitHub | Flavor::Gitea => {}
        }
        let url = self.repo_url(repo, &format!("/issues/{number}/comments"));
        self.write(Method::POST, &url, &json!({ "body": body }))
            .map(drop)
    }

    /// Closes an issue, or a pull request (`pull`), which both providers close by its own
    /// endpoint.
    pub fn close(&mut self, repo: &str, number: u64, pull: bool) -> Result<(), ProviderError> {
        match self.flavor {
            Flavor::GitLab => return self.gitlab_close(repo, number, pull),
            Flavor::Bitbucket => return self.bitbucket_close(repo, number, pull),
            Flavor::GitHub | Flavor::Gitea => {}
        }
        let kind = if pull { "pulls" } else { "issues" };
        let url = self.repo_url(repo, &format!("/{kind}/{number}"));
        self.write(Method::PATCH, &url, &json!({ "state": "closed" }))
            .map(drop)
    }

    /// Opens a pull request from branch `head` into `base`; returns its number, or `None`
    /// when the provider will not have it as a pull request (no commits between the branches,
    /// one already open for them: 422 or 409), so that the caller makes an issue instead.
    pub fn create_pull(
        &mut self,
        repo: &str,
        spec: &IssueSpec,
        head: &str,
        base: &str,
    ) -> Result<Option<u64>, ProviderError> {
        match self.flavor {
            Flavor::GitLab => return self.gitlab_create_merge_request(repo, spec, head, base),
            Flavor::Bitbucket => return self.bitbucket_create_pull(repo, spec, head, base),
            Flavor::GitHub | Flavor::Gitea => {}
        }
        let mut body =
            json!({ "title": spec.title, "body": spec.body, "head": head, "base": base });
        if self.flavor == Flavor::Gitea {
            body["labels"] = json!(spec.labels);
            if let Some(m) = spec.milestone {
                body["milestone"] = json!(m);
            }
        }
        let url = self.repo_url(repo, "/pulls");
        let answer = self.write(Method::POST, &url, &body);
        opened(answer, "number", &[409, 422], (head, base))
    }

    /// Sets the labels and milestone of a pull request GitHub opened without them (its
    /// endpoint takes neither). Setting the same again changes nothing, so a repeat is safe.
    pub fn label_pull(
        &mut self,
        repo: &str,
        number: u64,
        spec: &IssueSpec,
    ) -> Result<(), ProviderError> {
        if self.flavor != Flavor::GitHub {
            return Ok(());
        }
        let mut body = json!({ "labels": spec.label_names });
        if let Some(m) = spec.milestone {
            body["milestone"] = json!(m);
        }
        let url = self.repo_url(repo, &format!("/issues/{number}"));
        self.write(Method::PATCH, &url, &body).map(drop)
    }

    /// A list URL with the provider's page size.
    fn list_url(&self, repo: &str, rest: &str) -> String {
        let sep = if rest.contains('?') { '&' } else { '?' };
        let size = match self.flavor {
            Flavor::GitHub => "per_page=100",
            Flavor::Gitea => "limit=50",
            Flavor::GitLab => "per_page=100",
            Flavor::Bitbucket => "pagelen=50",
        };
        self.repo_url(repo, &format!("{rest}{sep}{size}"))
    }

    fn write(&mut self, method: Method, url: &str, body: &Value) -> Result<Value, ProviderError> {
        let answer = self.api.send_json(method, url, body);
        // Gitea answers a bare 429 when it limits (and GitLab's Retry-After may be past what
        // the client waits): stop like a rate limit, to resume later.
        match answer {
            Err(ProviderError::Http { status: 429, .. }) => Err(ProviderError::RateLimited {
                until: chrono::Utc::now() + chrono::Duration::minutes(10),
            }),
            Err(e) if self.flavor == Flavor::Bitbucket => Err(Self::bitbucket_error(e)),
            other => other,
        }
    }

    /// What git pushes with: the token, to the source's git origin only.
    pub fn git_credentials(&self) -> Option<crate::git::Credentials> {
        self.token.clone().map(|secret| crate::git::Credentials {
            username: self.git_user.clone(),
            secret,
        })
    }

    /// The wiki's git URL beside a repository's (Bitbucket's is below it).
    pub fn wiki_url(&self, clone_url: &str) -> String {
        match self.flavor {
            Flavor::Bitbucket => format!("{clone_url}/wiki"),
            _ => common::wiki_url(clone_url),
        }
    }
}

/// The number (`key`) of a pull or merge request just opened, or `None` when the provider
/// refused it with one of the `refused` statuses (a branch missing, nothing between them, one
/// open for them already): the caller makes an issue instead.
fn opened(
    answer: Result<Value, ProviderError>,
    key: &str,
    refused: &[u16],
    (head, base): (&str, &str),
) -> Result<Option<u64>, ProviderError> {
    match answer {
        Ok(answer) => id_of(&answer, key).map(Some),
        Err(ProviderError::Http {
            status, message, ..
        }) if refused.contains(&status) => {
            tracing::info!(%head, %base, %message, "not accepted as a pull request");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// What a destination has no API to create.
fn cannot(what: &str) -> ProviderError {
    ProviderError::Refused(format!(
        "Bitbucket Cloud's API cannot create {what}; the restore carries them in the text"
    ))
}

/// A numeric field of a creation's answer.
fn id_of(answer: &Value, key: &str) -> Result<u64, ProviderError> {
    answer
        .get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| ProviderError::BadResponse(format!("the created item has no `{key}`")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn repository_names_cannot_climb() {
        for bad in [
            "", ".", "..", "../x", "a/b", ".hidden", "x.git", "a b", "a%2fb", "a\\b",
        ] {
            assert!(!super::valid_repo_name(bad), "{bad}");
        }
        for good in ["repo-000", "my.repo", "A_b-1"] {
            assert!(super::valid_repo_name(good), "{good}");
        }
    }
}
