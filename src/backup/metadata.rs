//! A repository's platform metadata (issues, pull requests, releases…): the provider exports
//! it into the chunk store as compact JSON documents, deduplicated like everything else. A
//! failed export keeps the git snapshot and carries the previous metadata over unchanged.

use super::BackupError;
use super::repo::read_manifest;
use super::writer::{Writer, WriterHandle};
use crate::crypto::ChunkId;
use crate::provider::{MetadataMap, MetadataSink, Provider, ProviderError, RepoInfo};
use crate::store::ChunkKind;

/// What the snapshot gets from the metadata export.
#[derive(Default)]
pub(super) struct Exported {
    /// The metadata map's chunk: this run's, or the previous one after a failed export.
    pub(super) map: Option<String>,
    /// Documents this run exported.
    pub(super) documents: Option<usize>,
    /// Why the export failed, when it did.
    pub(super) error: Option<ProviderError>,
}

/// Exports the metadata of `repo` when a provider is given; `previous` is the previous
/// snapshot's manifest, whose metadata the provider may build on.
pub(super) fn export(
    handle: &mut WriterHandle<'_, '_>,
    metadata: Option<(&mut dyn Provider, &RepoInfo)>,
    previous: Option<&ChunkId>,
) -> Result<Exported, BackupError> {
    let mut exported = Exported::default();
    let Some((provider, repo)) = metadata else {
        return Ok(exported);
    };
    let previous_map = previous.and_then(|m| handle.with(|w| previous_metadata(w, m)));
    let map = match provider.export_metadata(
        repo,
        previous_map.as_ref(),
        &mut StoreSink {
            handle: &mut *handle,
        },
    ) {
        Ok(map) => {
            exported.documents = Some(map.documents.len());
            Some(map)
        }
        Err(e) => {
            exported.error = Some(e);
            previous_map
        }
    };
    if let Some(map) = map {
        let json = serde_json::to_vec(&map).unwrap_or_default();
        exported.map = Some(
            handle
                .with(|w| w.store.put(ChunkKind::Metadata, &json))?
                .to_hex(),
        );
    }
    Ok(exported)
}

/// The metadata map of a previous snapshot, if it has one and it reads back.
fn previous_metadata(w: &Writer<'_>, manifest: &ChunkId) -> Option<MetadataMap> {
    let id: ChunkId = read_manifest(w, manifest)?.metadata?.parse().ok()?;
    serde_json::from_slice(&w.store.get(&id).ok()?).ok()
}

/// Metadata documents and files go into the chunk store.
struct StoreSink<'h, 'a, 'v> {
    handle: &'h mut WriterHandle<'a, 'v>,
}

fn store_err(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Store(e.to_string())
}

impl MetadataSink for StoreSink<'_, '_, '_> {
    fn document(&mut self, value: &serde_json::Value) -> Result<ChunkId, ProviderError> {
        let bytes = serde_json::to_vec(value).map_err(store_err)?;
        self.handle
            .with(|w| w.store.put(ChunkKind::Metadata, &bytes))
            .map_err(store_err)
    }
    fn binary(&mut self, input: &mut dyn std::io::Read) -> Result<ChunkId, ProviderError> {
        // The download streams under the lock: other workers wait to store, not to fetch.
        self.handle
            .with(|w| w.store.put_reader(ChunkKind::Data, input))
            .map(|(id, _)| id)
            .map_err(store_err)
    }
    fn read(&mut self, id: &ChunkId) -> Result<Vec<u8>, ProviderError> {
        self.handle.with(|w| w.store.get(id)).map_err(store_err)
    }
}
