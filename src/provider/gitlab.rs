//! GitLab: not implemented yet (docs/STATUS.md).

use super::http::RequestStats;
use super::{MetadataMap, MetadataSink, Provider, ProviderError, RepoInfo, SourceConfig};

pub struct GitLab {
    stats: RequestStats,
}

impl GitLab {
    pub fn new(
        source: &SourceConfig,
        _cache: Option<&crate::index::Index>,
    ) -> Result<Self, ProviderError> {
        Err(ProviderError::BadSource {
            name: source.name.clone(),
            reason: "this provider is not implemented yet (docs/STATUS.md)".into(),
        })
    }
}

impl Provider for GitLab {
    fn list_repositories(&mut self) -> Result<Vec<RepoInfo>, ProviderError> {
        Ok(Vec::new())
    }

    fn export_metadata(
        &mut self,
        _repo: &RepoInfo,
        _previous: Option<&MetadataMap>,
        _sink: &mut dyn MetadataSink,
    ) -> Result<MetadataMap, ProviderError> {
        Ok(MetadataMap::default())
    }

    fn stats(&self) -> RequestStats {
        self.stats
    }

    fn git_credentials(&mut self) -> Result<Option<crate::git::Credentials>, ProviderError> {
        Ok(None)
    }
}
