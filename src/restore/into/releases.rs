//! Releases in the destination, oldest first, each followed by its assets: the bytes are
//! written from the vault to a work file beside the ledger and uploaded from there (assets can
//! be gigabytes). A release the provider refuses (its tag is not there and nothing to make it
//! from) is recorded as skipped and named in the report.

use serde_json::Value;

use crate::provider::create::Flavor;
use crate::provider::str_field;
use crate::store::ChunkReader;

use super::super::{RestoreError, io_err};
use super::Run;
use super::ledger::Pending;
use super::plan::Plan;

/// A release's text: who published it and when in the original, then its own; then the
/// links of a GitLab release when the destination cannot have them as links.
fn release_body(release: &Value, links_as_text: bool) -> String {
    let login = release
        .get("author")
        .and_then(|a| str_field(a, "login"))
        .unwrap_or_else(|| "ghost".into());
    let when = str_field(release, "published_at")
        .or_else(|| str_field(release, "created_at"))
        .unwrap_or_else(|| "an unknown time".into());
    let body = str_field(release, "body").unwrap_or_default();
    let links: Vec<String> = links(release)
        .map(|(name, url, _)| format!("- [{name}]({url})"))
        .collect();
    if links.is_empty() || !links_as_text {
        return format!("*Released by @{login} on {when}*\n\n{body}");
    }
    format!(
        "*Released by @{login} on {when}*\n\n{body}\n\nAssets:\n{}",
        links.join("\n")
    )
}

/// The links of a GitLab release: (name, URL, link type).
fn links(release: &Value) -> impl Iterator<Item = (String, String, String)> + '_ {
    release["links"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            let kind = str_field(l, "link_type").unwrap_or_else(|| "other".into());
            Some((str_field(l, "name")?, str_field(l, "url")?, kind))
        })
}

impl Run<'_> {
    pub(super) fn releases(
        &mut self,
        plan: &Plan,
        store: &ChunkReader<'_>,
    ) -> Result<(), RestoreError> {
        for release in &plan.releases {
            let Some(tag) = str_field(release, "tag_name").filter(|t| !t.is_empty()) else {
                continue;
            };
            let made = match self.ledger.releases.get(&tag) {
                Some(made) => made.clone(),
                None => {
                    let body = release_body(release, self.dest.flavor() != Flavor::GitLab);
                    let made = self.create(Pending::Release(tag.clone()), |d, repo| {
                        d.create_release(repo, release, &body)
                    })?;
                    self.ledger.releases.insert(tag.clone(), made.clone());
                    // Bitbucket's stand-in is no release made (its assets go to Downloads).
                    if made.is_some() && self.dest.flavor() != Flavor::Bitbucket {
                        self.report.created.releases += 1;
                    }
                    self.done()?;
                    made
                }
            };
            match made {
                Some(_) => {
                    self.assets(plan, store, &tag, release)?;
                    if self.dest.flavor() == Flavor::GitLab {
                        self.links(&tag, release)?;
                    }
                }
                None => self.report.skipped_releases.push(tag),
            }
        }
        Ok(())
    }

    /// A GitLab release's links, recreated as links (their URLs are data, never fetched).
    fn links(&mut self, tag: &str, release: &Value) -> Result<(), RestoreError> {
        for (name, url, kind) in links(release) {
            let Some(Some(mut made)) = self.ledger.releases.get(tag).cloned() else {
                return Ok(());
            };
            if made.assets.contains(&name) {
                continue;
            }
            self.create(Pending::Asset(tag.to_string(), name.clone()), |d, repo| {
                d.create_release_link(repo, &made, &name, &url, &kind)
            })?;
            made.assets.push(name);
            self.ledger.releases.insert(tag.to_string(), Some(made));
            self.report.created.assets += 1;
            self.done()?;
        }
        Ok(())
    }

    fn assets(
        &mut self,
        plan: &Plan,
        store: &ChunkReader<'_>,
        tag: &str,
        release: &Value,
    ) -> Result<(), RestoreError> {
        for asset in release["assets"].as_array().into_iter().flatten() {
            let Some(name) = str_field(asset, "name") else {
                continue;
            };
            let Some(Some(mut made)) = self.ledger.releases.get(tag).cloned() else {
                return Ok(());
            };
            if made.assets.contains(&name) {
                continue;
            }
            let stored = str_field(asset, "gitvault_content").and_then(|p| plan.files.get(&p));
            let Some(id) = stored else {
                tracing::warn!(%tag, %name, "the backup holds no bytes for this asset");
                continue;
            };
            let bytes = self.path.with_extension("asset");
            let scratch = self.path.with_extension("upload");
            let written = std::fs::File::create(&bytes)
                .map_err(io_err(format!("writing {}", bytes.display())))
                .and_then(|file| {
                    let mut out = std::io::BufWriter::new(file);
                    store.get_to(id, &mut out)?;
                    std::io::Write::flush(&mut out)
                        .map_err(io_err(format!("writing {}", bytes.display())))
                });
            if let Err(e) = written {
                let _ = std::fs::remove_file(&bytes);
                return Err(e);
            }
            let content_type = str_field(asset, "content_type")
                .unwrap_or_else(|| "application/octet-stream".into());
            let sent = self.create(Pending::Asset(tag.to_string(), name.clone()), |d, repo| {
                d.upload_asset(repo, &made, &name, &content_type, &bytes, &scratch)
            });
            let _ = std::fs::remove_file(&bytes);
            sent?;
            made.assets.push(name);
            self.ledger.releases.insert(tag.to_string(), Some(made));
            self.report.created.assets += 1;
            self.done()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn a_gitlab_releases_links_are_text_where_they_cannot_be_links() {
        let release = json!({
            "author": {"login": "alice"}, "published_at": "2023-01-10T00:00:00Z",
            "body": "First.", "links": [{"name": "a.tar.gz", "url": "https://dl.example.com/a"}],
        });
        assert_eq!(
            super::release_body(&release, true),
            "*Released by @alice on 2023-01-10T00:00:00Z*\n\nFirst.\n\nAssets:\n- [a.tar.gz](https://dl.example.com/a)"
        );
        assert_eq!(
            super::release_body(&release, false),
            "*Released by @alice on 2023-01-10T00:00:00Z*\n\nFirst."
        );
    }
}
