//! Releases and their assets in the destination. GitHub takes an asset's bytes as the body of
//! a POST to the release's `upload_url` (on github.com, the uploads.github.com host); Gitea as
//! the `attachment` field of a multipart form at the release's assets endpoint; GitLab as the
//! `file` field of one at the project's uploads, then linked from the release.

use std::io::{Read, Write};
use std::path::Path;

use reqwest::Method;
use serde_json::{Value, json};

use super::super::http::{ApiClient, same_origin};
use super::super::{ProviderError, str_field};
use super::{Destination, Flavor, id_of};

/// A release in the destination: its id, where its assets go, the names it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CreatedRelease {
    pub id: u64,
    pub upload_url: String,
    pub assets: Vec<String>,
}

/// github.com's API and the host it takes uploads on: the one other origin the token goes to.
const GITHUB_API: &str = "https://api.github.com";
const GITHUB_UPLOADS: &str = "https://uploads.github.com";

fn read_release(v: &Value) -> Result<CreatedRelease, ProviderError> {
    let upload_url = str_field(v, "upload_url").unwrap_or_default();
    // GitHub's is a URI template: `…/assets{?name,label}`.
    let upload_url = match upload_url.find('{') {
        Some(i) => upload_url[..i].to_string(),
        None => upload_url,
    };
    let assets = v
        .get("assets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| str_field(a, "name"))
        .collect();
    Ok(CreatedRelease {
        id: id_of(v, "id")?,
        upload_url,
        assets,
    })
}

impl Destination<'_> {
    /// The release of `tag`, if there is one.
    pub fn release_by_tag(
        &mut self,
        repo: &str,
        tag: &str,
    ) -> Result<Option<CreatedRelease>, ProviderError> {
        match self.flavor {
            Flavor::GitLab => return self.gitlab_release_by_tag(repo, tag),
            Flavor::Bitbucket => return self.bitbucket_release(repo, tag).map(Some),
            Flavor::GitHub | Flavor::Gitea => {}
        }
        let tag = url::form_urlencoded::byte_serialize(tag.as_bytes()).collect::<String>();
        let url = self.repo_url(repo, &format!("/releases/tags/{tag}"));
        self.get_optional(&url)?
            .map(|v| read_release(&v))
            .transpose()
    }

    /// Creates a release from a backed-up one, with `body` as its text; `None` when the
    /// provider refuses it (422: a tag that is not there and no branch to make it from).
    pub fn create_release(
        &mut self,
        repo: &str,
        release: &Value,
        body: &str,
    ) -> Result<Option<CreatedRelease>, ProviderError> {
        match self.flavor {
            Flavor::GitLab => return self.gitlab_create_release(repo, release, body),
            // Bitbucket Cloud has no releases: the assets go to its Downloads, the text is
            // not kept (the tag is pushed all the same).
            Flavor::Bitbucket => {
                let tag = str_field(release, "tag_name").unwrap_or_default();
                return self.bitbucket_release(repo, &tag).map(Some);
            }
            Flavor::GitHub | Flavor::Gitea => {}
        }
        let tag = str_field(release, "tag_name").unwrap_or_default();
        let mut create = json!({
            "tag_name": tag,
            "name": str_field(release, "name").unwrap_or_else(|| tag.clone()),
            "body": body,
            "draft": release.get("draft").and_then(Value::as_bool).unwrap_or(false),
            "prerelease": release.get("prerelease").and_then(Value::as_bool).unwrap_or(false),
        });
        if let Some(target) = str_field(release, "target_commitish") {
            create["target_commitish"] = Value::String(target);
        }
        match self.write(Method::POST, &self.repo_url(repo, "/releases"), &create) {
            Ok(v) => read_release(&v).map(Some),
            Err(ProviderError::Http { status: 422, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Uploads the file `bytes` as asset `name` of `release`; `scratch` is a path the
    /// multipart form Gitea needs may be written to.
    pub fn upload_asset(
        &mut self,
        repo: &str,
        release: &CreatedRelease,
        name: &str,
        content_type: &str,
        bytes: &Path,
        scratch: &Path,
    ) -> Result<(), ProviderError> {
        let encoded = url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>();
        // The type is the server's data: anything but a plain `type/subtype` is sent as bytes.
        let plain = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
        };
        let content_type = match content_type.split_once('/') {
            Some((t, s)) if plain(t) && plain(s) => content_type,
            _ => "application/octet-stream",
        };
        match self.flavor {
            Flavor::GitHub => {
                let url = format!("{}?name={encoded}", release.upload_url);
                let mut uploads = self.uploads_client(&url)?;
                let client = uploads.as_mut().unwrap_or(&mut self.api);
                client.send_file(&url, bytes, content_type).map(drop)
            }
            Flavor::Gitea | Flavor::GitLab | Flavor::Bitbucket => {
                let boundary = format!("gitvault-{}", blake3::hash(name.as_bytes()).to_hex());
                let field = match self.flavor {
                    Flavor::GitLab => "file",
                    Flavor::Bitbucket => "files",
                    _ => "attachment",
                };
                multipart(bytes, scratch, &boundary, field, name, content_type)
                    .map_err(|e| ProviderError::Store(format!("{}: {e}", scratch.display())))?;
                let sent = if self.flavor == Flavor::GitLab {
                    self.gitlab_upload_asset(repo, release, name, scratch, &boundary)
                } else if self.flavor == Flavor::Bitbucket {
                    self.bitbucket_upload(repo, scratch, &boundary)
                } else {
                    let url = self.repo_url(
                        repo,
                        &format!("/releases/{}/assets?name={encoded}", release.id),
                    );
                    let form = format!("multipart/form-data; boundary={boundary}");
                    self.api.send_file(&url, scratch, &form).map(drop)
                };
                let _ = std::fs::remove_file(scratch);
                sent
            }
        }
    }

    /// The client an upload goes through when it is not the API's origin: only github.com's
    /// upload host for github.com's API (a fixed pair, never a host an answer names).
    fn uploads_client(&self, url: &str) -> Result<Option<ApiClient<'static>>, ProviderError> {
        if self.api.is_api_origin(url) {
            return Ok(None);
        }
        if same_origin(self.api.base(), GITHUB_API) && same_origin(url, GITHUB_UPLOADS) {
            let mut client = ApiClient::new(
                GITHUB_UPLOADS,
                None,
                "application/vnd.github+json",
                vec![("X-GitHub-Api-Version", "2022-11-28")],
                None,
                &self.settings,
            )?;
            client.set_auth(self.auth.clone());
            return Ok(Some(client));
        }
        Err(ProviderError::Refused(format!(
            "the release's upload URL is on another origin ({}); the token stays with the API",
            super::super::http::shown_origin(url)
        )))
    }
}

/// Writes `bytes` as the `field` of a multipart form to `out` (Gitea's `attachment`,
/// GitLab's `file`).
fn multipart(
    bytes: &Path,
    out: &Path,
    boundary: &str,
    field: &str,
    name: &str,
    content_type: &str,
) -> std::io::Result<()> {
    let safe: String = name
        .chars()
        .map(|c| if c == '"' || c.is_control() { '_' } else { c })
        .collect();
    let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
    write!(
        file,
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{safe}\"\r\nContent-Type: {content_type}\r\n\r\n"
    )?;
    let mut input = std::fs::File::open(bytes)?;
    let mut buffer = vec![0; 1 << 16];
    loop {
        let n = input.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        file.write_all(&buffer[..n])?;
    }
    write!(file, "\r\n--{boundary}--\r\n")?;
    file.flush()
}
