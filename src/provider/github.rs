//! GitHub (github.com and GitHub Enterprise Server through `--api-url`): repositories of an
//! organisation or a user, and per repository: settings and topics, labels, milestones, issues
//! with comments, pull requests with comments, reviews and review comments, releases with their
//! assets.
//!
//! Incremental and cheap: issues and pull requests are listed with `since` set to the newest
//! `updated_at` already in the vault (not the run time, so that an unchanged repository sends the
//! same URLs and gets 304s for them), and every request is conditional when a cached ETag
//! exists. Items not returned keep their previous documents.

use age::secrecy::SecretString;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::common::{
    self, PullParts, connect, export_issues_since, export_releases, github_like_repo, listing, put,
    put_lists,
};
use super::http::{ApiClient, Auth, Cache, RequestStats};
use super::str_field;
use super::{Export, Listing, Provider, ProviderError, RepoInfo, SourceConfig};

pub const DEFAULT_API: &str = "https://api.github.com";

pub struct GitHub<'i> {
    api: ApiClient<'i>,
    owner: String,
    token: Option<SecretString>,
    app: Option<AppAuth>,
}

/// A GitHub App: a JWT signed with the app's key buys an installation token, which expires
/// after an hour and is renewed whenever less than `RENEW_BEFORE` of it remains.
struct AppAuth {
    app_id: u64,
    key: ring::rsa::KeyPair,
    installation: Option<u64>,
    token: Option<(SecretString, DateTime<Utc>)>,
}

const RENEW_BEFORE: chrono::Duration = chrono::Duration::minutes(10);

impl AppAuth {
    fn load(app_id: u64, path: &str) -> Result<AppAuth, ProviderError> {
        use rustls_pki_types::PrivateKeyDer;
        use rustls_pki_types::pem::PemObject;
        let bad = |reason: String| ProviderError::BadSource {
            name: format!("GitHub App {app_id}"),
            reason,
        };
        let der = PrivateKeyDer::from_pem_file(path)
            .map_err(|e| bad(format!("cannot read the private key {path}: {e}")))?;
        let key = match &der {
            PrivateKeyDer::Pkcs1(k) => ring::rsa::KeyPair::from_der(k.secret_pkcs1_der()),
            PrivateKeyDer::Pkcs8(k) => ring::rsa::KeyPair::from_pkcs8(k.secret_pkcs8_der()),
            _ => return Err(bad(format!("{path} is not an RSA private key"))),
        }
        .map_err(|e| bad(format!("{path} is not a usable RSA private key: {e}")))?;
        Ok(AppAuth {
            app_id,
            key,
            installation: None,
            token: None,
        })
    }

    /// The app's own credential: an RS256 JWT valid for nine minutes, issued a minute in the
    /// past to allow for clock drift (GitHub's documented recipe).
    fn jwt(&self) -> Result<Auth, ProviderError> {
        use base64::Engine;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = Utc::now().timestamp();
        let header = b64(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = b64(
            json!({ "iat": now - 60, "exp": now + 540, "iss": self.app_id.to_string() })
                .to_string()
                .as_bytes(),
        );
        let message = format!("{header}.{claims}");
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                message.as_bytes(),
                &mut signature,
            )
            .map_err(|_| ProviderError::BadSource {
                name: format!("GitHub App {}", self.app_id),
                reason: "signing the app's JWT failed".into(),
            })?;
        Ok(Auth::scheme(
            "Bearer",
            &SecretString::from(format!("{message}.{}", b64(&signature))),
        ))
    }
}

impl<'i> GitHub<'i> {
    pub fn new(source: &SourceConfig, cache: Cache<'i>) -> Result<Self, ProviderError> {
        let token = source.token()?;
        let app = match (source.app_id, &source.app_key_file) {
            (Some(id), Some(path)) => Some(AppAuth::load(id, path)?),
            _ => None,
        };
        let auth = token.as_ref().map(|t| Auth::scheme("Bearer", t));
        let accept = "application/vnd.github+json";
        let version = vec![("X-GitHub-Api-Version", "2022-11-28")];
        let api = connect(source, cache, DEFAULT_API, auth, accept, version)?;
        Ok(GitHub {
            token,
            app,
            api,
            owner: source.owner.clone(),
        })
    }

    /// With a GitHub App, makes sure the installation token has at least `RENEW_BEFORE` left,
    /// asking for a new one otherwise.
    fn authenticate(&mut self) -> Result<(), ProviderError> {
        let Some(app) = &mut self.app else {
            return Ok(());
        };
        if app
            .token
            .as_ref()
            .is_some_and(|(_, expires)| *expires - Utc::now() > RENEW_BEFORE)
        {
            return Ok(());
        }
        let jwt = app.jwt()?;
        let installation = match app.installation {
            Some(id) => id,
            None => {
                // The installation on an organisation or on a user account.
                let org = format!("{}/orgs/{}/installation", self.api.base(), self.owner);
                let found = match self.api.get_json_as(&org, &jwt) {
                    Err(ProviderError::NotFound(_)) => self.api.get_json_as(
                        &format!("{}/users/{}/installation", self.api.base(), self.owner),
                        &jwt,
                    ),
                    other => other,
                }
                .map_err(|e| match e {
                    ProviderError::NotFound(_) => ProviderError::BadSource {
                        name: format!("GitHub App {}", app.app_id),
                        reason: format!("the app is not installed on {}", self.owner),
                    },
                    e => e,
                })?;
                found.get("id").and_then(Value::as_u64).ok_or_else(|| {
                    ProviderError::BadResponse("installation without an id".into())
                })?
            }
        };
        app.installation = Some(installation);
        let answer = self.api.post_json(
            &format!(
                "{}/app/installations/{installation}/access_tokens",
                self.api.base()
            ),
            &jwt,
        )?;
        let token = str_field(&answer, "token").ok_or_else(|| {
            ProviderError::BadResponse("installation token answer without a token".into())
        })?;
        let expires = str_field(&answer, "expires_at")
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|| Utc::now() + chrono::Duration::minutes(50));
        let token = SecretString::from(token);
        tracing::debug!(%expires, "GitHub App installation token obtained");
        self.api.set_auth(Some(Auth::scheme("Bearer", &token)));
        app.token = Some((token, expires));
        Ok(())
    }

    fn repo_url(&self, repo: &RepoInfo, rest: &str) -> String {
        self.api.url(&format!("/repos/{}{}", repo.full_name, rest))
    }
}

impl GitHub<'_> {
    /// A pull request's own parts.
    fn pull_parts(&mut self, repo: &RepoInfo, number: u64) -> Result<PullParts, ProviderError> {
        let pull = self
            .api
            .get_json(&self.repo_url(repo, &format!("/pulls/{number}")))?;
        let reviews = self
            .api
            .get_all(&self.repo_url(repo, &format!("/pulls/{number}/reviews?per_page=100")))?;
        let review_comments = self
            .api
            .get_all(&self.repo_url(repo, &format!("/pulls/{number}/comments?per_page=100")))?;
        Ok((pull, reviews, review_comments))
    }
}

impl Provider for GitHub<'_> {
    fn list_repositories(&mut self) -> Result<Listing, ProviderError> {
        self.authenticate()?;
        // GET /users/{name} answers for organisations too and says which it is; it is
        // conditional like everything else, so an unchanged run costs a 304 here.
        let account = self
            .api
            .get_json(&self.api.url(&format!("/users/{}", self.owner)))?;
        let listed = if str_field(&account, "type").as_deref() == Some("Organization") {
            self.api.get_all(
                &self
                    .api
                    .url(&format!("/orgs/{}/repos?type=all&per_page=100", self.owner)),
            )?
        } else if self.app.is_some() {
            // An app installed on a user account sees that account's private repositories
            // only through its installation.
            let mut all = Vec::new();
            let first = self.api.url("/installation/repositories?per_page=100");
            let mut guard = self.api.pages(&first);
            let mut next = Some(first);
            while let Some(url) = next {
                let page = guard.fetch(&url, &mut self.api)?;
                let body: Value = serde_json::from_slice(&page.body)
                    .map_err(|e| ProviderError::BadResponse(format!("{url}: {e}")))?;
                if let Some(list) = body.get("repositories").and_then(Value::as_array) {
                    all.extend(list.iter().cloned());
                }
                next = page.next;
            }
            all
        } else {
            // A user's private repositories are visible only through /user/repos, when the
            // token is theirs.
            let me = self.api.get_json(&self.api.url("/user")).ok();
            let is_me = me
                .as_ref()
                .and_then(|m| str_field(m, "login"))
                .is_some_and(|l| l.eq_ignore_ascii_case(&self.owner));
            if is_me {
                self.api
                    .get_all(&self.api.url("/user/repos?affiliation=owner&per_page=100"))?
            } else {
                self.api.get_all(&self.api.url(&format!(
                    "/users/{}/repos?type=owner&per_page=100",
                    self.owner
                )))?
            }
        };
        Ok(listing(&listed, &["full_name", "name"], github_like_repo))
    }

    fn kind(&self) -> &'static str {
        "github"
    }

    fn export(&mut self, repo: &RepoInfo, out: &mut Export<'_>) -> Result<(), ProviderError> {
        let mut settings = self.api.get_json(&self.repo_url(repo, ""))?;
        // The full repository object carries `topics`; older Enterprise servers need the
        // separate call.
        if settings.get("topics").is_none() {
            let topics = self.api.get_json(&self.repo_url(repo, "/topics"))?;
            if let (Some(obj), Some(names)) = (settings.as_object_mut(), topics.get("names")) {
                obj.insert("topics".into(), names.clone());
            }
        }
        put(&mut out.map, out.sink, "settings.json", &settings)?;

        let lists = [
            ("labels.json", self.repo_url(repo, "/labels?per_page=100")),
            (
                "milestones.json",
                self.repo_url(repo, "/milestones?state=all&per_page=100"),
            ),
        ];
        put_lists(&mut self.api, out, lists)?;

        // Issues and pull requests changed since the newest one we hold, as `updated_at` says.
        let list_url = self.repo_url(
            repo,
            "/issues?state=all&sort=updated&direction=asc&per_page=100",
        );
        export_issues_since(
            self,
            &list_url,
            &mut out.map,
            out.sink,
            |t| Some(t.to_string()),
            |github, url| github.api.get_all(url),
            |github, number, item| {
                let is_pull = item.get("pull_request").is_some();
                let comments = format!("/issues/{number}/comments?per_page=100");
                common::issue_document(
                    github,
                    number,
                    item,
                    is_pull,
                    |g| g.api.get_all(&g.repo_url(repo, &comments)),
                    |g| g.pull_parts(repo, number),
                )
            },
        )?;

        let releases = self
            .api
            .get_all(&self.repo_url(repo, "/releases?per_page=100"))?;
        let assets_url = self.repo_url(repo, "/releases/assets");
        // The asset's `url` is the server's data: one on another origin is replaced by the
        // API's own address of the asset, so the token never follows it there. The API then
        // redirects to a signed storage URL, fetched without credentials.
        export_releases(
            &mut self.api,
            &releases,
            &mut out.map,
            out.sink,
            |asset| str_field(asset, "updated_at").unwrap_or_default(),
            |asset, id| {
                str_field(asset, "url")
                    .filter(|u| super::http::same_origin(u, &assets_url))
                    .unwrap_or_else(|| format!("{assets_url}/{id}"))
            },
        )?;
        Ok(())
    }

    fn stats(&self) -> RequestStats {
        self.api.stats
    }

    fn git_credentials(&mut self) -> Result<Option<crate::git::Credentials>, ProviderError> {
        self.authenticate()?;
        let secret = match &self.app {
            Some(app) => app.token.as_ref().map(|(t, _)| t.clone()),
            None => self.token.clone(),
        };
        Ok(secret.map(|secret| crate::git::Credentials {
            username: "x-access-token".into(),
            secret,
        }))
    }
}
