//! What is in the destination already: asked when the answer of a write never came (the
//! caller's ledger says which write), and when deciding what to create.

use serde_json::Value;

use super::super::{ProviderError, str_field};
use super::{Destination, Flavor};

impl Destination<'_> {
    /// What is at `url`, or `None` when it is not there (404).
    pub(super) fn get_optional(&mut self, url: &str) -> Result<Option<Value>, ProviderError> {
        match self.api.get_json(url) {
            Ok(v) => Ok(Some(v)),
            Err(ProviderError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Issue `number` of `repo` (a merge request with `pull` on GitLab, whose merge requests
    /// are numbered apart), if it exists.
    pub fn issue(
        &mut self,
        repo: &str,
        number: u64,
        pull: bool,
    ) -> Result<Option<Value>, ProviderError> {
        if pull && self.flavor == Flavor::GitLab {
            return self.gitlab_merge_request(repo, number);
        }
        if self.flavor == Flavor::Bitbucket {
            return self.bitbucket_item(repo, number, pull);
        }
        let url = self.repo_url(repo, &format!("/issues/{number}"));
        self.get_optional(&url)
    }

    /// The newest issue or pull request titled `title` that is none of `taken` (number,
    /// is a pull request): where a creation whose answer never came went.
    pub fn find_item(
        &mut self,
        repo: &str,
        title: &str,
        taken: &[(u64, bool)],
    ) -> Result<Option<(u64, bool)>, ProviderError> {
        if self.flavor == Flavor::Bitbucket {
            return self.bitbucket_find_item(repo, title, taken);
        }
        let lists: &[(&str, bool)] = match self.flavor {
            Flavor::GitLab => &[
                ("/merge_requests?state=all", true),
                ("/issues?state=all", false),
            ],
            _ => &[("/issues?state=all", false)],
        };
        for &(rest, pull) in lists {
            let url = self.list_url(repo, rest);
            let found = self
                .api
                .get_all(&url)?
                .iter()
                .filter(|i| str_field(i, "title").as_deref() == Some(title))
                .filter_map(|i| {
                    let number = i.get("number").or_else(|| i.get("iid"))?.as_u64()?;
                    let pull = pull || i.get("pull_request").is_some_and(|p| !p.is_null());
                    Some((number, pull))
                })
                .filter(|item| !taken.contains(item))
                .max();
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// How many comments issue `number` (a merge request with `pull`) has.
    pub fn comment_count(
        &mut self,
        repo: &str,
        number: u64,
        pull: bool,
    ) -> Result<usize, ProviderError> {
        match self.flavor {
            Flavor::GitLab => return self.gitlab_note_count(repo, number, pull),
            Flavor::Bitbucket => return self.bitbucket_comment_count(repo, number, pull),
            Flavor::GitHub | Flavor::Gitea => {}
        }
        let url = self.list_url(repo, &format!("/issues/{number}/comments"));
        Ok(self.api.get_all(&url)?.len())
    }
}
